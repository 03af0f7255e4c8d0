import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

DOCUMENT = ROOT / "ssm-documents" / "symroute.yaml"
TEMPLATE = ROOT / "infra" / "template.yaml"
PATTERNS = ROOT / "eventbridge"
# shared/ sits beside the checkout, in CI as here.
FIXTURES = ROOT.parent / "shared" / "fixtures" / "events"


def require_root():
    """Root-only tests skip for a developer, but must fail in CI (CI=true)."""
    if os.geteuid() == 0:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("this test needs root, and CI=true forbids skipping it")
    pytest.skip("needs root (network namespaces); run as root or in CI")

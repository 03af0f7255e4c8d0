#!/usr/bin/env python3
"""Stage what the construct reads into infra/cdk/assets/ (`make cdk-build`):

- ssm-documents/symroute.yaml as JSON (the construct has no YAML parser, and needs none);
- eventbridge/*.json as they are;
- dist/lambda/symroute-lambda-arm64.zip when `make lambda` has built it.

The SAM template embeds the same files (infra/embed_document.py), so both stacks carry one source.
"""
import json
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "infra" / "cdk" / "assets"


def main() -> int:
    (OUT / "eventbridge").mkdir(parents=True, exist_ok=True)
    document = yaml.safe_load((ROOT / "ssm-documents" / "symroute.yaml").read_text())
    (OUT / "document.json").write_text(json.dumps(document, indent=1) + "\n")
    for pattern in sorted((ROOT / "eventbridge").glob("*.json")):
        json.loads(pattern.read_text())  # a broken pattern stops here, not at deploy time
        shutil.copyfile(pattern, OUT / "eventbridge" / pattern.name)
    zip_path = ROOT / "dist" / "lambda" / "symroute-lambda-arm64.zip"
    staged_zip = OUT / "symroute-lambda-arm64.zip"
    if zip_path.exists():
        shutil.copyfile(zip_path, staged_zip)
    elif staged_zip.exists():
        staged_zip.unlink()  # never ship a zip older than the source it claims to be
    return 0


if __name__ == "__main__":
    sys.exit(main())

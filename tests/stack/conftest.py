import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

DOCUMENT = ROOT / "ssm-documents" / "symroute.yaml"
TEMPLATE = ROOT / "infra" / "template.yaml"
PATTERNS = ROOT / "eventbridge"
FIXTURES = ROOT / "tests" / "fixtures" / "events"


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_server():
    """A real moto server behind the strict layer (tests/aws/strict_moto.py) on a free loopback
    port; yields the environment that points at it."""
    import subprocess
    import time
    import urllib.request

    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "aws" / "strict_moto.py"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):  # bounded wait for the listener, not a speed check
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("strict_moto.py exited at start")
                time.sleep(0.05)
        else:
            pytest.fail("strict_moto.py did not start listening")
        yield {
            "SYMROUTE_STRICT_URL": url,
            "AWS_ENDPOINT_URL": url, "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def aws(moto_server):
    """This module's tests talk to the local moto: only its AWS_* variables are set meanwhile."""
    import os

    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        del os.environ[key]
    os.environ.update(moto_server)
    yield moto_server
    os.environ.clear()
    os.environ.update(saved)

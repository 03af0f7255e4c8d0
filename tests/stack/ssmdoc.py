"""Run an SSM Command document (schema 2.2) the way the SSM Agent does, on this machine.

What is reproduced, from the SSM Agent's source and documentation:
- parameters: defaults filled in; `allowedValues` must hold the value exactly, `allowedPattern` is
  applied with `re.search` (the conservative, find-style reading); unknown names are refused;
- `interpolationType: ENV_VAR` parameters become environment variables `SSM_<name>`, and any
  `{{ name }}` left in the document is replaced by the value (the agent still does that; the
  symroute document has none);
- aws:downloadContent with sourceType S3 writes the object to `destinationPath` (absolute) or
  under `<orchestration>/downloads/` (relative); here `fetch(url)` supplies the bytes, so a test
  serves them from a local directory;
- aws:runShellScript writes the lines to `_script.sh` and runs `sh -c <script>` in a work dir,
  the step's exit code becoming the command's.
Steps run in order; a step whose precondition names another platform is skipped.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml


class InvalidParameters(Exception):
    """SendCommand's answer for a value the document does not allow."""


@dataclass
class StepResult:
    name: str
    action: str
    exit_code: int
    stdout: str = ""
    stderr: str = ""


@dataclass
class CommandResult:
    steps: list[StepResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        ran = [s for s in self.steps if s.action == "aws:runShellScript"]
        return ran[-1].exit_code if ran else 0

    def step(self, name: str) -> StepResult:
        return next(s for s in self.steps if s.name == name)


def load(path: Path, placeholders: dict[str, str] | None = None) -> dict:
    """Load a document, replacing deploy-time placeholders @@Name@@ as CloudFormation would."""
    text = path.read_text()
    for name, value in (placeholders or {}).items():
        text = text.replace(f"@@{name}@@", value)
    document = yaml.safe_load(text)
    left = re.findall(r"@@[A-Za-z0-9:]+@@", json.dumps(document))
    if left:
        raise ValueError(f"placeholders without a value: {sorted(set(left))}")
    return document


def validate(document: dict, given: dict[str, str]) -> dict[str, str]:
    """Resolve parameters as the SSM service does before it accepts SendCommand."""
    declared = document.get("parameters", {})
    unknown = set(given) - set(declared)
    if unknown:
        raise InvalidParameters(f"unknown parameters {sorted(unknown)}")
    values = {}
    for name, spec in declared.items():
        if name in given:
            value = given[name]
        elif "default" in spec:
            value = spec["default"]
        else:
            raise InvalidParameters(f"{name} is required")
        if not isinstance(value, str):
            raise InvalidParameters(f"{name} must be a String")
        if "allowedValues" in spec and value not in spec["allowedValues"]:
            raise InvalidParameters(f"{name}={value!r} is not one of {spec['allowedValues']}")
        if "allowedPattern" in spec and not re.search(spec["allowedPattern"], value):
            raise InvalidParameters(f"{name}={value!r} does not match {spec['allowedPattern']}")
        values[name] = value
    return values


def _substitute(node, values: dict[str, str]):
    if isinstance(node, str):
        for name, value in values.items():
            node = re.sub(r"{{\s*" + re.escape(name) + r"\s*}}", lambda _m: value, node)
        return node
    if isinstance(node, list):
        return [_substitute(n, values) for n in node]
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    return node


def _applies(step: dict) -> bool:
    condition = step.get("precondition")
    if not condition:
        return True
    left, right = condition["StringEquals"]
    return left == "platformType" and right == "Linux"


def run(
    document: dict,
    parameters: dict[str, str],
    *,
    fetch: Callable[[str], bytes],
    orchestration: Path,
    wrap: list[str] | None = None,
    env: dict[str, str] | None = None,
    root: Path | None = None,
    timeout: float = 300,
) -> CommandResult:
    """Run the document's steps. `wrap` prefixes the shell (e.g. `ip netns exec NS`); `env`
    is the agent's own environment (the SSM Agent runs as root with a minimal one); `root`
    re-roots absolute download paths so a test never writes outside its own directory."""
    values = validate(document, parameters)
    orchestration = orchestration.resolve()
    root = root.resolve() if root is not None else None
    declared = document.get("parameters", {})
    step_env = dict(env if env is not None else {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
    for name, value in values.items():
        if declared[name].get("interpolationType") == "ENV_VAR":
            step_env[f"SSM_{name}"] = value
    result = CommandResult()
    for step in _substitute(document["mainSteps"], values):
        if not _applies(step):
            continue
        name, action, inputs = step["name"], step["action"], step["inputs"]
        if action == "aws:downloadContent":
            if inputs["sourceType"] != "S3":
                raise NotImplementedError(inputs["sourceType"])
            url = json.loads(inputs["sourceInfo"])["path"]
            dest = Path(inputs.get("destinationPath", ""))
            if not dest.is_absolute():
                dest = orchestration / "downloads" / dest
            elif root is not None:
                dest = root / dest.relative_to("/")
            try:
                data = fetch(url)
            except (FileNotFoundError, KeyError) as err:
                result.steps.append(StepResult(name, action, 1, stderr=f"download failed: {err}"))
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            result.steps.append(StepResult(name, action, 0, stdout=f"Content downloaded to {dest}"))
        elif action == "aws:runShellScript":
            workdir = orchestration / name
            workdir.mkdir(parents=True, exist_ok=True)
            script = workdir / "_script.sh"
            script.write_text("\n".join(inputs["runCommand"]) + "\n")
            script.chmod(0o700)
            proc = subprocess.run(
                [*(wrap or []), "sh", "-c", str(script)],
                cwd=workdir, env=step_env, capture_output=True, text=True,
                timeout=min(timeout, float(inputs.get("timeoutSeconds", 3600))),
            )
            result.steps.append(StepResult(name, action, proc.returncode, proc.stdout, proc.stderr))
        else:
            raise NotImplementedError(action)
    return result


def s3_from_directory(directory: Path) -> Callable[[str], bytes]:
    """A fetch() that serves s3 URLs .../<key> by the key's last component from `directory`."""
    def fetch(url: str) -> bytes:
        return (directory / url.rsplit("/", 1)[-1]).read_bytes()
    return fetch

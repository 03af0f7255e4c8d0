"""Run an SSM Command document (schema 2.2) the way the SSM Agent does, on this machine.

Reproduced from the SSM Agent's source (agent/framework/docparser, agent/plugins/downloadcontent,
agent/plugins/runscript, agent/framework/runpluginutil) and the documented contracts, never
more lenient than they are:
- parameters: defaults filled in, unknown names refused; `allowedValues` must hold the value
  exactly; `allowedPattern` is compiled with RE2 (google-re2: the same syntax as Go's regexp, no
  lookaround) and matched unanchored, as Go's MatchString does. A pattern RE2 cannot compile
  fails the command, as it does on the real agent;
- interpolation depends on the agent's version (`agent`): a NEW agent (3.3.2746.0 and later)
  passes `interpolationType: ENV_VAR` parameters only as environment variables `SSM_<name>` and
  leaves their `{{ name }}` text alone (so a script that read the text would see the braces); an
  OLD agent sets no variable and substitutes `{{ name }}` everywhere;
- aws:downloadContent (S3): a relative `destinationPath` lands under
  `<orchestration>/<command id>/downloads/`, directories 0700; a path ending in `/` downloads every
  object under that prefix and fails only when there is none;
- aws:runShellScript: the script runs with `sh`, its working directory the command's `downloads`
  directory when it exists; stdout keeps at most 24,000 bytes and stderr 8,000 (the executer's
  limits), ending in `--output truncated--` when cut; `timeoutSeconds` kills it (TimedOut);
- exit codes: 0 Success; 194 SuccessAndReboot (the agent reboots the host: recorded as
  `reboot_requested`, and no later step runs); 168 ends the document as Success and 169 as
  Failed; anything else Failed. One failed step fails the command.
Steps run in order; a step whose precondition names another platform is skipped.
"""
from __future__ import annotations

import enum
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import re2
import yaml

MAX_STDOUT = 24000
MAX_STDERR = 8000
TRUNCATED = "--output truncated--"
REBOOT_EXIT_CODE = 194
EXIT_WITH_SUCCESS = 168
EXIT_WITH_FAILURE = 169
# The agent reads commands in parallel up to this many (appconfig CommandWorkersLimit default).
COMMAND_WORKERS = 5


class Agent(enum.Enum):
    """Which SSM Agent generation to emulate (interpolation differs, see the module doc)."""
    NEW = "new"
    OLD = "old"


class InvalidParameters(Exception):
    """SendCommand's answer (and the agent's refusal) for a value the document does not allow."""


@dataclass
class StepResult:
    name: str
    action: str
    exit_code: int
    status: str = "Success"
    stdout: str = ""
    stderr: str = ""


@dataclass
class CommandResult:
    steps: list[StepResult] = field(default_factory=list)
    reboot_requested: bool = False

    @property
    def exit_code(self) -> int:
        ran = [s for s in self.steps if s.action == "aws:runShellScript"]
        return ran[-1].exit_code if ran else 0

    @property
    def status(self) -> str:
        """The command's status as GetCommandInvocation reports it without PluginName."""
        for bad in ("TimedOut", "Failed"):
            if any(s.status == bad for s in self.steps):
                return bad
        return "Success"

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


def compile_pattern(pattern: str):
    """RE2, as the agent's regexp.Compile; raises InvalidParameters where the agent fails."""
    try:
        return re2.compile(pattern)
    except re2.error as err:
        raise InvalidParameters(
            f"encountered error while compiling allowed pattern - internal error: {err}") from err


def validate(document: dict, given: dict[str, str]) -> dict[str, str]:
    """Resolve parameters as the SSM service does before it accepts SendCommand, and as the
    agent does again before it runs anything."""
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
        if "allowedPattern" in spec and not compile_pattern(spec["allowedPattern"]).search(value):
            raise InvalidParameters(
                f"parameter value /{value}/ does not match the allowed pattern /{spec['allowedPattern']}/")
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


def _prefix(text: str, limit: int) -> str:
    """pluginutil.StringPrefix over bytes: an output of `limit` bytes or more is cut and marked."""
    data = text.encode()
    if len(data) < limit:
        return text
    return data[: limit - len(TRUNCATED)].decode(errors="replace") + TRUNCATED


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


# A source of S3 objects: given a URL, the files it names, as {relative name: bytes}. A URL
# ending in "/" is a prefix (every object under it); otherwise one object. FileNotFoundError
# when nothing is there.
Source = Callable[[str], dict[str, bytes]]


def run(
    document: dict,
    parameters: dict[str, str],
    *,
    source: Source,
    orchestration: Path,
    command_id: str = "command",
    agent: Agent = Agent.NEW,
    wrap: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> CommandResult:
    """Run the document's steps. `orchestration` is the agent's orchestration root; the command
    gets `<orchestration>/<command_id>/`. `wrap` prefixes the shell (e.g. `ip netns exec NS`);
    `env` is the agent's own environment (the SSM Agent runs as root with a minimal one)."""
    values = validate(document, parameters)
    declared = document.get("parameters", {})
    env_params = {n for n, spec in declared.items() if spec.get("interpolationType") == "ENV_VAR"}
    step_env = dict(env if env is not None else {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
    if agent is Agent.NEW:
        for name in env_params:
            step_env[f"SSM_{name}"] = values[name]
        substituted = {n: v for n, v in values.items() if n not in env_params}
    else:
        substituted = values
    command_dir = _private_dir(orchestration.resolve() / command_id)
    downloads = command_dir / "downloads"
    result = CommandResult()
    for step in _substitute(document["mainSteps"], substituted):
        if not _applies(step):
            result.steps.append(StepResult(step["name"], step["action"], 0, status="Skipped"))
            continue
        name, action, inputs = step["name"], step["action"], step["inputs"]
        if action == "aws:downloadContent":
            result.steps.append(_download(name, action, inputs, source, downloads))
        elif action == "aws:runShellScript":
            step_dir = _private_dir(command_dir / name)
            script = step_dir / "_script.sh"
            script.write_text("\n".join(inputs["runCommand"]) + "\n")
            script.chmod(0o700)
            workdir = downloads if downloads.is_dir() else command_dir
            limit = min(timeout, float(inputs.get("timeoutSeconds", 3600)))
            try:
                # The working directory is set inside the wrapper: entering a mount namespace
                # (nsenter) resets it to "/", and the agent's own exec sets it for the script.
                proc = subprocess.run([*(wrap or []), "sh", "-c", 'cd "$1" && exec sh -c "$2"', "ssm-agent",
                                       str(workdir), str(script)], env=step_env, capture_output=True,
                                      timeout=limit)
                code, out, err = proc.returncode, proc.stdout, proc.stderr
                status = "Success" if code in (0, REBOOT_EXIT_CODE, EXIT_WITH_SUCCESS) else "Failed"
            except subprocess.TimeoutExpired as expired:
                code, out, err, status = -1, expired.stdout or b"", expired.stderr or b"", "TimedOut"
            out = _prefix(out[:MAX_STDOUT].decode(errors="replace"), MAX_STDOUT)
            err = _prefix(err[:MAX_STDERR].decode(errors="replace"), MAX_STDOUT)
            result.steps.append(StepResult(name, action, code, status, out, err))
            if code == REBOOT_EXIT_CODE:
                result.reboot_requested = True
        else:
            raise NotImplementedError(action)
        last = result.steps[-1]
        # A failed step does not stop the next one (the real agent runs them all; the command is
        # Failed either way); these exit codes do.
        if last.exit_code in (REBOOT_EXIT_CODE, EXIT_WITH_SUCCESS, EXIT_WITH_FAILURE):
            break
    return result


def _download(name: str, action: str, inputs: dict, source: Source, downloads: Path) -> StepResult:
    if inputs["sourceType"] != "S3":
        raise NotImplementedError(inputs["sourceType"])
    url = json.loads(inputs["sourceInfo"])["path"]
    dest = inputs.get("destinationPath", "")
    if os.path.isabs(dest):
        # The real agent writes absolute paths as they are; nothing here may write the host's.
        return StepResult(name, action, 1, "Failed",
                          stderr=f"stand-in refuses absolute destinationPath {dest}: use a relative one")
    try:
        files = source(url)
    except FileNotFoundError as err:
        return StepResult(name, action, 1, "Failed", stderr=f"download failed: {err}")
    target = _private_dir(downloads) / dest
    # A prefix, or a destination that is (or ends like) a directory, keeps the objects' names;
    # otherwise the destination is the file itself.
    into_dir = url.endswith("/") or not dest or dest.endswith("/") or target.is_dir()
    for relative, data in files.items():
        path = target / relative if into_dir else target
        _private_dir(path.parent)
        path.write_bytes(data)
    return StepResult(name, action, 0, stdout=f"Content downloaded to {target}")


def s3_from_directory(directory: Path) -> Source:
    """A source that serves S3 URLs from a local directory by each key's last component: a
    prefix URL yields every file of the directory."""
    def source(url: str) -> dict[str, bytes]:
        if url.endswith("/"):
            files = {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
            if not files:
                raise FileNotFoundError(url)
            return files
        path = directory / url.rsplit("/", 1)[-1]
        return {path.name: path.read_bytes()}
    return source

//! Running the system's network tools and turning their failures into [`Error`]s.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::error::{Error, Result};

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion, capturing output; a non-zero exit is an error.
pub(crate) fn run(cmd: &mut Command) -> Result<Output> {
    let out = output(cmd)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            cmd: describe(cmd),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs `cmd` to completion, capturing output, whatever its exit status.
pub(crate) fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            cmd: describe(cmd),
            source,
        })
}

/// Runs `cmd` with `input` on its stdin; a non-zero exit is an error.
pub(crate) fn run_with_input(cmd: &mut Command, input: &str) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            cmd: describe(cmd),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            cmd: describe(cmd),
            status: out.status.to_string(),
            stderr: format!(
                "{}\n--- input ---\n{input}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// `ip [-n NS] ARGS...`, checked.
pub(crate) fn ip<S: AsRef<OsStr>>(ns: Option<&str>, args: &[S]) -> Result<Output> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    cmd.args(args);
    run(&mut cmd)
}

/// `ip [-n NS] LINE`, with LINE split on whitespace (for arguments that never contain any:
/// names, addresses, numbers), checked.
pub(crate) fn ipl(ns: Option<&str>, line: &str) -> Result<Output> {
    ip(ns, &line.split_whitespace().collect::<Vec<_>>())
}

/// A command prepared to run inside namespace `ns` (`ip netns exec NS program`).
pub(crate) fn in_netns(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

/// Sets sysctl `key` to `value` inside namespace `ns`.
pub(crate) fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    run(in_netns(ns, "sysctl").args(["-q", "-w", &format!("{key}={value}")]))?;
    Ok(())
}

//! Runs a command inside a VM lab guest through its QEMU guest agent, as if it ran here: the
//! SSM stand-in (tests/stack/run_document.py --guest-qga) puts this in front of each step's
//! shell, so the real document runs in the guest as the SSM Agent would run it there.
//!
//!   symroute-guest-exec --qga SOCK [--copy DIR]... -- PROGRAM [ARG]...
//!
//! `--copy DIR` first copies the files under DIR into the guest at the same paths (the
//! command's downloads and script, which the SSM Agent would have written there). The guest
//! gets the SSM Agent's PATH and every `SSM_*` variable of this environment. Prints the
//! command's stdout and stderr and exits with its code (128+N for signal N, as a shell does).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use symroute_testbed::lab::{Channel, GuestAgent};

const USAGE: &str = "usage: symroute-guest-exec --qga SOCK [--copy DIR]... -- PROGRAM [ARG]...";
/// The SSM Agent's own PATH on Linux.
const SSM_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("symroute-guest-exec: {e}");
            ExitCode::from(125)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut args = std::env::args().skip(1);
    let (mut qga, mut copies) = (None, Vec::new());
    let argv: Vec<String> = loop {
        match args.next().as_deref() {
            Some("--qga") => qga = args.next().map(PathBuf::from),
            Some("--copy") => copies.push(PathBuf::from(args.next().ok_or(USAGE)?)),
            Some("--") => break args.collect(),
            _ => return Err(USAGE.into()),
        }
    };
    let qga = qga.ok_or(USAGE)?;
    if argv.is_empty() {
        return Err(USAGE.into());
    }
    let guest = GuestAgent::new(&qga.display().to_string(), Channel::guest(&qga));
    for dir in &copies {
        copy_tree(&guest, dir).map_err(|e| format!("copying {}: {e}", dir.display()))?;
    }
    let mut env = vec![SSM_PATH.to_string()];
    env.extend(
        std::env::vars()
            .filter(|(k, _)| k.starts_with("SSM_"))
            .map(|(k, v)| format!("{k}={v}")),
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = guest
        .exec_env(&argv, &env, Duration::from_secs(900))
        .map_err(|e| e.to_string())?;
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    let code = out.code.or(out.signal.map(|s| 128 + s)).unwrap_or(255);
    Ok(ExitCode::from(code as u8))
}

fn copy_tree(guest: &GuestAgent, dir: &Path) -> Result<(), String> {
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).map(|m| m.permissions().mode() & 0o7777)
    };
    let path = dir.display().to_string();
    guest
        .sh_ok(&format!(
            "mkdir -p '{path}' && chmod {:o} '{path}'",
            mode(dir).map_err(|e| e.to_string())?
        ))
        .map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let p = entry.map_err(|e| e.to_string())?.path();
        if p.is_dir() {
            copy_tree(guest, &p)?;
        } else {
            let bytes = std::fs::read(&p).map_err(|e| e.to_string())?;
            guest
                .write_file(
                    &p.display().to_string(),
                    &bytes,
                    mode(&p).map_err(|e| e.to_string())?,
                )
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

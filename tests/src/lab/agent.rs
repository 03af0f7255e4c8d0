//! The QEMU guest agent's side of a guest: run a command and read its output and exit code,
//! write a file. Works on its socket alone, so a helper process (`symroute-guest-exec`) can use
//! it while the test owns the [`super::Guest`].

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;

use super::guest::CALL_TIMEOUT;
use super::qmp::Channel;
use crate::error::{Error, Result};

const EXEC_TIMEOUT: Duration = Duration::from_secs(120);

/// What a command run in the guest did.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl GuestOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for GuestOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} signal {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.signal, self.stdout, self.stderr
        )
    }
}

/// Commands and files in one guest, through its agent socket.
#[derive(Clone, Debug)]
pub struct GuestAgent {
    name: String,
    qga: Channel,
}

impl GuestAgent {
    /// The agent behind `qga`; `name` only labels errors.
    pub fn new(name: &str, qga: Channel) -> GuestAgent {
        GuestAgent {
            name: name.to_string(),
            qga,
        }
    }

    /// Whether the agent answers `guest-ping` within `timeout` (it does not while booting).
    pub fn ping(&self, timeout: Duration) -> bool {
        self.qga
            .call("guest-ping", serde_json::Value::Null, timeout)
            .is_ok()
    }

    /// Runs `argv` in the guest (no shell), waits (bounded) and returns what it did.
    pub fn exec(&self, argv: &[&str]) -> Result<GuestOutput> {
        self.exec_env(argv, &[], EXEC_TIMEOUT)
    }

    /// `sh -c script` in the guest.
    pub fn sh(&self, script: &str) -> Result<GuestOutput> {
        self.exec(&["/bin/sh", "-c", script])
    }

    /// `sh -c script` in the guest; a non-zero exit is an error carrying the output.
    pub fn sh_ok(&self, script: &str) -> Result<String> {
        let out = self.sh(script)?;
        if !out.success() {
            return Err(Error::Command {
                cmd: format!("guest {}: {script}", self.name),
                status: format!("{:?}", out.code),
                stderr: format!("{}{}", out.stdout, out.stderr),
            });
        }
        Ok(out.stdout)
    }

    /// Runs `argv` with environment `env` (`KEY=value`), waiting at most `bound`.
    pub fn exec_env(&self, argv: &[&str], env: &[String], bound: Duration) -> Result<GuestOutput> {
        let pid = self.start(argv, env, true)?;
        let deadline = Instant::now() + bound;
        loop {
            let st = self
                .qga
                .call("guest-exec-status", json!({ "pid": pid }), CALL_TIMEOUT)?;
            if st["exited"].as_bool() == Some(true) {
                let text = |k: &str| {
                    st[k].as_str().map_or_else(String::new, |b| {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(b)
                            .unwrap_or_default();
                        String::from_utf8_lossy(&bytes).into_owned()
                    })
                };
                return Ok(GuestOutput {
                    code: st["exitcode"].as_i64().map(|c| c as i32),
                    signal: st["signal"].as_i64().map(|c| c as i32),
                    stdout: text("out-data"),
                    stderr: text("err-data"),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("`{}` in guest {}", argv.join(" "), self.name),
                    secs: bound.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `argv` and does not wait (for `systemctl reboot` and long-lived helpers).
    pub fn spawn(&self, argv: &[&str]) -> Result<()> {
        self.start(argv, &[], false).map(|_| ())
    }

    fn start(&self, argv: &[&str], env: &[String], capture: bool) -> Result<i64> {
        let (path, args) = argv
            .split_first()
            .ok_or_else(|| Error::invalid("command", "", "is empty"))?;
        let mut req = json!({"path": path, "arg": args, "capture-output": capture});
        if !env.is_empty() {
            req["env"] = json!(env);
        }
        let ret = self.qga.call("guest-exec", req, CALL_TIMEOUT)?;
        ret["pid"]
            .as_i64()
            .ok_or_else(|| Error::invalid("guest-exec answer", ret.to_string(), "has no pid"))
    }

    /// Writes `bytes` to `path` in the guest (parents created), then sets `mode`.
    pub fn write_file(&self, path: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let parent = Path::new(path)
            .parent()
            .map_or_else(|| "/".to_string(), |p| p.display().to_string());
        self.sh_ok(&format!(
            "mkdir -p '{parent}' && : > '{path}' && chmod {mode:o} '{path}'"
        ))?;
        let handle = self.qga.call(
            "guest-file-open",
            json!({"path": path, "mode": "w"}),
            CALL_TIMEOUT,
        )?;
        // QGA's JSON parser takes requests of a few MB at most; 256 KiB chunks stay far below.
        for chunk in bytes.chunks(256 * 1024) {
            let b64 = base64::engine::general_purpose::STANDARD.encode(chunk);
            self.qga.call(
                "guest-file-write",
                json!({"handle": handle, "buf-b64": b64}),
                CALL_TIMEOUT,
            )?;
        }
        self.qga.call(
            "guest-file-close",
            json!({ "handle": handle }),
            CALL_TIMEOUT,
        )?;
        Ok(())
    }
}

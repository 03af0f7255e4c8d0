//! QEMU's two JSON control channels: QMP (the machine: hot-plug, reset) and the guest agent
//! (QGA: run a command in the guest, write a file), both newline-delimited JSON over a unix
//! socket that QEMU serves.
//!
//! A connection is opened per call, so several processes (a test and the SSM stand-in's
//! `symroute-guest-exec`) can take turns on one socket: QEMU serves one client at a time and
//! accepts the next when it closes. The protocol is a handful of JSON objects; the `qapi` crate
//! would add generated bindings for hundreds of commands and an async runtime to save the few
//! lines below.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// One QMP or QGA socket.
#[derive(Clone, Debug)]
pub struct Channel {
    path: PathBuf,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// QMP: a greeting, then `qmp_capabilities`; events may come between answers.
    Machine,
    /// QGA: no greeting; `guest-sync-delimited` flushes what an earlier client left behind.
    Guest,
}

impl Channel {
    pub fn machine(path: &Path) -> Channel {
        Channel {
            path: path.to_path_buf(),
            kind: Kind::Machine,
        }
    }

    pub fn guest(path: &Path) -> Channel {
        Channel {
            path: path.to_path_buf(),
            kind: Kind::Guest,
        }
    }

    /// Runs one command and returns its `return` value; a QEMU `error` answer is an error.
    /// `timeout` bounds the whole exchange (a guest that is still booting never answers).
    pub fn call(&self, command: &str, args: Value, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut conn = Conn::open(&self.path, deadline)?;
        match self.kind {
            Kind::Machine => {
                conn.read_until(|v| v.get("QMP").is_some(), "the QMP greeting")?;
                conn.send(&json!({"execute": "qmp_capabilities"}))?;
                conn.answer("qmp_capabilities")?;
            }
            Kind::Guest => conn.sync()?,
        }
        let mut request = json!({ "execute": command });
        if !args.is_null() {
            request["arguments"] = args;
        }
        conn.send(&request)?;
        conn.answer(command)
    }
}

struct Conn {
    reader: BufReader<UnixStream>,
    deadline: Instant,
    what: String,
}

impl Conn {
    fn open(path: &Path, deadline: Instant) -> Result<Conn> {
        let stream = UnixStream::connect(path).map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot connect to {}: {e}", path.display()),
            ))
        })?;
        Ok(Conn {
            reader: BufReader::new(stream),
            deadline,
            what: path.display().to_string(),
        })
    }

    fn remaining(&self, what: &str) -> Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                what: format!("{what} on {}", self.what),
                secs: 0,
            });
        }
        Ok(left)
    }

    fn send(&mut self, v: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(v).expect("JSON values serialize");
        line.push(b'\n');
        self.reader.get_mut().write_all(&line)?;
        Ok(())
    }

    /// The next JSON object for which `want` holds, skipping events and stray answers.
    fn read_until(&mut self, want: impl Fn(&Value) -> bool, what: &str) -> Result<Value> {
        loop {
            let left = self.remaining(what)?;
            self.reader.get_ref().set_read_timeout(Some(left))?;
            let mut line = Vec::new();
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) => {
                    return Err(Error::Io(std::io::Error::new(
                        ErrorKind::UnexpectedEof,
                        format!("{} closed while waiting for {what}", self.what),
                    )))
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue; // `remaining` turns this into a Timeout once the deadline passed
                }
                Err(e) => return Err(e.into()),
            }
            // QGA's sync marker (0xff) and partial lines from an earlier client are not JSON.
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_start_matches('\u{fffd}').trim();
            if let Ok(v) = serde_json::from_str::<Value>(text) {
                if want(&v) {
                    return Ok(v);
                }
            }
        }
    }

    fn answer(&mut self, command: &str) -> Result<Value> {
        let v = self.read_until(
            |v| v.get("return").is_some() || v.get("error").is_some(),
            command,
        )?;
        if let Some(err) = v.get("error") {
            return Err(Error::Command {
                cmd: format!("QEMU {command}"),
                status: err["class"].as_str().unwrap_or("error").to_string(),
                stderr: err["desc"].as_str().unwrap_or_default().to_string(),
            });
        }
        Ok(v["return"].clone())
    }

    /// QGA's resynchronisation: the agent answers a 0xff byte and then the id we sent, so
    /// whatever an interrupted earlier client left in the pipe is skipped.
    fn sync(&mut self) -> Result<()> {
        let id = u64::from(std::process::id()) << 20 | u64::from(fastrand::u32(..1 << 20));
        // The 0xff first resets the agent's own parser in case a partial request is pending.
        self.reader.get_mut().write_all(&[0xff])?;
        self.send(&json!({"execute": "guest-sync-delimited", "arguments": {"id": id}}))?;
        self.read_until(|v| v["return"].as_u64() == Some(id), "guest-sync")?;
        Ok(())
    }
}

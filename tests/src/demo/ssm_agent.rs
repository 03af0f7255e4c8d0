//! The client of tests/demo/ssm_agent.py, the SSM Agent stand-in of one instance: each command
//! it runs comes back as one JSON line, collected here by a reader thread.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::error::{Result, StepError};
use super::interrupt;
use super::py::Py;

/// One command as the stand-in ran it.
#[derive(Debug, Clone)]
pub struct CommandRun {
    pub command_id: String,
    /// `action`, `target` as SSM passed them.
    pub parameters: Value,
    pub exit_code: i64,
    /// The agent's stdout: its JSON report.
    pub stdout: String,
    pub stderr: String,
}

impl CommandRun {
    fn from_line(v: &Value) -> CommandRun {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        CommandRun {
            command_id: s("command_id"),
            parameters: v["parameters"].clone(),
            exit_code: v["exit_code"].as_i64().unwrap_or(-1),
            stdout: s("stdout"),
            stderr: s("stderr"),
        }
    }

    /// The agent's report (`Null` when it printed none).
    pub fn report(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or(Value::Null)
    }
}

const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);

pub struct SsmAgent {
    child: Child,
    stdin: Option<ChildStdin>,
    runs: Receiver<CommandRun>,
    /// Runs received while waiting for another command.
    early: Mutex<Vec<CommandRun>>,
}

impl SsmAgent {
    /// The stand-in for `instance_id`, running steps in `netns` with the agent aimed at
    /// `imds_endpoint` (as seen inside the namespace), emulating an SSM Agent `generation`
    /// ("new": ENV_VAR interpolation, "old": text substitution only). Returns once it has
    /// registered the instance with Systems Manager.
    pub fn start(
        py: &Py,
        instance_id: &str,
        netns: &str,
        imds_endpoint: &str,
        generation: &str,
        workdir: &Path,
        log: &Path,
    ) -> std::io::Result<Self> {
        let workdir = workdir.to_string_lossy();
        let args = [
            "--instance-id",
            instance_id,
            "--netns",
            netns,
            "--imds",
            imds_endpoint,
            "--agent",
            generation,
            "--workdir",
            &workdir,
        ];
        let (child, stdin, stdout) = py.spawn("ssm_agent.py", &args, log)?;
        let (tx, runs) = mpsc::channel();
        let (registered_tx, registered) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v.get("registered").is_some() {
                        let _ = registered_tx.send(());
                    } else if tx.send(CommandRun::from_line(&v)).is_err() {
                        break;
                    }
                }
            }
        });
        let mut agent = SsmAgent {
            child,
            stdin: Some(stdin),
            runs,
            early: Mutex::new(Vec::new()),
        };
        if registered.recv_timeout(REGISTER_TIMEOUT).is_err() {
            let _ = agent.child.kill();
            return Err(std::io::Error::other(format!(
                "the SSM Agent stand-in did not register {instance_id} within {} s (see its log)",
                REGISTER_TIMEOUT.as_secs()
            )));
        }
        Ok(agent)
    }

    /// The next command the stand-in finished, within `timeout`.
    pub fn next_run(&self, step: &str, timeout: Duration) -> Result<CommandRun> {
        let deadline = Instant::now() + timeout;
        loop {
            interrupt::check(step)?;
            let left = deadline.saturating_duration_since(Instant::now());
            match self.runs.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(run) => return Ok(run),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(StepError::new(
                        step,
                        "the SSM agent stand-in exited (see its log)",
                    ))
                }
                Err(RecvTimeoutError::Timeout) if left.is_zero() => {
                    return Err(StepError::new(
                        step,
                        format!(
                            "no command ran on the instance within {} s",
                            timeout.as_secs()
                        ),
                    ))
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// The run of `command_id`; runs of other commands received meanwhile are kept.
    pub fn run_of(&self, step: &str, command_id: &str, timeout: Duration) -> Result<CommandRun> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut early = self.early.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(i) = early.iter().position(|r| r.command_id == command_id) {
                    return Ok(early.remove(i));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let run = self.next_run(step, left)?;
            if run.command_id == command_id {
                return Ok(run);
            }
            self.early
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(run);
        }
    }

    /// Every command run reported so far and not yet taken, without waiting.
    pub fn runs_so_far(&self) -> Vec<CommandRun> {
        let mut runs: Vec<CommandRun> =
            std::mem::take(&mut *self.early.lock().unwrap_or_else(|e| e.into_inner()));
        runs.extend(self.runs.try_iter());
        runs
    }
}

impl Drop for SsmAgent {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

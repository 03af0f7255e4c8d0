//! The built Lambda binary, served events through the local Runtime API as Lambda would.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::error::{Result, StepError};
use super::interrupt;
use crate::runtime_api::{Answer, RuntimeApi};

pub struct Lambda {
    child: Child,
    api: RuntimeApi,
}

impl Lambda {
    /// Starts `binary` with Lambda's own variables, `env` (the function's configuration and
    /// the AWS variables) and its logs into `log`.
    pub fn start(binary: &Path, env: &[(String, String)], log: &Path) -> std::io::Result<Self> {
        let api = RuntimeApi::start().map_err(std::io::Error::other)?;
        let out = File::create(log)?;
        let child = Command::new(binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(api.lambda_env())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        Ok(Lambda { child, api })
    }

    /// Hands `event` to the function and waits for its answer.
    pub fn invoke(&mut self, step: &str, event: &Value, timeout: Duration) -> Result<Answer> {
        let id = self.api.push(event);
        let deadline = Instant::now() + timeout;
        loop {
            interrupt::check(step)?;
            if let Some(status) = self.child.try_wait().map_err(|e| StepError::new(step, e))? {
                return Err(StepError::new(
                    step,
                    format!("the Lambda exited ({status}) (see its log)"),
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.api.wait(&id, left.min(Duration::from_millis(200))) {
                Ok(answer) => return Ok(answer),
                Err(_) if left.is_zero() => {
                    return Err(StepError::new(
                        step,
                        format!("the Lambda did not answer within {} s", timeout.as_secs()),
                    ))
                }
                Err(_) => {}
            }
        }
    }
}

impl Drop for Lambda {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

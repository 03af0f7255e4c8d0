//! The demo's one error: which step failed, and why, on one line.

use std::fmt::Display;

#[derive(Debug, thiserror::Error)]
#[error("step `{step}` failed: {message}")]
pub struct StepError {
    pub step: String,
    pub message: String,
}

impl StepError {
    pub fn new(step: &str, message: impl Display) -> Self {
        // One line: multi-line causes (a tool's stderr) are folded.
        let message = message.to_string();
        let message = message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" | ");
        StepError {
            step: step.to_string(),
            message,
        }
    }
}

pub type Result<T, E = StepError> = std::result::Result<T, E>;

/// Names the step an error belongs to: `moto.start().step("moto")?`.
pub trait Step<T> {
    fn step(self, step: &str) -> Result<T>;
}

impl<T, E: Display> Step<T> for std::result::Result<T, E> {
    fn step(self, step: &str) -> Result<T> {
        self.map_err(|e| StepError::new(step, e))
    }
}

/// `ensure(cond, "step", || "why")?`
pub fn ensure(ok: bool, step: &str, why: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(StepError::new(step, why()))
    }
}

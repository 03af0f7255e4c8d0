//! Runs a list of changes as one transaction: on the first failure, every change this run made
//! is undone in reverse order, so a failed run leaves the host as it found it.

use log::{debug, info, warn};

use crate::error::{Error, Result};
use crate::kernel::{Kernel, Outcome};
use crate::ops::Op;

/// The changes a run actually made (ops found already done are not listed).
#[derive(Debug, Default)]
pub struct Applied {
    pub changed: Vec<Op>,
}

impl Applied {
    /// Undoes this run's changes, newest first. Returns what could not be undone.
    pub fn rollback(&mut self, kernel: &mut Kernel) -> (usize, Vec<String>) {
        let mut undone = 0;
        let mut errors = Vec::new();
        while let Some(op) = self.changed.pop() {
            let inv = op.inverse();
            match kernel.run(&inv) {
                Ok(_) => {
                    undone += 1;
                    info!("rolled back: {inv}");
                }
                Err(e) => errors.push(format!("`{inv}`: {e}")),
            }
        }
        (undone, errors)
    }
}

pub fn run(kernel: &mut Kernel, ops: &[Op]) -> Result<Applied> {
    let mut applied = Applied::default();
    for op in ops {
        match kernel.run(op) {
            Ok(Outcome::Changed) => {
                info!("{op}");
                applied.changed.push(op.clone());
            }
            Ok(Outcome::AlreadyThere) => debug!("already so: {op}"),
            Err(e) => {
                warn!("failed: {op}: {e}; rolling back");
                let (undone, rollback_errors) = applied.rollback(kernel);
                return Err(Error::ApplyFailed {
                    failed: format!("`{op}` failed"),
                    cause: e.to_string(),
                    undone,
                    rollback_errors,
                });
            }
        }
    }
    Ok(applied)
}

//! Runs a list of changes as one transaction: on the first failure, every change this run made
//! is undone in reverse order, so a failed run leaves the host as it found it.

use log::{debug, info, warn};

use crate::error::{Error, Result, Rollback};
use crate::kernel::{Kernel, Outcome};
use crate::ops::Op;

/// The changes a run actually made (ops found already done are not listed).
#[derive(Debug, Default)]
pub struct Applied {
    pub changed: Vec<Op>,
}

impl Applied {
    /// Undoes this run's changes, newest first: how many, and what could not be undone.
    pub fn rollback(&mut self, kernel: &mut Kernel) -> Rollback {
        let mut done = Rollback::default();
        while let Some(op) = self.changed.pop() {
            let inv = op.inverse();
            match kernel.run(&inv) {
                Ok(_) => {
                    done.undone += 1;
                    info!("rolled back: {inv}");
                }
                Err(e) => done.errors.push(format!("`{inv}`: {e}")),
            }
        }
        done
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
                let rollback = applied.rollback(kernel);
                return Err(Error::ApplyFailed {
                    failed: format!("`{op}` failed"),
                    source: e,
                    rollback,
                });
            }
        }
    }
    Ok(applied)
}

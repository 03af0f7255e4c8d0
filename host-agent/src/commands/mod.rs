//! One file per subcommand. Each fills a `Report`; errors end up in it too, so that the JSON
//! SSM keeps says what failed.

pub mod apply;
pub mod remove;
pub mod status;

use std::time::Instant;

use crate::cli::{Command, PersistMode, Target};
use crate::error::{Error, Result};
use crate::plan::Selection;
use crate::report::Report;

/// How long a run waits for another run to finish before giving up.
pub const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

pub fn run(command: &Command) -> Report {
    let start = Instant::now();
    let (mut report, result) = match command {
        Command::Apply(a) => {
            let mut r = Report::new("apply", a.dry_run);
            let res = apply::run(a, &mut r);
            (r, res)
        }
        Command::Remove(a) => {
            let mut r = Report::new("remove", a.dry_run);
            let res = remove::run(a, &mut r);
            (r, res)
        }
        Command::Status(_) => {
            let mut r = Report::new("status", false);
            let res = status::run(&mut r);
            (r, res)
        }
    };
    if let Err(e) = result {
        report.ok = false;
        report.exit_code = e.exit_code();
        report.error = Some(e.to_string());
    }
    report.duration_ms = start.elapsed().as_millis() as u64;
    report
}

pub fn selection(t: &Target) -> Selection {
    match (&t.eni, &t.mac) {
        (Some(e), _) => Selection::Eni(e.clone()),
        (_, Some(m)) => Selection::Mac(*m),
        _ => Selection::All,
    }
}

/// Persistence lands with the backends of the persistence work; until then a run is live only
/// and says so, rather than pretending.
pub fn persist_note(mode: PersistMode, root: Option<&std::path::Path>) -> Result<String> {
    if let Some(r) = root {
        if !r.is_dir() {
            return Err(Error::Usage(format!(
                "--root {}: not a directory",
                r.display()
            )));
        }
    }
    Ok(match mode {
        PersistMode::None => "none".into(),
        PersistMode::Auto => {
            "none (no persistence backend in this build: routing is live only)".into()
        }
    })
}

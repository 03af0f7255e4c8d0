//! Logs to stderr, one line each, so stdout carries only the report. `SYMROUTE_LOG` sets the
//! level. A few lines of our own instead of a logging framework: the binary ships everywhere.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        m.target().starts_with("symroute")
    }

    fn log(&self, r: &Record) {
        if self.enabled(r.metadata()) {
            let level = match r.level() {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "info",
                Level::Debug => "debug",
                Level::Trace => "trace",
            };
            if log::max_level() >= LevelFilter::Debug {
                // Milliseconds since start: where a slow run spends its time.
                let ms = START
                    .get()
                    .map(|s| s.elapsed().as_secs_f64() * 1000.0)
                    .unwrap_or(0.0);
                eprintln!("symroute: {level}: [{ms:.1} ms] {}", r.args());
            } else {
                eprintln!("symroute: {level}: {}", r.args());
            }
        }
    }

    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;
static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

pub fn init() {
    START.get_or_init(std::time::Instant::now);
    let level = match std::env::var("SYMROUTE_LOG").as_deref() {
        Ok("debug") => LevelFilter::Debug,
        Ok("trace") => LevelFilter::Trace,
        Ok("warn") => LevelFilter::Warn,
        Ok("error") => LevelFilter::Error,
        Ok("off") => LevelFilter::Off,
        _ => LevelFilter::Info,
    };
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

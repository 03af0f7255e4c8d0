//! What the demo tells: one line per step as it happens (text), or one JSON document at the
//! end (`--json`).

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Timeline {
    start: Instant,
    text: bool,
    steps: Vec<Value>,
}

impl Timeline {
    /// `text`: print each step as it happens; otherwise stay quiet until [`Timeline::json`].
    pub fn new(text: bool) -> Self {
        Timeline {
            start: Instant::now(),
            text,
            steps: Vec::new(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records a step: a short line for people, `data` for machines.
    pub fn step(&mut self, step: &str, line: &str, data: Value) {
        let t = self.start.elapsed();
        if self.text {
            println!("[{:6.2}s] {step:<8} {line}", t.as_secs_f64());
            let _ = std::io::stdout().flush();
        }
        self.steps.push(json!({
            "step": step,
            "t_ms": t.as_millis() as u64,
            "text": line,
            "data": data,
        }));
    }

    /// Indented detail lines under the last step (text only).
    pub fn detail(&self, lines: &[String]) {
        if self.text {
            for l in lines {
                println!("{:20}{l}", "");
            }
        }
    }

    pub fn steps(&self) -> &[Value] {
        &self.steps
    }

    /// The data of the `nth` step called `name` (0 for the first), or null when there is none.
    pub fn data(&self, name: &str, nth: usize) -> Value {
        self.steps
            .iter()
            .filter(|s| s["step"] == name)
            .nth(nth)
            .map(|s| s["data"].clone())
            .unwrap_or_default()
    }

    /// The whole run as one JSON document.
    pub fn json(&self, outcome: Value) -> Value {
        json!({
            "steps": self.steps,
            "wall_ms": self.start.elapsed().as_millis() as u64,
            "outcome": outcome,
        })
    }
}

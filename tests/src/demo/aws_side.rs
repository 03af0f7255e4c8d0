//! The client of tests/demo/aws_side.py: one Python process holding boto3 clients for the local
//! moto, spoken to in JSON lines (a request per line, an answer per line).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout};

use serde_json::Value;

use super::py::Py;

pub struct AwsSide {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl AwsSide {
    pub fn start(py: &Py, log: &Path) -> std::io::Result<Self> {
        let (child, stdin, stdout) = py.spawn("aws_side.py", &[], log)?;
        Ok(AwsSide {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
        })
    }

    /// Runs `op` with `args` (a JSON object); the answer's `ok` value, or its error line.
    pub fn call(&mut self, op: &str, args: Value) -> Result<Value, String> {
        let mut request = match args {
            Value::Object(map) => map,
            Value::Null => Default::default(),
            other => return Err(format!("{op}: arguments must be an object, not {other}")),
        };
        request.insert("op".into(), Value::String(op.into()));
        let stdin = self.stdin.as_mut().ok_or("the AWS side is closed")?;
        writeln!(stdin, "{}", Value::Object(request))
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("{op}: cannot write to the AWS side: {e}"))?;
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => return Err(format!("{op}: the AWS side exited (see its log)")),
            Err(e) => return Err(format!("{op}: cannot read the AWS side: {e}")),
            Ok(_) => {}
        }
        let mut answer: Value = serde_json::from_str(&line)
            .map_err(|e| format!("{op}: unreadable answer {line:?}: {e}"))?;
        if let Some(error) = answer.get("error").and_then(Value::as_str) {
            return Err(format!("{op}: {error}"));
        }
        Ok(answer["ok"].take())
    }
}

impl Drop for AwsSide {
    fn drop(&mut self) {
        // Closing stdin ends its loop; kill in case it is stuck in a call.
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

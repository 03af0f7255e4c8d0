//! Starting the demo's Python helpers (tests/demo/*.py) from the venv, aimed at the local moto.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub struct Py {
    pub python: PathBuf,
    /// tests/demo
    pub dir: PathBuf,
    /// The moto endpoint, fake credentials, a region, IMDS off.
    pub aws_env: Vec<(&'static str, String)>,
}

impl Py {
    /// Spawns `script` with stdin and stdout piped and stderr into `log`. The environment is
    /// only PATH and the AWS variables: nothing from the caller's shell (a real profile or
    /// credentials) can reach a client.
    pub fn spawn(
        &self,
        script: &str,
        args: &[&str],
        log: &Path,
    ) -> std::io::Result<(Child, ChildStdin, ChildStdout)> {
        let mut child = Command::new(&self.python)
            .arg(self.dir.join(script))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.aws_env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(log)?)
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        Ok((child, stdin, stdout))
    }
}

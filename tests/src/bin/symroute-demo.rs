//! `make demo`: an ENI attach on a local AWS API (moto) followed through EventBridge, the
//! Lambda, SSM and the host agent to a working ping, on this machine. Needs root.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;
use symroute_testbed::demo::{self, interrupt, Options, StackSource, Timeline};

const USAGE: &str =
    "usage: symroute-demo [--json] [--old-ssm-agent] [--stack sam|cdk] [--dist DIR] [--lambda PATH]

  --json           one JSON document on stdout instead of the timeline
  --old-ssm-agent  the instance's SSM Agent predates 3.3.2746.0: parameters reach the document
                   as substituted text, not SSM_<name> variables (AWS's documented fallback)
  --stack sam|cdk  deploy the SAM template (default) or the CDK construct's example app
                   (`make cdk-build` first; `make demo STACK=cdk` does both)
  --dist DIR       the agent as `make agent` builds it (default: dist/agent of this checkout)
  --lambda PATH    the symroute-lambda binary (default: next to this program)";

fn main() -> ExitCode {
    let repo = symroute_testbed::repo_root();
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let mut opts = Options::for_checkout(repo, &exe_dir);
    let mut json_out = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json_out = true,
            "--old-ssm-agent" => opts.ssm_agent = "old".into(),
            "--stack" => {
                opts.stack = match args.next().as_deref() {
                    Some("sam") => StackSource::Sam,
                    Some("cdk") => StackSource::Cdk,
                    other => {
                        eprintln!(
                            "symroute-demo: --stack takes sam or cdk, got {other:?}\n{USAGE}"
                        );
                        return ExitCode::from(2);
                    }
                };
            }
            "--dist" | "--lambda" => {
                let Some(value) = args.next() else {
                    eprintln!("symroute-demo: {arg} needs a value\n{USAGE}");
                    return ExitCode::from(2);
                };
                if arg == "--dist" {
                    opts.dist = PathBuf::from(value);
                } else {
                    opts.lambda = PathBuf::from(value);
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("symroute-demo: unknown argument {arg:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "symroute-demo: needs root (it creates network namespaces); try `sudo make demo`"
        );
        return ExitCode::from(2);
    }
    if let Err(e) = interrupt::install() {
        eprintln!("symroute-demo: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let mut tl = Timeline::new(!json_out);
    let result = demo::run(&opts, &mut tl);
    let wall = tl.elapsed();
    match result {
        Ok(summary) => {
            if json_out {
                let outcome = json!({
                    "ok": true,
                    "attach_to_ping_ms": summary.attach_to_ping.as_millis() as u64,
                    "event_to_ping_ms": summary.event_to_ping.as_millis() as u64,
                });
                println!("{}", tl.json(outcome));
            } else {
                println!(
                    "ok: attach call -> first reply {:.2} s; whole demo {:.1} s",
                    summary.attach_to_ping.as_secs_f64(),
                    wall.as_secs_f64()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json_out {
                let outcome = json!({"ok": false, "failed_step": e.step, "error": e.message});
                println!("{}", tl.json(outcome));
            }
            eprintln!("symroute-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

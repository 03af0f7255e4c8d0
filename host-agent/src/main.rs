use std::process::ExitCode;

use clap::Parser;
use symroute_agent::cli::{Cli, Command};
use symroute_agent::{commands, logger};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logger::init();
    let json = match &cli.command {
        Command::Apply(a) => a.json,
        Command::Remove(a) => a.json,
        Command::Status(a) => a.json,
    };
    let report = commands::run(&cli.command);
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if let Some(e) = &report.error {
        eprintln!("symroute: error: {e}");
    }
    ExitCode::from(report.exit_code)
}

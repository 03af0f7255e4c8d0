use std::process::ExitCode;

use clap::Parser;
use symroute_agent::cli::Cli;
use symroute_agent::{commands, logger};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logger::init();
    let report = commands::run(&cli.command);
    if cli.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if let Some(e) = &report.error {
        eprintln!("symroute: error: {e}");
    }
    ExitCode::from(report.exit_code)
}

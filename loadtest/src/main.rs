//! `loadtest`: simulated video players against playstate nodes on this machine.
//!
//! See README.md for the scenarios, options and how to read the report.

use std::process::ExitCode;

use clap::Parser;

use loadtest::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.scenario.common().json.clone();
    // An interrupted run stops sending and still reports what it measured.
    loadtest::catch_interrupt();
    let summary = loadtest::run(cli)?;
    print!("{}", loadtest::render(&summary));
    if let Some(path) = &json {
        loadtest::write_json(&summary, path)?;
    }
    Ok(())
}

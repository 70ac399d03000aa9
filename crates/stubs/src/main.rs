//! `stubs`: the marketplace in one process (`stubs up`, the default) or one service per process
//! (`stubs serve SERVICE`).

use std::process::ExitCode;

use clap::Parser;

use stubs::cli::Cli;

fn main() -> ExitCode {
    let command = Cli::parse().into_command();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("stubs: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(stubs::run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("stubs: {err:#}");
            ExitCode::FAILURE
        }
    }
}

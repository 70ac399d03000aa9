//! `loadgen`: drives a running Stubs marketplace and checks its invariants. Exit status 0 when
//! every invariant held, 1 when one failed, 2 when the run could not take place.

use std::process::ExitCode;

use clap::Parser;
use loadgen::Settings;

fn main() -> ExitCode {
    let settings = Settings::parse();
    let json = settings.json;
    let runtime = match runtime(settings.threads) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("loadgen: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let report = match runtime.block_on(loadgen::run(settings)) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("loadgen: {err:#}");
            return ExitCode::from(2);
        }
    };
    if json {
        // The scenarios' tables went to stderr as each finished; the verdicts follow them.
        eprint!("{}", loadgen::report::render_invariants(&report));
        match serde_json::to_string_pretty(&report) {
            Ok(document) => println!("{document}"),
            Err(err) => {
                eprintln!("loadgen: cannot write the report as JSON: {err}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", loadgen::report::render(&report));
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One thread by default: on a small machine shared with the marketplace, a single-threaded
/// client spends less CPU on waking threads than a work-stealing pool, leaving more to the
/// server under test.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

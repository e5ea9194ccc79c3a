//! `fota`: the server and the operator CLI. Parses the command line, runs the command,
//! and reports a failure as one `error: ...` line on stderr: exit status 2 for usage errors,
//! 1 for everything else.

use clap::Parser as _;
use fota_cli::{self as cli, Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::report_usage_error(&e),
    };
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::report_error(&e),
    }
}

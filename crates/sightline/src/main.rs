//! The `sightline` command: parses arguments and hands over to [`sightline::app`] or the CLI.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = sightline::cli::Cli::parse();
    sightline::cli::run(cli)
}

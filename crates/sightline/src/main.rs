//! The `sightline` command: parses arguments and hands over to [`sightline::app`] or the CLI.

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = sightline::cli::Cli::parse();
    sightline::cli::run(cli)
}

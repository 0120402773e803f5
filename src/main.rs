//! `fractalic-publisher`: parse the command line, run it, exit with its documented code.

use clap::Parser;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match fractalic_publisher::cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => std::process::exit(fractalic_publisher::run::usage_error(e, &args)),
    };
    std::process::exit(fractalic_publisher::run::run(cli));
}

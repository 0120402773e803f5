//! `fractalic-publisher`: parse the command line, run it, exit with its documented code.

use clap::Parser;

fn main() {
    let cli = fractalic_publisher::cli::Cli::parse();
    std::process::exit(fractalic_publisher::run::run(cli));
}

//! Dispatches a parsed command line; the one place that prints results and fatal errors.

use crate::cli::{Cli, Command};
use crate::deploy;
use crate::error::{exit, Error, Result};
use crate::plugin::{self, host::Host, Plugin, PluginInfo};
use crate::progress::Progress;
use std::sync::Arc;

/// Runs the command and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    crate::cleanup::install_handler();
    let json = wants_json(&cli.command);
    match dispatch(&cli) {
        Ok(()) => exit::OK,
        Err(e) => {
            if json {
                println!("{}", deploy::render_json_error(&e));
            } else {
                eprintln!("error: {e}");
            }
            e.exit_code()
        }
    }
}

fn wants_json(c: &Command) -> bool {
    match c {
        Command::Deploy(a) => a.json,
        Command::List(j) => j.json,
        Command::Info { json, .. } => json.json,
        Command::Badges { .. } => false,
    }
}

fn load_infos(cli: &Cli) -> Result<Vec<PluginInfo>> {
    let dirs = plugin::search_dirs(cli.plugins_dir.as_deref());
    let host = Arc::new(Host::new(Progress::lines(), None));
    plugin::available(&dirs)
        .into_iter()
        .map(|src| Plugin::load(src, Arc::clone(&host))?.info())
        .collect()
}

fn load_info(cli: &Cli, name: &str) -> Result<PluginInfo> {
    let dirs = plugin::search_dirs(cli.plugins_dir.as_deref());
    let host = Arc::new(Host::new(Progress::lines(), None));
    Plugin::load(plugin::find(name, &dirs)?, host)?.info()
}

fn dispatch(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Deploy(args) => {
            let progress = Progress::stderr(args.quiet || args.json);
            let report = deploy::deploy(
                cli.docker.as_deref(),
                cli.plugins_dir.as_deref(),
                args,
                progress,
            )?;
            if args.json {
                println!("{}", deploy::render_json(&report));
            } else {
                print!("{}", deploy::render_text(&report));
            }
            Ok(())
        }
        Command::List(j) => {
            let infos = load_infos(cli)?;
            if j.json {
                println!("{}", to_json(&infos)?);
            } else {
                println!(
                    "{:<20} {:<9} {:<10} DESCRIPTION",
                    "PLUGIN", "VERSION", "DIFFICULTY"
                );
                for i in &infos {
                    println!(
                        "{:<20} {:<9} {:<10} {}",
                        i.name, i.version, i.difficulty, i.description
                    );
                }
            }
            Ok(())
        }
        Command::Info { plugin, json } => {
            let i = load_info(cli, plugin)?;
            if json.json {
                println!("{}", to_json(&i)?);
            } else {
                println!("Name:         {}", i.name);
                println!("Display name: {}", i.display_name);
                println!("Description:  {}", i.description);
                println!("Version:      {}", i.version);
                println!("Capabilities: {}", i.capabilities.join(", "));
                println!("Difficulty:   {}", i.difficulty);
                println!("Deploy time:  {}", i.deploy_time);
                if !i.homepage.is_empty() {
                    println!("Homepage:     {}", i.homepage);
                }
                println!("Source:       {}", i.source);
            }
            Ok(())
        }
        Command::Badges { plugin } => {
            let infos = match plugin {
                Some(p) => vec![load_info(cli, p)?],
                None => load_infos(cli)?,
            };
            for i in infos {
                println!("{}", badge(&i));
            }
            Ok(())
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| Error::failed(format!("cannot encode JSON: {e}")))
}

/// A shields.io markdown badge for README files, as the original CLI printed.
pub fn badge(i: &PluginInfo) -> String {
    let label = if i.display_name.is_empty() {
        &i.name
    } else {
        &i.display_name
    };
    let enc = |s: &str| s.replace('-', "--").replace('_', "__").replace(' ', "%20");
    format!(
        "[![Deploy with {label}](https://img.shields.io/badge/deploy-{}-blue)](https://github.com/fractalic-ai/fractalic#deploy-with-{})",
        enc(label),
        i.name
    )
}

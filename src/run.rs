//! Dispatches a parsed command line; the one place that prints results and fatal errors.

use crate::cli::{Cli, Command, DoctorArgs};
use crate::config;
use crate::deploy;
use crate::deploy_file;
use crate::error::{exit, Error, Result};
use crate::manage::{self, Manager};
use crate::plugin::{self, host::Host, Plugin, PluginInfo};
use crate::progress::Progress;
use std::sync::Arc;

// The printing macros of this module: `println!` and friends panic (exit 101) when the other
// end has gone (`ps --json | head -1`, a wrapper that closed our stderr). The work is done by
// then, so a closed pipe is ignored and the exit code still says how the command went; any
// other failure to write stdout (a full disk) is remembered and makes a successful command
// exit 1 (see `run`).
static STDOUT_FAILED: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn wrote(r: std::io::Result<()>) {
    if let Err(e) = r {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            if let Ok(mut f) = STDOUT_FAILED.lock() {
                f.get_or_insert(e.to_string());
            }
        }
    }
}

macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        wrote(writeln!(std::io::stdout().lock(), $($t)*));
    }};
}
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        wrote(write!(std::io::stdout().lock(), $($t)*));
    }};
}
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

/// Runs the command and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let code = run_command(cli);
    let flushed = {
        use std::io::Write as _;
        std::io::stdout().flush()
    };
    wrote(flushed);
    match STDOUT_FAILED.lock().ok().and_then(|mut f| f.take()) {
        Some(why) if code == exit::OK => {
            errln!("error: the output could not be written to stdout: {why}");
            exit::FAILED
        }
        _ => code,
    }
}

fn run_command(cli: Cli) -> i32 {
    use crate::cleanup::{self, Output};
    if let Err(e) = crate::docker::set_context(cli.context.as_deref()) {
        if wants_json(&cli.command) {
            outln!("{}", manage::render_json_error(&e));
        } else {
            errln!(
                "error: {}",
                crate::error::terminal_safe(&crate::error::one_line(&e.to_string()))
            );
        }
        return e.exit_code();
    }
    let json = wants_json(&cli.command);
    // `serve` handles its own signals (stop accepting, let deploys finish).
    let serving = matches!(cli.command, Command::Serve(_));
    if !serving {
        cleanup::set_output(match &cli.command {
            _ if !json => Output::Text,
            Command::Deploy(_) => Output::DeployJson,
            _ => Output::Json,
        });
        cleanup::install_handler();
    }
    let result = dispatch(&cli);
    // After an interrupt the work fails as a side effect of the cleanup (its docker calls
    // were stopped); the handler, not that failure, has the last word.
    if !serving {
        cleanup::claim_or_park();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            if json && matches!(cli.command, Command::Deploy(_)) {
                outln!("{}", deploy::render_json_error(&e));
            } else if json {
                outln!("{}", manage::render_json_error(&e));
            } else {
                errln!(
                    "error: {}",
                    crate::error::terminal_safe(&crate::error::one_line(&e.to_string()))
                );
            }
            e.exit_code()
        }
    }
}

/// A command line clap could not parse: help and version are printed as clap prints them;
/// a usage error is printed by clap too, or, when `--json` was given, as one JSON error object
/// on stdout (the shape of the subcommand's other errors). Returns the exit code (2 for a
/// usage error).
pub fn usage_error(e: clap::Error, args: &[std::ffi::OsString]) -> i32 {
    use clap::error::ErrorKind;
    let json = args
        .iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json");
    let informational = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
    if !json || informational {
        let _ = e.print();
        return e.exit_code();
    }
    let rendered = e.render().to_string();
    // clap's message can span lines ("...not provided:\n  <NAME>"): keep all of it up to the
    // usage, on one line, so it names what is missing.
    let message: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect();
    let joined = message.join(" ");
    let joined = joined.strip_prefix("error: ").unwrap_or(&joined);
    let first = if joined.is_empty() {
        "bad command line"
    } else {
        joined.trim_end_matches(':')
    };
    let sub = subcommand_of(args);
    let help = match &sub {
        Some(s) => format!("see `fractalic-publisher {s} --help`"),
        None => "see `fractalic-publisher --help`".to_string(),
    };
    let err = Error::input(first, help);
    let v = if sub.as_deref() == Some("deploy") {
        deploy::render_json_error(&err)
    } else {
        manage::render_json_error(&err)
    };
    outln!("{v}");
    exit::BAD_INPUT
}

/// The first argument that is not a global flag or its value: the subcommand, if any.
fn subcommand_of(args: &[std::ffi::OsString]) -> Option<String> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--docker" || a == "--plugins-dir" || a == "--context" {
            it.next();
        } else if !a.starts_with('-') {
            return Some(a.into_owned());
        }
    }
    None
}

/// `proxy status|up|down`.
fn proxy_command(cli: &Cli, command: &crate::cli::ProxyCommand) -> Result<()> {
    use crate::cli::ProxyCommand as P;
    use crate::proxy::{self, Proxy};
    let d = crate::docker::Docker::locate(cli.docker.as_deref())?;
    let (flag, json) = match command {
        P::Status(j) => (None, j.json),
        P::Up { proxy_image, json } => (proxy_image.as_deref(), json.json),
        P::Down { json, .. } => (None, json.json),
    };
    let p = Proxy::new(&d, proxy::image(flag));
    match command {
        P::Status(_) => {
            let s = p.status()?;
            if json {
                outln!("{}", to_json(&s)?);
                return Ok(());
            }
            outln!("Proxy:   {} ({})", s.name, s.state);
            if let Some(i) = &s.image {
                outln!("Image:   {i}");
            }
            outln!("Network: {}", s.network);
            if s.routes.is_empty() {
                outln!("Routes:  none");
            }
            for r in &s.routes {
                let ups: Vec<String> = r
                    .upstream_health
                    .iter()
                    .map(|(c, ok)| format!("{c} ({})", if *ok { "healthy" } else { "unhealthy" }))
                    .collect();
                outln!(
                    "Route:   {} -> {} [{}]",
                    r.url.as_deref().unwrap_or("-"),
                    r.route.deployment,
                    if ups.is_empty() {
                        "no upstream".to_string()
                    } else {
                        ups.join(", ")
                    }
                );
            }
            Ok(())
        }
        P::Up { .. } | P::Down { .. } => {
            let done = match command {
                P::Down { force, .. } => p.down(*force)?,
                _ => p.ensure_up()?,
            };
            if json {
                outln!("{}", to_json(&serde_json::json!({ "done": done }))?);
            } else if done.is_empty() {
                outln!("nothing to do: the proxy is as it should be");
            } else {
                for line in &done {
                    outln!("{line}");
                }
            }
            Ok(())
        }
    }
}

/// `doctor`: exit 0 when every check passed, 1 otherwise.
fn doctor(cli: &Cli, a: &DoctorArgs) -> Result<i32> {
    let timeout = manage::parse_secs(&a.timeout, "--timeout")?;
    let image = config::production_tag(a.image.as_deref().unwrap_or(config::DEFAULT_IMAGE));
    let report = crate::doctor::run(
        cli.docker.as_deref(),
        cli.plugins_dir.as_deref(),
        &image,
        timeout,
    );
    crate::cleanup::claim_or_park();
    if a.json.json {
        outln!("{}", to_json(&report)?);
    } else {
        out!("{}", crate::doctor::render_text(&report));
    }
    Ok(if report.ok { exit::OK } else { exit::FAILED })
}

fn wants_json(c: &Command) -> bool {
    match c {
        Command::Deploy(a) => a.json,
        Command::List(j) => j.json,
        Command::Info { json, .. } => json.json,
        Command::Badges { .. } => false,
        Command::Plugin {
            command: crate::cli::PluginCommand::Api(j),
        } => j.json,
        Command::Ps(a) => a.json.json,
        Command::Status(a) => a.json.json,
        Command::Stop(a) => a.json.json,
        Command::Logs(_) => false,
        Command::Start(a) => a.json.json,
        Command::Rm(a) => a.json.json,
        Command::Rollback(a) => a.json.json,
        Command::History(a) => a.json.json,
        Command::Doctor(a) => a.json.json,
        Command::Serve(_) => false,
        Command::Completions { .. } | Command::Man => false,
        Command::Proxy { command } => match command {
            crate::cli::ProxyCommand::Status(j) => j.json,
            crate::cli::ProxyCommand::Up { json, .. }
            | crate::cli::ProxyCommand::Down { json, .. } => json.json,
        },
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

/// The one dispatch: every command, one arm each. Returns the exit code of a command that
/// ran to its end (`doctor` and `serve` choose theirs; the others exit 0).
fn dispatch(cli: &Cli) -> Result<i32> {
    let done = match &cli.command {
        Command::Serve(a) => {
            // A socket this user may not open would fail every deploy: say so, and the fix,
            // now. The server has its own signal handling: stop accepting, let deploys finish.
            crate::engine::socket_check()?;
            return crate::server::serve(cli, a);
        }
        Command::Doctor(a) => return doctor(cli, a),
        Command::Deploy(flags) => deploy_command(cli, flags),
        Command::Plugin {
            command: crate::cli::PluginCommand::Api(j),
        } => {
            let docs = crate::plugin::api::reference();
            if j.json {
                outln!("{}", to_json(&crate::plugin::api::render_json(&docs))?);
            } else {
                out!("{}", crate::plugin::api::render_text(&docs));
            }
            Ok(())
        }
        Command::List(j) => {
            let infos = load_infos(cli)?;
            if j.json {
                outln!("{}", to_json(&infos)?);
            } else {
                outln!(
                    "{:<20} {:<9} {:<10} DESCRIPTION",
                    "PLUGIN",
                    "VERSION",
                    "DIFFICULTY"
                );
                for i in &infos {
                    outln!(
                        "{:<20} {:<9} {:<10} {}",
                        i.name,
                        i.version,
                        i.difficulty,
                        i.description
                    );
                }
            }
            Ok(())
        }
        Command::Info { plugin, json } => {
            let i = load_info(cli, plugin)?;
            if json.json {
                outln!("{}", to_json(&i)?);
            } else {
                outln!("Name:         {}", i.name);
                outln!("Display name: {}", i.display_name);
                outln!("Description:  {}", i.description);
                outln!("Version:      {}", i.version);
                outln!("Capabilities: {}", i.capabilities.join(", "));
                outln!("Difficulty:   {}", i.difficulty);
                outln!("Deploy time:  {}", i.deploy_time);
                if !i.homepage.is_empty() {
                    outln!("Homepage:     {}", i.homepage);
                }
                outln!("Source:       {}", i.source);
            }
            Ok(())
        }
        Command::Proxy { command } => proxy_command(cli, command),
        Command::Badges { plugin } => {
            let infos = match plugin {
                Some(p) => vec![load_info(cli, p)?],
                None => load_infos(cli)?,
            };
            for i in infos {
                outln!("{}", badge(&i));
            }
            Ok(())
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(
                *shell,
                &mut cmd,
                "fractalic-publisher",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .map_err(|e| Error::failed(format!("rendering the man page: {e}")))?;
            outln!("{}", String::from_utf8_lossy(&page).trim_end());
            Ok(())
        }
        Command::Ps(a) => {
            let m = manager(cli, a.json.json)?;
            let entries = m.ps(a.all)?;
            // Printed only if no interrupt has taken the last word.
            crate::cleanup::claim_or_park();
            if a.json.json {
                outln!("{}", to_json(&entries)?);
            } else if entries.is_empty() {
                errln!(
                    "no {}deployments; make one with `fractalic-publisher deploy docker-registry ...`",
                    if a.all { "" } else { "running " }
                );
            } else {
                out!("{}", manage::render_ps(&entries));
            }
            Ok(())
        }
        Command::Status(a) => {
            let m = manager(cli, a.json.json)?;
            let v = m.status(&a.name)?;
            // Printed only if no interrupt has taken the last word.
            crate::cleanup::claim_or_park();
            if a.json.json {
                outln!("{}", to_json(&v)?);
            } else {
                out!("{}", manage::render_status(&v));
            }
            Ok(())
        }
        Command::Logs(a) => {
            let m = manager(cli, false)?;
            let text = m.logs(
                &a.name,
                a.tail,
                a.follow,
                a.service.map(crate::cli::Service::as_str),
            )?;
            // Printed only if no interrupt has taken the last word.
            crate::cleanup::claim_or_park();
            out!("{text}");
            Ok(())
        }
        Command::Stop(a) => {
            let m = manager(cli, a.json.json || a.quiet)?;
            let v = m.stop(&a.name)?;
            // Printed only if no interrupt has taken the last word.
            crate::cleanup::claim_or_park();
            if a.json.json {
                outln!("{}", to_json(&v)?);
            } else {
                outln!("Stopped {}.", a.name);
            }
            Ok(())
        }
        Command::Start(a) => {
            let m = manager(cli, a.json.json || a.quiet)?;
            let timeout = manage::parse_secs(&a.timeout, "--timeout")?;
            let v = m.start(&a.name, timeout)?;
            // Printed only if no interrupt has taken the last word.
            crate::cleanup::claim_or_park();
            if a.json.json {
                outln!("{}", to_json(&v)?);
            } else {
                out!("{}", manage::render_start(&v));
            }
            Ok(())
        }
        Command::Rm(a) => {
            let m = manager(cli, a.json.json)?;
            let v = m.rm(&a.name, a.force)?;
            // Printed only if no interrupt has taken the last word.
            crate::cleanup::claim_or_park();
            if a.json.json {
                outln!("{}", to_json(&v)?);
            } else {
                outln!("Removed {}.", a.name);
            }
            Ok(())
        }
        Command::Rollback(a) => {
            let m = manager(cli, a.json.json || a.quiet)?;
            let timeout = manage::parse_secs(&a.timeout, "--timeout")?;
            let wait = crate::lock::parse_wait(&a.lock_wait)?;
            let v = m.rollback(&a.name, a.to.as_deref(), timeout, wait)?;
            // Printed only if no interrupt has taken the last word.
            crate::cleanup::claim_or_park();
            if a.json.json {
                outln!("{}", to_json(&v)?);
            } else {
                outln!(
                    "Rolled {} back to {} ({}, now release {}).",
                    a.name,
                    v["of"].as_str().unwrap_or("?"),
                    v["kind"].as_str().unwrap_or("?"),
                    v["release"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
        Command::History(a) => {
            let m = manager(cli, a.json.json)?;
            let v = m.history(&a.name)?;
            // Printed only if no interrupt has taken the last word.
            crate::cleanup::claim_or_park();
            if a.json.json {
                outln!("{}", to_json(&v)?);
            } else {
                out!("{}", crate::update::render_history(&v));
            }
            Ok(())
        }
    };
    done.map(|()| exit::OK)
}

/// The management commands' plugins, loaded once for the command.
fn manager(cli: &Cli, quiet: bool) -> Result<Manager> {
    Manager::new(cli.docker.as_deref(), cli.plugins_dir.as_deref(), quiet)
}

/// `deploy`: the merged settings, then the plan (`--dry-run`), the settings
/// (`--print-config`) or the deploy itself.
fn deploy_command(cli: &Cli, flags: &crate::cli::DeployFlags) -> Result<()> {
    let merged = deploy_file::merge(flags)?;
    let args = &merged.args;
    if flags.print_config {
        return print_config(cli, &merged);
    }
    let progress = if args.quiet {
        Progress::silent()
    } else if flags.progress != crate::progress::Style::Auto || !args.json {
        Progress::styled(flags.progress)
    } else {
        // --json alone keeps stderr quiet, as before.
        Progress::silent()
    };
    if let Some(f) = &merged.file {
        progress.info(format!("deployment file {}", f.display()));
    }
    if args.dry_run {
        // The plan is the output; the plugin's step messages ("Pulling", "Creating")
        // would say things that do not happen.
        let p = deploy::prepare(
            cli.docker.as_deref(),
            cli.plugins_dir.as_deref(),
            args,
            Progress::silent(),
        )?;
        let plan = deploy::plan(p)?;
        if args.json {
            outln!("{plan}");
        } else {
            out!("{}", deploy::render_plan(&plan));
        }
        return Ok(());
    }
    let report = deploy::deploy(
        cli.docker.as_deref(),
        cli.plugins_dir.as_deref(),
        args,
        progress.clone(),
    );
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            let run_id = progress.run_id();
            let name = args.name.clone();
            progress.fail(
                e.to_string(),
                crate::outcome::failure(&e, name.as_deref(), Some(&run_id)),
            );
            return Err(e);
        }
    };
    crate::cleanup::claim_or_park();
    let outcome = deploy::render_json(&report);
    progress.complete("Fractalic AI Server deployed successfully", outcome.clone());
    if args.json {
        outln!("{outcome}");
    } else {
        out!("{}", deploy::render_text(&report));
    }
    Ok(())
}

/// `deploy --print-config`: the same checks as a deploy (files read, nothing touched, no
/// Docker), then the merged settings with secret values redacted.
fn print_config(cli: &Cli, merged: &deploy_file::Merged) -> Result<()> {
    let cfg = config::deploy_config(&merged.args)?;
    plugin::find(
        &cfg.plugin,
        &plugin::search_dirs(cli.plugins_dir.as_deref()),
    )?;
    for w in &cfg.warnings {
        errln!("warning: {w}");
    }
    let printed = deploy_file::printed(merged, &cfg);
    out!("{}", deploy_file::render(&printed, merged.args.json)?);
    Ok(())
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

//! Command-line flags and subcommands (clap derive only: no I/O here).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Deploy Fractalic AI-workflow scripts into production containers.
#[derive(Debug, Parser)]
#[command(name = "fractalic-publisher", version, about, long_about = None)]
pub struct Cli {
    /// The docker binary to drive (default: $FRACTALIC_PUBLISHER_DOCKER, else `docker` on PATH).
    #[arg(long, global = true, value_name = "PATH")]
    pub docker: Option<PathBuf>,

    /// Extra directory searched first for plugin files (NAME.rhai).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "FRACTALIC_PUBLISHER_PLUGINS"
    )]
    pub plugins_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy a Fractalic script folder with a plugin (e.g. docker-registry).
    Deploy(Box<DeployArgs>),
    /// List the available plugins.
    List(JsonFlag),
    /// Show one plugin's details.
    Info {
        /// Plugin name, e.g. docker-registry.
        plugin: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Print README deploy badges (markdown) for the plugins.
    Badges {
        /// Only this plugin's badge.
        plugin: Option<String>,
    },
    /// List the deployments made by this tool (running ones; --all: stopped ones too).
    Ps(PsArgs),
    /// Show one deployment: state, live health, URL, image, port, script.
    Status(NameArgs),
    /// Print a deployment's logs (docker's stdout/stderr, or one service's log file).
    Logs(LogsArgs),
    /// Stop a deployment (it keeps its container, config and port).
    Stop(StopArgs),
    /// Start a stopped deployment again and wait until it is healthy.
    Start(StartArgs),
    /// Remove a deployment's container (--force for a running one).
    Rm(RmArgs),
    /// Check step by step that this host can run deployments, with a hint for each failure.
    Doctor(DoctorArgs),
}

/// `ps` flags.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Also list stopped deployments.
    #[arg(long, short)]
    pub all: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// A deployment name (its container name) and `--json`.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// The deployment's container name (see `fractalic-publisher ps`).
    pub name: String,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// Which log `logs --service` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Service {
    /// The AI server (port 8001).
    #[value(name = "ai_server")]
    AiServer,
    /// The MCP manager (port 5859, internal).
    #[value(name = "mcp_manager")]
    McpManager,
    /// The backend (port 8000, internal).
    #[value(name = "backend")]
    Backend,
}

impl Service {
    /// The name plugins see (the supervisord program name).
    pub fn as_str(self) -> &'static str {
        match self {
            Service::AiServer => "ai_server",
            Service::McpManager => "mcp_manager",
            Service::Backend => "backend",
        }
    }
}

/// `logs` flags.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The deployment's container name.
    pub name: String,
    /// Only the last N lines (default: all).
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<u32>,
    /// Keep printing new lines until interrupted (Ctrl-C); has no deadline by nature.
    #[arg(long, short)]
    pub follow: bool,
    /// Show this service's own log file inside the container instead of `docker logs`.
    #[arg(long, value_enum)]
    pub service: Option<Service>,
}

/// `start` flags.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The deployment's container name.
    pub name: String,
    /// Seconds to wait for the services to become healthy.
    #[arg(long, default_value = "60", value_name = "SECS")]
    pub timeout: String,
    #[command(flatten)]
    pub json: JsonFlag,
    /// No progress output (the result still goes to stdout).
    #[arg(long, short)]
    pub quiet: bool,
}

/// `stop` flags.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// The deployment's container name (see `fractalic-publisher ps`).
    pub name: String,
    #[command(flatten)]
    pub json: JsonFlag,
    /// No progress output (the result still goes to stdout).
    #[arg(long, short)]
    pub quiet: bool,
}

/// `rm` flags.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The deployment's container name.
    pub name: String,
    /// Remove it even if it is running.
    #[arg(long, short)]
    pub force: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// `doctor` flags.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Image to check (default: the deploy default, ghcr.io/fractalic-ai/fractalic:latest-production).
    #[arg(long)]
    pub image: Option<String>,
    /// Seconds to wait for the throwaway container's services.
    #[arg(long, default_value = "60", value_name = "SECS")]
    pub timeout: String,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// `--json`: print one JSON document on stdout instead of text.
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct JsonFlag {
    /// Print JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// When to pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// Pull every time; a cached image is still used when the pull fails.
    Always,
    /// Pull only when the image is not cached.
    Missing,
    /// Never pull; the image must be cached.
    Never,
}

impl PullPolicy {
    /// The flag value, as plugins see it.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "always",
            PullPolicy::Missing => "missing",
            PullPolicy::Never => "never",
        }
    }
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Plugin (deployment target), e.g. docker-registry.
    pub plugin: String,

    /// The script to serve: its main file is SCRIPT.md (or .py, .sh, .txt, then SCRIPT.*).
    #[arg(long, value_name = "SCRIPT")]
    pub script_name: String,

    /// Folder holding the script and its files.
    #[arg(long, value_name = "DIR")]
    pub script_folder: PathBuf,

    /// Container name (default: fractalic-<script-name>).
    #[arg(long)]
    pub name: Option<String>,

    /// Image to deploy (default: ghcr.io/fractalic-ai/fractalic:latest-production).
    #[arg(long)]
    pub image: Option<String>,

    /// Image platform, e.g. linux/amd64 (default: from the host).
    #[arg(long)]
    pub platform: Option<String>,

    /// Host port: exactly this one, or an error (default: 8001 or the next free one).
    #[arg(long)]
    pub port: Option<String>,

    /// Host address the port is published on.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub bind: String,

    /// Environment variable for the container (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,

    /// File of K=V lines for the container's environment.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,

    /// Extra glob of files to leave out of the payload (repeatable).
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// When to pull the image.
    #[arg(long, value_enum, default_value_t = PullPolicy::Always)]
    pub pull: PullPolicy,

    /// Seconds to wait for the services to become healthy.
    #[arg(long, default_value = "60", value_name = "SECS")]
    pub timeout: String,

    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,

    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

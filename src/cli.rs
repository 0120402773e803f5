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

    /// The docker context every docker call uses (`docker --context NAME ...`; default: the
    /// CLI's own choice: DOCKER_HOST, DOCKER_CONTEXT or `docker context use`).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// Extra directory searched first for plugin files (NAME.rhai).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "FRACTALIC_PUBLISHER_PLUGINS"
    )]
    pub plugins_dir: Option<PathBuf>,

    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy a Fractalic script folder with a plugin (e.g. docker-registry); flags may come
    /// from a deployment file (fractalic-publish.toml).
    Deploy(Box<DeployFlags>),
    /// List the available plugins.
    List(JsonFlag),
    /// Show one plugin's details.
    Info {
        /// Plugin name, e.g. docker-registry.
        plugin: String,
        /// `--json`.
        #[command(flatten)]
        json: JsonFlag,
    },
    /// About writing plugins: `plugin api` prints the plugin API reference (entry points and
    /// host functions), generated from the host functions' registration.
    Plugin {
        /// What to do about plugins.
        #[command(subcommand)]
        command: PluginCommand,
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
    /// Go back to the previous release of a deployment (or the one given with --to).
    Rollback(RollbackArgs),
    /// List a deployment's releases: time, payload hash, image digest, changes, outcome.
    History(NameArgs),
    /// Check step by step that this host can run deployments, with a hint for each failure.
    Doctor(DoctorArgs),
    /// Serve the REST API (and live deploy progress as Server-Sent Events) over HTTP.
    Serve(ServeArgs),
    /// The shared front proxy (Caddy) that `--proxy` deployments are served through.
    Proxy {
        /// What to do with the proxy.
        #[command(subcommand)]
        command: ProxyCommand,
    },
    /// Print a shell completion script, e.g. `fractalic-publisher completions bash`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, e.g. `fractalic-publisher man > fractalic-publisher.1`.
    Man,
}

/// `plugin` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Print the plugin API reference (Markdown; docs/plugin-api.md's generated block is this output).
    Api(JsonFlag),
}

/// `proxy` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Show the proxy container, its routes and the health of their upstreams.
    Status(JsonFlag),
    /// Start the proxy (create it if missing) and apply every route Docker's state calls for.
    Up {
        /// The proxy image (default: $FRACTALIC_PUBLISHER_PROXY_IMAGE, else caddy:2).
        #[arg(long, value_name = "IMAGE")]
        proxy_image: Option<String>,
        /// `--json`.
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove the proxy container (refused while deployments use it, unless --force).
    Down {
        /// Remove it even though deployments are routed through it.
        #[arg(long)]
        force: bool,
        /// `--json`.
        #[command(flatten)]
        json: JsonFlag,
    },
}

/// `serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on (port 0: any free port; the line printed says which).
    #[arg(long, default_value = "127.0.0.1:8090", value_name = "ADDR:PORT")]
    pub listen: String,
    /// A request's script_folder must lie inside one of these (repeatable; default: the
    /// working directory). A relative script_folder resolves against the first.
    #[arg(long = "root", value_name = "DIR")]
    pub roots: Vec<PathBuf>,
    /// File holding the bearer token every /api request must send (or set
    /// FRACTALIC_PUBLISHER_TOKEN). Required when listening on anything but loopback.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Browser origin allowed to call the API (CORS), e.g. http://localhost:3000 (repeatable).
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// Deploys that may run at once; more get 429.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_deploys: u16,
    /// The Fractalic backend (http://HOST:PORT): every request serve has no route for is
    /// forwarded there, streamed both ways, so the UI's one backend URL can point at serve.
    #[arg(long, value_name = "URL")]
    pub backend: Option<String>,
    /// `token` (default): /api needs the bearer token when one is set, and listening off
    /// loopback needs one. `none`: no token at all, also off loopback (for the container layout;
    /// publish the port on the host's loopback only), logged as a WARNING at start.
    #[arg(long, value_enum, default_value_t = Auth::Token)]
    pub auth: Auth,
}

/// `serve --auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Auth {
    /// A bearer token for /api (required off loopback).
    Token,
    /// No token, on purpose (the Fractalic UI cannot send one).
    None,
}

/// `ps` flags.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Also list stopped deployments.
    #[arg(long, short)]
    pub all: bool,
    /// `--json`.
    #[command(flatten)]
    pub json: JsonFlag,
}

/// A deployment name (its container name) and `--json`.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// The deployment's container name (see `fractalic-publisher ps`).
    pub name: String,
    /// `--json`.
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
    /// `--json`.
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
    /// `--json`.
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
    /// `--json`.
    #[command(flatten)]
    pub json: JsonFlag,
}

/// `rollback` flags.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The deployment's container name.
    pub name: String,
    /// The release to go back to (e.g. r3 or 3; see `fractalic-publisher history NAME`).
    #[arg(long, value_name = "RELEASE")]
    pub to: Option<String>,
    /// Seconds to wait for the services to become healthy.
    #[arg(long, default_value = "60", value_name = "SECS")]
    pub timeout: String,
    /// Seconds to wait for another command holding this deployment's lock (0: fail at once).
    #[arg(long, default_value = "0", value_name = "SECS")]
    pub lock_wait: String,
    /// `--json`.
    #[command(flatten)]
    pub json: JsonFlag,
    /// No progress output (the result still goes to stdout).
    #[arg(long, short)]
    pub quiet: bool,
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
    /// `--json`.
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
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    #[default]
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

/// `--bind` when neither the command line nor the deployment file gives one.
pub const DEFAULT_BIND: &str = "127.0.0.1";
/// `--replicas` when neither the command line nor the deployment file gives one.
pub const DEFAULT_REPLICAS: u32 = 1;
/// `--registry` when neither the command line nor the deployment file gives one.
pub const DEFAULT_REGISTRY: &str = "127.0.0.1:5000";
/// `--publish-mode` when neither the command line nor the deployment file gives one.
pub const DEFAULT_PUBLISH_MODE: &str = "ingress";

/// `--timeout` (seconds) when neither the command line nor the deployment file gives one.
pub const DEFAULT_TIMEOUT: u64 = 60;

/// `deploy` as typed: every setting optional, because the deployment file (see
/// [`crate::deploy_file`]) may give it; defaults are applied after merging, so a default never
/// overrides the file. The `[default: ...]` texts must match [`DeployArgs::default`].
#[derive(Debug, Args, Default)]
pub struct DeployFlags {
    /// Plugin (deployment target), e.g. docker-registry; may be `plugin` in the deployment file.
    pub plugin: Option<String>,

    /// Deployment file to read [default: fractalic-publish.toml in the script folder, else in
    /// the project root].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the merged settings (file + flags, secrets redacted) and exit; deploys nothing.
    #[arg(long)]
    pub print_config: bool,

    /// The script to serve: its main file is SCRIPT.md (or .py, .sh, .txt, then SCRIPT.*).
    #[arg(long, value_name = "SCRIPT")]
    pub script_name: Option<String>,

    /// Folder holding the script and its files.
    #[arg(long, value_name = "DIR")]
    pub script_folder: Option<PathBuf>,

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

    /// Host address the port is published on [default: 127.0.0.1].
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,

    /// Environment variable for the container (repeatable; wins over the file's per name).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,

    /// File of K=V lines for the container's environment.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,

    /// Glob of files to take into the payload (repeatable) [default: *].
    #[arg(long = "include", value_name = "GLOB")]
    pub include: Vec<String>,

    /// Extra glob of files to leave out of the payload (repeatable).
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// When to pull the image [default: always].
    #[arg(long, value_enum)]
    pub pull: Option<PullPolicy>,

    /// Seconds to wait for the services to become healthy [default: 60].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<String>,

    /// Tasks to run, 1 to 100 (platforms that run several, e.g. docker-swarm) [default: 1].
    #[arg(long, value_name = "N")]
    pub replicas: Option<String>,

    /// Registry HOST:PORT a baked image is pushed to (docker-swarm) [default: 127.0.0.1:5000].
    #[arg(long, value_name = "HOST:PORT")]
    pub registry: Option<String>,

    /// How docker-swarm publishes the port: ingress (routing mesh, the production default) or
    /// host (each task on its node's own port; for engines without the routing mesh)
    /// [default: ingress].
    #[arg(long, value_name = "MODE")]
    pub publish_mode: Option<String>,

    /// docker-swarm placement preference: spread=node.labels.KEY (or engine.labels.KEY) spreads
    /// the tasks evenly over the values of that node label; none drops a preference set before
    /// [default: Swarm's own spread over nodes, the node with the fewest tasks first; an update
    /// keeps what the service has].
    #[arg(long, value_name = "PREF")]
    pub placement_pref: Option<String>,

    /// docker-swarm: at most N tasks on any one node, 0 to 100; 0 is no limit [default: 0 (no
    /// limit); an update keeps what the service has].
    #[arg(long, value_name = "N")]
    pub max_replicas_per_node: Option<String>,

    /// Serve the deployment through the shared front proxy (see `proxy status`): it publishes
    /// no port itself, the proxy listens on its host port (and --domain) and routes to the
    /// live container, so every update switches the route with no failed request. A redeploy
    /// without --proxy/--no-proxy keeps what the deployment has.
    #[arg(long, overrides_with = "no_proxy")]
    pub proxy: bool,

    /// Move a proxied deployment back to publishing its own port.
    #[arg(long, overrides_with = "proxy")]
    pub no_proxy: bool,

    /// Host name the proxy routes to this deployment (implies --proxy).
    #[arg(long, value_name = "HOST")]
    pub domain: Option<String>,

    /// HTTPS at the proxy (implies --proxy): none, internal (Caddy's own CA; `status` prints
    /// its certificate), acme (certificates for --domain from an ACME CA), files (--tls-cert
    /// and --tls-key) [default: none].
    #[arg(long, value_name = "MODE")]
    pub tls: Option<String>,

    /// PEM certificate (chain) for --tls files.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls files (handed to the proxy as a file of its own, never on a
    /// command line or in output).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,

    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,

    /// Progress on stderr: auto (a bar on a terminal, else lines), plain, json (one event
    /// object per line, the REST API's event type) or none.
    #[arg(long, value_enum, default_value_t = crate::progress::Style::Auto, value_name = "STYLE")]
    pub progress: crate::progress::Style,

    /// Seconds to wait for another command holding this deployment's lock (0: fail at once,
    /// exit 2, naming the holder) [default: 0].
    #[arg(long, value_name = "SECS")]
    pub lock_wait: Option<String>,

    /// Print the plan (create or update; in place or by a new container, and why; what
    /// changed; port; image) worked out by the deploy's own code, and change nothing: no
    /// container, release, lock or journal; the image is only looked up, never pulled.
    #[arg(long)]
    pub dry_run: bool,
}

/// One variable for the container, parsed where it entered (an `--env K=V`, the deployment
/// file's `[environment]`, a request's `env_vars`): its name is a valid variable name and its
/// value one line. `origin` says where it came from, for errors (the value is a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    /// The variable's name.
    pub key: String,
    /// Its value (a secret: never printed).
    pub value: String,
    /// Where it was given, e.g. `--env #2`.
    pub origin: String,
}

/// A complete deploy request: the command line merged with the deployment file
/// ([`crate::deploy_file::merge`]), a REST body, or built in code (`DeployArgs { plugin,
/// script_name, script_folder, ..Default::default() }`). Numbers, durations and the
/// environment are parsed where they entered; [`crate::config::deploy_config`] checks what
/// needs the host (names, folder, image, port in use).
#[derive(Debug, Clone)]
pub struct DeployArgs {
    /// Plugin (deployment target), e.g. docker-registry.
    pub plugin: String,
    /// The script to serve: its main file is SCRIPT.md (or .py, .sh, .txt, then SCRIPT.*).
    pub script_name: String,
    /// Folder holding the script and its files.
    pub script_folder: PathBuf,
    /// Container name (default: fractalic-<script-name>).
    pub name: Option<String>,
    /// Image to deploy (default: [`crate::config::DEFAULT_IMAGE`]).
    pub image: Option<String>,
    /// Image platform (default: from the host).
    pub platform: Option<String>,
    /// Exact host port, 1 to 65535 (default: 8001 or the next free one).
    pub port: Option<u16>,
    /// Host address the port is published on.
    pub bind: String,
    /// Variables for the container (values are secrets); later ones win.
    pub env: Vec<EnvVar>,
    /// File of K=V lines, read before `env`.
    pub env_file: Option<PathBuf>,
    /// Globs of files to take (`include_files`); empty means everything, like `["*"]`.
    pub include: Vec<String>,
    /// Globs to leave out, on top of [`crate::payload::DEFAULT_EXCLUDES`].
    pub exclude: Vec<String>,
    /// When to pull the image.
    pub pull: PullPolicy,
    /// How long to wait for the services to become healthy (1 s to 1 h).
    pub timeout: std::time::Duration,
    /// Tasks to run (platforms that run several), 1 to 100.
    pub replicas: u32,
    /// Registry HOST:PORT a baked image is pushed to.
    pub registry: String,
    /// `ingress` or `host`.
    pub publish_mode: String,
    /// `--placement-pref` (None: not given; an update keeps the service's).
    pub placement_pref: Option<String>,
    /// `--max-replicas-per-node` (None: not given; an update keeps the service's).
    pub max_replicas_per_node: Option<u32>,
    /// Served through the front proxy (None: as the deployment is, else not).
    pub proxy: Option<bool>,
    /// Host name routed by the proxy.
    pub domain: Option<String>,
    /// The proxy's TLS mode (`none`, `internal`, `acme`, `files`).
    pub tls: Option<String>,
    /// The certificate file for `tls = files`.
    pub tls_cert: Option<PathBuf>,
    /// The key file for `tls = files`.
    pub tls_key: Option<PathBuf>,
    /// Print one JSON object on stdout instead of text.
    pub json: bool,
    /// No progress output.
    pub quiet: bool,
    /// How long to wait for the deployment's lock (`--lock-wait`; zero: fail at once).
    pub lock_wait: std::time::Duration,
    /// `--dry-run`: work out the plan and change nothing ([`crate::deploy::plan`]).
    pub dry_run: bool,
    /// Set by the REST API to the `--root` the script folder lies in: the project-root search
    /// (for settings.toml and mcp_servers.json) stays inside it, with no working-directory or
    /// install-location fallback, so the server's own files never reach a deployment.
    pub confine: Option<PathBuf>,
}

impl Default for DeployArgs {
    /// The documented defaults; `plugin`, `script_name` and `script_folder` are empty and must
    /// be set.
    fn default() -> Self {
        DeployArgs {
            plugin: String::new(),
            script_name: String::new(),
            script_folder: PathBuf::new(),
            name: None,
            image: None,
            platform: None,
            port: None,
            bind: DEFAULT_BIND.to_string(),
            env: Vec::new(),
            env_file: None,
            include: vec!["*".to_string()],
            exclude: Vec::new(),
            pull: PullPolicy::default(),
            timeout: std::time::Duration::from_secs(DEFAULT_TIMEOUT),
            replicas: DEFAULT_REPLICAS,
            registry: DEFAULT_REGISTRY.to_string(),
            publish_mode: DEFAULT_PUBLISH_MODE.to_string(),
            placement_pref: None,
            max_replicas_per_node: None,
            proxy: None,
            domain: None,
            tls: None,
            tls_cert: None,
            tls_key: None,
            json: false,
            quiet: false,
            lock_wait: std::time::Duration::ZERO,
            dry_run: false,
            confine: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn deploy_help_shows_the_defaults_applied_after_merging() {
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("deploy")
            .unwrap()
            .render_long_help()
            .to_string();
        let d = DeployArgs::default();
        for shown in [
            format!("[default: {}]", d.bind),
            format!("[default: {}]", d.timeout.as_secs()),
            format!("[default: {}]", d.pull.as_str()),
            format!("[default: {}]", d.include.join(",")),
            format!("[default: {}]", d.replicas),
            format!("[default: {}]", d.registry),
            format!("[default: {}]", d.publish_mode),
        ] {
            assert!(help.contains(&shown), "{shown} missing from:\n{help}");
        }
    }

    #[test]
    fn deploy_settings_are_optional_on_the_command_line() {
        let cli = Cli::try_parse_from(["fp", "deploy", "--print-config"]).unwrap();
        let Command::Deploy(f) = cli.command else {
            panic!("not deploy")
        };
        assert!(f.plugin.is_none() && f.script_name.is_none() && f.script_folder.is_none());
        assert!(f.bind.is_none() && f.timeout.is_none() && f.pull.is_none());
        Cli::command().debug_assert();
    }
}

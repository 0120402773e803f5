//! The one error type of the product: every failure keeps its context until it is displayed,
//! and each variant maps to one documented exit code.

use std::fmt;
use std::path::PathBuf;

/// Exit codes, documented in README ("Exit codes"). Scripts wrapping the binary rely on them.
pub(crate) mod exit {
    /// Deployed and healthy / command succeeded.
    pub(crate) const OK: i32 = 0;
    /// The operation failed (a deploy failed and nothing of it is left running).
    pub(crate) const FAILED: i32 = 1;
    /// Bad input: nothing was created or removed.
    pub(crate) const BAD_INPUT: i32 = 2;
    /// Docker unavailable: no docker binary, or the daemon does not answer.
    pub(crate) const DOCKER_UNAVAILABLE: i32 = 3;
    /// Interrupted (Ctrl-C / SIGTERM; 128 + SIGINT, as shells expect).
    pub(crate) const INTERRUPTED: i32 = 130;
}

/// A deploy input, as a REST client names it (the CLI's flag in brackets): what a bad-input
/// error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    /// `--script-name`
    ScriptName,
    /// `--script-folder` (and what is read from it: the config files, the payload)
    ScriptFolder,
    /// `--name`
    ContainerName,
    /// `--image`
    ImageName,
    /// `--platform`
    Platform,
    /// `--port`
    Port,
    /// `--bind`
    Bind,
    /// `--env`, `--env-file`
    EnvVars,
    /// `--exclude`, `--include`
    Exclude,
    /// `--timeout`
    Timeout,
    /// `--replicas`
    Replicas,
    /// `--registry`
    Registry,
    /// `--publish-mode`
    PublishMode,
    /// `--placement-pref`
    PlacementPref,
    /// `--max-replicas-per-node`
    MaxReplicasPerNode,
    /// `--proxy`, `--no-proxy`
    Proxy,
    /// `--domain`
    Domain,
    /// `--tls`, `--tls-cert`, `--tls-key`
    Tls,
}

impl Field {
    /// The JSON field of a deploy request body.
    pub(crate) fn rest_name(self) -> &'static str {
        match self {
            Field::ScriptName => "script_name",
            Field::ScriptFolder => "script_folder",
            Field::ContainerName => "container_name",
            Field::ImageName => "image_name",
            Field::Platform => "platform",
            Field::Port => "port",
            Field::Bind => "bind",
            Field::EnvVars => "env_vars",
            Field::Exclude => "exclude",
            Field::Timeout => "timeout",
            Field::Replicas => "replicas",
            Field::Registry => "registry",
            Field::PublishMode => "publish_mode",
            Field::PlacementPref => "placement_pref",
            Field::MaxReplicasPerNode => "max_replicas_per_node",
            Field::Proxy => "proxy",
            Field::Domain => "domain",
            Field::Tls => "tls",
        }
    }
}

/// Everything that can go wrong, with enough context to say what and where.
#[derive(Debug)]
pub(crate) enum Error {
    /// The user gave something we cannot use; `what` names the value, `hint` says what would be
    /// right, `field` which deploy input it is about (when one is: the REST API names it).
    Input {
        what: String,
        hint: String,
        field: Option<Field>,
    },
    /// The named deployment does not exist (bad input: exit 2; HTTP 404).
    NotFound { what: String, hint: String },
    /// The named thing exists but this tool did not make it, so it is left alone (exit 2; HTTP 403).
    NotManaged { what: String, hint: String },
    /// Another command holds the deployment's lock (exit 2; HTTP 409); `what` names the holder.
    Locked { what: String, hint: String },
    /// No docker binary could be found or started.
    DockerMissing { detail: String },
    /// The docker binary ran but does not behave like docker (e.g. `--docker /bin/false`).
    DockerUnusable { detail: String },
    /// The docker binary ran but the daemon did not answer.
    DaemonDown { detail: String },
    /// The Docker socket exists but this user may not open it (the detail names the fix).
    SocketDenied { detail: String },
    /// A docker command ran and said no.
    Docker {
        argv: String,
        status: Option<i32>,
        stderr: String,
    },
    /// A docker command did not finish before its deadline (it was killed).
    DockerTimeout { argv: String, secs: u64 },
    /// Reading a local file failed.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A plugin script threw while running; `location` is `file:line:col`.
    Plugin { location: String, message: String },
    /// A plugin script does not compile or lacks an entry point (bad input: nothing was run).
    PluginInvalid { location: String, message: String },
    /// A deploy or management step failed; the message says what and what was cleaned up.
    Failed { message: String },
    /// The process was interrupted (Ctrl-C / SIGTERM): the run stops, its journal is undone.
    Interrupted,
    /// `deploy --dry-run` reached the first change it would make (`next` says which) and
    /// stopped there, having changed nothing; the deploy turns it into the plan.
    DryRun { next: String },
}

impl Error {
    /// Shorthand for a bad-input error.
    pub(crate) fn input(what: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Input {
            what: what.into(),
            hint: hint.into(),
            field: None,
        }
    }

    /// The same error, about the deploy input `f` (a bad-input error that names no field yet
    /// takes it; any other error is returned as it is).
    pub(crate) fn at(self, f: Field) -> Self {
        match self {
            Error::Input {
                what,
                hint,
                field: None,
            } => Error::Input {
                what,
                hint,
                field: Some(f),
            },
            other => other,
        }
    }

    /// The deploy input a bad-input error is about, if it names one.
    pub(crate) fn field(&self) -> Option<Field> {
        match self {
            Error::Input { field, .. } => *field,
            _ => None,
        }
    }

    /// Shorthand for a failed operation.
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Error::Failed {
            message: message.into(),
        }
    }

    /// The documented process exit code for this error.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Error::Input { .. }
            | Error::NotFound { .. }
            | Error::NotManaged { .. }
            | Error::Locked { .. }
            | Error::PluginInvalid { .. } => exit::BAD_INPUT,
            Error::DockerMissing { .. }
            | Error::DockerUnusable { .. }
            | Error::DaemonDown { .. }
            | Error::SocketDenied { .. } => exit::DOCKER_UNAVAILABLE,
            Error::Plugin { .. } => exit::FAILED,
            Error::Docker { .. }
            | Error::DockerTimeout { .. }
            | Error::Io { .. }
            | Error::Failed { .. } => exit::FAILED,
            Error::Interrupted => exit::INTERRUPTED,
            // Only seen when something other than a deploy's plan ran in a dry run.
            Error::DryRun { .. } => exit::FAILED,
        }
    }

    /// A short machine-readable kind for `--json` output.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            // Not found / not ours are bad input to a script; the REST API tells them apart.
            Error::Input { .. } | Error::NotFound { .. } | Error::NotManaged { .. } => "bad_input",
            Error::Locked { .. } => "locked",
            Error::DockerMissing { .. } => "docker_missing",
            Error::DockerUnusable { .. } => "docker_unusable",
            Error::DaemonDown { .. } => "daemon_down",
            Error::SocketDenied { .. } => "socket_denied",
            Error::Docker { .. } => "docker",
            Error::DockerTimeout { .. } => "docker_timeout",
            Error::Io { .. } => "io",
            Error::Plugin { .. } => "plugin",
            Error::PluginInvalid { .. } => "plugin_invalid",
            Error::Failed { .. } => "failed",
            Error::Interrupted => "interrupted",
            Error::DryRun { .. } => "dry_run",
        }
    }
}

/// `text` on one line: its lines trimmed, empty ones dropped, joined with "; ". Every error
/// message is printed through this, so a message is always exactly one line.
pub(crate) fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `text` safe to print on a terminal: control characters (ESC and the rest, which user input
/// such as `--to` may carry into a message) shown as `\x1b`-style escapes, never sent raw.
pub(crate) fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            let n = c as u32;
            if n <= 0xff {
                out.push_str(&format!("\\x{n:02x}"));
            } else {
                out.push_str(&format!("\\u{{{n:x}}}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// First non-empty line of docker's stderr, trimmed of docker's own prefixes.
fn first_line(s: &str) -> &str {
    let line = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.strip_prefix("Error response from daemon: ")
        .or_else(|| line.strip_prefix("Error: "))
        .unwrap_or(line)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Input { what, hint, .. }
            | Error::NotFound { what, hint }
            | Error::NotManaged { what, hint }
            | Error::Locked { what, hint } => write!(f, "{what}: {hint}"),
            Error::DockerMissing { detail } => write!(
                f,
                "docker not found: {detail} (install Docker, or pass --docker PATH / set FRACTALIC_PUBLISHER_DOCKER)"
            ),
            Error::DockerUnusable { detail } => write!(
                f,
                "{detail}: it does not behave like the docker CLI (pass the real one with --docker PATH or FRACTALIC_PUBLISHER_DOCKER)"
            ),
            Error::SocketDenied { detail } => f.write_str(detail),
            Error::DaemonDown { detail } => write!(
                f,
                "the Docker daemon does not answer: {} (start dockerd, or check DOCKER_HOST)",
                first_line(detail)
            ),
            Error::Docker {
                argv,
                status,
                stderr,
            } => {
                let code = status.map_or("killed by a signal".to_string(), |c| {
                    format!("exit {c}")
                });
                match first_line(stderr) {
                    "" => write!(f, "`{argv}` failed ({code})"),
                    line => write!(f, "`{argv}` failed ({code}): {line}"),
                }
            }
            Error::DockerTimeout { argv, secs } => {
                write!(f, "`{argv}` did not finish within {secs}s and was stopped")
            }
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Plugin { location, message } | Error::PluginInvalid { location, message } => {
                write!(f, "{location}: {message}")
            }
            Error::Failed { message } => write!(f, "{message}"),
            Error::Interrupted => write!(f, "interrupted"),
            Error::DryRun { next } => write!(f, "dry run: stopped before {next} (nothing was changed)"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Result alias used across the crate.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {

    #[test]
    fn terminal_escapes_from_user_input_are_shown_not_sent() {
        let shown = terminal_safe("--to \u{1b}[2J\u{1b}]0;pwned\u{7}x\u{9b}y");
        assert_eq!(shown, "--to \\x1b[2J\\x1b]0;pwned\\x07x\\x9by");
        assert!(!shown.chars().any(char::is_control));
        assert_eq!(
            terminal_safe("plain \"text\" \u{e9}"),
            "plain \"text\" \u{e9}"
        );
    }

    use super::*;

    #[test]
    fn one_line_joins_lines() {
        assert_eq!(one_line("a\n  b \r\n\n c\n"), "a; b; c");
        assert_eq!(one_line("plain"), "plain");
    }

    #[test]
    fn exit_codes_per_kind() {
        assert_eq!(Error::input("--port 0", "use 1-65535").exit_code(), 2);
        assert_eq!(Error::DockerMissing { detail: "x".into() }.exit_code(), 3);
        assert_eq!(Error::DaemonDown { detail: "x".into() }.exit_code(), 3);
        assert_eq!(Error::DockerUnusable { detail: "x".into() }.exit_code(), 3);
        assert_eq!(Error::failed("x").exit_code(), 1);
    }

    #[test]
    fn docker_error_shows_first_stderr_line_without_prefix() {
        let e = Error::Docker {
            argv: "docker start x".into(),
            status: Some(1),
            stderr: "\nError response from daemon: port is already allocated\nmore\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "`docker start x` failed (exit 1): port is already allocated"
        );
    }
}

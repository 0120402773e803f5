//! Turns parsed deploy flags into a validated [`DeployConfig`]: names checked, paths resolved,
//! config files found and parsed, environment read. Nothing here touches Docker.

use crate::cli::{DeployArgs, PullPolicy};
use crate::error::{Error, Result};
use crate::payload::Excludes;
use crate::ports::PortRequest;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The image deployed when `--image` is not given.
pub const DEFAULT_IMAGE: &str = "ghcr.io/fractalic-ai/fractalic:latest-production";
/// First host port tried when `--port` is not given.
pub const DEFAULT_PORT: u16 = 8001;
/// Main-script extensions tried in order before falling back to `SCRIPT.*`.
pub const SCRIPT_EXTENSIONS: &[&str] = &["md", "py", "sh", "txt"];

/// A config file found on disk, with its contents (which may be secret: never print them).
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// settings.toml, mcp_servers.json or .env.
    pub name: &'static str,
    pub source: PathBuf,
    pub contents: Vec<u8>,
    /// Absolute paths in the container it is copied to.
    pub dests: Vec<&'static str>,
}

/// Everything a deploy needs, validated.
#[derive(Debug)]
pub struct DeployConfig {
    pub plugin: String,
    pub name: String,
    pub script_name: String,
    pub script_folder: PathBuf,
    /// File name of the main script inside the folder, e.g. `my-script.md`.
    pub main_script: String,
    pub image: String,
    pub platform: String,
    pub port: PortRequest,
    pub bind: IpAddr,
    /// Container environment (values are secrets).
    pub env: Vec<(String, String)>,
    pub excludes: Excludes,
    pub pull: PullPolicy,
    pub timeout: Duration,
    pub project_root: PathBuf,
    pub config_files: Vec<ConfigFile>,
    pub warnings: Vec<String>,
    /// Tasks to run (`--replicas`, 1 to 100).
    pub replicas: u32,
    /// Registry `HOST:PORT` a baked image is pushed to (`--registry`).
    pub registry: String,
    /// `ingress` or `host` (`--publish-mode`).
    pub publish_mode: String,
}

impl DeployConfig {
    /// Path of the main script inside the container.
    pub fn script_path(&self) -> String {
        format!("/payload/{}/{}", self.script_name, self.main_script)
    }
}

/// Docker's container-name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_docker_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Checks a container name given by the user.
pub fn check_container_name(name: &str) -> Result<()> {
    if valid_docker_name(name) && name.len() <= 128 {
        Ok(())
    } else {
        Err(Error::input(
            format!("bad container name {name:?}"),
            "use letters, digits, '_', '.', '-', starting with a letter or digit (at most 128)",
        ))
    }
}

/// Checks a script name: a Docker-style name without `..`.
pub fn check_script_name(name: &str) -> Result<()> {
    if valid_docker_name(name) && !name.contains("..") && name.len() <= 128 {
        Ok(())
    } else {
        Err(Error::input(
            format!("bad --script-name {name:?}"),
            "use letters, digits, '_', '.', '-', starting with a letter or digit, without '/' or '..'",
        ))
    }
}

/// Applies the original publisher's tag rule to `fractalic-ai/fractalic` images:
/// no tag or `latest` -> `latest-production`, another tag -> `TAG-production`.
pub fn production_tag(image: &str) -> String {
    if image.contains('@') {
        return image.to_string();
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match image[slash..].find(':') {
        Some(i) => (&image[..slash + i], Some(&image[slash + i + 1..])),
        None => (image, None),
    };
    if !(repo == "fractalic-ai/fractalic" || repo.ends_with("/fractalic-ai/fractalic")) {
        return image.to_string();
    }
    match tag {
        None | Some("latest") => format!("{repo}:latest-production"),
        Some(t) if t.ends_with("-production") => image.to_string(),
        Some(t) => format!("{repo}:{t}-production"),
    }
}

/// Checks an image reference (after [`production_tag`]).
pub fn check_image(image: &str) -> Result<()> {
    let ok = !image.is_empty()
        && !image.starts_with('-')
        && image.len() <= 512
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::input(
            format!("bad --image {image:?}"),
            "give an image reference like registry/name:tag",
        ))
    }
}

/// The platform matching this host, as the original chose it.
pub fn host_platform() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" | "arm64" => "linux/arm64",
        _ => "linux/amd64",
    }
}

/// Checks an image platform: OS/ARCH[/VARIANT].
pub fn check_platform(p: &str) -> Result<()> {
    let parts: Vec<&str> = p.split('/').collect();
    let ok = (2..=3).contains(&parts.len())
        && parts.iter().all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::input(
            format!("bad --platform {p:?}"),
            "use OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64",
        ))
    }
}

/// Parses a port given by the user: 1-65535.
pub fn parse_port(s: &str, flag: &str) -> Result<u16> {
    match s.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(Error::input(
            format!("bad {flag} {s:?}"),
            "use a port number from 1 to 65535",
        )),
    }
}

fn parse_timeout(s: &str) -> Result<Duration> {
    match s.trim().parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(Error::input(
            format!("bad --timeout {s:?}"),
            "use a whole number of seconds from 1 to 3600",
        )),
    }
}

/// `--replicas`: a whole number from 1 to 100.
pub fn parse_replicas(s: &str) -> Result<u32> {
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=100).contains(&n) => Ok(n),
        _ => Err(Error::input(
            format!("bad --replicas {s:?}"),
            "use a whole number of tasks from 1 to 100",
        )),
    }
}

/// `--registry`: `HOST:PORT` (a host name or IPv4 address, no scheme or path).
pub fn check_registry(s: &str) -> Result<()> {
    let bad = || {
        Error::input(
            format!("bad --registry {s:?}"),
            "give the registry as HOST:PORT, e.g. 127.0.0.1:5000 or registry.example.com:443 (no http://, no path)",
        )
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(()),
        _ => Err(bad()),
    }
}

/// `--publish-mode`: `ingress` or `host`.
pub fn check_publish_mode(s: &str) -> Result<()> {
    match s {
        "ingress" | "host" => Ok(()),
        _ => Err(Error::input(
            format!("bad --publish-mode {s:?}"),
            "use ingress (Swarm's routing mesh, the production default) or host (each task on its node's own port)",
        )),
    }
}

/// An environment variable name: letters, digits and `_`, not starting with a digit.
pub fn valid_env_key(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Parses one `K=V` item. `origin` says where it came from; the value never appears in errors.
fn parse_env_item(item: &str, origin: &str) -> Result<(String, String)> {
    let Some((k, v)) = item.split_once('=') else {
        let shown: String = item.chars().take(40).collect();
        return Err(Error::input(
            format!("bad env item {shown:?} ({origin})"),
            "write KEY=VALUE",
        ));
    };
    if !valid_env_key(k) {
        return Err(Error::input(
            format!("bad env name {k:?} ({origin})"),
            "names use letters, digits and '_' and do not start with a digit",
        ));
    }
    if v.contains('\n') || v.contains('\r') || v.contains('\0') {
        return Err(Error::input(
            format!("env value of {k} ({origin}) has a newline or NUL byte"),
            "put it on one line",
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Reads an env file: `K=V` lines, `#` comments, blank lines, optional `export `, and one pair
/// of matching surrounding quotes stripped from the value.
pub fn parse_env_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::input(
            format!("cannot read --env-file {}", path.display()),
            format!("{e}; give a readable file of KEY=VALUE lines"),
        )
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let origin = format!("{}:{}", path.display(), i + 1);
        let (k, v) = parse_env_item(line, &origin)?;
        let v = strip_quotes(&v).to_string();
        out.push((k, v));
    }
    Ok(out)
}

fn strip_quotes(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// Finds the main script: `S.md`, `.py`, `.sh`, `.txt`, then the first `S.*` in name order.
pub fn find_main_script(folder: &Path, script: &str) -> Result<String> {
    for ext in SCRIPT_EXTENSIONS {
        let name = format!("{script}.{ext}");
        if folder.join(&name).is_file() {
            return Ok(name);
        }
    }
    let prefix = format!("{script}.");
    let mut others: Vec<String> = std::fs::read_dir(folder)
        .map_err(|e| Error::Io {
            path: folder.to_path_buf(),
            source: e,
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    others.sort();
    others.into_iter().next().ok_or_else(|| {
        Error::input(
            format!("no main script {script:?} in {}", folder.display()),
            format!("add {script}.md (or .py, .sh, .txt), or pass the right --script-name"),
        )
    })
}

/// The Fractalic project root: walk up to a directory holding `fractalic.py`, from the script
/// folder, then the working directory, then the binary's location; else the working directory.
pub fn project_root(script_folder: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let starts = [
        Some(script_folder.to_path_buf()),
        Some(cwd.clone()),
        exe_dir,
    ];
    for start in starts.iter().flatten() {
        if let Some(root) = start.ancestors().find(|d| d.join("fractalic.py").is_file()) {
            return root.to_path_buf();
        }
    }
    cwd
}

/// Line and column (1-based) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Checks that settings.toml parses. The error names the file and position, never its text.
pub fn check_settings_toml(path: &Path, contents: &[u8]) -> Result<()> {
    let text = std::str::from_utf8(contents).map_err(|_| {
        Error::input(
            format!("{} is not UTF-8 text", path.display()),
            "save settings.toml as UTF-8 TOML",
        )
    })?;
    match text.parse::<toml::Table>() {
        Ok(_) => Ok(()),
        Err(e) => {
            let at = e
                .span()
                .map(|s| {
                    let (l, c) = line_col(text, s.start);
                    format!(" at line {l}, column {c}")
                })
                .unwrap_or_default();
            Err(Error::input(
                format!("{} is not valid TOML{at}", path.display()),
                format!(
                    "{}; fix the file (see settings.toml in the Fractalic docs)",
                    e.message().trim()
                ),
            ))
        }
    }
}

/// Checks that mcp_servers.json parses. serde_json's message carries only the position.
pub fn check_mcp_json(path: &Path, contents: &[u8]) -> Result<()> {
    serde_json::from_slice::<serde_json::Value>(contents)
        .map(|_| ())
        .map_err(|e| {
            Error::input(
                format!(
                    "{} is not valid JSON at line {}, column {}",
                    path.display(),
                    e.line(),
                    e.column()
                ),
                "fix the file: it must be one JSON document",
            )
        })
}

fn read_config(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// settings.toml and mcp_servers.json from the project root and the top of the script folder
/// (which wins), plus the folder's `.env`. Each is parsed; contents stay in memory only.
pub fn find_config_files(root: &Path, folder: &Path) -> Result<Vec<ConfigFile>> {
    let mut out = Vec::new();
    let specs: [(&'static str, Vec<&'static str>); 2] = [
        (
            "settings.toml",
            vec!["/fractalic/settings.toml", "/settings.toml"],
        ),
        (
            "mcp_servers.json",
            vec!["/fractalic/mcp_servers.json", "/mcp_servers.json"],
        ),
    ];
    for (name, dests) in specs {
        let source = [folder.join(name), root.join(name)]
            .into_iter()
            .find(|p| p.is_file());
        if let Some(source) = source {
            let contents = read_config(&source)?;
            if name == "settings.toml" {
                check_settings_toml(&source, &contents)?;
            } else {
                check_mcp_json(&source, &contents)?;
            }
            out.push(ConfigFile {
                name,
                source,
                contents,
                dests,
            });
        }
    }
    let dotenv = folder.join(".env");
    if dotenv.is_file() {
        // Same syntax rules as --env-file, so a broken .env is caught before deploying.
        parse_env_file(&dotenv)?;
        out.push(ConfigFile {
            name: ".env",
            contents: read_config(&dotenv)?,
            source: dotenv,
            dests: vec!["/fractalic/.env"],
        });
    }
    Ok(out)
}

/// Validates deploy flags into a [`DeployConfig`]. Any problem is [`Error::Input`] (exit 2).
pub fn deploy_config(args: &DeployArgs) -> Result<DeployConfig> {
    check_script_name(&args.script_name)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("fractalic-{}", args.script_name));
    check_container_name(&name)?;

    let folder = &args.script_folder;
    if !folder.is_dir() {
        return Err(Error::input(
            format!("--script-folder {} is not a directory", folder.display()),
            "give the folder that holds your script",
        ));
    }
    let script_folder = folder.canonicalize().map_err(|e| Error::Io {
        path: folder.clone(),
        source: e,
    })?;
    let main_script = find_main_script(&script_folder, &args.script_name)?;

    let image = production_tag(args.image.as_deref().unwrap_or(DEFAULT_IMAGE));
    check_image(&image)?;
    let platform = args
        .platform
        .clone()
        .unwrap_or_else(|| host_platform().to_string());
    check_platform(&platform)?;

    let port = match &args.port {
        Some(p) => PortRequest::Exact(parse_port(p, "--port")?),
        None => PortRequest::Preferred(DEFAULT_PORT),
    };
    let bind: IpAddr = args.bind.parse().map_err(|_| {
        Error::input(
            format!("bad --bind {:?}", args.bind),
            "give an IP address such as 127.0.0.1 or 0.0.0.0",
        )
    })?;
    let timeout = parse_timeout(&args.timeout)?;
    let replicas = parse_replicas(&args.replicas)?;
    check_registry(&args.registry)?;
    check_publish_mode(&args.publish_mode)?;

    let mut env = Vec::new();
    if let Some(f) = &args.env_file {
        env.extend(parse_env_file(f)?);
    }
    for item in &args.env {
        env.push(parse_env_item(item, "--env")?);
    }

    let excludes = Excludes::with_includes(&args.include, &args.exclude).map_err(|e| {
        let list = match &e {
            crate::payload::PayloadError::BadPattern { list, .. } => *list,
            _ => "exclude",
        };
        Error::input(
            format!("bad --{list} pattern"),
            format!("{e}; use a glob such as '*.log' or 'data/*.csv'"),
        )
    })?;
    if !excludes.takes(&main_script) {
        return Err(Error::input(
            format!("the main script {main_script:?} is left out of the payload"),
            format!(
                "include_files {:?} / exclude_patterns {:?} must take it: change them (or --include/--exclude)",
                excludes.include_patterns(),
                args.exclude
            ),
        ));
    }

    let project_root = project_root(&script_folder);
    let config_files = find_config_files(&project_root, &script_folder)?;
    let mut warnings = Vec::new();
    if !config_files.iter().any(|c| c.name == "settings.toml") {
        warnings.push(format!(
            "no settings.toml in {} or {}: /execute will answer \"No model specified and no defaultProvider in settings.toml\"",
            script_folder.display(),
            project_root.display()
        ));
    }

    Ok(DeployConfig {
        plugin: args.plugin.clone(),
        name,
        script_name: args.script_name.clone(),
        script_folder,
        main_script,
        image,
        platform,
        port,
        bind,
        env,
        excludes,
        pull: args.pull,
        timeout,
        project_root,
        config_files,
        warnings,
        replicas,
        registry: args.registry.clone(),
        publish_mode: args.publish_mode.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_name_rule() {
        assert!(valid_docker_name("fractalic-my_script.1"));
        assert!(!valid_docker_name("-x"));
        assert!(!valid_docker_name("../x"));
        assert!(!valid_docker_name(""));
        assert!(!valid_docker_name("a b"));
        assert!(check_script_name("a..b").is_err());
        assert!(check_script_name("a/b").is_err());
    }

    #[test]
    fn production_tag_rule() {
        let r = "ghcr.io/fractalic-ai/fractalic";
        assert_eq!(production_tag(r), format!("{r}:latest-production"));
        assert_eq!(
            production_tag(&format!("{r}:latest")),
            format!("{r}:latest-production")
        );
        assert_eq!(
            production_tag(&format!("{r}:1.2")),
            format!("{r}:1.2-production")
        );
        assert_eq!(
            production_tag(&format!("{r}:1.2-production")),
            format!("{r}:1.2-production")
        );
        assert_eq!(
            production_tag("localhost:5000/other:latest"),
            "localhost:5000/other:latest"
        );
        assert_eq!(
            production_tag("fractalic-ai/fractalic"),
            "fractalic-ai/fractalic:latest-production"
        );
    }

    #[test]
    fn ports_and_timeouts() {
        assert_eq!(parse_port("8001", "--port").unwrap(), 8001);
        for bad in ["0", "65536", "-1", "http", ""] {
            let e = parse_port(bad, "--port").unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("1 to 65535"), "{e}");
        }
        assert!(parse_timeout("0").is_err());
        assert_eq!(parse_timeout("5").unwrap(), Duration::from_secs(5));
    }

    #[test]
    fn env_items_and_files_keep_values_out_of_errors() {
        assert_eq!(
            parse_env_item("A_1=x=y", "--env").unwrap(),
            ("A_1".to_string(), "x=y".to_string())
        );
        let e = parse_env_item("1A=secret", "--env").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(parse_env_item("NOEQUALS", "--env").is_err());

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("env");
        std::fs::write(&f, "# c\n\nexport A=\"q v\"\nB='x'\nC=plain\n").unwrap();
        let env = parse_env_file(&f).unwrap();
        assert_eq!(
            env,
            vec![
                ("A".into(), "q v".into()),
                ("B".into(), "x".into()),
                ("C".into(), "plain".into())
            ]
        );
        std::fs::write(&f, "GOOD=1\nbad line with hunter2\n").unwrap();
        let e = parse_env_file(&f).unwrap_err();
        assert!(e.to_string().contains(":2"), "{e}");
    }

    #[test]
    fn swarm_flags() {
        assert_eq!(parse_replicas("3").unwrap(), 3);
        for bad in ["0", "101", "-1", "x", ""] {
            assert_eq!(parse_replicas(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
        for good in [
            "127.0.0.1:5000",
            "localhost:5000",
            "registry.example.com:443",
        ] {
            assert!(check_registry(good).is_ok(), "{good}");
        }
        for bad in [
            "http://x:5000",
            "x",
            "x:0",
            "x:99999",
            ":5000",
            "a/b:1",
            "-x:1",
        ] {
            let e = check_registry(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().contains("HOST:PORT"), "{e}");
        }
        assert!(check_publish_mode("ingress").is_ok() && check_publish_mode("host").is_ok());
        let e = check_publish_mode("mesh").unwrap_err();
        assert!(e.to_string().contains("ingress"), "{e}");
    }

    #[test]
    fn main_script_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.zzz"), "").unwrap();
        assert_eq!(find_main_script(dir.path(), "s").unwrap(), "s.zzz");
        std::fs::write(dir.path().join("s.txt"), "").unwrap();
        assert_eq!(find_main_script(dir.path(), "s").unwrap(), "s.txt");
        std::fs::write(dir.path().join("s.md"), "").unwrap();
        assert_eq!(find_main_script(dir.path(), "s").unwrap(), "s.md");
        assert_eq!(
            find_main_script(dir.path(), "t").unwrap_err().exit_code(),
            2
        );
    }

    #[test]
    fn bad_toml_error_hides_contents() {
        let p = Path::new("settings.toml");
        let e =
            check_settings_toml(p, b"[settings.x]\napiKey = \"sk-SECRET\nmodel=1\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(!msg.contains("sk-SECRET"), "{msg}");
        let e = check_mcp_json(Path::new("m.json"), b"{\"a\": tok}").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn script_folder_config_wins_over_root() {
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("scripts");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(root.path().join("fractalic.py"), "").unwrap();
        std::fs::write(root.path().join("settings.toml"), "a = 1").unwrap();
        std::fs::write(root.path().join("mcp_servers.json"), "{}").unwrap();
        std::fs::write(folder.join("settings.toml"), "a = 2").unwrap();
        assert_eq!(project_root(&folder), root.path());
        let files = find_config_files(root.path(), &folder).unwrap();
        let s = files.iter().find(|f| f.name == "settings.toml").unwrap();
        assert_eq!(s.contents, b"a = 2");
        let m = files.iter().find(|f| f.name == "mcp_servers.json").unwrap();
        assert_eq!(m.source, root.path().join("mcp_servers.json"));
    }
}

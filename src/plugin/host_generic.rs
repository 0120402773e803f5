//! Implementations behind the generic host functions (registered, with their documentation, in
//! `plugin::api`) a platform plugin builds on, whatever the platform: run any docker
//! subcommand (argv and stdin in, `{ok, code, stdout, stderr}` out, optionally recorded in the
//! undo journal), Docker secrets and configs made from the deploy's config files on stdin, the
//! deploy's environment as a journal-owned env file, an image baked from the payload
//! (commit + push, tagged by content), HTTP requests with timeouts, clocks and poll pauses.
//!
//! Conventions: durations are milliseconds (`*_ms`); functions throw for errors the plugin
//! cannot sensibly handle (Docker unreachable, a docker call Docker itself rejects
//! unexpectedly, a timeout, an interrupt) and return `{ok, ...}` maps where a plugin is
//! expected to branch (`docker_run`, `http_request`). Secret values never pass through the
//! script: plugins name config files, the host reads their contents.

use super::host::{Host, LABEL_CREATED, LABEL_MANAGED, LABEL_PLUGIN};
use crate::config::DeployConfig;
use crate::docker::{Docker, Refusal, QUICK};
use crate::error::{Error, Result};
use crate::journal::{Resource, LABEL_RUN};
use crate::payload;
use rhai::{Array, Dynamic, Map};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// Label on the stopped container an image is baked in (besides the run label).
pub(crate) const LABEL_BUILD: &str = "fractalic-publisher.build";
/// Label on a baked image: the content hash its tag is made of.
pub(crate) const LABEL_PAYLOAD_HASH: &str = "fractalic-publisher.payload-hash";

/// Labels on a baked image: the uid and gid that own its payload.
pub(crate) const LABEL_UID: &str = "fractalic-publisher.uid";
/// See [`LABEL_UID`].
pub(crate) const LABEL_GID: &str = "fractalic-publisher.gid";

/// How long a `docker push` of a baked image may take.
pub(crate) const PUSH_TIMEOUT: Duration = Duration::from_secs(600);

/// Environment variable names the docker CLI itself reads: never handed to it from a deploy.
pub(crate) fn steers_the_cli(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    k.starts_with("DOCKER_")
        || k.starts_with("XDG_")
        || matches!(
            k.as_str(),
            "PATH" | "HOME" | "TMPDIR" | "HTTP_PROXY" | "HTTPS_PROXY" | "NO_PROXY" | "ALL_PROXY"
        )
}

pub(crate) fn map_string(m: &Map, key: &str) -> Option<String> {
    m.get(key).filter(|v| !v.is_unit()).map(|v| v.to_string())
}

pub(crate) fn strings(a: &Array) -> Vec<String> {
    a.iter().map(|v| v.to_string()).collect()
}

/// Hex SHA-256 of `parts`, each followed by a newline.
pub(crate) fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The labels every object a plugin creates carries: managed, plugin, created, run.
pub(crate) fn standard_labels(host: &Host) -> Vec<(String, String)> {
    vec![
        (LABEL_MANAGED.into(), "true".into()),
        (LABEL_PLUGIN.into(), host.plugin_name()),
        (LABEL_CREATED.into(), crate::clock::now_utc()),
        (LABEL_RUN.into(), host.journal().run_id().to_string()),
    ]
}

pub(crate) fn deploy_of<'a>(host: &'a Host, f: &str) -> Result<&'a DeployConfig> {
    host.deploy()
        .ok_or_else(|| Error::failed(format!("{f}: only a deploy has config files and a payload")))
}

pub(crate) fn env_hash(env: &[(String, String)]) -> String {
    let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    sha256_hex(&[text.as_bytes()])[..16].to_string()
}

pub(crate) fn docker_run(host: &Host, d: &Docker, argv: &[String], opts: &Map) -> Result<Map> {
    if argv.is_empty() {
        return Err(Error::failed("docker_run: argv is empty"));
    }
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut stdin = map_string(opts, "stdin").map(String::into_bytes);
    if opts.get("env_stdin").and_then(|v| v.as_bool().ok()) == Some(true) {
        if stdin.is_some() {
            return Err(Error::failed(
                "docker_run: `stdin` and `env_stdin` cannot both feed docker's stdin",
            ));
        }
        let cfg = deploy_of(host, "docker_run env_stdin")?;
        stdin = Some(cfg.env_text().into_bytes());
    }
    let timeout = opts
        .get("timeout_ms")
        .and_then(|v| v.as_int().ok())
        .unwrap_or(30_000)
        .clamp(100, 3_600_000);
    let mut env = Vec::new();
    if opts.get("deploy_env").and_then(|v| v.as_bool().ok()) == Some(true) {
        let cfg = deploy_of(host, "docker_run deploy_env")?;
        if let Some((k, _)) = cfg.env.iter().find(|(k, _)| steers_the_cli(k)) {
            return Err(Error::input(
                format!("environment variable {k} cannot be handed over this way"),
                "the docker CLI reads it itself; remove the deployment and deploy it again to change it",
            ));
        }
        env = cfg.env.clone();
    }
    let undo: Option<Vec<String>> = opts
        .get("undo")
        .and_then(|v| v.read_lock::<Array>().map(|a| strings(&a)))
        .filter(|a| !a.is_empty());
    // `undo_when: #{argv, stdout}`: the undo runs only while `docker ARGV` prints `stdout`.
    let when: Option<(Vec<String>, String)> = match opts.get("undo_when") {
        None => None,
        Some(v) => {
            let m = v.read_lock::<Map>().ok_or_else(|| {
                Error::failed("docker_run: `undo_when` must be a map #{argv, stdout}")
            })?;
            let argv = m
                .get("argv")
                .and_then(|v| v.read_lock::<Array>().map(|a| strings(&a)))
                .filter(|a| !a.is_empty())
                .ok_or_else(|| {
                    Error::failed(
                        "docker_run: `undo_when.argv` must be a non-empty array of strings",
                    )
                })?;
            let out = map_string(&m, "stdout")
                .ok_or_else(|| Error::failed("docker_run: `undo_when.stdout` must be a string"))?;
            Some((argv, out))
        }
    };
    if when.is_some() && undo.is_none() {
        return Err(Error::failed("docker_run: `undo_when` needs `undo`"));
    }
    let token = match &undo {
        Some(remove_args) => {
            let what = map_string(opts, "what")
                .unwrap_or_else(|| format!("docker {}", remove_args.join(" ")));
            let resource = match when {
                Some((check_args, expect)) => Resource::Guarded {
                    what,
                    check_args,
                    expect,
                    remove_args: remove_args.clone(),
                },
                None => Resource::DockerObject {
                    what,
                    remove_args: remove_args.clone(),
                },
            };
            Some(host.journal().record(resource)?)
        }
        None => None,
    };
    let (status, out) =
        d.run_unchecked_env(&args, stdin, &env, Duration::from_millis(timeout as u64))?;
    if status != Some(0) && out.refusal() == Refusal::DaemonDown {
        return Err(Error::DaemonDown { detail: out.stderr });
    }
    if let Some(t) = token {
        if status != Some(0) {
            host.journal().forget(t);
        }
    }
    let kind = if status == Some(0) {
        ""
    } else {
        out.refusal().name()
    };
    let mut m = Map::new();
    m.insert("kind".into(), kind.into());
    m.insert("ok".into(), (status == Some(0)).into());
    m.insert("code".into(), i64::from(status.unwrap_or(-1)).into());
    m.insert("stdout".into(), out.stdout.into());
    m.insert("stderr".into(), out.stderr.into());
    let id = match token {
        Some(t) if status == Some(0) => t.id() as i64,
        _ => -1,
    };
    m.insert("undo_id".into(), id.into());
    Ok(m)
}

pub(crate) fn docker_stream(
    host: &Host,
    d: &Docker,
    argv: &[String],
    timeout_ms: i64,
) -> Result<()> {
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms.min(3_600_000) as u64));
    if host.capturing() {
        let Some(timeout) = timeout else {
            return Err(Error::input(
                "follow",
                "following a log is not available here; ask for the tail again instead",
            ));
        };
        let (status, out) = d.run_unchecked(&args, None, timeout)?;
        if status != Some(0) {
            return Err(Error::Docker {
                argv: d.argv(&args),
                status,
                stderr: out.stderr,
            });
        }
        host.capture(&out.stdout);
        host.capture(&out.stderr);
        return Ok(());
    }
    let status = d.stream(&args, timeout)?;
    if status != Some(0) {
        return Err(Error::Docker {
            argv: d.argv(&args),
            status,
            stderr: "see the messages above".into(),
        });
    }
    Ok(())
}

pub(crate) fn valid_object_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

pub(crate) fn deploy_file_object(
    host: &Host,
    d: &Docker,
    kind: &str,
    file: &str,
    prefix: &str,
    extra: &Map,
) -> Result<Dynamic> {
    if !matches!(kind, "secret" | "config") {
        return Err(Error::failed(format!(
            "deploy_file_object: kind {kind:?} is neither \"secret\" nor \"config\""
        )));
    }
    let cfg = deploy_of(host, "deploy_file_object")?;
    let Some(cf) = cfg.config_files.iter().find(|c| c.name == file) else {
        return Ok(Dynamic::UNIT);
    };
    let hash = sha256_hex(&[&cf.contents])[..12].to_string();
    let name = format!("{prefix}{hash}");
    if !valid_object_name(&name) {
        return Err(Error::failed(format!(
            "deploy_file_object: {kind} name {name:?} is not valid: at most 64 letters, digits, '.', '-', '_'"
        )));
    }
    let mut args: Vec<String> = vec![kind.into(), "create".into()];
    let mut labels = standard_labels(host);
    for (k, v) in extra {
        labels.retain(|(ek, _)| ek != k.as_str() || ek == LABEL_RUN);
        if k.as_str() != LABEL_RUN {
            labels.push((k.to_string(), v.to_string()));
        }
    }
    for (k, v) in labels {
        args.extend(["--label".into(), format!("{k}={v}")]);
    }
    args.extend([name.clone(), "-".into()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    // The name is the content's: with unchanged settings the object exists already and the
    // live service uses it. The undo removes it only if this run made it (its run label), so
    // a run killed between this record and the create does not take a live service's secret.
    let token = host.journal().record(Resource::Guarded {
        what: format!("{kind} {name}"),
        check_args: vec![
            kind.into(),
            "inspect".into(),
            "--format".into(),
            format!("{{{{index .Spec.Labels \"{LABEL_RUN}\"}}}}"),
            name.clone(),
        ],
        expect: host.journal().run_id().to_string(),
        remove_args: vec![kind.into(), "rm".into(), name.clone()],
    })?;
    let (status, out) = d.run_unchecked(&argv, Some(cf.contents.clone()), QUICK)?;
    let created = match status {
        Some(0) => true,
        _ if out.refusal() == Refusal::AlreadyExists => {
            host.journal().forget(token);
            false
        }
        _ => {
            host.journal().forget(token);
            if out.refusal() == Refusal::DaemonDown {
                return Err(Error::DaemonDown { detail: out.stderr });
            }
            return Err(Error::Docker {
                argv: d.argv(&argv),
                status,
                stderr: out.stderr,
            });
        }
    };
    let mut m = Map::new();
    m.insert("name".into(), name.into());
    m.insert("hash".into(), hash.into());
    m.insert("created".into(), created.into());
    Ok(m.into())
}

/// A `Write` that only hashes.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) fn payload_image(host: &Host, d: &Docker, spec: &Map) -> Result<Map> {
    let cfg = deploy_of(host, "payload_image")?;
    let need = |k: &str| {
        map_string(spec, k)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::failed(format!("payload_image: spec needs `{k}`")))
    };
    let base = need("base")?;
    let base_id = need("base_id")?;
    let repo = need("repo")?;
    let user = map_string(spec, "user").unwrap_or_default();
    let push = spec.get("push").and_then(|v| v.as_bool().ok()) == Some(true);
    let image_files: Vec<String> = spec
        .get("image_files")
        .and_then(|v| v.read_lock::<Array>().map(|a| strings(&a)))
        .unwrap_or_default();
    let extra_files: Vec<payload::ExtraFile> = cfg
        .config_files
        .iter()
        .filter(|c| image_files.iter().any(|n| n == c.name))
        .flat_map(|c| {
            c.dests.iter().map(|dest| payload::ExtraFile {
                path: (*dest).to_string(),
                contents: c.contents.clone(),
                mode: 0o600,
            })
        })
        .collect();
    // Files named like secrets (settings.toml, .env, mcp_servers.json) stay out of the image
    // wherever they are in the folder: the platform hands them over by its own means.
    let mut extra: Vec<String> = cfg.excludes.patterns().to_vec();
    extra.extend(payload::SECRET_NAMES.iter().map(|n| n.to_string()));
    let excludes = payload::Excludes::with_includes(cfg.excludes.include_patterns(), &extra)
        .map_err(|e| {
            Error::failed(format!(
                "payload_image: the exclude patterns do not compile: {e}"
            ))
        })?;
    let mut pspec = payload::PayloadSpec {
        script_name: &cfg.script_name,
        script_folder: &cfg.script_folder,
        excludes: &excludes,
        // The owner is a function of the base image and its user, both hashed below; the
        // real ids are looked up only when the image has to be baked.
        owner: payload::Owner { uid: 0, gid: 0 },
        extra_files,
        link_fractalic_payload: true,
        main_script: Some(&cfg.main_script),
        release_dir: None,
        link_script: false,
    };
    // The tag names the content: the base image, its user and the tar stream that goes in.
    let mut hasher = Sha256::new();
    hasher.update(b"fractalic-payload-image-v1\n");
    hasher.update(base_id.as_bytes());
    hasher.update(b"\n");
    hasher.update(user.as_bytes());
    hasher.update(b"\n");
    // Generated entries (the extra files, the /fractalic/payload link) carry the current
    // time: the tar is hashed without them, their contents beside it.
    for f in &pspec.extra_files {
        hasher.update(format!("{} {:o} {}\n", f.path, f.mode, f.contents.len()).as_bytes());
        hasher.update(&f.contents);
    }
    let hashed = payload::PayloadSpec {
        script_name: pspec.script_name,
        script_folder: pspec.script_folder,
        excludes: pspec.excludes,
        owner: pspec.owner,
        extra_files: Vec::new(),
        link_fractalic_payload: false,
        main_script: pspec.main_script,
        release_dir: None,
        link_script: false,
    };
    let built = payload::build_into(&hashed, HashWriter(hasher))
        .map_err(|e| Error::failed(format!("staging the payload: {e}")))?;
    let hash: String = built
        .tar
        .0
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tag = hash[..24].to_string();
    let image = format!("{repo}:{tag}");
    let mut m = Map::new();
    m.insert("image".into(), image.clone().into());
    m.insert("tag".into(), tag.clone().into());
    m.insert("hash".into(), hash.clone().into());
    m.insert("files".into(), (built.files as i64).into());
    m.insert("bytes".into(), (built.bytes as i64).into());

    let pushed_digest = |v: &serde_json::Value| -> Option<String> {
        v["RepoDigests"].as_array()?.iter().find_map(|x| {
            let s = x.as_str()?;
            let (r, dg) = s.split_once('@')?;
            (r == repo).then(|| dg.to_string())
        })
    };
    let existing = d.image_inspect(&image)?;
    let mut committed = false;
    let (uid, gid) = match &existing {
        None => {
            committed = true;
            bake(
                host, d, cfg, &mut pspec, &base, &user, &base_id, &image, &hash,
            )?
        }
        Some(v) => {
            let label = |k: &str| {
                v["Config"]["Labels"][k]
                    .as_str()
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            (label(LABEL_UID), label(LABEL_GID))
        }
    };
    m.insert("uid".into(), (uid as i64).into());
    m.insert("gid".into(), (gid as i64).into());
    if let Some(dg) = existing.as_ref().and_then(pushed_digest) {
        // Same content, already in the registry: nothing to commit, nothing to push.
        m.insert("committed".into(), false.into());
        m.insert("pushed".into(), false.into());
        m.insert("digest".into(), dg.into());
        return Ok(m);
    }
    let mut digest = String::new();
    if push {
        let args = ["push", image.as_str()];
        d.run(&args, None, PUSH_TIMEOUT)?;
        digest = d
            .image_inspect(&image)?
            .as_ref()
            .and_then(pushed_digest)
            .unwrap_or_default();
    }
    m.insert("committed".into(), committed.into());
    m.insert("pushed".into(), push.into());
    m.insert("digest".into(), digest.into());
    Ok(m)
}

/// The stopped container, the tar stream, the commit; the container is removed again.
/// Returns the uid and gid that own the payload.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bake(
    host: &Host,
    d: &Docker,
    cfg: &DeployConfig,
    pspec: &mut payload::PayloadSpec,
    base: &str,
    user: &str,
    base_id: &str,
    image: &str,
    hash: &str,
) -> Result<(u64, u64)> {
    let journal = host.journal();
    let name = format!("fractalic-build-{}", journal.run_id());
    let run_label = journal.run_label();
    let build_label = format!("{LABEL_BUILD}=true");
    // The deployment's label, so that `lookup`/`rm --force` find a build container that a
    // killed run left even though its service was never created.
    let deployment_label = format!("{}={}", crate::update::LABEL_DEPLOYMENT, cfg.name);
    let mut args = vec![
        "create",
        "--name",
        &name,
        "--label",
        &run_label,
        "--label",
        &build_label,
        "--label",
        &deployment_label,
    ];
    if !cfg.platform.is_empty() {
        args.extend(["--platform", &cfg.platform]);
    }
    args.extend(["--", base]);
    let token = journal.record(Resource::Container { name: name.clone() })?;
    let (status, out) = d.run_unchecked(&args, None, QUICK)?;
    if status != Some(0) {
        journal.forget(token);
        if out.refusal() == Refusal::DaemonDown {
            return Err(Error::DaemonDown { detail: out.stderr });
        }
        return Err(Error::Docker {
            argv: d.argv(&args),
            status,
            stderr: out.stderr,
        });
    }
    journal.confirm(token);

    let ids = super::host::user_ids(d, &name, user, Some(base_id))?;
    let id = |k: &str| {
        ids.get(k)
            .and_then(|v| v.as_int().ok())
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0)
    };
    pspec.owner = payload::Owner {
        uid: id("uid"),
        gid: id("gid"),
    };
    let pspec = &*pspec;
    let dest = format!("{name}:/");
    let cp = ["cp", "-", dest.as_str()];
    d.stream_into(&cp, QUICK, |w| {
        payload::build_into(pspec, w)
            .map(|_| ())
            .map_err(|e| Error::failed(format!("staging the payload: {e}")))
    })?;

    // The image must not carry the temporary container's labels into every container made
    // from it: blanked, so no `label=KEY=VALUE` filter matches them.
    let blank_run = format!("LABEL {LABEL_RUN}=\"\"");
    let blank_build = format!("LABEL {LABEL_BUILD}=\"\"");
    let blank_deployment = format!("LABEL {}=\"\"", crate::update::LABEL_DEPLOYMENT);
    let hash_label = format!("LABEL {LABEL_PAYLOAD_HASH}={hash}");
    let ids_label = format!(
        "LABEL {LABEL_UID}={} {LABEL_GID}={}",
        pspec.owner.uid, pspec.owner.gid
    );
    let commit = [
        "commit",
        "--change",
        &blank_run,
        "--change",
        &blank_build,
        "--change",
        &blank_deployment,
        "--change",
        &hash_label,
        "--change",
        &ids_label,
        &name,
        image,
    ];
    // --force: containers of a failed version (Swarm keeps their task history) still refer to
    // the image; the tag goes anyway.
    let tag_token = journal.record(Resource::DockerObject {
        what: format!("image tag {image}"),
        remove_args: vec![
            "image".into(),
            "rm".into(),
            "--force".into(),
            image.to_string(),
        ],
    })?;
    let (status, out) = d.run_unchecked(&commit, None, QUICK)?;
    if status != Some(0) {
        journal.forget(tag_token);
        return Err(Error::Docker {
            argv: d.argv(&commit),
            status,
            stderr: out.stderr,
        });
    }
    let r = journal.undo_now(token);
    if let Some(l) = r.left.first() {
        host.progress.warn(format!(
            "could not remove the build container {} ({}); remove it with: {}",
            l.what, l.error, l.remove_with
        ));
    }
    Ok((pspec.owner.uid, pspec.owner.gid))
}

pub(crate) fn http_request(method: &str, url: &str, opts: &Map) -> Result<Map> {
    let method = method.to_ascii_uppercase();
    if !matches!(
        method.as_str(),
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE"
    ) {
        return Err(Error::failed(format!(
            "http_request: method {method:?} is not one of GET, HEAD, POST, PUT, PATCH, DELETE"
        )));
    }
    let timeout = Duration::from_millis(
        opts.get("timeout_ms")
            .and_then(|v| v.as_int().ok())
            .unwrap_or(5000)
            .clamp(50, 600_000) as u64,
    );
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(timeout.min(Duration::from_secs(2)))
        .timeout(timeout)
        .build();
    let mut req = agent.request(&method, url);
    if let Some(hs) = opts
        .get("headers")
        .and_then(|v| v.read_lock::<Map>().map(|m| m.clone()))
    {
        for (k, v) in hs {
            req = req.set(&k, &v.to_string());
        }
    }
    let t0 = Instant::now();
    let sent = match map_string(opts, "body") {
        Some(b) => req.send_string(&b),
        None => req.call(),
    };
    let (status, body, error) = match sent {
        Ok(r) => (
            r.status(),
            r.into_string().unwrap_or_default(),
            String::new(),
        ),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default(), String::new()),
        Err(ureq::Error::Transport(t)) => (0, String::new(), t.to_string()),
    };
    let mut m = Map::new();
    m.insert("ok".into(), (200..300).contains(&status).into());
    m.insert("status".into(), i64::from(status).into());
    m.insert("body".into(), body.into());
    m.insert("error".into(), error.into());
    m.insert(
        "elapsed_ms".into(),
        (t0.elapsed().as_millis() as i64).into(),
    );
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_steering_names_are_refused() {
        for k in [
            "DOCKER_HOST",
            "docker_config",
            "PATH",
            "HOME",
            "https_proxy",
            "XDG_RUNTIME_DIR",
        ] {
            assert!(steers_the_cli(k), "{k}");
        }
        for k in ["OPENAI_API_KEY", "STAND_IN_HEALTH", "PATHS"] {
            assert!(!steers_the_cli(k), "{k}");
        }
    }

    #[test]
    fn object_names_and_hashes() {
        assert!(valid_object_name("fractalic-x.settings.0123456789ab"));
        assert!(!valid_object_name("-x"));
        assert!(!valid_object_name(&"a".repeat(65)));
        assert_eq!(
            sha256_hex(&[b"abc"]),
            // sha256("abc\n")
            "edeaaff3f1774ad2888673770c6d64097e391bc362d7d6fb34982ddf0efd18cb"
        );
        let a = env_hash(&[("K".into(), "v1".into())]);
        let b = env_hash(&[("K".into(), "v2".into())]);
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
        assert!(!a.contains("v1"));
    }
}

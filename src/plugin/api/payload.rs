//! Host functions: the payload and the deploy's labels and environment. Registered with their documentation (see the
//! module above); the implementations they share live in `plugin::host*`.

use super::prelude::*;
use crate::plugin::host::*;
use crate::plugin::host_generic::*;

/// Registers the payload functions.
pub(super) fn register(api: &mut Api, host: &Arc<Host>) {
    let h = Arc::clone(host);
    api.add(Doc {
            sig: "copy_payload(container, uid, gid)",
            result: "{files, dirs, bytes}",
            throws: "Docker unavailable, `docker cp` failing, the script folder changing or unreadable",
            about: "Stages the script folder as the deployment's first release (`/payload/.releases/r1-XXXXXX/`, with `/payload/SCRIPT` a symlink to it and the config files it was deployed with beside it; its manifest is kept for `record_release`), the config files and the `/fractalic/payload` link as one tar stream owned by `uid:gid` (secrets 0600), copied with one `docker cp`. The main script is then read back out of the container (one more `docker cp`, begun when `start_container` has started it): the deploy fails unless it is there as a regular file.",
        }, |e, n| {
        e.register_fn(n, move |container: &str, uid: i64, gid: i64| -> RhaiResult<Map> {
            let d = h.docker_or_raise()?;
            h.check(copy_payload(&h, &d, container, uid, gid))
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "deploy_labels()",
            result: "{label: value}",
            throws: "never",
            about: "The labels everything a deploy creates carries: `fractalic-publisher.managed=true`, `.plugin`, `.created` (RFC 3339 UTC) and `.run` (this run's id).",
        }, |e, n| {
        e.register_fn(n, move || -> Map {
        standard_labels(&h)
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect()
    });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "deploy_env_hash()",
            result: "string",
            throws: "never",
            about: "16 hex digits of the SHA-256 of the deploy's environment (`\"\"` when none), to tell whether it changed without seeing a value.",
        }, |e, n| {
        e.register_fn(n, move || -> String {
        match h.deploy() {
            Some(cfg) if !cfg.env.is_empty() => env_hash(&cfg.env),
            _ => String::new(),
        }
    });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "payload_image(spec)",
            result: "{image, tag, hash, committed, pushed, digest, uid, gid, files, bytes}",
            throws: "any docker failure, the image's user missing from its /etc/passwd",
            about: "Bakes the payload into an image without a Dockerfile. `spec`: `{base, base_id, user, repo, push, image_files}`. The tag is 24 hex digits of the SHA-256 of `base_id`, `user` and the payload; when `REPO:TAG` exists and was pushed nothing is done (`committed` = `pushed` = false). Otherwise a stopped container from `base`, the payload as one tar stream into `docker cp`, `docker commit`, and `docker push` when `push`; the temporary container and the new tag are in the journal. settings.toml, .env and mcp_servers.json never enter the image unless named in `image_files`.",
        }, |e, n| {
        e.register_fn(n, move |spec: Map| -> RhaiResult<Map> {
        let d = h.docker_or_raise()?;
        h.check(payload_image(&h, &d, &spec))
    });
    });
}

//! Host functions: secrets and configs. Registered with their documentation (see the
//! module above); the implementations they share live in `plugin::host*`.

use super::prelude::*;
use crate::plugin::host::*;
use crate::plugin::host_generic::*;

/// Registers the secrets functions.
pub(super) fn register(api: &mut Api, host: &Arc<Host>) {
    let h = Arc::clone(host);
    api.add(Doc {
            sig: "deploy_file_object(kind, file, prefix, labels)",
            result: "{name, hash, created} or ()",
            throws: "a bad kind or name, any other docker failure",
            about: "A Docker `secret` or `config` (`kind`) named `PREFIX` + 12 hex digits of the SHA-256 of the deploy's config file `file` (settings.toml, mcp_servers.json or .env), contents on stdin (never argv), with the deploy labels plus `labels`. An existing one of that name is reused (`created: false`); a created one is in the journal. `()` when the deploy has no such file.",
        }, |e, n| {
        e.register_fn(n, move |kind: &str, file: &str, prefix: &str, labels: Map| -> RhaiResult<Dynamic> {
            let d = h.docker_or_raise()?;
            h.check(deploy_file_object(&h, &d, kind, file, prefix, &labels))
        });
    });
}

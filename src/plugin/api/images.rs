//! Host functions: images. Registered with their documentation (see the
//! module above); the implementations they share live in `plugin::host*`.

use super::prelude::*;
use crate::plugin::host::*;

/// Registers the images functions.
pub(super) fn register(api: &mut Api, host: &Arc<Host>) {
    let h = Arc::clone(host);
    api.add(Doc {
            sig: "pull_image(image, platform, policy)",
            result: "{id, digest, user, pulled, cached}",
            throws: "Docker unavailable, a failed pull with no cached image, policy `never` with no cached image",
            about: "Pulls per `policy`: `always` (a cached image is used, with a warning, when the pull fails), `missing` or `never`.",
        }, |e, n| {
        e.register_fn(n, move |image: &str, platform: &str, policy: &str| -> RhaiResult<Map> {
            let d = h.docker_or_raise()?;
            h.check(pull_image(&h, &d, image, platform, policy))
        });
    });

    let h = Arc::clone(host);
    api.add(
        Doc {
            sig: "image_inspect(image)",
            result: "map or ()",
            throws: "Docker unavailable",
            about: "`docker image inspect` as a map, or `()` when the image is not cached.",
        },
        |e, n| {
            e.register_fn(n, move |image: &str| -> RhaiResult<Dynamic> {
                let d = h.docker_or_raise()?;
                let v = h.check(d.image_inspect(image))?;
                Ok(v.as_ref().map_or(Dynamic::UNIT, json_to_dynamic))
            });
        },
    );
}

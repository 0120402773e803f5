//! Host functions: progress, warnings and failure. Registered with their documentation (see the
//! module above); the implementations they share live in `plugin::host*`.

use super::prelude::*;
use crate::plugin::host::*;

/// Registers the progress functions.
pub(super) fn register(api: &mut Api, host: &Arc<Host>) {
    let h = Arc::clone(host);
    api.add(Doc {
            sig: "progress(percent, message)",
            result: "()",
            throws: "never",
            about: "A step of the operation: a progress line (a bar on a terminal, an event in `--progress json` and the REST API's stream). Percentages never go backwards; they imply the stage (0-9 validating, 10-39 pulling_image, 40-44 preparing_files, 45-59 creating_container, 60-100 starting_container).",
        }, |e, n| {
        e.register_fn(n, move |pct: i64, msg: &str| {
        h.progress.step(pct, msg)
    });
    });

    let h = Arc::clone(host);
    api.add(
        Doc {
            sig: "warn(message)",
            result: "()",
            throws: "never",
            about: "A warning line; also listed in the deploy's `warnings`.",
        },
        |e, n| {
            e.register_fn(n, move |msg: &str| h.progress.warn(msg));
        },
    );

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "bad_input(what, hint)",
            result: "never returns",
            throws: "always: exit 2 with `WHAT: HINT`",
            about: "Ends the entry point as bad input; nothing is changed (what this run created is undone).",
        }, |e, n| {
        e.register_fn(n, move |what: &str, hint: &str| -> RhaiResult<()> { Err(h.raise(Error::input(what, hint))) });
    });

    let h = Arc::clone(host);
    api.add(
        Doc {
            sig: "fail(message)",
            result: "never returns",
            throws: "always: exit 1 with the message",
            about: "Ends the entry point as failed; what this run created is undone.",
        },
        |e, n| {
            e.register_fn(n, move |msg: &str| -> RhaiResult<()> {
                Err(h.raise(Error::failed(msg)))
            });
        },
    );
}

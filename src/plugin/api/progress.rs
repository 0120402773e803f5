//! Host functions: progress, warnings and failure. Registered with their documentation (see the
//! module above); the implementations they share live in `plugin::host*`.

use super::prelude::*;
use crate::plugin::host::*;
use crate::progress::Stage;

/// Registers the progress functions.
pub(super) fn register(api: &mut Api, host: &Arc<Host>) {
    let h = Arc::clone(host);
    api.add(
        Doc {
            sig: "progress(percent, stage, message)",
            result: "()",
            throws: "a stage that is not one of those five (a plugin bug: the run fails, nothing is changed)",
            about: "A step of the operation: a progress line (a bar on a terminal, an event in `--progress json` and the REST API's stream) in `stage`, the Fractalic UI's name for where the run is: `validating`, `pulling_image`, `preparing_files`, `creating_container` or `starting_container` (`completed` and `error` are the host's, at the end). Percentages and stages never go backwards: an earlier stage than the last step's keeps the last one.",
        },
        |e, n| {
            e.register_fn(n, move |pct: i64, stage: &str, msg: &str| -> RhaiResult<()> {
                let Some(stage) = Stage::parse_step(stage) else {
                    let names: Vec<&str> = Stage::ALL[..5].iter().map(|s| s.as_str()).collect();
                    return Err(format!(
                        "progress: stage {stage:?} is not one of {}",
                        names.join(", ")
                    )
                    .into());
                };
                h.progress.step(pct, stage, msg);
                Ok(())
            });
        },
    );

    let h = Arc::clone(host);
    api.add(
        Doc {
            sig: "progress(percent, message)",
            result: "()",
            throws: "never",
            about: "The same step with the stage implied by the percentage (0-9 validating, 10-39 pulling_image, 40-44 preparing_files, 45-59 creating_container, 60-100 starting_container), for plugins written before stages were named; the built-in plugins name theirs.",
        },
        |e, n| {
            e.register_fn(n, move |pct: i64, msg: &str| h.progress.step_by_percent(pct, msg));
        },
    );

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

//! Host functions: the undo journal. Registered with their documentation (see the
//! module above); the implementations they share live in `plugin::host*`.

use super::prelude::*;
use crate::journal::Resource;
use crate::plugin::host::*;

/// Registers the undo functions.
pub(super) fn register(api: &mut Api, host: &Arc<Host>) {
    let h = Arc::clone(host);
    api.add(Doc {
            sig: "undo_now(undo_id)",
            result: "()",
            throws: "the undo failing (the record stays for the final undo)",
            about: "Runs a recorded undo now (a temporary object that has served its purpose) and drops the record.",
        }, |e, n| {
        e.register_fn(n, move |id: i64| -> RhaiResult<()> {
        let r = h.journal().undo_now(Token::from_id(id.max(0) as u64));
        match r.left.first() {
            None => Ok(()),
            Some(l) => Err(h.raise(Error::failed(format!(
                "could not remove {} ({}); remove it with: {}",
                l.what, l.error, l.remove_with
            )))),
        }
    });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "record_undo(argv, what)",
            result: "undo_id (int)",
            throws: "an empty `argv` or an item that is not a string; the journal failing",
            about: "Records `docker ARGV...` in the undo journal without running anything now: for a change that is not an object a call creates (a label the undo of a later call must correct). Undos run newest first, so record this before the call whose undo must run ahead of it.",
        }, |e, n| {
        e.register_fn(n, move |argv: Array, what: &str| -> RhaiResult<i64> {
            let mut args = Vec::with_capacity(argv.len());
            for (i, a) in argv.into_iter().enumerate() {
                match a.into_string() {
                    Ok(s) => args.push(s),
                    Err(t) => {
                        return Err(h.raise(Error::failed(format!(
                            "record_undo: argv[{i}] must be a string, not {t}"
                        ))))
                    }
                }
            }
            if args.is_empty() {
                return Err(h.raise(Error::failed("record_undo: argv is empty")));
            }
            let t = h.check(h.journal().record(Resource::DockerObject {
                what: what.to_string(),
                remove_args: args,
            }))?;
            Ok(t.id() as i64)
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "forget_undo(undo_id)",
            result: "()",
            throws: "never",
            about: "Drops a record without running it: the object is no longer this run's to remove (e.g. Swarm rolled an update back itself).",
        }, |e, n| {
        e.register_fn(n, move |id: i64| {
        h.journal().forget(Token::from_id(id.max(0) as u64));
    });
    });
}

//! Host functions: containers. Registered with their documentation (see the
//! module above); the implementations they share live in `plugin::host*`.

use super::prelude::*;
use crate::plugin::host::*;
use crate::sync::lock;

/// Registers the containers functions.
pub(super) fn register(api: &mut Api, host: &Arc<Host>) {
    let h = Arc::clone(host);
    api.add(
        Doc {
            sig: "container_inspect(name)",
            result: "map or ()",
            throws: "Docker unavailable, `docker inspect` failing otherwise",
            about: "`docker container inspect` as a map, or `()` when there is no such container.",
        },
        |e, n| {
            e.register_fn(n, move |name: &str| -> RhaiResult<Dynamic> {
                let d = h.docker_or_raise()?;
                let v = h.check(d.container_inspect(name))?;
                Ok(v.as_ref().map_or(Dynamic::UNIT, json_to_dynamic))
            });
        },
    );

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "create_container(spec)",
            result: "container id (string)",
            throws: "Docker unavailable, `docker create` failing, a bad spec, an interrupt",
            about: "`docker create` from `{name, image, port, bind, container_port (8001), labels, restart (\"unless-stopped\"), platform}`. The deploy's environment goes in through a pipe (`--env-file /dev/stdin`), never on the command line or in a file; the `managed`, `plugin`, `created` and `run` labels are added. Recorded in the run's undo journal before the create runs: removed automatically if the run fails or is interrupted. Releases the port lock.",
        }, |e, n| {
        e.register_fn(n, move |spec: Map| -> RhaiResult<String> {
        let d = h.docker_or_raise()?;
        h.check(create_container(&h, &d, &spec))
    });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "container_user(container, user)",
            result: "{uid, gid}",
            throws: "Docker unavailable, a user missing from the container's /etc/passwd",
            about: "The uid and gid of a user name, uid or `uid:gid`, as the container's `/etc/passwd` and `/etc/group` define them.",
        }, |e, n| {
        e.register_fn(n, move |container: &str, user: &str| -> RhaiResult<Map> {
            let d = h.docker_or_raise()?;
            h.check(user_ids(&d, container, user, None))
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "container_user(container, user, image_id)",
            result: "{uid, gid}",
            throws: "as `container_user(container, user)`",
            about: "The same, remembered per image id in the user's cache directory, so later deploys of the same image skip reading `/etc/passwd`.",
        }, |e, n| {
        e.register_fn(n, move |container: &str, user: &str, image_id: &str| -> RhaiResult<Map> {
            let d = h.docker_or_raise()?;
            h.check(user_ids(&d, container, user, Some(image_id)))
        });
    });

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "start_container(name)",
            result: "{ok, port_clash, error}",
            throws: "Docker unavailable, an interrupt",
            about: "`docker start`. A failure is reported, not thrown; `port_clash` says the published port was taken (\"port is already allocated\"), so the plugin can retry on another.",
        }, |e, n| {
        e.register_fn(n, move |name: &str| -> RhaiResult<Map> {
        let d = h.docker_or_raise()?;
        let args = ["start", name];
        let wall = SystemTime::now();
        let (status, out) = h.check(d.run_unchecked(&args, None, QUICK))?;
        if status == Some(0) {
            lock(&h.started).insert(name.to_string(), Started::since(wall));
        }
        if status != Some(0) && out.refusal() == docker::Refusal::DaemonDown {
            return Err(h.raise(Error::DaemonDown { detail: out.stderr }));
        }
        let mut m = Map::new();
        let ok = status == Some(0);
        if ok {
            // Not before: a `docker cp` out of a container that is starting waits for it.
            h.begin_main_check();
        }
        let clash = !ok && out.refusal() == docker::Refusal::PortAllocated;
        m.insert("ok".into(), ok.into());
        m.insert("port_clash".into(), clash.into());
        let err = if ok {
            String::new()
        } else {
            Error::Docker {
                argv: d.argv(&args),
                status,
                stderr: out.stderr,
            }
            .to_string()
        };
        m.insert("error".into(), err.into());
        Ok(m)
    });
    });

    let h = Arc::clone(host);
    api.add(
        Doc {
            sig: "stop_container(name, timeout_secs)",
            result: "()",
            throws: "Docker unavailable, `docker stop` failing",
            about: "`docker stop -t N`.",
        },
        |e, n| {
            e.register_fn(n, move |name: &str, secs: i64| -> RhaiResult<()> {
                let d = h.docker_or_raise()?;
                let t = secs.clamp(0, 600).to_string();
                h.check(
                    d.run(
                        &["stop", "-t", &t, name],
                        None,
                        QUICK + Duration::from_secs(secs.clamp(0, 600) as u64),
                    )
                    .map(|_| ()),
                )
            });
        },
    );

    let h = Arc::clone(host);
    api.add(Doc {
            sig: "remove_container(name)",
            result: "()",
            throws: "Docker unavailable, `docker rm` failing (for a container of this run, the message names the command that removes it)",
            about: "`docker rm -f -v`; a missing container is fine.",
        }, |e, n| {
        e.register_fn(n, move |name: &str| -> RhaiResult<()> {
        let d = h.docker_or_raise()?;
        match h.journal.container(name) {
            // One of this run's: the journal removes it and reports what really happened.
            Some(t) => match h.journal.undo_now(t).left.first() {
                None => Ok(()),
                Some(l) => Err(h.raise(Error::failed(format!(
                    "could not remove {} ({}); remove it with: {}",
                    l.what, l.error, l.remove_with
                )))),
            },
            None => h.check(d.remove(name)),
        }
    });
    });
}

//! Crash safety (issue 16): the SIGKILL sweep. Each case runs a command, kills it with SIGKILL
//! at its progress steps and at seeded random delays (see `harness`), then runs `status` and
//! the next natural command, and checks after every kill: the deployment serves, completely,
//! the old or the new release; `status` never says healthy for anything else; `history`
//! names what is live; nothing is left behind (containers, secrets, configs, build
//! containers, journals, the lock, files holding the secret). CI runs a few kill points per
//! case; `scripts/crash-sweep.sh` (FRACTALIC_CRASH_SWEEP=full) runs all of them.

mod harness;
mod proxied;

use harness::{after, group, step, At, Lab, Release, Run};
use std::time::Duration;

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// What a kill point of a docker-registry case expects.
struct Expect<'a> {
    /// What was live before the killed command (None: nothing was deployed).
    old: Option<&'a Release>,
    /// What the killed command makes live (None: it removes the deployment).
    new: Option<&'a Release>,
    /// The next natural command (run after `status`) and what must be live after it.
    natural: Vec<String>,
    after: Option<&'a Release>,
    /// Check `GEN=<version>` in the container's environment too (container updates).
    env_tag: bool,
}

/// `GEN=<version>` of the container, when `env_tag` asks for it.
fn env_matches(lab: &Lab, rel: &Release) -> Result<(), String> {
    let env = support_env(lab);
    let want = format!("GEN={}", rel.version);
    if env.contains(&want) {
        Ok(())
    } else {
        Err(format!(
            "{} holds the files of {} but its environment is {:?}",
            lab.name,
            rel.version,
            env.iter()
                .filter(|e| e.starts_with("GEN="))
                .collect::<Vec<_>>()
        ))
    }
}

fn support_env(lab: &Lab) -> Vec<String> {
    let o = crate::support::run_docker(
        &lab.docker,
        &["inspect", "-f", "{{json .Config.Env}}", &lab.name],
    );
    serde_json::from_slice(&o.stdout).unwrap_or_default()
}

/// The checks after one (possibly) killed docker-registry run. Returns true when the
/// deployment ended where `e.after` says (false: the case resets it).
fn check(lab: &mut Lab, run: &Run, e: &Expect) -> bool {
    let t0 = std::time::Instant::now();
    let ok = check_inner(lab, run, e);
    eprintln!(
        "  {} | {}: run {:.1}s ({}), checks {:.1}s, {}",
        lab.case,
        run.at,
        run.elapsed.as_secs_f64(),
        if run.killed {
            "killed"
        } else {
            "ran to its end"
        },
        t0.elapsed().as_secs_f64(),
        if ok { "ok" } else { "FAILED" }
    );
    ok
}

fn check_inner(lab: &mut Lab, run: &Run, e: &Expect) -> bool {
    let at = run.at.clone();
    if run.killed {
        lab.kills += 1;
    }
    let rels: Vec<&Release> = e.old.iter().chain(e.new.iter()).copied().collect();
    let mut ok = true;
    // 1. Right after the kill, before any command: if NAME runs, it holds a whole release.
    if lab.swarm {
        if let Err(why) = lab.task_releases(&rels) {
            lab.fail(
                &at,
                format!("right after the kill a task runs a mixture: {why}"),
            );
            ok = false;
        }
    } else if managed_running(lab) {
        match lab
            .content_of(&lab.name)
            .and_then(|c| lab.which(&c, &rels).cloned())
        {
            Ok(_) => {}
            Err(why) => {
                lab.fail(
                    &at,
                    format!("right after the kill {} runs a mixture: {why}", lab.name),
                );
                ok = false;
            }
        }
    }
    // 2. status (which reconciles first): never healthy for a broken release; afterwards the
    //    deployment serves the old or the new release completely (or, for a first deploy or
    //    an rm, it is gone without a trace).
    let (code, st, err) = lab.status();
    let serving = lab.serving(&rels);
    if st["healthy"] == true {
        if let Err(why) = &serving {
            lab.fail(
                &at,
                format!("status says healthy but the deployment is broken: {why}"),
            );
            ok = false;
        }
    }
    let gone_ok = code == Some(2)
        && if lab.swarm {
            !service_exists(lab)
        } else {
            lab.containers().is_empty()
        };
    match (&serving, e.old.is_none() || e.new.is_none()) {
        (Ok(rel), _) => {
            if e.env_tag {
                if let Err(why) = env_matches(lab, rel) {
                    lab.fail(&at, format!("after status: {why}"));
                    ok = false;
                }
            }
            // 3. history names what is live.
            if let Err(why) = lab.history_names(rel) {
                lab.fail(&at, format!("after status, history: {why}"));
                ok = false;
            }
        }
        (Err(_), true) if gone_ok => {}
        (Err(why), _) => {
            lab.fail(
                &at,
                format!(
                    "after status (exit {code:?}, healthy={}, {}{}): serves neither the old nor the new release: {why}",
                    st["healthy"],
                    st["error"].as_str().unwrap_or(""),
                    err.lines().last().unwrap_or("").trim()
                ),
            );
            ok = false;
        }
    }
    // 4. The next natural command converges.
    let natural: Vec<&str> = e.natural.iter().map(String::as_str).collect();
    let o = lab.run(&natural);
    let code = o.status.code();
    let removed_again = e.after.is_none()
        && code == Some(2)
        && String::from_utf8_lossy(&o.stderr).contains("no deployment named");
    if code != Some(0) && !removed_again {
        lab.fail(
            &at,
            format!(
                "then `{}` exits {code:?}: {}",
                e.natural[..2.min(e.natural.len())].join(" "),
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .rfind(|l| !l.starts_with('{') && !l.starts_with('['))
                    .unwrap_or("")
                    .trim()
            ),
        );
        ok = false;
    }
    if let Some(want) = e.after {
        match lab.serving(&[want]) {
            Ok(_) => {
                if let Err(why) = lab.history_names(want) {
                    lab.fail(&at, format!("after `{}`, history: {why}", e.natural[0]));
                    ok = false;
                }
            }
            Err(why) => {
                lab.fail(
                    &at,
                    format!(
                        "after `{}`: does not serve {}: {why}",
                        e.natural[0], want.version
                    ),
                );
                ok = false;
            }
        }
    }
    // 5. Nothing left behind.
    let left = lab.leftovers(e.after.is_some(), run);
    if !left.is_empty() {
        lab.fail(&at, format!("left behind: {}", left.join("; ")));
        ok = false;
    }
    ok
}

fn service_exists(lab: &Lab) -> bool {
    crate::support::run_docker(&lab.docker, &["service", "inspect", &lab.name])
        .status
        .success()
}

fn managed_running(lab: &Lab) -> bool {
    crate::managed::state(&lab.docker, &lab.name).as_deref() == Some("running")
}

/// Deploys `rel` (with `extra`) to completion; panics when it fails (setup, not a kill point).
fn deploy_ok(lab: &Lab, rel: &Release, extra: &[&str]) -> Run {
    let r = lab.run_at(&lab.deploy_args(rel, extra), &At::End);
    assert_eq!(
        r.code,
        Some(0),
        "{}: setup deploy of {} failed:\n{}",
        lab.case,
        rel.version,
        r.stderr
    );
    r
}

/// The newest good release that holds the content `payload_hash` names (the release it was
/// first deployed as, or a rollback to it): release ids age out of a history that keeps only
/// its newest releases (a Swarm rollback is itself a release), the content stays in it.
fn release_running(lab: &Lab, payload_hash: &str) -> String {
    let h = lab
        .history()
        .unwrap_or_else(|e| panic!("{}: {e}", lab.case));
    h["releases"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .filter(|r| r["outcome"] == "ok" && r["state"]["payload_hash"] == payload_hash)
        .find_map(|r| r["id"].as_str())
        .unwrap_or_else(|| panic!("{}: no good release holds {payload_hash}: {h}", lab.case))
        .to_string()
}

/// The payload hash of the release `history` calls current.
fn current_payload(lab: &Lab) -> String {
    let h = lab
        .history()
        .unwrap_or_else(|e| panic!("{}: {e}", lab.case));
    let cur = h["current"].as_str().unwrap_or("");
    h["releases"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["id"] == cur)
        .and_then(|r| r["state"]["payload_hash"].as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{}: current release {cur:?} has no payload hash: {h}",
                lab.case
            )
        })
        .to_string()
}

fn current_release(lab: &Lab) -> String {
    lab.history()
        .map(|h| h["current"].as_str().unwrap_or("").to_string())
        .unwrap_or_else(|e| panic!("{}: {e}", lab.case))
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn first_deploy_killed_anywhere_leaves_nothing_or_the_release() {
    let Some(mut lab) = Lab::new("first deploy", "fp-crash-first") else {
        return;
    };
    let v1 = lab.release("v1", 20);
    let args = lab.deploy_args(&v1, &[]);
    let base = deploy_ok(&lab, &v1, &[]);
    let plan = lab.plan(
        &base,
        vec![
            step("Creating container"),
            step("Starting the container"),
            after("Waiting for the AI server", 300),
        ],
        &[
            ("Creating container", &[]),
            ("Copying the script folder", &[50]),
            ("Starting the container", &[]),
            ("Waiting for the AI server", &[300, 700]),
        ],
        0,
    );
    for at in plan {
        lab.reset();
        let run = lab.run_at(&args, &at);
        check(
            &mut lab,
            &run,
            &Expect {
                old: None,
                new: Some(&v1),
                natural: args.clone(),
                after: Some(&v1),
                env_tag: false,
            },
        );
    }
    lab.reset();
    lab.finish();
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn in_place_update_of_3000_files_killed_anywhere_serves_old_or_new() {
    let Some(mut lab) = Lab::new("in-place update", "fp-crash-inplace") else {
        return;
    };
    const FILES: usize = 3000;
    let mut live = lab.release("v1", FILES);
    deploy_ok(&lab, &live, &[]);
    let mut n = 2;
    let next = lab.release(&format!("v{n}"), FILES);
    let base = deploy_ok(&lab, &next, &[]);
    assert!(
        base.steps.iter().any(|s| s.contains("Copying release")),
        "not an in-place update: {:?}",
        base.steps
    );
    live = next;
    let mut plan = lab.plan(
        &base,
        vec![
            after("Copying release", 60),
            after("Copying release", 150),
            group(after("Copying release", 300)),
            // The full sweep found this one: the switch ran on in the container after its
            // client was killed, and flipped the link after the reconcile's switch-back.
            group(after("Copying release", 30)),
            step("Checking /health after the switch"),
            // Killed before the copy-and-switch exec reached the engine: the switch-back of
            // the reconcile once put back the history an earlier, finished switch had saved.
            At::BeforeCall("exec -i -u 0 -e FP_STDIN_TAR=1".into()),
        ],
        &[
            ("Copying release", &[30, 100, 200, 300, 450, 600]),
            ("Checking /health after the switch", &[]),
        ],
        1,
    );
    if lab.full {
        // The same moments of the copy with the docker calls in flight killed too.
        for ms in [30, 60, 100, 150, 200, 450, 600] {
            plan.push(group(after("Copying release", ms)));
        }
    }
    for at in plan {
        n += 1;
        let next = lab.release(&format!("v{n}"), FILES);
        let args = lab.deploy_args(&next, &[]);
        let run = lab.run_at(&args, &at);
        let ok = check(
            &mut lab,
            &run,
            &Expect {
                old: Some(&live),
                new: Some(&next),
                natural: args.clone(),
                after: Some(&next),
                env_tag: false,
            },
        );
        if !ok {
            lab.reset();
            deploy_ok(&lab, &next, &[]);
        }
        live = next;
    }
    lab.finish();
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn container_update_killed_anywhere_serves_old_or_new() {
    let Some(mut lab) = Lab::new("container update", "fp-crash-cupd") else {
        return;
    };
    let mut live = lab.release("v1", 10);
    deploy_ok(&lab, &live, &["--env", "GEN=v1"]);
    let mut n = 2;
    let next = lab.release(&format!("v{n}"), 10);
    let base = deploy_ok(&lab, &next, &["--env", "GEN=v2"]);
    assert!(
        base.steps.iter().any(|s| s.contains("Creating the new")),
        "not a container update: {:?}",
        base.steps
    );
    live = next;
    let plan = lab.plan(
        &base,
        vec![
            step("Creating the new"),
            step("Stopping the old container"),
            after("Waiting for the new", 300),
        ],
        &[
            ("Starting the new container", &[200]),
            ("Waiting for", &[300]),
            ("Creating the new", &[100]),
            ("Stopping the old container", &[500, 1500]),
            ("Waiting for the new", &[300, 800]),
        ],
        1,
    );
    for at in plan {
        n += 1;
        let v = format!("v{n}");
        let next = lab.release(&v, 10);
        let gen = format!("GEN={v}");
        let args = lab.deploy_args(&next, &["--env", &gen]);
        let run = lab.run_at(&args, &at);
        let ok = check(
            &mut lab,
            &run,
            &Expect {
                old: Some(&live),
                new: Some(&next),
                natural: args.clone(),
                after: Some(&next),
                env_tag: true,
            },
        );
        if !ok {
            lab.reset();
            deploy_ok(&lab, &next, &["--env", &gen]);
        }
        live = next;
    }
    lab.finish();
}

/// A deployment with releases r1 (v1) and r2 (v2), then rollbacks between them killed at
/// each step; `container`: r2 was a container update (r1's container is kept).
fn rollback_sweep(lab: Lab, container: bool, ci: Vec<At>, named: &[(&str, &[u64])]) {
    rollback_sweep_with(lab, container, &[], ci, named)
}

/// [`rollback_sweep`] with `extra` flags on every setup deploy (`--proxy`).
fn rollback_sweep_with(
    mut lab: Lab,
    container: bool,
    extra: &[&str],
    ci: Vec<At>,
    named: &[(&str, &[u64])],
) {
    let proxied = extra.contains(&"--proxy");
    let v1 = lab.release("v1", 10);
    let v2 = lab.release("v2", 10);
    let env = |v: &str| {
        let mut e: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if container {
            e.extend(["--env".to_string(), format!("GEN={v}")]);
        }
        e
    };
    let e1 = env("v1");
    let e2 = env("v2");
    deploy_ok(&lab, &v1, &strs(&e1));
    let r1 = current_release(&lab);
    let p1 = current_payload(&lab);
    deploy_ok(&lab, &v2, &strs(&e2));
    let r2 = current_release(&lab);
    let p2 = current_payload(&lab);
    assert_ne!(p1, p2, "v1 and v2 must differ in content");
    assert_eq!((r1.as_str(), r2.as_str()), ("r1", "r2"));
    let name = lab.name.clone();
    let rb = |to: &str| s(&["rollback", &name, "--to", to, "--timeout", "30"]);
    // Baseline: back to r1 and forth to r2, uninterrupted.
    let base = lab.run_at(&rb("r1"), &At::End);
    assert_eq!(base.code, Some(0), "{}", base.stderr);
    let back = lab.run_at(&rb("r2"), &At::End);
    assert_eq!(back.code, Some(0), "{}", back.stderr);
    let plan = lab.plan(&base, ci, named, 0);
    eprintln!("rollback steps: {:?}", base.steps);
    let mut live_is_v2 = true;
    for at in plan {
        let (old, new, content) = if live_is_v2 {
            (&v2, &v1, &p1)
        } else {
            (&v1, &v2, &p2)
        };
        let args = rb(&release_running(&lab, content));
        let run = lab.run_at(&args, &at);
        let mut ok = check(
            &mut lab,
            &run,
            &Expect {
                old: Some(old),
                new: Some(new),
                natural: args.clone(),
                after: Some(new),
                env_tag: container,
            },
        );
        if proxied {
            if let Err(why) = proxied::route_leads_to_name(&lab) {
                lab.fail(&run.at, why);
                ok = false;
            }
        }
        if !ok {
            // Start over from a known state: r1 = v1, r2 = v2, live v2.
            lab.reset();
            deploy_ok(&lab, &v1, &strs(&e1));
            deploy_ok(&lab, &v2, &strs(&e2));
            live_is_v2 = true;
            continue;
        }
        live_is_v2 = !live_is_v2;
    }
    lab.reset();
    if proxied {
        // Only when no other deployment uses it.
        let _ = lab.run(&["proxy", "down"]);
    }
    lab.finish();
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn in_place_rollback_killed_anywhere_serves_old_or_new() {
    let Some(lab) = Lab::new("in-place rollback", "fp-crash-iprb") else {
        return;
    };
    rollback_sweep(
        lab,
        false,
        vec![
            step("Switching"),
            after("Switching", 100),
            // Killed before the staged history was copied in: the reconcile's switch-back once
            // put back the history an earlier, finished switch had saved (history naming a
            // release that does not serve).
            At::BeforeCall("cp - ".into()),
        ],
        &[("Rolling", &[]), ("Switching", &[50, 100, 200])],
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn rollback_onto_a_kept_container_killed_anywhere_serves_old_or_new() {
    let Some(lab) = Lab::new("rollback onto a kept container", "fp-crash-keptrb") else {
        return;
    };
    rollback_sweep(
        lab,
        true,
        // Progress step #3 is the swap's end ("is on release ... again"): found by the full
        // sweep (the kept containers were left and NAME gone).
        vec![
            after("Swapping", 300),
            after("Swapping", 1200),
            At::StepNo(3),
        ],
        &[("Rolling", &[]), ("Swapping", &[100, 300, 600, 1200, 2000])],
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn rm_killed_anywhere_leaves_the_deployment_or_nothing() {
    let Some(mut lab) = Lab::new("rm", "fp-crash-rm") else {
        return;
    };
    let v1 = lab.release("v1", 10);
    let v2 = lab.release("v2", 10);
    // A deployment with a kept container, so rm has several things to remove.
    let setup = |lab: &Lab| {
        deploy_ok(lab, &v1, &["--env", "GEN=v1"]);
        deploy_ok(lab, &v2, &["--env", "GEN=v2"]);
    };
    setup(&lab);
    let rm = s(&["rm", "--force", &lab.name]);
    let base = lab.run_at(&rm, &At::End);
    assert_eq!(base.code, Some(0), "{}", base.stderr);
    let plan = lab.plan(&base, vec![At::Call(2), At::Call(3)], &[], 0);
    for at in plan {
        lab.reset();
        setup(&lab);
        let run = lab.run_at(&rm, &at);
        check(
            &mut lab,
            &run,
            &Expect {
                old: Some(&v2),
                new: None,
                natural: rm.clone(),
                after: None,
                env_tag: false,
            },
        );
    }
    lab.reset();
    lab.finish();
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn stop_and_start_after_a_killed_container_update_tell_the_truth() {
    let Some(mut lab) = Lab::new("stop/start after a killed update", "fp-crash-stst") else {
        return;
    };
    let mut live = lab.release("v1", 10);
    deploy_ok(&lab, &live, &["--env", "GEN=v1"]);
    let mut plan = vec![step("Creating the new"), step("Stopping the old container")];
    if lab.full {
        plan.push(after("Waiting for the new", 200));
        plan.push(step("Starting the new container"));
        plan.push(step("Waiting for"));
    }
    let mut n = 1;
    for at in plan {
        n += 1;
        let v = format!("v{n}");
        let next = lab.release(&v, 10);
        let gen = format!("GEN={v}");
        let args = lab.deploy_args(&next, &["--env", &gen]);
        let run = lab.run_at(&args, &at);
        let at = run.at.clone();
        if run.killed {
            lab.kills += 1;
        }
        let mut ok = true;
        // stop: afterwards nothing of the deployment runs, and it says so truthfully.
        let o = lab.run(&["stop", &lab.name]);
        let running: Vec<String> = lab
            .containers()
            .into_iter()
            .filter(|(_, st)| st == "running")
            .map(|(n, _)| n)
            .collect();
        if o.status.code() != Some(0) {
            lab.fail(
                &at,
                format!(
                    "stop exits {:?}: {}",
                    o.status.code(),
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            );
            ok = false;
        }
        if !running.is_empty() {
            lab.fail(
                &at,
                format!(
                    "stop said {:?} but these still run: {running:?}",
                    String::from_utf8_lossy(&o.stdout).trim()
                ),
            );
            ok = false;
        }
        // start: the old or the new release, completely, and history names it.
        let o = lab.run(&["start", &lab.name, "--timeout", "30"]);
        if o.status.code() != Some(0) {
            lab.fail(
                &at,
                format!(
                    "start exits {:?}: {}",
                    o.status.code(),
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                ),
            );
            ok = false;
        }
        let (st_code, st, _) = lab.status();
        match lab.serving(&[&live, &next]) {
            Ok(rel) => {
                if let Err(why) = env_matches(&lab, rel) {
                    lab.fail(&at, format!("after start: {why}"));
                    ok = false;
                }
                match lab.history_current_files() {
                    Ok((_, f)) if f == rel.files => {}
                    Ok((id, _)) => {
                        lab.fail(
                            &at,
                            format!(
                                "after start {} serves {} but history's current is {id}",
                                lab.name, rel.version
                            ),
                        );
                        ok = false;
                    }
                    Err(why) => {
                        lab.fail(&at, format!("after start, history: {why}"));
                        ok = false;
                    }
                }
            }
            Err(why) => {
                if st["healthy"] == true {
                    lab.fail(&at, format!("status says healthy but: {why}"));
                }
                lab.fail(&at, format!("after start (status exit {st_code:?}): {why}"));
                ok = false;
            }
        }
        // The next deploy converges and leaves nothing behind.
        let o = lab.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        if o.status.code() != Some(0) {
            lab.fail(
                &at,
                format!(
                    "then the deploy exits {:?}: {}",
                    o.status.code(),
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .rfind(|l| !l.starts_with('{'))
                        .unwrap_or("")
                ),
            );
            ok = false;
        } else if let Err(why) = lab.serving(&[&next]) {
            lab.fail(&at, format!("after the deploy: {why}"));
            ok = false;
        }
        let left = lab.leftovers(true, &run);
        if !left.is_empty() {
            lab.fail(&at, format!("left behind: {}", left.join("; ")));
            ok = false;
        }
        if !ok {
            lab.reset();
            deploy_ok(&lab, &next, &["--env", &gen]);
        }
        live = next;
    }
    lab.finish();
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn swarm_first_deploy_killed_anywhere_leaves_nothing_or_the_release() {
    let Some(mut lab) = Lab::new_swarm("swarm first deploy", "fp-crash-swfirst") else {
        return;
    };
    let v1 = lab.release("v1", 5);
    let base = deploy_ok(&lab, &v1, &[]);
    let plan = lab.plan(
        &base,
        vec![
            after("Baking the payload", 300),
            step("Committed and pushed"),
        ],
        &[
            ("Baking the payload", &[]),
            ("Secrets:", &[]),
            ("Creating service", &[]),
            ("Waiting for", &[1000]),
        ],
        0,
    );
    let mut n = 1;
    for at in plan {
        lab.reset();
        // A new version each time, so each deploy bakes (and pushes) a new image.
        n += 1;
        let rel = lab.release(&format!("v{n}"), 5);
        let args = lab.deploy_args(&rel, &[]);
        let run = lab.run_at(&args, &at);
        check(
            &mut lab,
            &run,
            &Expect {
                old: None,
                new: Some(&rel),
                natural: args.clone(),
                after: Some(&rel),
                env_tag: false,
            },
        );
    }
    lab.reset();
    lab.finish();
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn swarm_update_killed_anywhere_serves_old_or_new() {
    let Some(mut lab) = Lab::new_swarm("swarm update", "fp-crash-swupd") else {
        return;
    };
    let mut live = lab.release("v1", 5);
    deploy_ok(&lab, &live, &[]);
    let next = lab.release("v2", 5);
    let base = deploy_ok(&lab, &next, &[]);
    live = next;
    let plan = lab.plan(
        &base,
        vec![
            step("Rolling update"),
            after("Rolling update", 1500),
            // The settings secret is named by its content: with unchanged settings it exists
            // and the live service uses it. A kill between its undo record and the create once
            // left an undo that tried to remove it (the full sweep, forever "in use").
            At::BeforeCall("secret create".into()),
        ],
        &[
            ("Baking the payload", &[300]),
            ("Committed and pushed", &[]),
            ("Rolling update", &[300]),
            ("Waiting for", &[500, 1500]),
        ],
        0,
    );
    let mut n = 2;
    for at in plan {
        n += 1;
        let next = lab.release(&format!("v{n}"), 5);
        let args = lab.deploy_args(&next, &[]);
        let run = lab.run_at(&args, &at);
        let ok = check(
            &mut lab,
            &run,
            &Expect {
                old: Some(&live),
                new: Some(&next),
                natural: args.clone(),
                after: Some(&next),
                env_tag: false,
            },
        );
        if !ok {
            lab.reset();
            deploy_ok(&lab, &next, &[]);
        }
        live = next;
    }
    lab.finish();
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn swarm_rollback_killed_anywhere_serves_old_or_new() {
    let Some(lab) = Lab::new_swarm("swarm rollback", "fp-crash-swrb") else {
        return;
    };
    rollback_sweep(
        lab,
        false,
        vec![step("Rolling"), step("Waiting for")],
        &[
            ("Rolling", &[500]),
            ("Waiting for", &[1000]),
            ("Recording", &[]),
        ],
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn swarm_rm_killed_anywhere_leaves_the_deployment_or_nothing() {
    let Some(mut lab) = Lab::new_swarm("swarm rm", "fp-crash-swrm") else {
        return;
    };
    let v1 = lab.release("v1", 5);
    deploy_ok(&lab, &v1, &[]);
    let rm = s(&["rm", "--force", &lab.name]);
    let base = lab.run_at(&rm, &At::End);
    assert_eq!(base.code, Some(0), "{}", base.stderr);
    let plan = lab.plan(&base, vec![At::Call(2), At::Call(4)], &[], 1);
    for at in plan {
        lab.reset();
        deploy_ok(&lab, &v1, &[]);
        let run = lab.run_at(&rm, &at);
        check(
            &mut lab,
            &run,
            &Expect {
                old: Some(&v1),
                new: None,
                natural: rm.clone(),
                after: None,
                env_tag: false,
            },
        );
    }
    lab.reset();
    lab.finish();
}

/// `serve` killed with SIGKILL in the middle of a deploy it runs (a container update), then
/// started again: the start-up reconciles the deployment; a client re-attaching to the dead
/// run reads a truthful outcome (404: the run is unknown, or an `error` event; never
/// `completed`); the deployment serves the old or the new release; a new deploy through the
/// API converges; nothing is left behind.
#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn serve_killed_mid_deploy_and_started_again_tells_the_truth() {
    let Some(mut lab) = Lab::new("serve killed mid-deploy", "fp-crash-serve") else {
        return;
    };
    let mut live = lab.release("v1", 10);
    deploy_ok(&lab, &live, &["--env", "GEN=v1"]);
    let mut plan = vec![
        ("Starting the new container", 0u64),
        ("Stopping the old container", 0),
    ];
    if lab.full {
        plan.extend([
            ("Waiting for the new", 300),
            ("Creating the new", 0),
            ("Waiting for", 0),
        ]);
    }
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let mut n = 1;
    for (step, after) in plan {
        n += 1;
        let v = format!("v{n}");
        let next = lab.release(&v, 10);
        let body = lab.rest_body(&next, &[("GEN", &v)]);
        let at = format!("serve killed {after} ms after step {step:?}");
        let mut server = lab.serve();
        let r = agent
            .post(&format!("{}/api/deploy/docker-registry/stream", server.url))
            .set("Content-Type", "application/json")
            .set("Accept", "text/event-stream")
            .send_string(&body.to_string())
            .unwrap_or_else(|e| panic!("{at}: the stream request failed: {e}"));
        let rx = harness::sse_events(Box::new(r.into_reader()));
        let mut run_id = None;
        let mut seen = false;
        let mut ended = None;
        while let Ok(ev) = rx.recv_timeout(Duration::from_secs(120)) {
            if run_id.is_none() {
                run_id = ev["deployment_id"].as_str().map(str::to_string);
            }
            if ev["type"] == "completed" || ev["type"] == "error" {
                ended = Some(ev["type"].as_str().unwrap_or("").to_string());
                break;
            }
            if ev["type"] == "step" && ev["message"].as_str().unwrap_or("").contains(step) {
                seen = true;
                break;
            }
        }
        assert!(
            seen || ended.is_some(),
            "{at}: the stream ended without the step"
        );
        if seen {
            std::thread::sleep(Duration::from_millis(after));
            server.kill_hard();
            lab.kills += 1;
        }
        let run = Run {
            at: at.clone(),
            killed: seen,
            code: None,
            steps: Vec::new(),
            run_id: run_id.clone(),
            calls: 0,
            stdout: String::new(),
            stderr: String::new(),
            elapsed: Duration::ZERO,
        };
        drop(server);
        let mut ok = true;
        // Started again: it reconciles at start-up.
        let server = lab.serve();
        // The re-attach to the dead run: 404, or a stream ending in `error`.
        if let (true, Some(id)) = (seen, &run_id) {
            match agent
                .get(&format!("{}/api/deployments/{id}/events", server.url))
                .set("Accept", "text/event-stream")
                .call()
            {
                Err(ureq::Error::Status(404, _)) => {}
                Err(e) => {
                    lab.fail(&at, format!("re-attach to the dead run {id}: {e}"));
                    ok = false;
                }
                Ok(r) => {
                    let rx = harness::sse_events(Box::new(r.into_reader()));
                    let mut last = serde_json::Value::Null;
                    while let Ok(ev) = rx.recv_timeout(Duration::from_secs(30)) {
                        let end = ev["type"] == "completed" || ev["type"] == "error";
                        last = ev;
                        if end {
                            break;
                        }
                    }
                    if last["type"] != "error" {
                        lab.fail(
                            &at,
                            format!("re-attach to the dead run {id} does not end in an error event: {last}"),
                        );
                        ok = false;
                    }
                }
            }
        }
        // The deployment, as the restarted server reports it and as it is.
        let st: serde_json::Value = agent
            .get(&format!("{}/api/deployments/{}", server.url, lab.name))
            .call()
            .ok()
            .and_then(|r| r.into_json().ok())
            .unwrap_or_default();
        match lab.serving(&[&live, &next]) {
            Ok(rel) => {
                if let Err(why) = env_matches(&lab, rel) {
                    lab.fail(&at, format!("after serve restarted: {why}"));
                    ok = false;
                }
                if let Err(why) = lab.history_names(rel) {
                    lab.fail(&at, format!("after serve restarted, history: {why}"));
                    ok = false;
                }
            }
            Err(why) => {
                if st["healthy"] == true {
                    lab.fail(&at, format!("the restarted server says healthy but: {why}"));
                }
                lab.fail(
                    &at,
                    format!(
                        "after serve restarted (its status: healthy={}, state={}): {why}",
                        st["healthy"], st["state"]
                    ),
                );
                ok = false;
            }
        }
        // The same deploy again through the API converges.
        let out: serde_json::Value = agent
            .post(&format!("{}/api/deploy/docker-registry", server.url))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .ok()
            .and_then(|r| r.into_json().ok())
            .unwrap_or_default();
        if out["success"] != true {
            lab.fail(
                &at,
                format!("the deploy again through the API: {}", out["error"]),
            );
            ok = false;
        } else if let Err(why) = lab.serving(&[&next]) {
            lab.fail(&at, format!("after the deploy again: {why}"));
            ok = false;
        }
        drop(server);
        let left = lab.leftovers(true, &run);
        if !left.is_empty() {
            lab.fail(&at, format!("left behind: {}", left.join("; ")));
            ok = false;
        }
        if !ok {
            lab.reset();
            deploy_ok(&lab, &next, &["--env", &format!("GEN={v}")]);
        }
        live = next;
    }
    lab.finish();
}

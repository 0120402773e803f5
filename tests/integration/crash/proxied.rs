//! The SIGKILL sweep of proxied updates (issue 19): a container update and a rollback onto a
//! kept container of a deployment behind the front proxy, killed at each of their steps.
//! Besides the checks of every case (the release NAME holds is whole, `/execute` through the
//! deployment's URL, which is the proxy's, answers that release's version, `status` never says
//! healthy for anything else, nothing is left behind), the proxy's route must lead to NAME:
//! a route left on a removed or renamed container answers 502/503 or another release.

use super::harness::{after, step, Lab};
use super::{check, deploy_ok, rollback_sweep_with, Expect};

/// The proxy is one per engine: these take turns with the tests of `proxy`; None (a skip)
/// without the test bed's proxy image outside CI.
fn proxied_lab(case: &str, prefix: &str) -> Option<(Lab, std::sync::MutexGuard<'static, ()>)> {
    if std::env::var_os("FRACTALIC_PUBLISHER_PROXY_IMAGE").is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but FRACTALIC_PUBLISHER_PROXY_IMAGE is not set (scripts/test.sh sets it)"
        );
        eprintln!("SKIPPED: FRACTALIC_PUBLISHER_PROXY_IMAGE is not set (run scripts/test.sh)");
        return None;
    }
    let guard = crate::proxy::serial();
    Some((Lab::new(case, prefix)?, guard))
}

/// The route of the lab's deployment leads to NAME, as `proxy status` reports it.
pub(super) fn route_leads_to_name(lab: &Lab) -> Result<(), String> {
    let o = lab.run(&["proxy", "status", "--json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).map_err(|e| format!("proxy status --json: {e}"))?;
    let route = v["routes"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["deployment"] == lab.name.as_str()))
        .ok_or_else(|| format!("the proxy has no route for {}: {v}", lab.name))?;
    let ups: Vec<&str> = route["upstreams"]
        .as_array()
        .map(|u| u.iter().filter_map(|u| u["container"].as_str()).collect())
        .unwrap_or_default();
    if ups == [lab.name.as_str()] {
        Ok(())
    } else {
        Err(format!("the route leads to {ups:?}, not to {}", lab.name))
    }
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn proxied_container_update_killed_anywhere_routes_to_old_or_new() {
    let Some((mut lab, _one)) = proxied_lab("proxied container update", "fp-crash-pxupd") else {
        return;
    };
    let mut live = lab.release("v1", 10);
    deploy_ok(&lab, &live, &["--proxy", "--env", "GEN=v1"]);
    let mut n = 2;
    let next = lab.release(&format!("v{n}"), 10);
    let base = deploy_ok(&lab, &next, &["--proxy", "--env", "GEN=v2"]);
    assert!(
        base.steps
            .iter()
            .any(|s| s.contains("Switching the proxy's route")),
        "not a proxied container update: {:?}",
        base.steps
    );
    live = next;
    let plan = lab.plan(
        &base,
        vec![
            step("Switching the proxy's route"),
            step("Draining and stopping"),
            after("Draining and stopping", 150),
        ],
        &[
            ("Starting the new container", &[200]),
            ("Waiting for", &[300]),
            ("Switching the proxy's route", &[30, 100, 250]),
            ("Draining and stopping", &[50, 300, 800]),
            ("is live in a new container", &[]),
        ],
        0,
    );
    for at in plan {
        n += 1;
        let v = format!("v{n}");
        let next = lab.release(&v, 10);
        let gen = format!("GEN={v}");
        let args = lab.deploy_args(&next, &["--proxy", "--env", &gen]);
        let run = lab.run_at(&args, &at);
        let mut ok = check(
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
        if let Err(why) = route_leads_to_name(&lab) {
            lab.fail(&run.at, why);
            ok = false;
        }
        if !ok {
            lab.reset();
            deploy_ok(&lab, &next, &["--proxy", "--env", &gen]);
        }
        live = next;
    }
    lab.reset();
    let _ = lab.run(&["proxy", "down"]);
    lab.finish();
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn proxied_rollback_killed_anywhere_routes_to_old_or_new() {
    let Some((lab, _one)) = proxied_lab("proxied rollback", "fp-crash-pxrb") else {
        return;
    };
    rollback_sweep_with(
        lab,
        true,
        &["--proxy"],
        vec![
            step("Switching the proxy's route"),
            after("Switching the proxy's route", 150),
        ],
        &[
            ("Swapping in the kept container", &[100, 300, 600]),
            ("Switching the proxy's route", &[30, 100, 300]),
        ],
    );
}

//! Parallel deploys of different names: every one succeeds, healthy, on its own port.

use crate::managed;
use crate::support::{self, ContainerGuard};
use std::collections::BTreeSet;

/// Deploys `n` uniquely named stand-ins at once; all must exit 0 on distinct ports and answer
/// /health; they are removed afterwards (guards).
fn parallel_deploys(n: usize) {
    let Some(docker) = support::docker() else {
        return;
    };
    let image = support::pull_stand_in(&docker);
    let names: Vec<String> = (0..n)
        .map(|_| support::unique_name(&format!("fp-par{n}")))
        .collect();
    let _guards: Vec<ContainerGuard> = names.iter().map(|n| ContainerGuard::new(n)).collect();
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("hello.md"), "# Hi\n").unwrap();
    let outputs: Vec<std::process::Output> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|name| {
                let (docker, image, folder) = (&docker, &image, folder.path());
                s.spawn(move || {
                    let mut args = managed::deploy_argv(folder, name, image);
                    args.extend(["--json", "--timeout", "60"]);
                    managed::publisher(docker, &args)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ports = BTreeSet::new();
    for (name, o) in names.iter().zip(&outputs) {
        managed::assert_code(o, 0);
        let v = managed::json(o);
        let port = v["metadata"]["ai_server"]["port"].as_u64().unwrap();
        assert!(ports.insert(port), "port {port} was given twice ({name})");
        let url = v["url"].as_str().unwrap();
        let health = ureq::get(&format!("{url}/health")).call();
        assert!(
            health.is_ok_and(|r| r.status() == 200),
            "{name} at {url} is not healthy"
        );
        assert_eq!(managed::state(&docker, name).as_deref(), Some("running"));
    }
    assert_eq!(ports.len(), n);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn eight_parallel_deploys_all_succeed_on_distinct_ports() {
    parallel_deploys(8);
}

#[test]
#[cfg_attr(no_docker, ignore = "needs Docker (FRACTALIC_TEST_NO_DOCKER=1)")]
fn sixteen_parallel_deploys_all_succeed_on_distinct_ports() {
    parallel_deploys(16);
}

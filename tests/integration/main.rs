//! The one integration-test binary of the workspace: one module per subcommand or component,
//! helpers in `support`. Tests that need no daemon always run; Docker tests are ignored with
//! FRACTALIC_TEST_NO_DOCKER=1, say SKIPPED without a daemon, and fail then with CI=true.

mod support;

mod backend;
mod cluster;
mod config_file;
mod container;
mod contract;
mod crash;
mod crash_a;
mod crash_core;
mod deploy;
mod doctor;
mod dry_run;
mod engine;
mod interrupt;
mod layers;
mod lifecycle;
mod logs;
mod managed;
mod parallel;
mod plugins;
mod proxy;
mod proxy_ops;
mod ps;
mod readiness;
mod rest_findings;
mod serve;
mod shell;
mod stand_in;
mod status;
mod swarm;
mod ui;
mod update;
mod webpage;

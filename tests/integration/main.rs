//! The one integration-test binary of the workspace: one module per subcommand or component,
//! helpers in `support`. Docker tests skip without a daemon (fail with CI=true).

mod support;

mod config_file;
mod deploy;
mod doctor;
mod interrupt;
mod lifecycle;
mod logs;
mod managed;
mod parallel;
mod plugins;
mod ps;
mod serve;
mod shell;
mod stand_in;
mod status;
mod swarm;

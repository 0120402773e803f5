//! fractalic-publisher: deploys Fractalic scripts as containers through Rhai platform plugins.

pub mod cleanup;
pub mod cli;
pub mod config;
pub mod contract;
pub mod deploy;
pub mod deploy_file;
pub mod docker;
pub mod doctor;
pub mod engine;
pub mod error;
pub mod health;
pub mod journal;
pub mod lock;
pub mod manage;
pub mod outcome;
pub mod payload;
pub mod plugin;
pub mod ports;
pub mod progress;
pub mod readiness;
pub mod reconcile;
pub mod release;
pub mod run;
pub mod server;
pub mod state;
pub mod update;

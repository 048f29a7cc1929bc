//! herdsman's integration tests: one binary, real processes, real sockets on 127.0.0.1.

mod support;

mod accepting;
mod admin;
mod control;
mod examples;
mod failures;
mod handoff;
mod hostile;
mod ipc;
mod languages;
mod library;
mod limits;
mod log_files;
mod logs;
mod messages;
mod monit;
mod node_cluster;
mod orphans;
mod port_group;
mod proxy;
mod python_servers;
mod readme;
mod reload;
mod replacing;
mod rescue;
mod restarts;
mod run;
mod shutdown;
mod state;
mod state_blocking;
mod state_dialect;
mod state_differential;
mod state_libraries;
mod state_scripting;
mod sticky;

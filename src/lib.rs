//! playstate: the stateful back end that video players talk to while someone watches.
//!
//! Dependencies point one way: `api` → `users` → (`cluster`, `actors`) → `domain`.
//! `domain` holds the rules and no I/O; everything else is plumbing around it.

pub mod actors;
pub mod api;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod server;
pub mod telemetry;
pub mod users;

//! playstate: the stateful back end that video players talk to while someone watches.
//!
//! Dependencies point one way: `api` → `users` → (`cluster`, `actors`) → `domain`.
//! `domain` holds the rules and no I/O; everything else is plumbing around it.

pub mod actors;
pub mod admin;
pub mod api;
pub mod aws;
pub mod catalog;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod error_chain;
pub mod events;
pub mod retry;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod trailers;
pub mod users;
pub mod worker;

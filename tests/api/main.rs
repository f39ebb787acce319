//! Black-box tests: each starts the real `playstate` binary on a free port (and, where
//! needed, talks to the moto emulator that scripts/test.sh runs) and speaks HTTP to it.

mod aws;
mod cluster;
mod damaged_store;
mod drain_outage;
mod failover;
mod hardening;
mod helpers;
mod library;
mod library_dynamo;
mod loadtest;
mod openapi;
mod ops;
mod outage;
mod proxy;
mod security;
mod stopping;
mod streams;
mod trailers;

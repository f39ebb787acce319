//! Black-box tests: each starts the real `playstate` binary on a free port (and, where
//! needed, talks to the moto emulator that scripts/test.sh runs) and speaks HTTP to it.

mod aws;
mod cluster;
mod drain_outage;
mod failover;
mod helpers;
mod library;
mod library_dynamo;
mod loadtest;
mod ops;
mod outage;
mod proxy;
mod streams;
mod trailers;

//! Trailers (seed 001): content is onboarded by new-content messages, never by reads, and
//! reads are answered from memory.
//!
//! Every node consumes the new-content queue (SQS hands each message to one consumer),
//! resolves the content URL through the content API and TMDB, stores the result, and
//! commits it to the trailer cache: the Raft state machine, replicated to every node, so
//! every node answers reads from memory without a store round trip, and a node that joins
//! later gets every entry from the log or a snapshot.

pub mod cache;
pub mod consumer;
pub mod refresher;
pub mod resolve;

pub use cache::{CacheError, TrailerCache, oldest_before};
pub use consumer::Onboarding;
pub use resolve::{ResolveError, Resolver};

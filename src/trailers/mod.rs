//! Trailers (seed 001): content is onboarded by new-content messages, never by reads, and
//! reads are answered from memory.
//!
//! Every node consumes the new-content queue (SQS hands each message to one consumer),
//! resolves the content URL through the content API and TMDB, stores the result, and puts
//! it in the trailer cache. On a single node the cache is a local map filled from the
//! store at start; in a cluster it is backed by the replicated state machine, so every
//! node answers reads without a store round trip.

pub mod cache;
pub mod consumer;
pub mod refresher;
pub mod resolve;

pub use cache::{LocalTrailerCache, TrailerCache};
pub use consumer::Onboarding;
pub use resolve::{ResolveError, Resolver};

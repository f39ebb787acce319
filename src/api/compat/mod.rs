//! The seed systems' HTTP contracts, served unchanged so their clients can switch over.
//! Each adapter only translates its contract's shapes into `Users` calls: the limit, the
//! leases and the slots are the same ones `/v1` uses.

pub mod heartbeat;
pub mod streamy;
pub mod video_streams;

pub fn routes(cfg: &mut actix_web::web::ServiceConfig) {
    streamy::routes(cfg);
    heartbeat::routes(cfg);
    video_streams::routes(cfg);
}

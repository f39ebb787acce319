//! playstate's own API.

pub mod streams;

pub fn routes(cfg: &mut actix_web::web::ServiceConfig) {
    streams::routes(cfg);
}

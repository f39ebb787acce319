//! playstate's own API.

pub mod progress;
pub mod slot_view;
pub mod streams;
pub mod watchlist;

use actix_web::HttpRequest;

use super::error::{ApiError, FieldProblem};
use crate::domain::AssetId;

pub fn routes(cfg: &mut actix_web::web::ServiceConfig) {
    streams::routes(cfg);
    progress::routes(cfg);
    watchlist::routes(cfg);
}

/// The `{assetId}` path segment, which must be a UUID.
fn asset_in_path(req: &HttpRequest) -> Result<AssetId, ApiError> {
    AssetId::parse(&super::params::path_text(req, "assetId")?)
        .map_err(|_| ApiError::field("assetId", FieldProblem::NotUuid))
}

//! `/v1/watchlist`: what the user wants to watch. Edits are written through: 200 only
//! once stored.

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;

use super::asset_in_path;
use crate::api::auth::Caller;
use crate::api::error::{ApiError, Failure, contract};
use crate::api::{AppState, route};
use crate::catalog::AssetCheck;
use crate::domain::{AssetId, Timestamp};

type Result<T> = std::result::Result<T, Failure<contract::Problem>>;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(route("/v1/watchlist").route(web::get().to(list)))
        .service(
            route("/v1/watchlist/{assetId}")
                .route(web::put().to(add))
                .route(web::delete().to(remove)),
        );
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WatchlistView {
    asset: AssetId,
    added_at: Timestamp,
}

async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse> {
    let items = state.users.watchlist(&caller.user).await?;
    let views: Vec<WatchlistView> = items
        .into_iter()
        .map(|(asset, added_at)| WatchlistView { asset, added_at })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// Idempotent; 404 only for an asset the configured catalog does not know.
async fn add(state: web::Data<AppState>, caller: Caller, req: HttpRequest) -> Result<HttpResponse> {
    let asset = asset_in_path(&req)?;
    match state.catalog.check(asset).await {
        Ok(AssetCheck::Unknown) => {
            return Err(ApiError::NotFound(format!("unknown asset {asset}")).into());
        }
        Ok(AssetCheck::Known { .. }) => {}
        Err(e) => return Err(ApiError::Unavailable(e.to_string()).into()),
    }
    state
        .users
        .edit_watchlist(&caller.user, asset, true)
        .await?;
    Ok(HttpResponse::Ok().finish())
}

/// Idempotent, no catalog check: "make sure it is not on the list".
async fn remove(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse> {
    let asset = asset_in_path(&req)?;
    state
        .users
        .edit_watchlist(&caller.user, asset, false)
        .await?;
    Ok(HttpResponse::Ok().finish())
}

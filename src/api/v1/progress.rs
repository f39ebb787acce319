//! `/v1/progress`: where the user stopped in each asset. Updates land in the user's actor
//! at once (reads see them) and reach the store in the next flush.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::asset_in_path;
use crate::api::auth::Caller;
use crate::api::body;
use crate::api::error::{ApiError, Failure, FieldProblem, contract};
use crate::api::{AppState, route};
use crate::catalog::AssetCheck;
use crate::domain::{AssetId, Seconds};

type Result<T> = std::result::Result<T, Failure<contract::Problem>>;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(route("/v1/progress").route(web::get().to(list)))
        .service(
            route("/v1/progress/{assetId}")
                .route(web::get().to(get))
                .route(web::put().to(put))
                .route(web::delete().to(delete)),
        );
}

#[derive(Serialize)]
pub struct ProgressView {
    asset: AssetId,
    progress: Seconds,
}

impl From<(AssetId, Seconds)> for ProgressView {
    fn from((asset, progress): (AssetId, Seconds)) -> Self {
        ProgressView { asset, progress }
    }
}

#[derive(Deserialize, Default)]
struct ProgressBody {
    progress: Option<serde_json::Value>,
}

/// The body's progress: 400 unless an integer, 416 unless within `0..=max`. An integer is
/// a number without a fraction, `1135.0` too: JSON Schema (so the OpenAPI document) counts
/// it as one, and clients whose JSON numbers are all floats send it so.
fn seconds_in(body: &[u8], max: Seconds) -> std::result::Result<Seconds, ApiError> {
    let parsed: ProgressBody = body::object(body)?;
    let number = match parsed.progress {
        None => return Err(ApiError::field("progress", FieldProblem::Missing)),
        Some(serde_json::Value::Number(n)) => n,
        Some(_) => return Err(ApiError::field("progress", FieldProblem::NotInteger)),
    };
    let out_of_range =
        || ApiError::OutOfRange(format!("progress must be between 0 and {max} seconds"));
    if let Some(seconds) = number.as_u64() {
        return Seconds::try_from(seconds)
            .ok()
            .filter(|s| *s <= max)
            .ok_or_else(out_of_range);
    }
    match number.as_f64() {
        Some(f) if f.fract() != 0.0 || !f.is_finite() => {
            Err(ApiError::field("progress", FieldProblem::NotInteger))
        }
        // Integral and within `0..=max`, so exactly representable as `Seconds`.
        Some(f) if (0.0..=f64::from(max)).contains(&f) => Ok(f as Seconds),
        _ => Err(out_of_range()),
    }
}

async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse> {
    let all = state.users.progress(&caller.user, None).await?;
    let views: Vec<ProgressView> = all.into_iter().map(ProgressView::from).collect();
    Ok(HttpResponse::Ok().json(views))
}

async fn get(state: web::Data<AppState>, caller: Caller, req: HttpRequest) -> Result<HttpResponse> {
    let asset = asset_in_path(&req)?;
    let found = state.users.progress(&caller.user, Some(asset)).await?;
    match found.into_iter().next() {
        Some(entry) => Ok(HttpResponse::Ok().json(ProgressView::from(entry))),
        None => Err(ApiError::NotFound(format!("no progress for asset {asset}")).into()),
    }
}

async fn put(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: std::result::Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse> {
    let asset = asset_in_path(&req)?;
    let body = body::bytes(body, state.max_body_bytes)?;
    let seconds = seconds_in(&body, state.max_progress_seconds)?;
    match state.catalog.check(asset).await {
        Ok(AssetCheck::Unknown) => {
            return Err(ApiError::NotFound(format!("unknown asset {asset}")).into());
        }
        Ok(AssetCheck::Known {
            duration: Some(duration),
        }) if seconds > duration => {
            return Err(ApiError::OutOfRange(format!(
                "progress is beyond the asset's {duration} seconds"
            ))
            .into());
        }
        Ok(AssetCheck::Known { .. }) => {}
        Err(e) => return Err(ApiError::Unavailable(e.to_string()).into()),
    }
    state
        .users
        .set_progress(&caller.user, asset, seconds)
        .await?;
    Ok(HttpResponse::Ok().json(ProgressView {
        asset,
        progress: seconds,
    }))
}

/// Always 200: "make sure there is no progress", with no catalog check.
async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse> {
    let asset = asset_in_path(&req)?;
    state.users.clear_progress(&caller.user, asset).await?;
    Ok(HttpResponse::Ok().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(body: &str) -> Option<u16> {
        seconds_in(body.as_bytes(), 1000)
            .err()
            .map(|e| e.status(crate::api::error::Dialect::Problem).as_u16())
    }

    #[test]
    fn progress_must_be_an_integer_within_range() {
        assert_eq!(seconds_in(br#"{"progress":1135}"#, 2000).unwrap(), 1135);
        assert_eq!(seconds_in(br#"{"progress":0}"#, 2000).unwrap(), 0);
        assert_eq!(status(r#"{"progress":1000}"#), None);
        assert_eq!(status(r#"{"progress":1001}"#), Some(416));
        assert_eq!(status(r#"{"progress":-1}"#), Some(416));
        assert_eq!(status(r#"{"progress":99999999999999}"#), Some(416));
        assert_eq!(seconds_in(br#"{"progress":1135.0}"#, 2000).unwrap(), 1135);
        assert_eq!(seconds_in(br#"{"progress":-0.0}"#, 2000).unwrap(), 0);
        assert_eq!(status(r#"{"progress":1001.0}"#), Some(416));
        assert_eq!(status(r#"{"progress":-1.0}"#), Some(416));
        assert_eq!(status(r#"{"progress":1e300}"#), Some(416));
        for bad in [
            r#"{"progress":1.5}"#,
            r#"{"progress":"10"}"#,
            r#"{"progress":null}"#,
            r#"{}"#,
            "[1]",
            "{",
        ] {
            assert_eq!(status(bad), Some(400), "{bad}");
        }
    }
}

//! VideoStreams (seed 004): `POST /user/{user_id}/stream`, `GET /user/{user_id}/streams`.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::api::body::{self, Field};
use crate::api::error::{ApiError, Failure, contract};
use crate::api::{AppState, middleware, params, route};
use crate::domain::{Origin, SessionId, StreamId, UserId};
use crate::users::StreamClaim;

type Result<T> = std::result::Result<T, Failure<contract::VideoStreams>>;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(route("/user/{user_id}/stream").route(web::post().to(watch)))
        .service(route("/user/{user_id}/streams").route(web::get().to(list)));
}

#[derive(Deserialize, Default)]
struct WatchBody<'a> {
    #[serde(borrow, default)]
    video_id: Field<'a>,
}

#[derive(Serialize)]
struct Watching<'a> {
    video_id: &'a str,
}

#[derive(Serialize)]
struct Streams<'a> {
    streams: Vec<&'a str>,
}

fn user_in_path(req: &HttpRequest) -> std::result::Result<UserId, ApiError> {
    let user: UserId = params::path_id(req, "user_id")?;
    middleware::note_user(req, &user);
    Ok(user)
}

async fn watch(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: std::result::Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse> {
    let user = user_in_path(&req)?;
    let body = body::bytes(body, state.max_body_bytes)?;
    let parsed: WatchBody = body::object(&body)?;
    let video: StreamId = parsed.video_id.id("video_id")?;
    let claim = StreamClaim {
        origin: Origin::VideoStreams,
        session: parsed.video_id.id::<SessionId>("video_id")?,
        stream: video.clone(),
        plan: state.trusted_plan(&req),
    };
    state.users.heartbeat(&user, claim).await?;
    Ok(HttpResponse::Ok().json(Watching {
        video_id: video.as_str(),
    }))
}

/// Every stream the user is watching, through any contract.
async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse> {
    let user = user_in_path(&req)?;
    let slots = state.users.streams(&user).await?;
    Ok(HttpResponse::Ok().json(Streams {
        streams: slots.iter().map(|slot| slot.stream.as_str()).collect(),
    }))
}

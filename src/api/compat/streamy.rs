//! Streamy (seed 002): subscription-style slots, `POST`/`DELETE /video-streams/subscription`.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::api::body::{self, Field};
use crate::api::error::{ApiError, Failure, FieldProblem, contract};
use crate::api::{AppState, middleware, route};
use crate::domain::{Origin, SessionId, StreamId, UserId};
use crate::users::StreamClaim;

type Result<T> = std::result::Result<T, Failure<contract::Streamy>>;

/// Streamy validated ids with Joi's `.max(36)`: a UUID's length.
const MAX_CHARS: usize = 36;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        route("/video-streams/subscription")
            .route(web::post().to(subscribe))
            .route(web::delete().to(unsubscribe)),
    );
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SubscriptionBody<'a> {
    #[serde(borrow, default)]
    user_id: Field<'a>,
    #[serde(borrow, default)]
    video_stream_id: Field<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Subscription<'a> {
    user_id: &'a str,
    video_stream_id: &'a str,
}

#[derive(Serialize)]
struct Subscribed<'a> {
    status: u16,
    data: Subscription<'a>,
}

fn short_id<T: crate::domain::Id>(
    field: &Field<'_>,
    name: &'static str,
) -> std::result::Result<T, ApiError> {
    let text = field.text(name)?;
    if text.chars().count() > MAX_CHARS {
        return Err(ApiError::field(
            name,
            FieldProblem::TooLong {
                max: MAX_CHARS,
                unit: "characters",
            },
        ));
    }
    field.id(name)
}

fn subscription(
    state: &AppState,
    req: &HttpRequest,
    body: std::result::Result<Bytes, actix_web::Error>,
) -> std::result::Result<(UserId, StreamId), ApiError> {
    let body = body::bytes(body, state.max_body_bytes)?;
    let parsed: SubscriptionBody = body::object(&body)?;
    let user: UserId = short_id(&parsed.user_id, "userId")?;
    middleware::note_user(req, &user);
    let video = short_id(&parsed.video_stream_id, "videoStreamId")?;
    Ok((user, video))
}

async fn subscribe(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: std::result::Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse> {
    let (user, video) = subscription(&state, &req, body)?;
    let claim = StreamClaim {
        origin: Origin::Streamy,
        session: parsed_session(&video)?,
        stream: video.clone(),
        plan: state.trusted_plan(&req),
    };
    state.users.heartbeat(&user, claim).await?;
    Ok(HttpResponse::Ok().json(Subscribed {
        status: 200,
        data: Subscription {
            user_id: user.as_str(),
            video_stream_id: video.as_str(),
        },
    }))
}

async fn unsubscribe(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: std::result::Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse> {
    let (user, video) = subscription(&state, &req, body)?;
    let session = parsed_session(&video)?;
    state
        .users
        .end_stream(&user, Origin::Streamy, session)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A Streamy slot is identified by its video stream.
fn parsed_session(video: &StreamId) -> std::result::Result<SessionId, ApiError> {
    SessionId::parse(video.as_str()).map_err(|e| ApiError::field("videoStreamId", e))
}

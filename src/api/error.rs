//! The one place where failures become HTTP responses.
//!
//! Handlers fail with an `ApiError` — what went wrong — and name the `Dialect` of the
//! contract they serve; rendering picks status and body from both. The seed systems
//! disagree on error formats (JSON `{status,error}`, plain text, `{message}`), and their
//! clients depend on them byte for byte, so dialect is part of the error, not an
//! afterthought in each handler.

use std::fmt;
use std::marker::PhantomData;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::cluster::ClusterError;
use crate::domain::{IdError, LimitReached, UserId};
use crate::error_chain::DisplayChain;
use crate::users::{LibraryCallError, StreamError};

/// How a contract spells its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// playstate's own routes: RFC 9457 problem details.
    Problem,
    /// Streamy (seed 002): `{"status":n,"error":"..."}` with Joi-style field messages.
    Streamy,
    /// Heartbeat (seed 003): plain text.
    Heartbeat,
    /// VideoStreams (seed 004): `{"message":"..."}`.
    VideoStreams,
    /// The Trailer Service's reads (seed 001): plain text.
    Trailers,
    /// The Trailer Service's publish utility (seed 001): `{"error":"..."}`.
    TrailerPublish,
}

/// What is wrong with one input field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldProblem {
    Missing,
    NotString,
    NotInteger,
    NotUuid,
    /// Present but not acceptable (for example outside an allowed prefix).
    Invalid,
    Empty,
    TooLong {
        max: usize,
        unit: &'static str,
    },
    ControlCharacter,
    /// Percent-decoded, its bytes are not UTF-8 (a path or query value).
    NotUtf8,
}

impl From<IdError> for FieldProblem {
    fn from(e: IdError) -> Self {
        match e {
            IdError::Empty => FieldProblem::Empty,
            IdError::TooLong => FieldProblem::TooLong {
                max: crate::domain::ids::MAX_ID_BYTES,
                unit: "bytes",
            },
            IdError::ControlCharacter => FieldProblem::ControlCharacter,
        }
    }
}

#[derive(Debug)]
pub enum ApiError {
    /// The body is not JSON at all.
    MalformedBody(String),
    /// The body is JSON but not an object.
    BodyNotObject,
    BodyTooLarge {
        limit: usize,
    },
    /// The body did not arrive within `server.body_timeout` (408).
    BodyTimeout,
    InvalidField {
        field: &'static str,
        problem: FieldProblem,
    },
    Unauthorized(&'static str),
    LimitReached {
        user: UserId,
        refusal: LimitReached,
    },
    NotFound(String),
    /// A value outside the range the resource allows (416).
    OutOfRange(String),
    Unavailable(String),
}

impl ApiError {
    pub fn field(field: &'static str, problem: impl Into<FieldProblem>) -> ApiError {
        ApiError::InvalidField {
            field,
            problem: problem.into(),
        }
    }

    /// The status this error has in a contract.
    pub fn status(&self, dialect: Dialect) -> StatusCode {
        match self {
            ApiError::MalformedBody(_)
            | ApiError::BodyNotObject
            | ApiError::InvalidField { .. } => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::LimitReached { .. } => match dialect {
                Dialect::Heartbeat => StatusCode::BAD_REQUEST,
                Dialect::VideoStreams => StatusCode::FORBIDDEN,
                _ => StatusCode::TOO_MANY_REQUESTS,
            },
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::OutOfRange(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The human-readable message this error has in a contract.
    pub fn message(&self, dialect: Dialect) -> String {
        match self {
            ApiError::MalformedBody(detail) => format!("request body is not valid JSON: {detail}"),
            ApiError::BodyNotObject if dialect == Dialect::Streamy => {
                "\"value\" must be of type object".to_owned()
            }
            ApiError::BodyNotObject => "request body must be a JSON object".to_owned(),
            ApiError::BodyTooLarge { limit } => {
                format!("request body is larger than {limit} bytes")
            }
            ApiError::BodyTimeout => "the request body did not arrive in time".to_owned(),
            ApiError::InvalidField { field, problem } => field_message(dialect, field, *problem),
            ApiError::Unauthorized(why) => (*why).to_owned(),
            ApiError::LimitReached { user, refusal } => match dialect {
                Dialect::Problem => format!("stream limit of {} reached", refusal.limit),
                Dialect::Streamy => {
                    "You've reached the maximum number of concurrent video streams".to_owned()
                }
                Dialect::Heartbeat => {
                    format!(
                        "user {user} has reached concurrency limit {}",
                        refusal.limit
                    )
                }
                Dialect::VideoStreams => "User watching too many video streams.".to_owned(),
                Dialect::Trailers | Dialect::TrailerPublish => "too many streams".to_owned(),
            },
            ApiError::NotFound(what) | ApiError::OutOfRange(what) => what.clone(),
            ApiError::Unavailable(why) => format!("temporarily unavailable: {why}"),
        }
    }

    /// The whole response this error has in a contract.
    pub fn render(&self, dialect: Dialect) -> HttpResponse {
        let status = self.status(dialect);
        let message = self.message(dialect);
        let mut response = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            tracing::warn!(reason = %message, "answered 503");
        }
        if status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        match dialect {
            Dialect::Problem => {
                let (limit, active_streams) = match self {
                    ApiError::LimitReached { refusal, .. } => (
                        Some(refusal.limit),
                        Some(refusal.active.iter().map(Into::into).collect()),
                    ),
                    _ => (None, None),
                };
                let body = Problem {
                    kind: "about:blank",
                    title: status.canonical_reason().unwrap_or("Error"),
                    status: status.as_u16(),
                    detail: &message,
                    limit,
                    active_streams,
                };
                response
                    .content_type("application/problem+json")
                    .body(serde_json::to_vec(&body).unwrap_or_default())
            }
            Dialect::Streamy => response.json(StreamyError {
                status: status.as_u16(),
                error: &message,
            }),
            Dialect::Heartbeat | Dialect::Trailers => response
                .content_type("text/plain; charset=utf-8")
                .body(message),
            Dialect::TrailerPublish => response.json(serde_json::json!({ "error": message })),
            Dialect::VideoStreams => response.json(VideoStreamsError { message: &message }),
        }
    }
}

/// Names the contract a handler serves, as a type, so handlers can use `?` on `ApiError`.
pub trait Speaks: 'static {
    const DIALECT: Dialect;
}

/// Dialect markers for `Failure`.
pub mod contract {
    use super::{Dialect, Speaks};

    macro_rules! marker {
        ($name:ident) => {
            #[derive(Debug)]
            pub enum $name {}
            impl Speaks for $name {
                const DIALECT: Dialect = Dialect::$name;
            }
        };
    }

    marker!(Problem);
    marker!(Streamy);
    marker!(Heartbeat);
    marker!(VideoStreams);
    marker!(Trailers);
    marker!(TrailerPublish);
}

/// A handler's failure, rendered in the dialect of contract `D`.
pub struct Failure<D>(pub ApiError, PhantomData<D>);

impl<D> From<ApiError> for Failure<D> {
    fn from(error: ApiError) -> Self {
        Failure(error, PhantomData)
    }
}

impl From<StreamError> for ApiError {
    fn from(error: StreamError) -> Self {
        match error {
            StreamError::LimitReached { user, refusal } => ApiError::LimitReached { user, refusal },
            StreamError::Unavailable(reason) => ApiError::Unavailable(reason.to_string()),
        }
    }
}

impl From<LibraryCallError> for ApiError {
    fn from(error: LibraryCallError) -> Self {
        match error {
            // Its message leaves out its cause (the log prints the chain): say it here.
            LibraryCallError::Library(e) => ApiError::Unavailable(DisplayChain(&e).to_string()),
            // Its message already holds its reason.
            LibraryCallError::Unavailable(_) => ApiError::Unavailable(error.to_string()),
        }
    }
}

impl<D> From<LibraryCallError> for Failure<D> {
    fn from(error: LibraryCallError) -> Self {
        Failure(error.into(), PhantomData)
    }
}

impl<D> From<StreamError> for Failure<D> {
    fn from(error: StreamError) -> Self {
        Failure(error.into(), PhantomData)
    }
}

impl<D: Speaks> fmt::Debug for Failure<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} in {:?}", self.0, D::DIALECT)
    }
}

impl<D: Speaks> fmt::Display for Failure<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message(D::DIALECT))
    }
}

impl<D: Speaks> ResponseError for Failure<D> {
    fn status_code(&self) -> StatusCode {
        self.0.status(D::DIALECT)
    }

    fn error_response(&self) -> HttpResponse {
        self.0.render(D::DIALECT)
    }
}

fn field_message(dialect: Dialect, field: &str, problem: FieldProblem) -> String {
    match (dialect, problem) {
        // Joi's wording, which Streamy's clients were written against.
        (Dialect::Streamy, FieldProblem::Missing) => format!("\"{field}\" is required"),
        (Dialect::Streamy, FieldProblem::NotString) => format!("\"{field}\" must be a string"),
        (Dialect::Streamy, FieldProblem::NotInteger) => format!("\"{field}\" must be a number"),
        (Dialect::Streamy, FieldProblem::NotUuid) => format!("\"{field}\" must be a valid GUID"),
        (Dialect::Streamy, FieldProblem::Empty) => {
            format!("\"{field}\" is not allowed to be empty")
        }
        (Dialect::Streamy, FieldProblem::TooLong { max, .. }) => {
            format!("\"{field}\" length must be less than or equal to {max} characters long")
        }
        (Dialect::Streamy, FieldProblem::ControlCharacter) => {
            format!("\"{field}\" must not contain control characters")
        }
        (Dialect::Streamy, FieldProblem::NotUtf8) => {
            format!("\"{field}\" must be valid UTF-8 once percent-decoded")
        }
        (Dialect::Trailers, FieldProblem::Missing | FieldProblem::Empty) => {
            format!("Missing '{field}' parameter")
        }
        (Dialect::Trailers, _) => format!("Invalid '{field}' parameter"),
        (Dialect::TrailerPublish, _) => "URL must be provided in the request body.".to_owned(),
        // The heartbeat service treated an empty value as absent.
        (Dialect::Heartbeat, FieldProblem::Missing | FieldProblem::Empty) => {
            format!("{field} is missing")
        }
        (_, FieldProblem::Missing) => format!("{field} is required"),
        (_, FieldProblem::NotString) => format!("{field} must be a string"),
        (_, FieldProblem::NotInteger) => format!("{field} must be an integer"),
        (_, FieldProblem::NotUuid) => format!("{field} must be a UUID"),
        (_, FieldProblem::Invalid) => format!("{field} is not valid"),
        (_, FieldProblem::Empty) => format!("{field} must not be empty"),
        (_, FieldProblem::TooLong { max, unit }) => format!("{field} must be at most {max} {unit}"),
        (_, FieldProblem::ControlCharacter) => {
            format!("{field} must not contain control characters")
        }
        (_, FieldProblem::NotUtf8) => format!("{field} must be valid UTF-8 once percent-decoded"),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_streams: Option<Vec<super::v1::slot_view::SlotView>>,
}

#[derive(Serialize)]
struct StreamyError<'a> {
    status: u16,
    error: &'a str,
}

#[derive(Serialize)]
struct VideoStreamsError<'a> {
    message: &'a str,
}

/// What a cluster route answers in place of its endpoint's reply. A `Cluster` error goes
/// as itself, which the asking node reads back (`ClusterError: From<PeerError>`); the
/// others as `{"error": why}`.
#[derive(Debug)]
pub enum ClusterRouteError {
    Cluster(ClusterError),
    /// A later request took this one's place (a handoff begun again).
    Superseded(String),
    /// Not possible now; the asker retries.
    NotNow(String),
    BadRequest(String),
}

impl From<ClusterError> for ClusterRouteError {
    fn from(error: ClusterError) -> Self {
        ClusterRouteError::Cluster(error)
    }
}

impl From<crate::users::HandoffError> for ClusterRouteError {
    fn from(error: crate::users::HandoffError) -> Self {
        use crate::users::HandoffError;
        match error {
            HandoffError::Superseded(_) => ClusterRouteError::Superseded(error.to_string()),
            // The texts of the previous release: a leader of it reads only the status.
            HandoffError::NotTaken(why) => ClusterRouteError::NotNow(why),
            HandoffError::NotMovingHere { .. } => ClusterRouteError::NotNow(error.to_string()),
        }
    }
}

impl ClusterRouteError {
    pub fn render(&self) -> HttpResponse {
        let (status, why) = match self {
            ClusterRouteError::Cluster(e) => {
                let status = match e {
                    ClusterError::Removed(_) | ClusterError::Refused(_) => StatusCode::GONE,
                    ClusterError::NoLeader(_) | ClusterError::Failed(_) => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                };
                return HttpResponse::build(status).json(e);
            }
            ClusterRouteError::Superseded(why) => (StatusCode::CONFLICT, why),
            ClusterRouteError::NotNow(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
            ClusterRouteError::BadRequest(why) => (StatusCode::BAD_REQUEST, why),
        };
        HttpResponse::build(status).json(serde_json::json!({ "error": why }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(dialect: Dialect, problem: FieldProblem) -> String {
        ApiError::field("userId", problem).message(dialect)
    }

    #[test]
    fn field_messages_follow_each_contract() {
        assert_eq!(
            message(Dialect::Streamy, FieldProblem::Missing),
            "\"userId\" is required"
        );
        assert_eq!(
            message(Dialect::Streamy, FieldProblem::NotString),
            "\"userId\" must be a string"
        );
        assert_eq!(
            message(Dialect::Heartbeat, FieldProblem::Missing),
            "userId is missing"
        );
        assert_eq!(
            message(Dialect::Heartbeat, FieldProblem::Empty),
            "userId is missing"
        );
        assert_eq!(
            message(Dialect::Problem, FieldProblem::Missing),
            "userId is required"
        );
        assert_eq!(
            message(Dialect::Problem, FieldProblem::from(IdError::TooLong)),
            "userId must be at most 128 bytes"
        );
    }

    #[test]
    fn limit_status_differs_by_contract() {
        let refused = || ApiError::LimitReached {
            user: UserId::parse("u").unwrap(),
            refusal: LimitReached {
                limit: 3,
                active: vec![],
            },
        };
        let status = |d| refused().status(d).as_u16();
        assert_eq!(status(Dialect::Problem), 429);
        assert_eq!(status(Dialect::Streamy), 429);
        assert_eq!(status(Dialect::Heartbeat), 400);
        assert_eq!(status(Dialect::VideoStreams), 403);
    }
}

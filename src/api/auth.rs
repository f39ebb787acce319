//! Who is calling a native route: the `sub` claim of the bearer JWT.
//!
//! By default the JWT was verified upstream (the gateway), as seed 000 specifies, and is
//! only decoded here. With `auth.jwt_hs256_secret` or `auth.jwt_rs256_public_key_file`
//! configured, the signature and `exp` are verified too. The optional `plan` claim
//! selects the stream limit.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::AppState;
use super::error::{ApiError, Failure, contract};
use crate::domain::UserId;

/// The authenticated caller of a `/v1` route.
#[derive(Debug)]
pub struct Caller {
    pub user: UserId,
    pub plan: Option<String>,
}

/// Verifies bearer tokens when a key is configured.
pub struct JwtVerifier {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

impl JwtVerifier {
    pub fn hs256(secret: &str) -> JwtVerifier {
        JwtVerifier {
            key: jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
            validation: jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
        }
    }

    pub fn rs256_pem(pem: &[u8]) -> Result<JwtVerifier, String> {
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(pem)
            .map_err(|e| format!("not an RSA public key: {e}"))?;
        Ok(JwtVerifier {
            key,
            validation: jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256),
        })
    }

    fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::Unauthorized("bearer token has expired")
                }
                _ => ApiError::Unauthorized("bearer token failed verification"),
            })
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<serde_json::Value>,
    plan: Option<String>,
}

impl FromRequest for Caller {
    type Error = Failure<contract::Problem>;
    type Future = Ready<Result<Caller, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(caller(req).map_err(Failure::from))
    }
}

fn caller(req: &HttpRequest) -> Result<Caller, ApiError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthorized("missing bearer token"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        })
        .ok_or(ApiError::Unauthorized(
            "authorization must be a bearer token",
        ))?;
    let state = req.app_data::<actix_web::web::Data<AppState>>();
    let claims = match state.and_then(|s| s.jwt.as_ref()) {
        Some(verifier) => verifier.verify(token)?,
        None => decode_claims(token)?,
    };
    let sub = match claims.sub {
        Some(serde_json::Value::String(sub)) => sub,
        _ => return Err(ApiError::Unauthorized("token has no string sub claim")),
    };
    let user = UserId::parse(&sub)
        .map_err(|_| ApiError::Unauthorized("token sub is not a valid user id"))?;
    super::middleware::note_user(req, &user);
    let plan = claims.plan.or_else(|| {
        state
            .and_then(|state| state.trusted_plan(req))
            .map(str::to_owned)
    });
    Ok(Caller { user, plan })
}

fn decode_claims(token: &str) -> Result<Claims, ApiError> {
    const MALFORMED: ApiError = ApiError::Unauthorized("bearer token is not a decodable JWT");
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(MALFORMED);
    };
    let json = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| MALFORMED)?;
    serde_json::from_slice(&json).map_err(|_| MALFORMED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: &str) -> String {
        format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(claims))
    }

    #[test]
    fn decodes_sub_and_plan() {
        let claims = decode_claims(&token(r#"{"sub":"u1","plan":"family"}"#)).unwrap();
        assert_eq!(claims.sub, Some(serde_json::json!("u1")));
        assert_eq!(claims.plan.as_deref(), Some("family"));
    }

    #[test]
    fn rejects_tokens_that_are_not_jwts() {
        for bad in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "e30.!!!.sig",
            "e30.bm90IGpzb24.sig",
        ] {
            assert!(decode_claims(bad).is_err(), "{bad}");
        }
    }
}

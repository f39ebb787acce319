//! Who is calling a native route: the `sub` claim of the bearer JWT.
//!
//! By default the JWT was verified upstream (the gateway), as seed 000 specifies, and is
//! only decoded here. With `auth.jwt_hs256_secret` or `auth.jwt_rs256_public_key_file`
//! configured, the signature and `exp` are verified too; a node listening beyond loopback
//! must have one of them, or `auth.trust_upstream = true` (see `Config::validate`). The
//! optional `plan` claim selects the stream limit.

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

/// `auth.jwt_rs256_public_key_file` holds no RSA public key in PEM.
#[derive(Debug, thiserror::Error)]
#[error("not an RSA public key")]
pub struct NotAnRsaKey(#[from] jsonwebtoken::errors::Error);

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

    pub fn rs256_pem(pem: &[u8]) -> Result<JwtVerifier, NotAnRsaKey> {
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(pem)?;
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

/// The claims playstate reads, taken as any JSON so that a token that decodes but has a
/// claim of the wrong type is told which claim, not that the token does not decode.
#[derive(Deserialize)]
struct Claims {
    sub: Option<serde_json::Value>,
    plan: Option<serde_json::Value>,
}

impl Claims {
    fn user(&self) -> Result<UserId, ApiError> {
        let Some(serde_json::Value::String(sub)) = &self.sub else {
            return Err(ApiError::Unauthorized("token claim `sub` must be a string"));
        };
        UserId::parse(sub)
            .map_err(|_| ApiError::Unauthorized("token claim `sub` is not a valid user id"))
    }

    /// The `plan` claim; absent and `null` both mean none.
    fn plan(self) -> Result<Option<String>, ApiError> {
        match self.plan {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(plan)) => Ok(Some(plan)),
            Some(_) => Err(ApiError::Unauthorized(
                "token claim `plan` must be a string",
            )),
        }
    }
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
    let user = claims.user()?;
    super::middleware::note_user(req, &user);
    let plan = claims.plan()?.or_else(|| {
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
    // A payload that is JSON but not an object is as undecodable as one that is not JSON.
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
        assert_eq!(claims.user().unwrap().as_str(), "u1");
        assert_eq!(claims.plan().unwrap().as_deref(), Some("family"));
    }

    /// Why a token with these claims, which decodes, is refused.
    fn refusal(json: &str) -> &'static str {
        let claims = decode_claims(&token(json)).expect("decodes");
        match claims.user().and_then(|_| claims.plan()) {
            Err(ApiError::Unauthorized(why)) => why,
            other => panic!("{json}: {other:?}"),
        }
    }

    #[test]
    fn a_claim_of_the_wrong_type_is_named() {
        assert_eq!(
            refusal(r#"{"sub":"u1","plan":3}"#),
            "token claim `plan` must be a string"
        );
        assert_eq!(
            refusal(r#"{"sub":"u1","plan":{"name":"family"}}"#),
            "token claim `plan` must be a string"
        );
        assert_eq!(
            refusal(r#"{"sub":7}"#),
            "token claim `sub` must be a string"
        );
        assert_eq!(refusal(r#"{}"#), "token claim `sub` must be a string");
        assert_eq!(
            refusal(r#"{"sub":""}"#),
            "token claim `sub` is not a valid user id"
        );
        let plain = decode_claims(&token(r#"{"sub":"u1","plan":null}"#)).unwrap();
        assert_eq!(plain.plan().unwrap(), None);
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

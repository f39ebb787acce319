//! Values in request paths and query strings, percent-decoded strictly.
//!
//! actix decodes a path with `String::from_utf8_lossy`: `%ff` and `%fe` both become U+FFFD,
//! so `/user/%ff/stream`, `/user/%fe/stream` and `/user/%EF%BF%BD/stream` would be one
//! account. It also leaves `%2F`, `%25` and `%2B` encoded in `match_info`, so `a%2Fb` and
//! `a/b` (as a JWT `sub`) would be two. The query-string parser (`web::Query`) is lossy the
//! same way. Every path or query value a handler reads comes through here instead:
//! percent-decoded exactly once, and refused with 400 unless the bytes are UTF-8, as a
//! body or a raw path with such bytes already is. A valid `%EF%BF%BD` is U+FFFD, a
//! character like any other, so it names its own account: nothing else decodes to it.

use std::borrow::Cow;

use actix_web::HttpRequest;

use super::error::{ApiError, FieldProblem};
use crate::domain::Id;

/// The path parameter `name` as an identifier, or what is wrong with it.
pub fn path_id<T: Id>(req: &HttpRequest, name: &'static str) -> Result<T, ApiError> {
    T::parse(&path_text(req, name)?).map_err(|e| ApiError::field(name, e))
}

/// The path parameter `name`, decoded; empty when the route has no such parameter.
pub fn path_text<'r>(req: &'r HttpRequest, name: &'static str) -> Result<Cow<'r, str>, ApiError> {
    // actix's lossy decoding lost nothing unless the raw path escapes bytes that are not
    // UTF-8; and if the whole path is UTF-8, so is each of its segments.
    let raw = req.uri().path();
    if raw.contains('%') && std::str::from_utf8(&percent_decode(raw.as_bytes())).is_err() {
        return Err(ApiError::field(name, FieldProblem::NotUtf8));
    }
    // What actix left encoded (`%2F`, `%25`, `%2B`) is decoded here, once.
    let segment = req.match_info().get(name).unwrap_or_default();
    utf8(percent_decode(segment.as_bytes()), name)
}

/// The query parameter `name`, decoded as a form value (`+` is a space); `None` when
/// absent. Given twice, it is invalid: which one was meant is anyone's guess.
pub fn query_text<'r>(
    req: &'r HttpRequest,
    name: &'static str,
) -> Result<Option<Cow<'r, str>>, ApiError> {
    let mut found = None;
    for pair in req.query_string().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if utf8(form_decode(key), name)? != name {
            continue;
        }
        if found.is_some() {
            return Err(ApiError::field(name, FieldProblem::Invalid));
        }
        found = Some(utf8(form_decode(value), name)?);
    }
    Ok(found)
}

fn utf8<'a>(bytes: Cow<'a, [u8]>, name: &'static str) -> Result<Cow<'a, str>, ApiError> {
    let not_utf8 = |_| ApiError::field(name, FieldProblem::NotUtf8);
    match bytes {
        Cow::Borrowed(b) => std::str::from_utf8(b).map(Cow::Borrowed).map_err(not_utf8),
        Cow::Owned(b) => String::from_utf8(b)
            .map(Cow::Owned)
            .map_err(|e| not_utf8(e.utf8_error())),
    }
}

fn form_decode(raw: &str) -> Cow<'_, [u8]> {
    if raw.contains('+') {
        Cow::Owned(percent_decode(raw.replace('+', " ").as_bytes()).into_owned())
    } else {
        percent_decode(raw.as_bytes())
    }
}

/// `%XX` escapes to their bytes; a `%` not followed by two hex digits stays as it is.
fn percent_decode(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'%') {
        return Cow::Borrowed(raw);
    }
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    /// `path` matched against `pattern`, as the router would.
    fn request(pattern: &str, path: &str) -> HttpRequest {
        let mut req = TestRequest::with_uri(path).to_srv_request();
        let matched =
            actix_web::dev::ResourceDef::new(pattern).capture_match_info(req.match_info_mut());
        assert!(matched, "{path} matches {pattern}");
        req.into_parts().0
    }

    fn user(path: &str) -> Result<String, FieldProblem> {
        let req = request("/user/{user_id}/streams", path);
        match path_text(&req, "user_id") {
            Ok(text) => Ok(text.into_owned()),
            Err(ApiError::InvalidField { problem, .. }) => Err(problem),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn path_ids_are_decoded_exactly_once() {
        assert_eq!(user("/user/abc/streams"), Ok("abc".into()));
        assert_eq!(user("/user/a%2Fb/streams"), Ok("a/b".into()));
        assert_eq!(user("/user/a%2fb/streams"), Ok("a/b".into()));
        assert_eq!(user("/user/a%2541/streams"), Ok("a%41".into()));
        assert_eq!(user("/user/a+b%2B/streams"), Ok("a+b+".into()));
        assert_eq!(user("/user/%C3%A9/streams"), Ok("é".into()));
        assert_eq!(user("/user/100%/streams"), Ok("100%".into()));
        assert_eq!(user("/user/%EF%BF%BD/streams"), Ok("\u{FFFD}".into()));
    }

    #[test]
    fn path_ids_that_are_not_utf8_are_refused() {
        for bad in ["%ff", "%fe", "a%C3", "%C3%2F", "%ED%A0%80"] {
            assert_eq!(
                user(&format!("/user/{bad}/streams")),
                Err(FieldProblem::NotUtf8),
                "{bad}"
            );
        }
    }

    fn url(query: &str) -> Result<Option<String>, FieldProblem> {
        let req = TestRequest::with_uri(&format!("/trailers?{query}")).to_http_request();
        match query_text(&req, "url") {
            Ok(text) => Ok(text.map(Cow::into_owned)),
            Err(ApiError::InvalidField { problem, .. }) => Err(problem),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn query_values_are_form_decoded_strictly() {
        assert_eq!(
            url("url=https%3A%2F%2Fx%2Fa+b"),
            Ok(Some("https://x/a b".into()))
        );
        assert_eq!(url("other=1&url=x&more"), Ok(Some("x".into())));
        assert_eq!(url("other=%ff"), Ok(None));
        assert_eq!(url(""), Ok(None));
        assert_eq!(url("url"), Ok(Some(String::new())));
        assert_eq!(url("url=%ff"), Err(FieldProblem::NotUtf8));
        assert_eq!(url("url=a&url=b"), Err(FieldProblem::Invalid));
        // A key that merely decodes to `url` is the parameter too.
        assert_eq!(url("%75rl=y"), Ok(Some("y".into())));
    }
}

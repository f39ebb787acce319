//! Request bodies, parsed leniently enough to say exactly which field is wrong and why.
//!
//! serde's derive would stop at the first type error with its own wording; the contracts
//! want "`userId` is required" vs "must be a string", checked in a given order. So each
//! field arrives as a `Field` that records what it was, and handlers validate in order.

use std::borrow::Cow;
use std::fmt;

use actix_web::web::Bytes;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::error::{ApiError, FieldProblem};
use crate::domain::Id;

/// One JSON field as sent: absent, a string, or something else.
#[derive(Debug, Default)]
pub enum Field<'a> {
    #[default]
    Absent,
    Text(Cow<'a, str>),
    NotText,
}

impl<'a> Field<'a> {
    /// The field parsed as an identifier, or what is wrong with it.
    pub fn id<T: Id>(&self, name: &'static str) -> Result<T, ApiError> {
        T::parse(self.text(name)?).map_err(|e| ApiError::field(name, e))
    }

    /// The field's text, or what is wrong with it.
    pub fn text(&self, name: &'static str) -> Result<&str, ApiError> {
        match self {
            Field::Text(text) if text.is_empty() => Err(ApiError::field(name, FieldProblem::Empty)),
            Field::Text(text) => Ok(text),
            Field::Absent => Err(ApiError::field(name, FieldProblem::Missing)),
            Field::NotText => Err(ApiError::field(name, FieldProblem::NotString)),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;

        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = Field<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Field::Text(Cow::Owned(v)))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field::NotText)
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Field::NotText)
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Field::NotText)
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Field::NotText)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field::NotText)
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field::NotText)
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::NotText)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::NotText)
            }
        }

        deserializer.deserialize_any(FieldVisitor)
    }
}

/// The body bytes, or why they could not be read (`Err` comes from actix's extractor,
/// configured with the node's body limit).
pub fn bytes(body: Result<Bytes, actix_web::Error>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.as_response_error().status_code() == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge { limit }
        } else if super::limits::is_body_timeout(&e) {
            ApiError::BodyTimeout
        } else {
            ApiError::MalformedBody(format!("cannot read the body: {e}"))
        }
    })
}

/// Parses a JSON object into `T`. An empty body counts as `{}`, as the seed services'
/// JSON middleware did, so a missing body reports its first missing field.
pub fn object<'a, T: Deserialize<'a> + Default>(body: &'a [u8]) -> Result<T, ApiError> {
    let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Ok(T::default());
    };
    // serde's derive also accepts arrays for structs; a contract body is always an object.
    if *first != b'{' {
        return match serde_json::from_slice::<IgnoredAny>(body) {
            Ok(_) => Err(ApiError::BodyNotObject),
            Err(e) => Err(ApiError::MalformedBody(e.to_string())),
        };
    }
    serde_json::from_slice(body).map_err(|e| ApiError::MalformedBody(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        #[serde(borrow, default)]
        user_id: Field<'a>,
    }

    fn problem(json: &str) -> Option<FieldProblem> {
        match object::<Body>(json.as_bytes())
            .unwrap()
            .user_id
            .text("userId")
        {
            Ok(_) => None,
            Err(ApiError::InvalidField { problem, .. }) => Some(problem),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn records_what_each_field_was() {
        assert_eq!(problem(r#"{"userId":"u1"}"#), None);
        assert_eq!(problem(r#"{"userId":"esc\"aped"}"#), None);
        assert_eq!(problem(r#"{}"#), Some(FieldProblem::Missing));
        assert_eq!(problem(""), Some(FieldProblem::Missing));
        assert_eq!(problem(r#"{"userId":""}"#), Some(FieldProblem::Empty));
        for not_text in ["1", "1.5", "true", "null", "{}", "[1,{\"a\":[]}]"] {
            assert_eq!(
                problem(&format!(r#"{{"userId":{not_text}}}"#)),
                Some(FieldProblem::NotString),
                "{not_text}"
            );
        }
    }

    #[test]
    fn rejects_non_objects_and_broken_json() {
        assert!(matches!(
            object::<Body>(b"[\"u1\"]"),
            Err(ApiError::BodyNotObject)
        ));
        assert!(matches!(
            object::<Body>(b"\"u1\""),
            Err(ApiError::BodyNotObject)
        ));
        assert!(matches!(
            object::<Body>(b"{\"userId\":"),
            Err(ApiError::MalformedBody(_))
        ));
        assert!(matches!(
            object::<Body>(b"nope"),
            Err(ApiError::MalformedBody(_))
        ));
        assert!(matches!(
            object::<Body>(b"{\"userId\":\"\xff\"}"),
            Err(ApiError::MalformedBody(_))
        ));
    }
}

//! Identifiers that arrive from clients. Each newtype validates on construction, so code
//! that holds one never re-checks it.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// The longest identifier playstate accepts, in bytes. Generous for UUIDs, ULIDs and
/// opaque device ids, small enough that a hostile client cannot bloat an actor.
pub const MAX_ID_BYTES: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_BYTES} bytes")]
    TooLong,
    #[error("must not contain control characters")]
    ControlCharacter,
}

fn check(raw: &str) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty);
    }
    if raw.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong);
    }
    if raw.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter);
    }
    Ok(())
}

/// Implemented by every identifier newtype, so input parsing can be written once.
pub trait Id: Sized {
    fn parse(raw: &str) -> Result<Self, IdError>;
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Cheap to clone: the text is shared.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                check(raw)?;
                Ok(Self(Arc::from(raw)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Id for $name {
            fn parse(raw: &str) -> Result<Self, IdError> {
                $name::parse(raw)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&raw).map_err(serde::de::Error::custom)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

id_type!(
    /// The account a stream or a progress entry belongs to.
    UserId
);
id_type!(
    /// One playback session on one device; the identity of a stream slot.
    SessionId
);
id_type!(
    /// What is being played (a video, a channel, an asset).
    StreamId
);
id_type!(
    /// A subscription plan name that selects a stream limit.
    PlanName
);

// Lets the actor registry look users up by `&str` without allocating.
impl Borrow<str> for UserId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        assert_eq!(UserId::parse("123").unwrap().as_str(), "123");
        assert!(SessionId::parse(&"x".repeat(MAX_ID_BYTES)).is_ok());
        assert!(StreamId::parse("films/ünïcödé-✓").is_ok());
    }

    #[test]
    fn rejects_empty_long_and_control() {
        assert_eq!(UserId::parse("").unwrap_err(), IdError::Empty);
        assert_eq!(
            UserId::parse(&"x".repeat(MAX_ID_BYTES + 1)).unwrap_err(),
            IdError::TooLong
        );
        // 43 three-byte characters are 129 bytes: the limit is in bytes, not characters.
        assert_eq!(
            UserId::parse(&"✓".repeat(43)).unwrap_err(),
            IdError::TooLong
        );
        assert_eq!(
            UserId::parse("a\nb").unwrap_err(),
            IdError::ControlCharacter
        );
    }
}

//! Catalog assets, identified by UUID.

use std::fmt;

/// An asset of the catalog. Parsed from any UUID spelling and always shown lowercase and
/// hyphenated, so `37FC12F8-…` and `37fc12f8-…` are the same asset.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssetId(uuid::Uuid);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be a UUID")]
pub struct NotAUuid;

impl AssetId {
    pub fn parse(raw: &str) -> Result<AssetId, NotAUuid> {
        // Only the hyphenated form: the braced and URN forms are not asset ids anyone sends.
        if raw.len() != 36 {
            return Err(NotAUuid);
        }
        uuid::Uuid::try_parse(raw)
            .map(AssetId)
            .map_err(|_| NotAUuid)
    }

    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AssetId({})", self.0.hyphenated())
    }
}

impl serde::Serialize for AssetId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0.hyphenated())
    }
}

impl<'de> serde::Deserialize<'de> for AssetId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        AssetId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_case_and_shows_lowercase() {
        let upper = AssetId::parse("37FC12F8-5C7F-4A0D-BCDB-32890B3911DE").unwrap();
        let lower = AssetId::parse("37fc12f8-5c7f-4a0d-bcdb-32890b3911de").unwrap();
        assert_eq!(upper, lower);
        assert_eq!(upper.to_string(), "37fc12f8-5c7f-4a0d-bcdb-32890b3911de");
    }

    #[test]
    fn rejects_what_is_not_a_hyphenated_uuid() {
        for bad in [
            "",
            "123",
            "37fc12f85c7f4a0dbcdb32890b3911de",
            "{37fc12f8-5c7f-4a0d-bcdb-32890b3911de}",
            "37fc12f8-5c7f-4a0d-bcdb-32890b3911dz",
        ] {
            assert_eq!(AssetId::parse(bad), Err(NotAUuid), "{bad}");
        }
    }
}

//! Trailer rules: which content URLs are ours, how they are keyed, and which TMDB videos
//! count as trailers.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::time::Timestamp;

/// A content URL that passed the prefix check.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContentUrl(String);

impl ContentUrl {
    /// `Some` when `raw` starts with the configured content prefix and has something after it.
    pub fn parse(raw: &str, prefix: &str) -> Option<ContentUrl> {
        let rest = raw.strip_prefix(prefix)?;
        let sane = !rest.is_empty() && raw.len() <= 2048 && !raw.chars().any(char::is_whitespace);
        sane.then(|| ContentUrl(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The storage key: hex sha256 of the URL.
    pub fn key(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

/// The trailers of one content URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrailerEntry {
    pub url: String,
    pub trailers: Vec<String>,
    pub updated_at: Timestamp,
}

/// One video as TMDB lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct TmdbVideo {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub site: String,
    #[serde(default, rename = "type")]
    pub kind: String,
}

/// YouTube trailers only, as links, in TMDB's order, without duplicates.
pub fn trailer_links(videos: &[TmdbVideo]) -> Vec<String> {
    let mut links: Vec<String> = Vec::new();
    for video in videos {
        if video.site == "YouTube" && video.kind == "Trailer" && !video.key.is_empty() {
            let link = format!("https://www.youtube.com/watch?v={}", video.key);
            if !links.contains(&link) {
                links.push(link);
            }
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "https://content.viaplay.se/pc-se/film/";

    #[test]
    fn only_urls_under_the_prefix_are_content() {
        assert!(
            ContentUrl::parse("https://content.viaplay.se/pc-se/film/arrival-2016", PREFIX)
                .is_some()
        );
        assert!(ContentUrl::parse(PREFIX, PREFIX).is_none());
        assert!(ContentUrl::parse("https://evil.example/pc-se/film/x", PREFIX).is_none());
        assert!(ContentUrl::parse("http://content.viaplay.se/pc-se/film/x", PREFIX).is_none());
        assert!(ContentUrl::parse("https://content.viaplay.se/pc-se/film/a b", PREFIX).is_none());
    }

    #[test]
    fn key_is_the_sha256_of_the_url() {
        let url = ContentUrl::parse("https://content.viaplay.se/pc-se/film/x", PREFIX).unwrap();
        assert_eq!(url.key().len(), 64);
        assert_eq!(
            ContentUrl("abc".into()).key(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn keeps_youtube_trailers_only() {
        let video = |key: &str, site: &str, kind: &str| TmdbVideo {
            key: key.into(),
            site: site.into(),
            kind: kind.into(),
        };
        let videos = [
            video("a", "YouTube", "Trailer"),
            video("b", "Vimeo", "Trailer"),
            video("c", "YouTube", "Teaser"),
            video("a", "YouTube", "Trailer"),
            video("d", "YouTube", "Trailer"),
        ];
        assert_eq!(
            trailer_links(&videos),
            [
                "https://www.youtube.com/watch?v=a",
                "https://www.youtube.com/watch?v=d"
            ]
        );
    }
}

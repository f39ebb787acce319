//! Asset validation: is this asset in the catalog, and how long is it?
//!
//! `none` accepts any UUID. `http` asks the catalog service (`GET {base}/assets/{id}`:
//! 200 with an optional `durationSeconds`, 404 when unknown) and caches both answers for
//! a TTL, so a player's progress updates every few seconds cost one lookup per TTL.

use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::domain::{AssetId, Seconds};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssetCheck {
    Known { duration: Option<Seconds> },
    Unknown,
}

#[derive(Debug, thiserror::Error)]
#[error("asset catalog unavailable: {0}")]
pub struct CatalogUnavailable(pub String);

/// The catalog's HTTP client could not be built (its TLS set-up failed).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the catalog client")]
pub struct CatalogClientError(#[from] reqwest::Error);

pub enum Catalog {
    /// Every UUID is an asset of unknown duration.
    Open,
    Http(HttpCatalog),
}

pub struct HttpCatalog {
    client: reqwest::Client,
    base: String,
    ttl: Duration,
    cache: DashMap<AssetId, (Instant, AssetCheck)>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssetBody {
    duration_seconds: Option<f64>,
}

impl Catalog {
    pub fn http(
        base: &str,
        timeout: Duration,
        ttl: Duration,
    ) -> Result<Catalog, CatalogClientError> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Catalog::Http(HttpCatalog {
            client,
            base: base.trim_end_matches('/').to_owned(),
            ttl,
            cache: DashMap::new(),
        }))
    }

    pub async fn check(&self, asset: AssetId) -> Result<AssetCheck, CatalogUnavailable> {
        match self {
            Catalog::Open => Ok(AssetCheck::Known { duration: None }),
            Catalog::Http(http) => http.check(asset).await,
        }
    }
}

impl HttpCatalog {
    async fn check(&self, asset: AssetId) -> Result<AssetCheck, CatalogUnavailable> {
        if let Some(cached) = self.cache.get(&asset) {
            let (at, check) = *cached;
            if at.elapsed() < self.ttl {
                return Ok(check);
            }
        }
        let url = format!("{}/assets/{asset}", self.base);
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| CatalogUnavailable(e.to_string()))?;
        let check = match response.status() {
            reqwest::StatusCode::NOT_FOUND => AssetCheck::Unknown,
            status if status.is_success() => {
                let body: AssetBody = response
                    .json()
                    .await
                    .map_err(|e| CatalogUnavailable(format!("bad answer for {asset}: {e}")))?;
                AssetCheck::Known {
                    duration: body
                        .duration_seconds
                        .filter(|d| d.is_finite() && *d >= 0.0)
                        .map(|d| d.ceil().min(f64::from(Seconds::MAX)) as Seconds),
                }
            }
            status => return Err(CatalogUnavailable(format!("{url} answered {status}"))),
        };
        self.cache.insert(asset, (Instant::now(), check));
        Ok(check)
    }
}

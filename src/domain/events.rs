//! Business-intelligence events: only genuine transitions, each with a unique id so a
//! consumer can drop the duplicates that at-least-once delivery allows.

use serde::{Deserialize, Serialize};

use super::asset::AssetId;
use super::ids::UserId;
use super::progress::{Rise, Seconds};
use super::time::Timestamp;

/// Records handed to the sink in one delivery round. Large, because a round costs the
/// file sink one fsync and the SQS sink one round trip (its requests run concurrently):
/// with small rounds a burst of viewers starting titles outruns delivery and fills the
/// outbox.
pub const BATCH: usize = 500;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum BiEvent {
    #[serde(rename_all = "camelCase")]
    AddedToWatchlist { asset_id: AssetId },
    #[serde(rename_all = "camelCase")]
    RemovedFromWatchlist { asset_id: AssetId },
    #[serde(rename_all = "camelCase")]
    Viewed {
        asset_id: AssetId,
        old_progress: Seconds,
        new_progress: Seconds,
    },
}

impl BiEvent {
    pub fn viewed(asset_id: AssetId, rise: Rise) -> BiEvent {
        BiEvent::Viewed {
            asset_id,
            old_progress: rise.from,
            new_progress: rise.to,
        }
    }

    /// The `event` field's value, for metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            BiEvent::AddedToWatchlist { .. } => "added-to-watchlist",
            BiEvent::RemovedFromWatchlist { .. } => "removed-from-watchlist",
            BiEvent::Viewed { .. } => "viewed",
        }
    }
}

/// An event as it goes on the queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    #[serde(flatten)]
    pub event: BiEvent,
    pub event_id: uuid::Uuid,
    pub user_id: UserId,
    pub occurred_at: Timestamp,
}

impl EventRecord {
    /// `event_id` must be fresh per event (a v4 UUID from the caller).
    pub fn new(
        event: BiEvent,
        user_id: UserId,
        occurred_at: Timestamp,
        event_id: uuid::Uuid,
    ) -> Self {
        EventRecord {
            event,
            event_id,
            user_id,
            occurred_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_the_contract_field_names() {
        let asset = AssetId::parse("37FC12F8-5C7F-4A0D-BCDB-32890B3911DE").unwrap();
        let record = EventRecord::new(
            BiEvent::viewed(
                asset,
                Rise {
                    from: 1234,
                    to: 3456,
                },
            ),
            UserId::parse("12345").unwrap(),
            Timestamp(0),
            uuid::Uuid::nil(),
        );
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"event":"viewed","assetId":"37fc12f8-5c7f-4a0d-bcdb-32890b3911de","oldProgress":1234,"newProgress":3456,"eventId":"00000000-0000-0000-0000-000000000000","userId":"12345","occurredAt":"1970-01-01T00:00:00.000Z"}"#
        );
        let back: EventRecord =
            serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
        assert_eq!(back, record);
        let added = serde_json::to_value(BiEvent::AddedToWatchlist { asset_id: asset }).unwrap();
        assert_eq!(added["event"], "added-to-watchlist");
        assert_eq!(added["assetId"], "37fc12f8-5c7f-4a0d-bcdb-32890b3911de");
    }
}

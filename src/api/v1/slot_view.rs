//! How `/v1` shows a stream slot: in the list of streams, and in the problem that refuses
//! a stream over the limit.

use serde::Serialize;

use crate::domain::Slot;

/// A slot as `/v1` shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotView {
    session_id: String,
    stream_id: String,
    origin: &'static str,
    lease_expires_at: String,
}

impl From<&Slot> for SlotView {
    fn from(slot: &Slot) -> Self {
        SlotView {
            session_id: slot.session.to_string(),
            stream_id: slot.stream.to_string(),
            origin: slot.origin.as_str(),
            lease_expires_at: slot.expires_at.to_rfc3339(),
        }
    }
}

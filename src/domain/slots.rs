//! The concurrent-stream limit: which slots a user holds, and whether one more fits.
//!
//! A slot is one playing stream. It lives until its lease ends; renewing pushes the end
//! out. Expired slots count for nothing the instant their lease ends, whether or not a
//! sweep has removed them yet, so correctness never depends on timers.

use super::ids::{SessionId, StreamId};
use super::time::{Millis, Timestamp};

/// Which contract took a slot. Slots of different origins never renew each other, so an
/// id that happens to be reused across two client families cannot steal a slot; they all
/// count against the same limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Origin {
    /// `PUT /v1/streams/{sessionId}`: identified by the session.
    V1,
    /// Streamy's `/video-streams/subscription`: identified by the video stream.
    Streamy,
    /// `POST /heartbeat`: identified by the (stream, session) pair.
    Heartbeat,
    /// VideoStreams' `/user/{id}/stream`: identified by the video.
    VideoStreams,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::V1 => "v1",
            Origin::Streamy => "streamy",
            Origin::Heartbeat => "heartbeat",
            Origin::VideoStreams => "videostreams",
        }
    }

    /// Whether the stream is part of the slot's identity. Only the heartbeat contract
    /// says "stream+session pairs"; elsewhere a session switching streams keeps its slot.
    fn identity_includes_stream(self) -> bool {
        matches!(self, Origin::Heartbeat)
    }
}

/// One held stream.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Slot {
    pub origin: Origin,
    pub session: SessionId,
    pub stream: StreamId,
    pub expires_at: Timestamp,
}

impl Slot {
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }

    fn is_identified_by(&self, origin: Origin, session: &str, stream: &str) -> bool {
        self.origin == origin
            && self.session.as_str() == session
            && (!origin.identity_includes_stream() || self.stream.as_str() == stream)
    }
}

/// A request to take or renew a slot.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SlotRequest {
    pub origin: Origin,
    pub session: SessionId,
    pub stream: StreamId,
    /// How long the slot lives without another heartbeat.
    pub lease: Millis,
    /// The user's limit, already resolved from their plan.
    pub limit: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HeartbeatOutcome {
    /// A new slot was taken.
    Taken,
    /// A slot the user already held was renewed.
    Renewed,
}

/// A heartbeat that was accepted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Accepted {
    pub outcome: HeartbeatOutcome,
    /// Live slots after this heartbeat, this one included.
    pub active: usize,
    pub expires_at: Timestamp,
}

/// A heartbeat refused because the user already holds `limit` other live slots.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LimitReached {
    pub limit: u32,
    pub active: Vec<Slot>,
}

/// All slots of one user. Tiny (bounded by the limit), so a vector beats any map.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct StreamSlots {
    slots: Vec<Slot>,
}

impl StreamSlots {
    /// Takes or renews a slot. Renewal always succeeds, even at or over the limit (the
    /// limit may have dropped since the slot was taken); a new slot needs a free place.
    /// A refused request changes nothing but the removal of already-expired slots.
    pub fn heartbeat(
        &mut self,
        now: Timestamp,
        request: SlotRequest,
    ) -> Result<Accepted, LimitReached> {
        self.sweep(now);
        let expires_at = now.plus(request.lease);
        let held = self.slots.iter().position(|slot| {
            slot.is_identified_by(
                request.origin,
                request.session.as_str(),
                request.stream.as_str(),
            )
        });
        let outcome = match held {
            Some(index) => {
                let slot = &mut self.slots[index];
                slot.expires_at = expires_at;
                if slot.stream != request.stream {
                    slot.stream = request.stream;
                }
                HeartbeatOutcome::Renewed
            }
            None if self.slots.len() >= request.limit as usize => {
                return Err(LimitReached {
                    limit: request.limit,
                    active: self.slots.clone(),
                });
            }
            None => {
                self.slots.push(Slot {
                    origin: request.origin,
                    session: request.session,
                    stream: request.stream,
                    expires_at,
                });
                HeartbeatOutcome::Taken
            }
        };
        Ok(Accepted {
            outcome,
            active: self.slots.len(),
            expires_at,
        })
    }

    /// Frees the slot of `origin` and `session`; for an origin whose identity includes the
    /// stream, `stream: None` frees every stream of that session. Returns whether a live
    /// slot was freed.
    pub fn release(
        &mut self,
        now: Timestamp,
        origin: Origin,
        session: &str,
        stream: Option<&str>,
    ) -> bool {
        self.sweep(now);
        let before = self.slots.len();
        self.slots.retain(|slot| {
            let same_session = slot.origin == origin && slot.session.as_str() == session;
            let same_stream = match stream {
                Some(stream) if origin.identity_includes_stream() => slot.stream.as_str() == stream,
                _ => true,
            };
            !(same_session && same_stream)
        });
        self.slots.len() != before
    }

    /// Live slots, oldest first.
    pub fn live(&self, now: Timestamp) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(move |slot| slot.is_live(now))
    }

    /// Drops expired slots; returns how many.
    pub fn sweep(&mut self, now: Timestamp) -> usize {
        let before = self.slots.len();
        self.slots.retain(|slot| slot.is_live(now));
        before - self.slots.len()
    }

    /// Gives every slot a full lease from `now`: slots recovered from a backup, whose
    /// renewals the backup never saw. A player that is gone lets it expire once.
    pub fn refresh(&mut self, now: Timestamp, lease_for: impl Fn(Origin) -> Millis) {
        for slot in &mut self.slots {
            slot.expires_at = now.plus(lease_for(slot.origin));
        }
    }

    /// Slots held, including any that expired since the last sweep.
    pub fn held(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Millis = Millis(40_000);

    fn request(origin: Origin, session: &str, stream: &str) -> SlotRequest {
        SlotRequest {
            origin,
            session: SessionId::parse(session).unwrap(),
            stream: StreamId::parse(stream).unwrap(),
            lease: LEASE,
            limit: 3,
        }
    }

    fn v1(session: &str) -> SlotRequest {
        request(Origin::V1, session, "movie")
    }

    #[test]
    fn takes_up_to_the_limit_then_refuses_without_change() {
        let mut slots = StreamSlots::default();
        let now = Timestamp(1_000);
        for (i, s) in ["a", "b", "c"].into_iter().enumerate() {
            let accepted = slots.heartbeat(now, v1(s)).unwrap();
            assert_eq!(accepted.outcome, HeartbeatOutcome::Taken);
            assert_eq!(accepted.active, i + 1);
            assert_eq!(accepted.expires_at, Timestamp(41_000));
        }
        let refused = slots.heartbeat(now, v1("d")).unwrap_err();
        assert_eq!(refused.limit, 3);
        let sessions: Vec<_> = refused.active.iter().map(|s| s.session.as_str()).collect();
        assert_eq!(sessions, ["a", "b", "c"]);
        assert_eq!(slots.held(), 3);
    }

    #[test]
    fn renewal_succeeds_at_the_limit_and_extends_the_lease() {
        let mut slots = StreamSlots::default();
        for s in ["a", "b", "c"] {
            slots.heartbeat(Timestamp(0), v1(s)).unwrap();
        }
        let renewed = slots.heartbeat(Timestamp(20_000), v1("b")).unwrap();
        assert_eq!(renewed.outcome, HeartbeatOutcome::Renewed);
        assert_eq!(renewed.active, 3);
        assert_eq!(renewed.expires_at, Timestamp(60_000));
    }

    #[test]
    fn renewal_succeeds_even_when_the_limit_dropped_below_what_is_held() {
        let mut slots = StreamSlots::default();
        for s in ["a", "b", "c"] {
            slots.heartbeat(Timestamp(0), v1(s)).unwrap();
        }
        let mut lowered = v1("a");
        lowered.limit = 1;
        assert!(slots.heartbeat(Timestamp(1), lowered).is_ok());
        let mut new = v1("z");
        new.limit = 1;
        assert!(slots.heartbeat(Timestamp(1), new).is_err());
    }

    #[test]
    fn a_slot_is_live_until_its_lease_ends_and_not_a_millisecond_longer() {
        let mut slots = StreamSlots::default();
        for s in ["a", "b", "c"] {
            slots.heartbeat(Timestamp(0), v1(s)).unwrap();
        }
        assert_eq!(slots.live(Timestamp(39_999)).count(), 3);
        assert!(slots.heartbeat(Timestamp(39_999), v1("d")).is_err());
        assert_eq!(slots.live(Timestamp(40_000)).count(), 0);
        let taken = slots.heartbeat(Timestamp(40_000), v1("d")).unwrap();
        assert_eq!(taken.outcome, HeartbeatOutcome::Taken);
        assert_eq!(taken.active, 1);
    }

    #[test]
    fn a_renewed_slot_outlives_its_first_lease() {
        let mut slots = StreamSlots::default();
        slots.heartbeat(Timestamp(0), v1("a")).unwrap();
        slots.heartbeat(Timestamp(30_000), v1("a")).unwrap();
        assert_eq!(slots.live(Timestamp(69_999)).count(), 1);
        assert_eq!(slots.live(Timestamp(70_000)).count(), 0);
    }

    #[test]
    fn v1_session_switching_stream_keeps_its_slot() {
        let mut slots = StreamSlots::default();
        slots
            .heartbeat(Timestamp(0), request(Origin::V1, "s", "one"))
            .unwrap();
        let renewed = slots
            .heartbeat(Timestamp(1), request(Origin::V1, "s", "two"))
            .unwrap();
        assert_eq!(renewed.outcome, HeartbeatOutcome::Renewed);
        assert_eq!(
            slots.live(Timestamp(1)).next().unwrap().stream.as_str(),
            "two"
        );
    }

    #[test]
    fn heartbeat_origin_identifies_by_stream_and_session_pair() {
        let mut slots = StreamSlots::default();
        slots
            .heartbeat(Timestamp(0), request(Origin::Heartbeat, "s", "one"))
            .unwrap();
        let other_pair = slots
            .heartbeat(Timestamp(0), request(Origin::Heartbeat, "s", "two"))
            .unwrap();
        assert_eq!(other_pair.outcome, HeartbeatOutcome::Taken);
        assert_eq!(other_pair.active, 2);
    }

    #[test]
    fn origins_do_not_renew_each_other_but_share_the_limit() {
        let mut slots = StreamSlots::default();
        slots
            .heartbeat(Timestamp(0), request(Origin::Streamy, "1", "1"))
            .unwrap();
        let other = slots
            .heartbeat(Timestamp(0), request(Origin::VideoStreams, "1", "1"))
            .unwrap();
        assert_eq!(other.outcome, HeartbeatOutcome::Taken);
        slots
            .heartbeat(Timestamp(0), request(Origin::Heartbeat, "x", "1"))
            .unwrap();
        assert!(slots.heartbeat(Timestamp(0), v1("1")).is_err());
    }

    #[test]
    fn release_frees_only_the_matching_slot_and_is_idempotent() {
        let mut slots = StreamSlots::default();
        slots.heartbeat(Timestamp(0), v1("a")).unwrap();
        slots
            .heartbeat(Timestamp(0), request(Origin::Streamy, "a", "a"))
            .unwrap();
        assert!(slots.release(Timestamp(1), Origin::V1, "a", None));
        assert!(!slots.release(Timestamp(1), Origin::V1, "a", None));
        assert_eq!(slots.live(Timestamp(1)).count(), 1);
    }

    #[test]
    fn release_of_a_pair_frees_one_stream_or_all_of_the_session() {
        let mut slots = StreamSlots::default();
        for stream in ["one", "two"] {
            slots
                .heartbeat(Timestamp(0), request(Origin::Heartbeat, "s", stream))
                .unwrap();
        }
        assert!(slots.release(Timestamp(0), Origin::Heartbeat, "s", Some("one")));
        assert_eq!(slots.held(), 1);
        slots
            .heartbeat(Timestamp(0), request(Origin::Heartbeat, "s", "one"))
            .unwrap();
        assert!(slots.release(Timestamp(0), Origin::Heartbeat, "s", None));
        assert_eq!(slots.held(), 0);
    }

    #[test]
    fn releasing_an_expired_slot_reports_nothing_freed() {
        let mut slots = StreamSlots::default();
        slots.heartbeat(Timestamp(0), v1("a")).unwrap();
        assert!(!slots.release(Timestamp(40_000), Origin::V1, "a", None));
        assert_eq!(slots.held(), 0);
    }

    #[test]
    fn sweep_counts_what_it_dropped() {
        let mut slots = StreamSlots::default();
        slots.heartbeat(Timestamp(0), v1("a")).unwrap();
        slots.heartbeat(Timestamp(10_000), v1("b")).unwrap();
        assert_eq!(slots.sweep(Timestamp(45_000)), 1);
        assert_eq!(slots.held(), 1);
    }
}

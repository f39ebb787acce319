//! Pure rules of playstate: no async, no I/O, no clocks. Everything here takes the time it
//! needs as an argument, which is what makes it cheap to test exhaustively.

pub mod ids;
pub mod policy;
pub mod slots;
pub mod time;

pub use ids::{Id, IdError, PlanName, SessionId, StreamId, UserId};
pub use policy::StreamPolicy;
pub use slots::{Accepted, HeartbeatOutcome, LimitReached, Origin, Slot, SlotRequest, StreamSlots};
pub use time::{Millis, Timestamp};

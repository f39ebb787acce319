//! Pure rules of playstate: no async, no I/O, no clocks. Everything here takes the time it
//! needs as an argument, which is what makes it cheap to test exhaustively.

pub mod asset;
pub mod backup;
pub mod events;
pub mod ids;
pub mod lease;
pub mod policy;
pub mod progress;
pub mod slots;
pub mod time;
pub mod trailers;
pub mod watchlist;

pub use asset::{AssetId, NotAUuid};
pub use backup::{DirtyProgress, ShardBackup, UserBackup};
pub use events::{BiEvent, EventRecord};
pub use ids::{Id, IdError, PlanName, SessionId, StreamId, UserId};
pub use policy::StreamPolicy;
pub use progress::{Flush, ProgressBook, Rise, Seconds};
pub use slots::{Accepted, HeartbeatOutcome, LimitReached, Origin, Slot, SlotRequest, StreamSlots};
pub use time::{Millis, Timestamp};
pub use trailers::{ContentUrl, TrailerEntry};
pub use watchlist::Watchlist;

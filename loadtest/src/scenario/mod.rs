//! The load shapes: a closed loop for raw throughput, an open loop for realism.

pub mod heartbeat;
pub mod players;

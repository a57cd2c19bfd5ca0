//! # gridchan-watchtower: guarding gateways that are offline
//!
//! A gateway can lose power or network for hours; meanwhile its neighbour could register an old
//! state that pays it more. A tower holds the newest doubly signed state of every channel its
//! clients hand it and refutes any older registration within the challenge window.
//!
//! - [`tower::Tower`]: the service. It accepts a state only if both signatures verify against
//!   the channel's parties as the ledger records them and the client is one of them; keeps one
//!   row per channel (the newest version: storage grows with channels, never with updates);
//!   answers with a signed [`receipt::Receipt`]; enforces per-client quotas; follows the ledger
//!   from where it stopped and refutes, retrying until the refute is included or the window
//!   closes; records what it did.
//! - [`client::TowerClient`]: what a gateway uses to register and hand over states.
//! - [`store::TowerStore`]: SQLite (WAL, FULL).
//! - [`rpc`]: the wire format (`specs/watchtower.md`).

pub mod client;
pub mod config;
pub mod frame_vectors;
pub mod receipt;
pub mod rpc;
pub mod store;
pub mod tower;

pub use client::{TowerClient, TowerError};
pub use receipt::Receipt;
pub use rpc::Rejection;
pub use tower::{Admission, Tower, TowerLimits};

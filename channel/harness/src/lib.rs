//! # gridchan-harness: channel cores in one process
//!
//! A deterministic harness in the manner of quinn's `Pair`: two [`Node`]s joined by in-memory
//! queues that can drop, duplicate, reorder and delay frames; a virtual clock; stores that can
//! fail or stop after the Nth write. [`Pair::drive`] runs until nothing is left to do. Messages
//! cross the link as encoded frames, so the wire codec is exercised too.
//!
//! The harness is also a referee: every signature that leaves a node is checked against that
//! node's store at that instant (persist before sign) and against every other signature it made
//! at the same version (never two different states at one version). Breaches are collected in
//! [`Pair::violations`].
//!
//! [`Network`] drives N nodes with their metering rounds (one of them possibly hostile), for the
//! protocols among several gateways.

mod faulty;
pub mod market;
pub mod network;
mod pair;
pub mod script;

pub use faulty::{FaultSwitch, FaultyStore, WriteFault};
pub use market::{MarketFault, MarketNet};
pub use network::{Hostility, Network};
pub use pair::{Link, Pair, PairConfig, Side, Trade};

/// The fixed key `[b; 32]` (blinded with the same bytes): the keys every test and benchmark
/// gives its parties, so that a party is known by its byte.
pub fn key(b: u8) -> gridchan_channel::Signer {
    gridchan_channel::Signer::new(&[b; 32], &[b; 32]).expect("a fixed key in range")
}

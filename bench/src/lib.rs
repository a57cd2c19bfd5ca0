//! # gridchan-bench: the benchmarks
//!
//! Each benchmark prints its measurement beside a floor measured in the same run, on the same
//! machine (BENCHMARKS.md has the runs and the commands). `gridchan bench NAME` runs them;
//! tests never time anything.
//!
//! - [`core`]: one channel through the in-memory harness, against the cryptography it needs.
//! - [`ledger`]: signed transactions applied and committed by the local ledger.
//! - [`gateway`]: one channel (or many) between two gateway processes over QUIC.
//! - [`hostile`]: honest trading while hostile peers flood the gateway.
//! - [`tower`]: the watchtower taking states and refuting.
//! - [`market`]: a market node and its members, from each book's deadline to every settlement
//!   durable at both ends.
//! - [`gas`]: the gas of each adjudicator operation on anvil.

pub mod core;
pub mod gas;
pub mod gateway;
pub mod hostile;
pub mod ledger;
pub mod market;
pub mod tower;
pub mod year;

//! # gridchan-chain: the ledger gridchan settles on
//!
//! The ledger holds channel deposits and judges disputes. This crate has three parts:
//!
//! - [`rules`]: the state transition: accounts with one settlement token, and the adjudication
//!   contract (deposit, register, refute, conclude, conclude-final, reclaim, withdraw). The
//!   rules are specified in `specs/adjudicator.md`.
//! - [`LocalLedger`]: the embedded ledger: signed transactions with per-account nonces, a
//!   block every period, blocks hash-linked and stored durably in SQLite, the chain verified
//!   and replayed on start.
//! - [`Ledger`]: the interface gateways and watchtowers use, implemented in-process by
//!   [`LocalClient`] and over QUIC by [`RemoteClient`] against a `gridchan ledger` node
//!   ([`server`]). Nothing in it assumes a block period or a token: an EVM chain can implement
//!   it too.

pub mod block;
pub mod chainstore;
mod client;
pub mod config;
#[cfg(feature = "evm")]
pub mod evm;
pub mod frame_vectors;
pub mod local;
pub mod rpc;
pub mod rules;
pub mod server;
pub mod tx;

pub use block::{BlockEvents, Receipt, TxOutcome};
pub use client::{Fees, Ledger, LedgerError, LocalClient, RemoteClient, Subscription};
pub use config::{EvmSection, LedgerSection};
pub use local::LocalLedger;
pub use rules::{
    Account, ChainEvent, ChannelAccount, ChannelStatus, Genesis, Height, TxError, MAX_BATCH_ITEMS,
};
pub use tx::{Tx, TxHash, TxKind};

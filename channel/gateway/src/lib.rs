//! # gridchan-gateway: the parts of a home energy gateway around the protocol core
//!
//! The daemon (issue 4) is a thin shell that joins these to the core
//! ([`gridchan_channel::Node`]) and the transport:
//!
//! - [`store::SqliteStore`]: the durable [`gridchan_channel::ChannelStore`]: SQLite in WAL mode,
//!   `synchronous = FULL`, versioned schema migrations, batched writes, and records whose
//!   signatures are checked again when they are loaded.
//! - [`meter`]: where interval readings come from: a seeded simulation of solar generation and
//!   household load, and CSV replay of recorded readings.
//! - [`engine`]: the async shell around the core: QUIC connections to neighbours, batched
//!   durable writes acknowledged to the core, a clock, and a control handle.
//! - [`ledger_queue`]: the durable queue of ledger transactions the gateway owes, retried
//!   until included (the ledger may be away for hours: island mode).
//! - [`peers`]: keeps the neighbours connected: those configured, and those with a live
//!   channel, recorded when it was opened.
//! - [`towers`]: pushes every new doubly signed state to the household's watchtowers.
//! - [`control`]: the control API on a Unix socket (mode 0600) that `gridchan channel ...` uses.
//! - [`data_lock`]: one daemon per data folder.
//! - [`config`]: the gateway's TOML configuration, and the commented template `gridchan init`
//!   writes.
//! - [`allocate`]: the rule that splits a gateway's metered export and import across its
//!   channels so that it never bills its neighbours for more than it exported, nor pays them
//!   for more than it imported.

pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod data_lock;
pub mod engine;
pub mod error;
mod event_log;
pub mod funds;
pub mod history;
pub mod http;
pub mod ledger_queue;
mod links;
pub mod market;
pub mod market_store;
pub mod meter;
pub mod metrics;
pub mod peers;
pub mod readings;
pub mod restore;
pub mod sqlite;
pub mod store;
pub mod towers;
pub mod writer;

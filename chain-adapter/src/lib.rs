//! # gridchan-chain: the ledger adapter
//!
//! Not built yet (issue 3): the `Ledger` interface the channel code talks to (fund, register,
//! refute, conclude, withdraw, events) and the embedded local ledger with the adjudication
//! contract. Today the channel core expresses what it wants from a ledger as
//! [`gridchan_channel::LedgerRequest`]s and learns what happened from
//! [`gridchan_channel::LedgerEvent`]s; this crate will carry those out.

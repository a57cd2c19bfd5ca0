//! The gateway's errors: what went wrong, by kind, each in one line a person can act on.

use gridchan_channel::StoreError;

/// Why something the gateway was asked to do, or tried to do, did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The gateway's file could not be read or written.
    #[error("{0}")]
    Store(String),
    /// A neighbour or a tower could not be reached, or broke the connection.
    #[error("{0}")]
    Unreachable(String),
    /// A request names nothing it could act on, or is ambiguous: what to give instead.
    #[error("{0}")]
    Request(String),
    /// A configuration value is wrong: which, and why.
    #[error("{0}")]
    Config(String),
    /// The ledger did not answer, or refused.
    #[error("{0}")]
    Ledger(String),
    /// The engine has stopped.
    #[error("the gateway engine has stopped")]
    Stopped,
}

impl From<rusqlite::Error> for GatewayError {
    fn from(e: rusqlite::Error) -> GatewayError {
        GatewayError::Store(e.to_string())
    }
}

impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> GatewayError {
        GatewayError::Store(e.to_string())
    }
}

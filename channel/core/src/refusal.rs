//! Why a peer's proposed state is refused: each reason, its number on the wire
//! (`specs/protocol.md`, "Payload encoding") and whether it is an honest disagreement or a
//! violation that costs the connection.

use serde::{Deserialize, Serialize};

/// Why a proposed state is not a valid successor of the current one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The state names another channel.
    #[error("state is for another channel")]
    WrongChannel,
    /// The version is not the next one.
    #[error("expected version {expected}, got {got}")]
    UnexpectedVersion { expected: u64, got: u64 },
    /// A signature is missing, malformed or from the wrong key.
    #[error("bad signature")]
    BadSignature,
    /// The balances do not add up to the deposits: money created or destroyed.
    #[error("balances add up to {got}, the channel holds {expected}")]
    MoneyNotConserved { expected: u64, got: u64 },
    /// A balance or a cumulative energy counter would overflow.
    #[error("a balance or energy counter would overflow")]
    Overflow,
    /// The buyer's balance cannot pay for the trade.
    #[error("the buyer's balance cannot pay {needed}")]
    InsufficientBalance { needed: u64 },
    /// A cumulative energy counter went down.
    #[error("cumulative energy went backwards")]
    EnergyWentBackwards,
    /// Energy moved both ways in one update.
    #[error("energy moved both ways in one update")]
    TwoWayEnergy,
    /// The proposer is not the party that is owed (the seller).
    #[error("only the seller proposes")]
    ProposerNotSeller,
    /// The interval is not later than the last settled one.
    #[error("interval {got} is not after the last settled interval {last}")]
    StaleInterval { last: u64, got: u64 },
    /// The money moved is not the tariff's price for the energy.
    #[error("price off the tariff: expected {expected} micro-units, got {got}")]
    PriceOffTariff { expected: u64, got: u64 },
    /// The billed energy exceeds everything the buyer's meter imported in the interval.
    #[error("billed {billed} Wh but the buyer's meter imported {imported} Wh")]
    EnergyBeyondImport { billed: u64, imported: u64 },
    /// The billed energy differs from the buyer's own reading by more than the tolerance.
    #[error("billed {billed} Wh, the buyer's meter says {reading} Wh: outside the tolerance")]
    OutsideTolerance { billed: u64, reading: u64 },
    /// The buyer has no reading for the interval (too old, or it never arrived in time).
    #[error("no meter reading for interval {0}")]
    NoMeterReading(u64),
    /// A final state changed balances, energy or interval.
    #[error("a final state must not move money or energy")]
    FinalChangesState,
    /// An update that moves nothing.
    #[error("the update settles no energy")]
    EmptyUpdate,
    /// The receiver already signed a state at or above this version (the proposals crossed
    /// unseen, across a reconnect or a store failure): propose again above `highest`.
    #[error("version already used: propose above {highest}")]
    VersionBurned { highest: u64 },
    /// The channel is not open for updates (opening, closing, closed, or frozen by a store
    /// failure).
    #[error("channel is not accepting updates")]
    NotAccepting,
    /// The channel parameters are unacceptable.
    #[error("unacceptable channel parameters: {0}")]
    BadParams(String),
    /// A market channel's update proposed by the member rather than the market node.
    #[error("only the market node proposes a market settlement")]
    ProposerNotMarket,
    /// A market channel's update that names no book, or a tariff trade that names one.
    #[error("a market settlement must name its book, a tariff trade none")]
    BookMissing,
    /// A market update for a book the member has not checked (it did not arrive, or failed
    /// its checks).
    #[error("no checked book for interval {0}")]
    NoBook(u64),
    /// A market update that does not settle what the checked book gives the member.
    #[error("the update does not settle what the book of interval {0} gives")]
    NotTheBook(u64),
    /// A funds update that changes the other party's funds, lowers a total, moves energy, or
    /// does not move the proposer's balance by exactly its top-up less its withdrawal.
    #[error(
        "a funds update may only raise the proposer's top-ups or withdrawals, by its own balance"
    )]
    BadFunds,
    /// A funds update naming top-ups the receiver has not seen confirmed on the ledger yet:
    /// propose it again later.
    #[error("top-ups of {total} are not confirmed on the ledger yet")]
    TopUpNotSeen { total: u64 },
}

impl Refusal {
    /// The reason's number on the wire (specs/protocol.md, "Payload encoding"): its place in
    /// the spec's table, pinned by `wire::tests::variant_numbers_are_the_specs`.
    pub fn variant(&self) -> u32 {
        match self {
            Refusal::WrongChannel => 0,
            Refusal::UnexpectedVersion { .. } => 1,
            Refusal::BadSignature => 2,
            Refusal::MoneyNotConserved { .. } => 3,
            Refusal::Overflow => 4,
            Refusal::InsufficientBalance { .. } => 5,
            Refusal::EnergyWentBackwards => 6,
            Refusal::TwoWayEnergy => 7,
            Refusal::ProposerNotSeller => 8,
            Refusal::StaleInterval { .. } => 9,
            Refusal::PriceOffTariff { .. } => 10,
            Refusal::EnergyBeyondImport { .. } => 11,
            Refusal::OutsideTolerance { .. } => 12,
            Refusal::NoMeterReading(_) => 13,
            Refusal::FinalChangesState => 14,
            Refusal::EmptyUpdate => 15,
            Refusal::VersionBurned { .. } => 16,
            Refusal::NotAccepting => 17,
            Refusal::BadParams(_) => 18,
            Refusal::ProposerNotMarket => 19,
            Refusal::BookMissing => 20,
            Refusal::NoBook(_) => 21,
            Refusal::NotTheBook(_) => 22,
            Refusal::BadFunds => 23,
            Refusal::TopUpNotSeen { .. } => 24,
        }
    }

    /// The reason's name in the spec.
    pub fn name(&self) -> &'static str {
        match self {
            Refusal::WrongChannel => "WrongChannel",
            Refusal::UnexpectedVersion { .. } => "UnexpectedVersion",
            Refusal::BadSignature => "BadSignature",
            Refusal::MoneyNotConserved { .. } => "MoneyNotConserved",
            Refusal::Overflow => "Overflow",
            Refusal::InsufficientBalance { .. } => "InsufficientBalance",
            Refusal::EnergyWentBackwards => "EnergyWentBackwards",
            Refusal::TwoWayEnergy => "TwoWayEnergy",
            Refusal::ProposerNotSeller => "ProposerNotSeller",
            Refusal::StaleInterval { .. } => "StaleInterval",
            Refusal::PriceOffTariff { .. } => "PriceOffTariff",
            Refusal::EnergyBeyondImport { .. } => "EnergyBeyondImport",
            Refusal::OutsideTolerance { .. } => "OutsideTolerance",
            Refusal::NoMeterReading(_) => "NoMeterReading",
            Refusal::FinalChangesState => "FinalChangesState",
            Refusal::EmptyUpdate => "EmptyUpdate",
            Refusal::VersionBurned { .. } => "VersionBurned",
            Refusal::NotAccepting => "NotAccepting",
            Refusal::BadParams(_) => "BadParams",
            Refusal::ProposerNotMarket => "ProposerNotMarket",
            Refusal::BookMissing => "BookMissing",
            Refusal::NoBook(_) => "NoBook",
            Refusal::NotTheBook(_) => "NotTheBook",
            Refusal::BadFunds => "BadFunds",
            Refusal::TopUpNotSeen { .. } => "TopUpNotSeen",
        }
    }

    /// Whether this refusal is an honest disagreement (meters, balance, timing) that keeps the
    /// connection, rather than a protocol violation that costs the sender its connection.
    pub fn is_disagreement(&self) -> bool {
        matches!(
            self,
            Refusal::EnergyBeyondImport { .. }
                | Refusal::OutsideTolerance { .. }
                | Refusal::NoMeterReading(_)
                | Refusal::NoBook(_)
                | Refusal::TopUpNotSeen { .. }
                | Refusal::VersionBurned { .. }
                | Refusal::NotAccepting
        )
    }
}

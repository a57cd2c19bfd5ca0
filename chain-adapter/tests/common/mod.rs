//! A ledger in a temporary folder with two parties and a channel between them.

#![allow(dead_code, clippy::new_without_default)]

use std::sync::Arc;

use gridchan_chain::local::LocalError;
use gridchan_chain::{Genesis, LocalLedger, Tx, TxError, TxHash, TxKind};
use gridchan_channel::{
    Amount, ChannelParams, IntervalIndex, MeterTolerance, Party, PricePerKwh, SignedState,
    SignedStateParts, Signer, State, Tariff, Version, WattHours,
};

pub const CHAIN: [u8; 32] = [0xc4; 32];

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub ledger: Arc<LocalLedger>,
    pub a: Signer,
    pub b: Signer,
    pub c: Signer,
    pub params: ChannelParams,
    pub genesis: Genesis,
    now: u64,
}

pub use gridchan_harness::key as signer;

pub fn params(a: &Signer, b: &Signer) -> ChannelParams {
    ChannelParams {
        party_a: a.id(),
        party_b: b.id(),
        nonce: [5; 32],
        deposit_a: Amount(1_000_000),
        deposit_b: Amount(2_000_000),
        challenge_window_blocks: 5,
        funding_window_blocks: 3,
        interval_seconds: 900,
        tolerance: MeterTolerance {
            absolute_wh: 5,
            permille: 10,
        },
        opened_at: IntervalIndex(100),
        tariff: Tariff::Flat(PricePerKwh(200_000)),
        evidence: Default::default(),
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        let (a, b, c) = (signer(1), signer(2), signer(3));
        let genesis = Genesis {
            chain_id: CHAIN,
            min_challenge_window: 2,
            balances: vec![
                (a.id(), Amount(10_000_000)),
                (b.id(), Amount(10_000_000)),
                (c.id(), Amount(10_000_000)),
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let ledger = LocalLedger::open(dir.path(), genesis.clone()).unwrap();
        let params = params(&a, &b);
        Fixture {
            dir,
            ledger,
            a,
            b,
            c,
            params,
            genesis,
            now: 1_000,
        }
    }

    pub fn reopen(&mut self) {
        self.ledger = LocalLedger::open(self.dir.path(), self.genesis.clone()).unwrap();
    }

    /// Signs and submits `kind` from `who` with its next nonce.
    pub fn submit(&self, who: &Signer, kind: TxKind) -> Result<TxHash, LocalError> {
        let nonce = self.ledger.account(&who.id()).nonce;
        self.ledger.submit(Tx::sign(&CHAIN, who, nonce, kind))
    }

    /// Submits and expects a refusal with `expected`.
    pub fn refused(&self, who: &Signer, kind: TxKind) -> TxError {
        match self.submit(who, kind) {
            Err(LocalError::Refused(e)) => e,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    pub fn block(&mut self) {
        self.now += 1_000;
        self.ledger.produce_block(self.now).unwrap();
    }

    pub fn blocks(&mut self, n: u64) {
        for _ in 0..n {
            self.block();
        }
    }

    pub fn deposit(&self, who: &Signer, amount: u64) -> Result<TxHash, LocalError> {
        self.submit(
            who,
            TxKind::Deposit {
                params: Box::new(self.params.clone()),
                amount: Amount(amount),
            },
        )
    }

    /// Both deposit; one block later the channel is open.
    pub fn fund(&mut self) {
        self.deposit(&self.a, 1_000_000).unwrap();
        self.deposit(&self.b, 2_000_000).unwrap();
        self.block();
    }

    /// A state where A has been paid `paid_to_a` out of B's deposit, at `version`.
    pub fn state(&self, version: u64, paid_to_a: u64, is_final: bool) -> State {
        let mut s = State::initial(&self.params);
        s.version = Version(version);
        s.balance_a = Amount(1_000_000 + paid_to_a);
        s.balance_b = Amount(2_000_000 - paid_to_a);
        s.energy_a_to_b = WattHours(paid_to_a / 200);
        s.last_interval = IntervalIndex(100 + version);
        s.is_final = is_final;
        s
    }

    /// `state` signed by `sa` as A and `sb` as B.
    pub fn signed_by(&self, state: State, sa: &Signer, sb: &Signer) -> SignedStateParts {
        let d = state.digest();
        SignedStateParts {
            sig_a: sa.sign(&d),
            sig_b: sb.sign(&d),
            state,
        }
    }

    pub fn signed(&self, version: u64, paid_to_a: u64) -> Box<SignedStateParts> {
        Box::new(self.signed_by(self.state(version, paid_to_a, false), &self.a, &self.b))
    }

    pub fn signed_final(&self, version: u64, paid_to_a: u64) -> Box<SignedStateParts> {
        Box::new(self.signed_by(self.state(version, paid_to_a, true), &self.a, &self.b))
    }

    pub fn verified(&self, parts: &SignedStateParts) -> SignedState {
        parts
            .clone()
            .verify(&self.params, &self.params.channel_id())
            .unwrap()
    }

    pub fn balance(&self, who: &Signer) -> u64 {
        self.ledger.account(&who.id()).balance.0
    }

    pub fn party(&self, who: &Signer) -> Party {
        self.params.party_of(&who.id()).unwrap()
    }
}

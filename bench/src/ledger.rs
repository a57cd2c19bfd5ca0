//! The ledger benchmark: signed transactions applied and committed per second, beside the bare
//! cost of verifying their signatures, and how long a block takes to produce at a given load.

use std::time::{Duration, Instant};

use gridchan_channel::{Amount, Signer};

use gridchan_chain::local::{LocalLedger, MAX_PENDING};
use gridchan_chain::rules::Genesis;
use gridchan_chain::tx::{Tx, TxKind};

/// What [`run`] measured.
#[derive(Clone, Debug)]
pub struct LedgerBench {
    pub transactions: usize,
    /// Submitting (signature, nonce, dry run) and committing them in full blocks.
    pub elapsed: Duration,
    /// Verifying their signatures alone (key recovery), measured in the same run.
    pub verify_floor: Duration,
    /// (transactions in the block, time to produce and durably commit it).
    pub block_times: Vec<(usize, Duration)>,
}

impl LedgerBench {
    pub fn tx_per_second(&self) -> f64 {
        self.transactions as f64 / self.elapsed.as_secs_f64()
    }

    pub fn floor_per_second(&self) -> f64 {
        self.transactions as f64 / self.verify_floor.as_secs_f64()
    }

    pub fn report(&self) -> String {
        let mut s = format!(
            "ledger benchmark: {} signed transfers from 256 accounts, submitted and committed in full blocks\n\
             \x20 applied+committed {:>9.0} tx/s\n\
             \x20 floor             {:>9.0} tx/s  (signature verification alone, by key recovery)\n\
             \x20 ratio             {:>9.2} of the floor\n\
             block production (WAL, synchronous FULL), time per block at a given load:\n",
            self.transactions,
            self.tx_per_second(),
            self.floor_per_second(),
            self.tx_per_second() / self.floor_per_second(),
        );
        for (n, t) in &self.block_times {
            s.push_str(&format!(
                "  {:>5} tx/block  {:>9.2} ms  ({:>7.0} blocks/s)\n",
                n,
                t.as_secs_f64() * 1e3,
                1.0 / t.as_secs_f64()
            ));
        }
        s
    }
}

/// Runs the benchmark in a temporary folder under `dir`.
pub fn run(dir: &std::path::Path, transactions: usize) -> LedgerBench {
    let chain_id = [7u8; 32];
    let senders: Vec<Signer> = (0..256u32)
        .map(|i| {
            let mut s = [1u8; 32];
            s[..4].copy_from_slice(&i.to_be_bytes());
            Signer::new(&s, &[0; 32]).expect("valid key")
        })
        .collect();
    let genesis = Genesis {
        chain_id,
        min_challenge_window: 2,
        balances: senders
            .iter()
            .map(|s| (s.id(), Amount(u64::MAX / 512)))
            .collect(),
    };
    let ledger = LocalLedger::open(&dir.join("bench-ledger"), genesis).expect("ledger opens");
    let to = senders[0].id();
    let txs: Vec<Tx> = (0..transactions)
        .map(|i| {
            let s = &senders[i % senders.len()];
            let nonce = (i / senders.len()) as u64;
            Tx::sign(
                &chain_id,
                s,
                nonce,
                TxKind::Transfer {
                    to,
                    amount: Amount(1),
                },
            )
        })
        .collect();
    let started = Instant::now();
    verify_all(&txs, &chain_id);
    let verify_floor = started.elapsed();
    let mut now = 1;
    let started = Instant::now();
    for chunk in txs.chunks(MAX_PENDING) {
        for tx in chunk {
            ledger.submit(tx.clone()).expect("valid transaction");
        }
        now += 1;
        ledger.produce_block(now).expect("block commits");
    }
    let elapsed = started.elapsed();
    let mut block_times = Vec::new();
    for load in [0usize, 10, 100, 1000, MAX_PENDING] {
        for s in senders.iter().cycle().take(load) {
            // `account` counts pending transactions in the nonce.
            let nonce = ledger.account(&s.id()).nonce;
            let tx = Tx::sign(
                &chain_id,
                s,
                nonce,
                TxKind::Transfer {
                    to,
                    amount: Amount(1),
                },
            );
            ledger.submit(tx).expect("valid transaction");
        }
        now += 1;
        let t = Instant::now();
        ledger.produce_block(now).expect("block commits");
        block_times.push((load, t.elapsed()));
    }
    LedgerBench {
        transactions,
        elapsed,
        verify_floor,
        block_times,
    }
}

fn verify_all(txs: &[Tx], chain_id: &[u8; 32]) {
    for tx in txs {
        assert!(tx.verify(chain_id));
    }
}

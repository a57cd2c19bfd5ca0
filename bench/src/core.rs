//! The core benchmark: one channel's updates through the in-memory harness, beside the bare
//! cost of the cryptography every update needs, measured in the same run.

use std::time::{Duration, Instant};

use gridchan_channel::crypto::verify_plain;
use gridchan_channel::{IntervalIndex, Signer, WattHours};

use gridchan_harness::{Pair, PairConfig, Side, Trade};

/// What [`run`] measured.
#[derive(Clone, Debug)]
pub struct CoreBench {
    pub updates: u64,
    pub elapsed: Duration,
    /// 2 signs + 2 verifications by key recovery, the cryptography of one update.
    pub crypto_floor: Duration,
    /// 2 signs + 2 plain ECDSA verifications, for comparison.
    pub plain_verify_floor: Duration,
}

impl CoreBench {
    pub fn per_update(&self) -> Duration {
        self.elapsed / self.updates.max(1) as u32
    }

    pub fn updates_per_second(&self) -> f64 {
        self.updates as f64 / self.elapsed.as_secs_f64()
    }

    /// Time per update over the cryptographic floor: 1.0 would be free protocol logic.
    pub fn ratio(&self) -> f64 {
        self.per_update().as_secs_f64() / self.crypto_floor.as_secs_f64()
    }

    /// The human report: the measurement beside its floors and the goal.
    pub fn report(&self) -> String {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let plain_ratio = self.per_update().as_secs_f64() / self.plain_verify_floor.as_secs_f64();
        format!(
            "core benchmark: one channel, two nodes in memory, {} updates\n\
             \x20 protocol   {:>8.1} us/update  {:>9.0} updates/s\n\
             \x20 floor      {:>8.1} us/update  2 signs + 2 verifications by key recovery (what the protocol checks)\n\
             \x20 reference  {:>8.1} us/update  2 signs + 2 plain ECDSA verifications ({:.3}x)\n\
             \x20 ratio      {:>8.3}x the floor (goal: at most 1.15x)",
            self.updates,
            us(self.per_update()),
            self.updates_per_second(),
            us(self.crypto_floor),
            us(self.plain_verify_floor),
            plain_ratio,
            self.ratio()
        )
    }
}

/// Settles `updates` intervals (sellers alternating) between two nodes in memory, and measures
/// the bare cryptography of as many updates. The two are interleaved in ten rounds so that
/// drift in the machine's speed affects both sides of the ratio alike.
pub fn run(updates: u64) -> CoreBench {
    const ROUNDS: u64 = 10;
    let mut pair = Pair::new(PairConfig::default());
    pair.referee = false;
    let start_interval = PairConfig::default().opened_at.0;
    // Warm up caches and allocators.
    for i in 1..=100 {
        pair.trade(trade(start_interval + i));
        pair.drive();
    }
    let per_round = (updates / ROUNDS).max(1);
    let mut next = start_interval + 101;
    let (mut elapsed, mut recover, mut plain) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for i in next..next + per_round {
            pair.trade(trade(i));
            pair.drive();
        }
        elapsed += started.elapsed();
        next += per_round;
        let (r, p) = crypto_floor(per_round);
        recover += r;
        plain += p;
    }
    let updates = per_round * ROUNDS;
    let settled = pair.current(Side::A).version().0;
    assert_eq!(settled, 100 + updates, "every interval settled");
    CoreBench {
        updates,
        elapsed,
        crypto_floor: recover / updates as u32,
        plain_verify_floor: plain / updates as u32,
    }
}

fn trade(i: u64) -> Trade {
    let seller = if i.is_multiple_of(2) {
        Side::A
    } else {
        Side::B
    };
    Trade::agreed(IntervalIndex(i), seller, WattHours(100 + i % 400))
}

/// `updates` times: A signs, B verifies, B signs, A verifies. Returns the total time with key
/// recovery and with plain verification.
fn crypto_floor(updates: u64) -> (Duration, Duration) {
    let a = Signer::new(&[0xa1; 32], &[1; 32]).expect("fixed key");
    let b = Signer::new(&[0xb2; 32], &[2; 32]).expect("fixed key");
    let digests: Vec<[u8; 32]> = (0..updates)
        .map(|i| {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&i.to_be_bytes());
            d[31] = 1;
            d
        })
        .collect();
    let started = Instant::now();
    for d in &digests {
        let sa = a.sign(d);
        sa.verify(d, &a.id()).expect("valid");
        let sb = b.sign(d);
        sb.verify(d, &b.id()).expect("valid");
    }
    let recover = started.elapsed();
    let started = Instant::now();
    for d in &digests {
        let sa = a.sign(d);
        assert!(verify_plain(&sa, d, &a.id()));
        let sb = b.sign(d);
        assert!(verify_plain(&sb, d, &b.id()));
    }
    let plain = started.elapsed();
    (recover, plain)
}

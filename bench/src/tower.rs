//! The tower benchmark: states accepted per second (both signatures checked, each durable
//! before its receipt) beside the bare cost of two signature verifications measured in the same
//! run; bytes on disk for 100 channels after 10 and after many updates each; and blocks from a
//! stale registration to the included refute.

use gridchan_harness::key;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridchan_chain::{ChannelStatus, Genesis, Ledger, LocalClient, LocalLedger, TxKind};
use gridchan_channel::{
    Amount, ChannelParams, IntervalIndex, MeterTolerance, PricePerKwh, SignedState, Signer, State,
    Tariff, Version, WattHours,
};

use gridchan_watchtower::store::TowerStore;
use gridchan_watchtower::tower::{Tower, TowerLimits};
use gridchan_watchtower::TowerClient;

pub struct TowerBench {
    pub states: usize,
    pub accepted_per_second: f64,
    /// States per second one core could check: 1 / (2 verifications).
    pub verify_bound: f64,
    pub cores: usize,
    pub bytes_after: Vec<(u64, u64)>,
    pub refute_blocks: Vec<u64>,
}

impl TowerBench {
    pub fn report(&self) -> String {
        let mut out = format!(
            "watchtower benchmark: {} states from one client over QUIC (4 requests of 25 in flight), both signatures checked, SQLite WAL+FULL\n\
             \x20 accepted        {:>8.0} states/s\n\
             \x20 bound           {:>8.0} states/s  (1 / 2 signature verifications on one core, measured now; {} cores: {:.0})\n\
             \x20 ratio           {:>8.2}  (goal: at least 0.70)\n",
            self.states,
            self.accepted_per_second,
            self.verify_bound,
            self.cores,
            self.verify_bound * self.cores as f64,
            self.accepted_per_second / self.verify_bound,
        );
        for (updates, bytes) in &self.bytes_after {
            out += &format!("  storage         {bytes:>8} bytes for 100 channels after {updates} updates each\n");
        }
        out += &format!(
            "  refutes         {} stale registrations refuted {:?} blocks after they were included (goal: at most 2)",
            self.refute_blocks.len(),
            self.refute_blocks
        );
        out
    }
}

/// Requests in flight (each with a quarter of the channels at one version).
const LANES: usize = 4;

fn params(n: u32) -> ChannelParams {
    let mut nonce = [0u8; 32];
    nonce[..4].copy_from_slice(&n.to_be_bytes());
    ChannelParams {
        party_a: key(1).id(),
        party_b: key(2).id(),
        nonce,
        deposit_a: Amount(1_000),
        deposit_b: Amount(1_000_000),
        challenge_window_blocks: 20,
        funding_window_blocks: 100,
        interval_seconds: 900,
        tolerance: MeterTolerance {
            absolute_wh: 5,
            permille: 10,
        },
        opened_at: IntervalIndex(1),
        tariff: Tariff::Flat(PricePerKwh(100_000)),
        evidence: Default::default(),
    }
}

fn state(params: &ChannelParams, v: u64, a: &Signer, b: &Signer) -> SignedState {
    let mut s = State::initial(params);
    s.version = Version(v);
    s.balance_a = Amount(1_000 + v);
    s.balance_b = Amount(1_000_000 - v);
    s.energy_a_to_b = WattHours(v);
    s.last_interval = IntervalIndex(1 + v);
    let d = s.digest();
    gridchan_channel::SignedStateParts {
        sig_a: a.sign(&d),
        sig_b: b.sign(&d),
        state: s,
    }
    .verify(params, &params.channel_id())
    .expect("valid")
}

/// States `1..=versions` of every channel, signed on every core.
fn sign_all(
    channels: &[ChannelParams],
    versions: std::ops::RangeInclusive<u64>,
) -> Vec<Vec<SignedState>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = versions.clone().count().div_ceil(threads).max(1);
    let all: Vec<u64> = versions.collect();
    std::thread::scope(|scope| {
        let parts: Vec<_> = all
            .chunks(per)
            .map(|vs| {
                scope.spawn(move || {
                    let (a, b) = (key(1), key(2));
                    vs.iter()
                        .map(|v| channels.iter().map(|p| state(p, *v, &a, &b)).collect())
                        .collect::<Vec<Vec<SignedState>>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("signer"))
            .collect()
    })
}

/// Runs the benchmark in `dir`: `states` accepted over QUIC, storage after `updates` updates.
pub async fn run(dir: &std::path::Path, states: usize, updates: u64) -> TowerBench {
    let genesis = Genesis {
        chain_id: [4; 32],
        min_challenge_window: 2,
        balances: vec![
            (key(1).id(), Amount(1 << 40)),
            (key(2).id(), Amount(1 << 40)),
        ],
    };
    let ledger = LocalLedger::open(&dir.join("ledger"), genesis).expect("ledger");
    let producer = ledger.spawn_producer(Duration::from_millis(100));
    let channels: Vec<ChannelParams> = (0..100).map(params).collect();
    for (k, amount) in [(1u8, 1_000u64), (2, 1_000_000)] {
        let c = LocalClient::new(ledger.clone(), key(k));
        let mut last = None;
        for p in &channels {
            last = Some(
                c.submit(TxKind::Deposit {
                    params: Box::new(p.clone()),
                    amount: Amount(amount),
                })
                .await
                .expect("deposit"),
            );
        }
        c.wait_for(&last.expect("a deposit"), Duration::from_secs(30))
            .await
            .expect("deposits in");
    }
    // The tower, with limits that do not get in the way of one busy client.
    let limits = TowerLimits {
        channels_per_client: 1_000,
        states_per_second: 1e9,
        burst: 1e9,
        ..TowerLimits::default()
    };
    let tower_ledger: Arc<dyn Ledger> = Arc::new(LocalClient::new(ledger.clone(), key(7)));
    let tower =
        Tower::start(key(7), tower_ledger, dir.join("tower.sqlite"), limits).expect("tower");
    let endpoint = gridchan_watchtower::rpc::bind(
        "127.0.0.1:0".parse().expect("address"),
        key(7).duplicate(&[1; 32]),
    )
    .expect("bind");
    let addr = endpoint.peer_addr();
    tower.listen(endpoint);
    let client = Arc::new(TowerClient::new(addr, key(1).duplicate(&[2; 32])).expect("client"));
    client.register().await.expect("register");

    // Throughput: the states signed beforehand, then handed over 64 at a time.
    let versions = states.div_ceil(channels.len()) as u64;
    eprintln!("signing {} states...", versions as usize * channels.len());
    let signed: Vec<SignedState> = sign_all(&channels, 1..=versions)
        .into_iter()
        .flatten()
        .collect();
    eprintln!("handing them to the tower...");
    let started = Instant::now();
    // Lanes: each sends its share of the channels, one version at a time, so no two requests
    // in flight hold the same channel (a later version overtaking an earlier one would only be
    // refused as older).
    let mut set: tokio::task::JoinSet<Result<usize, gridchan_watchtower::TowerError>> =
        tokio::task::JoinSet::new();
    let per_version = channels.len();
    for lane in 0..LANES {
        let c = client.clone();
        let mine: Vec<Vec<SignedState>> = signed
            .chunks(per_version)
            .map(|round| round.iter().skip(lane).step_by(LANES).cloned().collect())
            .collect();
        set.spawn(async move {
            let mut n = 0;
            for batch in mine {
                for a in c.guard_many(&batch).await?.0 {
                    a?;
                    n += 1;
                }
            }
            Ok(n)
        });
    }
    let mut accepted = 0;
    while let Some(r) = set.join_next().await {
        accepted += r.expect("joined").expect("accepted");
    }
    assert_eq!(accepted, signed.len());
    let elapsed = started.elapsed();
    // The bound, now: two recoveries per state over the same states, on one core.
    let t = Instant::now();
    let sample = &signed[..signed.len().min(4_000)];
    for s in sample {
        for p in [gridchan_channel::Party::A, gridchan_channel::Party::B] {
            s.signature(p).recover(s.digest()).expect("valid");
        }
    }
    let per_state = t.elapsed().as_secs_f64() / sample.len() as f64;

    // Refutes: B registers an old state on five channels; the tower holds newer ones.
    let b = LocalClient::new(ledger.clone(), key(2));
    for p in channels.iter().take(5) {
        b.register(&state(p, 1, &key(1), &key(2)))
            .await
            .expect("register");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let refute_blocks = loop {
        let actions = TowerStore::open_read_only(&tower.store_path)
            .and_then(|s| s.actions())
            .unwrap_or_default();
        let done: Vec<u64> = actions
            .iter()
            .filter_map(|a| a.included_height.map(|h| h - a.seen_height))
            .collect();
        if done.len() >= 5 || Instant::now() > deadline {
            break done;
        }
        ledger
            .wait_above(ledger.height(), Duration::from_secs(1))
            .await;
    };
    let registered_newest = channels.iter().take(5).all(|p| {
        matches!(ledger.channel(&p.channel_id()).map(|c| c.status),
            Some(ChannelStatus::Registered { version, .. }) if version == Version(versions))
    });
    assert!(
        registered_newest,
        "the tower refuted with its newest states"
    );
    tower.stop();
    producer.abort();

    // Storage: 100 channels, the store alone, after 10 and after `updates` updates each.
    let path = dir.join("storage.sqlite");
    let mut store = TowerStore::open(&path).expect("store");
    let mut bytes_after = Vec::new();
    let mut done = 0;
    for target in [10, updates.max(11)] {
        eprintln!("storage: {target} updates on each of 100 channels...");
        while done < target {
            let upto = (done + 500).min(target);
            for round in sign_all(&channels, done + 1..=upto) {
                let items: Vec<_> = channels
                    .iter()
                    .zip(&round)
                    .map(|(p, s)| (key(1).id(), p, s))
                    .collect();
                store.put_many(&items).expect("write");
            }
            done = upto;
        }
        bytes_after.push((target, store.bytes_on_disk(&path).expect("size")));
    }
    TowerBench {
        states: signed.len(),
        accepted_per_second: signed.len() as f64 / elapsed.as_secs_f64(),
        verify_bound: 1.0 / per_state,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        bytes_after,
        refute_blocks,
    }
}

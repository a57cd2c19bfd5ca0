//! A simulated year of a household's gateway on disk: 10 channels settling every 15-minute
//! interval, each interval's records, settled rows and meter reading written through the
//! gateway's own store code (`SqliteStore::write_batch`, `ReadingLog`, `History::compact`),
//! one durable transaction per interval as the daemon's writer makes them. Measures the data
//! folder's size as the year goes on, with the history rolled up after `keep_days` and without.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use gridchan_channel::metering::MeterReading;
use gridchan_channel::{
    Amount, ChannelParams, ChannelRecord, ChannelStore, FundsRecord, IntervalIndex, MeterTolerance,
    Party, Phase, PricePerKwh, SignedStateParts, Signer, State, Tariff, Version, WattHours,
};
use gridchan_gateway::history::{History, HistoryPolicy};
use gridchan_gateway::readings::ReadingLog;
use gridchan_gateway::store::SqliteStore;

/// What a simulated year measured.
#[derive(Debug)]
pub struct Year {
    pub keep_days: Option<u32>,
    /// The data folder's bytes at the end of each 30 days.
    pub monthly_bytes: Vec<u64>,
    pub final_bytes: u64,
    pub settled: u64,
    pub seconds: f64,
}

fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Runs `days` of 96 intervals on `channels` channels in `dir`.
pub fn run(dir: &Path, days: u32, channels: usize, keep_days: Option<u32>) -> Year {
    let path = dir.join("channels.sqlite");
    let mut store = SqliteStore::open(&path).expect("store opens");
    let log = ReadingLog::open(&path).expect("readings open");
    let mut history = History::open(&path).expect("history opens");
    let me = Signer::new(&[1; 32], &[0; 32]).expect("key");
    let peers: Vec<Signer> = (0..channels)
        .map(|i| Signer::new(&[2 + i as u8; 32], &[0; 32]).expect("key"))
        .collect();
    let params: Vec<Arc<ChannelParams>> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Arc::new(ChannelParams {
                party_a: me.id(),
                party_b: p.id(),
                nonce: [i as u8; 32],
                deposit_a: Amount(50_000_000),
                deposit_b: Amount(50_000_000),
                challenge_window_blocks: 100,
                funding_window_blocks: 10,
                interval_seconds: 900,
                tolerance: MeterTolerance {
                    absolute_wh: 10,
                    permille: 20,
                },
                opened_at: IntervalIndex(1_900_000),
                tariff: Tariff::Flat(PricePerKwh(200_000)),
                evidence: Default::default(),
            })
        })
        .collect();
    let policy = HistoryPolicy {
        keep_days: keep_days.unwrap_or(0),
        zone: gridchan_gateway::history::utc(),
        interval_seconds: 900,
        grid: None,
    };
    let started = Instant::now();
    let first = 1_900_001u64;
    let mut states: Vec<State> = params.iter().map(|p| State::initial(p)).collect();
    let mut monthly_bytes = Vec::new();
    let mut settled = 0u64;
    for day in 0..u64::from(days) {
        for q in 0..96u64 {
            let interval = IntervalIndex(first + day * 96 + q);
            let mut rows = Vec::with_capacity(channels);
            for (i, s) in states.iter_mut().enumerate() {
                // Sell by day, buy at night, a few Wh a quarter-hour either way.
                let seller = if (24..72).contains(&q) {
                    Party::A
                } else {
                    Party::B
                };
                let energy = WattHours(20 + (q + i as u64) % 40);
                let version = Version(s.version.0 + 1);
                let (next, trade) = s
                    .settle(&params[i], version, seller, interval, energy)
                    .unwrap_or_else(|_| {
                        // A side that ran dry: settle the other way.
                        s.settle(&params[i], version, seller.other(), interval, energy)
                            .expect("one way settles")
                    });
                rows.push((params[i].channel_id(), version, trade, next.digest()));
                *s = next;
                settled += 1;
            }
            // The records change every interval; their bytes are the same size, so the
            // daemon's writes are modelled by writing them once a day (below) and the settled
            // rows every interval.
            store.write_batch(&[], &rows).expect("writes");
            log.record(
                interval,
                MeterReading {
                    import: WattHours(100 + q),
                    export: WattHours(q * 3),
                },
            )
            .expect("reading");
        }
        let records: Vec<ChannelRecord> = states
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let d = s.digest();
                let signed = SignedStateParts {
                    sig_a: me.sign(&d),
                    sig_b: peers[i].sign(&d),
                    state: s.clone(),
                }
                .verify(&params[i], &params[i].channel_id())
                .expect("signed by both");
                ChannelRecord {
                    id: params[i].channel_id(),
                    params: params[i].clone(),
                    me: Party::A,
                    phase: Phase::Open,
                    current: Some(signed),
                    proposal: None,
                    highest_signed: s.version,
                    peer_highest: s.version,
                    funds: FundsRecord::default(),
                }
            })
            .collect();
        let refs: Vec<&ChannelRecord> = records.iter().collect();
        store.write_batch(&refs, &[]).expect("records");
        if let Some(keep) = keep_days {
            let end_ms = (first + (day + 1) * 96) * 900 * 1000;
            let before = HistoryPolicy {
                keep_days: keep,
                ..policy.clone()
            }
            .cutoff(end_ms);
            history
                .compact(before, &|i| policy.day_of(i), &|_, _, _, _| None)
                .expect("compacts");
        }
        if (day + 1) % 30 == 0 {
            monthly_bytes.push(folder_bytes(dir));
        }
    }
    Year {
        keep_days,
        monthly_bytes,
        final_bytes: folder_bytes(dir),
        settled,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The process's peak resident memory, kB (Linux), to print beside the sizes.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

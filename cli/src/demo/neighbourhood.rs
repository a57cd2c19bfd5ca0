//! The neighbourhood: its ledger (in this process, or the contract on anvil), its homes with
//! their recorded meters and keys, the tariff, and each home's gateway.

use super::*;

/// The ledger of a demo run, and how each party reaches it.
pub(super) enum Chain {
    /// A gridchan ledger node in this process, served over QUIC.
    Local {
        ledger: Arc<LocalLedger>,
        address: PeerAddr,
    },
    /// The adjudicator and a test token on a local anvil chain.
    Evm(Box<EvmChain>),
}

pub(super) struct EvmChain {
    /// Stops anvil when the demo ends.
    pub(super) _anvil: Anvil,
    pub(super) config: EvmConfig,
    pub(super) reader: EvmLedger,
}

impl Chain {
    /// A client of the ledger for the account of `secret`.
    pub(super) fn client(&self, secret: &[u8; 32]) -> Result<Arc<dyn Ledger>> {
        Ok(match self {
            Chain::Local { address, .. } => Arc::new(
                RemoteClient::new(
                    address.clone(),
                    Signer::new(secret, &blinding())?,
                    blinding(),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
            Chain::Evm(evm) => Arc::new(
                EvmLedger::connect(evm.config.clone(), secret, &blinding())
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
        })
    }

    /// The ledger's height now (0 while an EVM chain does not answer).
    pub(super) async fn height(&self) -> u64 {
        match self {
            Chain::Local { ledger, .. } => ledger.height(),
            Chain::Evm(evm) => evm.reader.height().await.unwrap_or(0),
        }
    }

    /// The transactions in blocks `from..=to`: how many there were, how many concluded at least
    /// one channel, and how many channels they concluded.
    pub(super) async fn closing_transactions(&self, from: u64, to: u64) -> (usize, usize, usize) {
        let (mut all, mut closing, mut concluded) = (0, 0, 0);
        let mut next = from;
        while next <= to {
            let blocks = match self {
                Chain::Local { ledger, .. } => ledger.blocks(next, 256).unwrap_or_default(),
                Chain::Evm(evm) => evm.reader.blocks(next, 256).await.unwrap_or_default(),
            };
            if blocks.is_empty() {
                break;
            }
            for b in blocks.iter().filter(|b| b.height <= to) {
                for o in &b.outcomes {
                    all += 1;
                    let n = o.result.as_ref().map_or(0, |events| {
                        events
                            .iter()
                            .filter(|e| matches!(e, gridchan_chain::ChainEvent::Concluded { .. }))
                            .count()
                    });
                    if n > 0 {
                        closing += 1;
                        concluded += n;
                    }
                }
            }
            next = blocks.last().map_or(to + 1, |b| b.height + 1);
        }
        (all, closing, concluded)
    }

    /// A channel as the ledger has it (`None` also while an EVM chain does not answer).
    pub(super) async fn channel(&self, id: &ChannelId) -> Option<ChannelAccount> {
        match self {
            Chain::Local { ledger, .. } => ledger.channel(id),
            Chain::Evm(evm) => evm.reader.channel(id).await.ok().flatten(),
        }
    }

    /// An account's tokens outside channels.
    pub(super) async fn balance(&self, node: &gridchan_channel::NodeId) -> Result<Amount> {
        Ok(match self {
            Chain::Local { ledger, .. } => ledger.account(node).balance,
            Chain::Evm(evm) => {
                evm.reader
                    .account(node)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .balance
            }
        })
    }

    /// Every token on the ledger: in all accounts and channels (the local ledger), or held by
    /// the homes and by the adjudicator for its channels (the test token, minted to the homes
    /// only).
    pub(super) async fn supply(&self, homes: &[Home]) -> Result<u128> {
        Ok(match self {
            Chain::Local { ledger, .. } => ledger.total_supply(),
            Chain::Evm(evm) => {
                let ids: Vec<_> = homes.iter().map(|h| h.key.id()).collect();
                evm.reader
                    .supply_among(&ids)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
            }
        })
    }
}

/// What a party holds on the ledger at the start: a home 100 tokens; the market node as much
/// again as it deposits for its members (on anvil, where every account is minted the same,
/// 100 tokens: enough for ten members).
pub(super) fn start_balance(o: &DemoOptions, h: &Home) -> u64 {
    match (&h.market.run, o.ledger) {
        (Some(_), DemoLedger::Local) => START_BALANCE + o.homes as u64 * MARKET_DEPOSIT,
        _ => START_BALANCE,
    }
}

/// The market the demo's homes trade in: pay-as-clear, no fee, the book closing a quarter into
/// the next interval (after the neighbours' rounds), the grid's prices as every limit.
pub(super) fn market_terms(seed: u64) -> gridchan_channel::market::MarketTerms {
    let Tariff::TimeOfUse(retail) = neighbour_tariff_of(retail) else {
        unreachable!("a time-of-use table")
    };
    gridchan_channel::market::MarketTerms {
        market: derive(seed, "market", 1),
        rule: gridchan_channel::market::Rule::PayAsClear,
        fee: PricePerKwh(0),
        deadline_permille: 500,
        feed_in: TimeOfUse {
            utc_offset_minutes: UTC_OFFSET_MIN,
            weekday: [PricePerKwh(FEED_IN); 24],
            weekend: [PricePerKwh(FEED_IN); 24],
        },
        retail: *retail,
    }
}

/// The prices of the day, per local hour, micro-units per kWh.
pub(super) fn retail(hour: usize) -> u64 {
    if (17..21).contains(&hour) {
        340_000
    } else if (7..17).contains(&hour) {
        280_000
    } else {
        220_000
    }
}
pub(super) const FEED_IN: u64 = 80_000;

/// The neighbour tariff: halfway between feed-in and retail, hour by hour.
pub(super) fn neighbour_tariff() -> Tariff {
    neighbour_tariff_of(|h| (retail(h) + FEED_IN) / 2)
}

/// A time-of-use tariff on the local clock with `price(hour)`.
fn neighbour_tariff_of(price: impl Fn(usize) -> u64) -> Tariff {
    let mut table = [PricePerKwh(0); 24];
    for (h, p) in table.iter_mut().enumerate() {
        *p = PricePerKwh(price(h));
    }
    Tariff::TimeOfUse(Box::new(TimeOfUse {
        utc_offset_minutes: UTC_OFFSET_MIN,
        weekday: table,
        weekend: table,
    }))
}

pub(super) fn local_hour(interval: IntervalIndex) -> usize {
    let secs = interval.0 * u64::from(INTERVAL) + (UTC_OFFSET_MIN as u64) * 60;
    ((secs % 86_400) / 3_600) as usize
}

pub(super) fn derive(seed: u64, what: &str, i: usize) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed.to_be_bytes());
    h.update(what.as_bytes());
    h.update((i as u64).to_be_bytes());
    h.finalize().into()
}

/// Home `i`'s meter key: every home's meter signs its readings (`specs/readings.md`, a
/// simulation of a calibrated meter's key), and its channels name it.
pub(super) fn meter_key(o: &DemoOptions, i: usize) -> Result<Signer> {
    Ok(Signer::new(&derive(o.seed, "meter", i), &blinding())?)
}

/// A gateway whose software claims more export than its meter measured while `on` is set:
/// the demo's overbilling cheater. Its meter still signs what it measured, so the claim and
/// the signature disagree, and whoever checks the signature refuses the claim.
pub(super) struct Overbilling<M> {
    pub(super) inner: M,
    pub(super) on: Arc<std::sync::atomic::AtomicBool>,
}

/// What the cheater claims on top of everything its meter measured, per interval.
pub(super) const OVERBILLED_WH: u64 = 250;

impl<M: MeterSource> MeterSource for Overbilling<M> {
    fn reading(&mut self, interval: IntervalIndex) -> Option<MeterReading> {
        let r = self.inner.reading(interval)?;
        if !self.on.load(std::sync::atomic::Ordering::Relaxed) {
            return Some(r);
        }
        // Everything it used, and more, claimed as export.
        Some(MeterReading {
            import: gridchan_channel::WattHours(0),
            export: gridchan_channel::WattHours(r.export.0 + r.import.0 + OVERBILLED_WH),
        })
    }

    fn signed_reading(
        &self,
        interval: IntervalIndex,
    ) -> Option<gridchan_channel::reading::SignedReading> {
        self.inner.signed_reading(interval)
    }

    fn settle_ms(&self) -> u64 {
        self.inner.settle_ms()
    }

    fn problem(&self) -> Option<String> {
        self.inner.problem()
    }
}

/// Home `i`'s meter: home `i mod 8` of the data, and beyond the eighth home the same data
/// scaled by a seeded factor in [0.7, 1.3) (documented in the README), readings only for the
/// day played.
pub(super) struct HomeMeter {
    pub(super) csv: CsvMeter,
    pub(super) factor_permille: u64,
    pub(super) first: IntervalIndex,
    pub(super) last: IntervalIndex,
}

impl MeterSource for HomeMeter {
    fn reading(&mut self, interval: IntervalIndex) -> Option<MeterReading> {
        if interval < self.first || interval > self.last {
            return None;
        }
        let r = self.csv.reading(interval)?;
        let f = |w: gridchan_channel::WattHours| {
            gridchan_channel::WattHours(w.0 * self.factor_permille / 1000)
        };
        Some(MeterReading {
            import: f(r.import),
            export: f(r.export),
        })
    }
}

pub(super) fn home_meter(o: &DemoOptions, i: usize, anchor: IntervalIndex) -> Result<HomeMeter> {
    let row0 = (o.week * 7 + o.day) * 96;
    let csv = CsvMeter::parse(
        &format!("home-{:02}.csv", i % 8 + 1),
        HOMES[i % 8],
        INTERVAL,
    )?;
    // The day played is the recording's row0, moved to the demo's day.
    let from = csv
        .nth_interval(row0)
        .with_context(|| format!("home-{:02}.csv has no row {row0}", i % 8 + 1))?;
    let csv = csv.played(from, anchor);
    let factor_permille = if i < 8 {
        1000
    } else {
        700 + u64::from(derive(o.seed, "home-scale", i)[0]) * 600 / 256
    };
    Ok(HomeMeter {
        csv,
        factor_permille,
        first: anchor,
        last: IntervalIndex(anchor.0 + o.intervals - 1),
    })
}

pub(super) struct Home {
    pub(super) name: String,
    /// The market this gateway runs (the market node), or the clock its memberships follow.
    pub(super) market: gridchan_gateway::engine::MarketParts,
    /// The parties it shares a channel with: whom it dials when it (re)starts.
    pub(super) neighbours: Vec<usize>,
    /// The home's secret key, for its ledger clients; `key` signs with it.
    pub(super) secret: [u8; 32],
    pub(super) key: Signer,
    /// The key its meter signs readings with (the market node's is unused).
    pub(super) meter: Signer,
    pub(super) addr: SocketAddr,
    pub(super) dir: PathBuf,
    pub(super) daemon: Option<Daemon>,
    /// While set, the home's software claims energy its meter did not measure (the demo's
    /// overbilling cheater; see [`Overbilling`]).
    pub(super) cheat: Arc<std::sync::atomic::AtomicBool>,
}

impl Home {
    /// The home's running engine.
    pub(super) fn engine(&self) -> EngineHandle {
        self.daemon.as_ref().expect("running").engine.clone()
    }
}

/// A channel as `engine` holds it now, if it does (and answers).
pub(super) async fn view(
    engine: EngineHandle,
    id: ChannelId,
) -> Option<gridchan_channel::ChannelView> {
    engine.channel(id).await.ok().flatten()
}

pub(super) struct Net {
    pub(super) chain: Arc<Chain>,
    pub(super) tower_addr: PeerAddr,
    pub(super) clock: SimClock,
    pub(super) anchor: IntervalIndex,
}

pub(super) fn blinding() -> [u8; 32] {
    rand::random()
}

/// Starts (or restarts) home `i`'s engine on a free port of 127.0.0.1, and notes the port.
pub(super) fn listen(o: &DemoOptions, home: &mut Home) -> Result<EngineHandle> {
    std::fs::create_dir_all(&home.dir)?;
    // The core's waits are wall-clock: on a clock sped up, they shrink with it (ten
    // intervals' worth), so an interval a home missed while offline does not hold a channel
    // up for two real minutes.
    let wait = (o.interval_ms() * 10).max(1_000);
    let accept = match &home.market.run {
        // The market node takes every home's market channel on its terms, depositing what it
        // may pay the home for its sales.
        Some(run) => gridchan_channel::AcceptPolicy {
            from: gridchan_channel::Acceptance::Anyone,
            max_deposit: Amount(MARKET_DEPOSIT),
            max_deposit_permille: 1000,
            price: (PricePerKwh(0), PricePerKwh(u64::MAX)),
            market: Some(Box::new(run.terms.clone())),
            // Every member's orders are checked against its meter's signed readings.
            require_signed: true,
            ..gridchan_channel::AcceptPolicy::default()
        },
        // Every home takes its neighbours' channels on the terms a household would set: a
        // deposit it can afford, prices between its feed-in tariff and the highest retail
        // price.
        None => gridchan_channel::AcceptPolicy {
            from: gridchan_channel::Acceptance::Anyone,
            max_deposit: Amount(DEPOSIT),
            max_deposit_permille: 1000,
            price: (PricePerKwh(FEED_IN), PricePerKwh(retail(18))),
            own_meter: Some(home.meter.id()),
            require_signed: true,
            ..gridchan_channel::AcceptPolicy::default()
        },
    };
    let policy = Policy {
        reading_wait_ms: wait,
        peer_turn_wait_ms: wait,
        crossing_wait_ms: wait,
        interval_seconds: Some(INTERVAL),
        accept,
        ..Policy::default()
    };
    let engine = engine::spawn_on_file_in_markets(
        "127.0.0.1:0".parse()?,
        home.key.duplicate(&blinding()),
        &home.dir.join("channels.sqlite"),
        policy,
        home.market.clone(),
    )
    .with_context(|| format!("{}: cannot start its gateway", home.name))?;
    home.addr = engine.address.addr;
    Ok(engine)
}

/// Where party `i` finds the parties it shares channels with.
pub(super) fn dial_list(homes: &[Home], i: usize) -> Vec<PeerAddr> {
    homes[i]
        .neighbours
        .iter()
        .map(|&j| PeerAddr {
            node: homes[j].key.id(),
            addr: homes[j].addr,
        })
        .collect()
}

/// Starts (or restarts) home `i`'s gateway around `engine`, dialling `peers`.
pub(super) async fn start_home(
    o: &DemoOptions,
    net: &Net,
    homes: &[Home],
    i: usize,
    engine: EngineHandle,
    peers: Vec<PeerAddr>,
) -> Result<Daemon> {
    let h = &homes[i];
    let ledger = net.chain.client(&h.secret)?;
    // The market node has no meter; a home's meter signs its readings.
    let meter: Option<Box<dyn MeterSource>> = match h.market.run {
        Some(_) => None,
        None => Some(Box::new(Overbilling {
            inner: SigningMeter::new(
                home_meter(o, i, net.anchor)?,
                h.meter.duplicate(&blinding()),
                INTERVAL,
                (
                    gridchan_channel::WattHours(0),
                    gridchan_channel::WattHours(0),
                ),
            ),
            on: h.cheat.clone(),
        })),
    };
    Ok(daemon::start(DaemonParts {
        engine,
        store_path: h.dir.join("channels.sqlite"),
        ledger,
        meter,
        interval_seconds: INTERVAL,
        peers,
        clock: net.clock.clone(),
        towers: vec![net.tower_addr.clone()],
        tower_key: h.key.duplicate(&blinding()),
        funds: None,
        history: None,
        min_acks: 0,
    })?)
}

/// A channel: party `a` opened it to party `b` (a ring's neighbour, or the market node).
#[derive(Clone)]
pub(super) struct Link {
    pub(super) a: usize,
    pub(super) b: usize,
    pub(super) id: ChannelId,
}

/// A gridchan ledger node in this process, served over QUIC, its genesis giving every home
/// its starting balance.
pub(super) fn start_local_ledger(
    o: &DemoOptions,
    root: &Path,
    homes: &[Home],
    say: &impl Fn(String),
) -> Result<Chain> {
    let genesis = Genesis {
        chain_id: derive(o.seed, "chain", 0),
        min_challenge_window: 2,
        balances: homes
            .iter()
            .map(|h| (h.key.id(), Amount(start_balance(o, h))))
            .collect(),
    };
    let ledger = LocalLedger::open(&root.join("ledger"), genesis)?;
    // Every gateway holds a connection or two (its ledger queue, its follower).
    let endpoint = gridchan_chain::rpc::bind_for(
        "127.0.0.1:0".parse()?,
        Signer::new(&derive(o.seed, "ledger", 0), &blinding())?,
        2 * o.homes + 64,
    )?;
    let address = endpoint.peer_addr();
    // Both run until the demo's runtime ends.
    tokio::spawn(server::serve(endpoint, ledger.clone()));
    // Every gateway follows the ledger block by block: a large neighbourhood in one process
    // gets fewer, fuller blocks.
    let block_ms = BLOCK_MS * (o.homes as u64 / 25).max(1);
    ledger.spawn_producer(Duration::from_millis(block_ms));
    say(format!(
        "ledger     {address} (a block every {block_ms} ms)"
    ));
    Ok(Chain::Local { ledger, address })
}

/// A local anvil chain with the adjudicator and a test token deployed, every party's account
/// funded with gas and every home minted its starting balance.
pub(super) async fn start_evm_chain(
    o: &DemoOptions,
    homes: &[Home],
    say: &impl Fn(String),
) -> Result<Chain> {
    let block_time = format!("{}", EVM_BLOCK_MS as f64 / 1000.0);
    let anvil = Anvil::start_with(&["--block-time", &block_time])
        .map_err(|e| anyhow::anyhow!("--ledger evm: {e}"))?;
    let deployer = derive(o.seed, "deployer", 0);
    let ids: Vec<_> = homes.iter().map(|h| h.key.id()).collect();
    let gas: Vec<_> = [Signer::new(&derive(o.seed, "tower", 0), &blinding())?.id()]
        .into_iter()
        .chain(ids.iter().copied())
        .collect();
    let d = anvil
        .deploy_with_test_tokens(&deployer, &blinding(), &gas, &ids, START_BALANCE)
        .await
        .map_err(|e| anyhow::anyhow!("cannot deploy the adjudicator on anvil: {e}"))?;
    let config = d.config(&anvil.rpc, 1);
    say(format!(
        "ledger     anvil at {} (a block every {EVM_BLOCK_MS} ms): adjudicator {:#x}, test token {:#x}",
        anvil.rpc, d.adjudicator, d.token
    ));
    let reader = EvmLedger::connect(config.clone(), &deployer, &blinding())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Chain::Evm(Box::new(EvmChain {
        _anvil: anvil,
        config,
        reader,
    })))
}

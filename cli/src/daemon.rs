//! `gridchan daemon --config FILE`: run a home energy gateway.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use gridchan_channel::{Policy, WattHours};
use gridchan_gateway::clock::SimClock;
use gridchan_gateway::config::{Config, MeterSection};
use gridchan_gateway::ledger_queue::LedgerQueue;
use gridchan_gateway::meter::p1::P1Port;
use gridchan_gateway::meter::signing::SigningMeter;
use gridchan_gateway::meter::{CsvMeter, LiveSource, MeterSource, SimulatedMeter};
use gridchan_gateway::store::SqliteStore;
use gridchan_gateway::{control, daemon, engine};

use crate::keys;

/// Where a sped-up clock starts: 2026-01-01 00:00 UTC.
pub const SPEEDUP_EPOCH_MS: u64 = 1_767_225_600_000;

/// The control socket of a gateway's data folder.
pub fn control_socket(config: &Config) -> std::path::PathBuf {
    config.node.data.join("control.sock")
}

pub async fn run(config_path: &Path) -> Result<()> {
    let mut stop = crate::StopSignals::install()?;
    let config = Config::load(config_path)?;
    let signer = keys::load(&config.node.key)?;
    std::fs::create_dir_all(&config.node.data)
        .with_context(|| format!("cannot create {}", config.node.data.display()))?;
    // Held until the daemon ends: a second daemon on this folder is refused.
    let _lock = gridchan_gateway::data_lock::DataLock::take(&config.node.data)?;
    let store_path = config.node.data.join("channels.sqlite");
    let damaged = || {
        format!(
            "cannot open the channel store {} (move it aside, then `gridchan restore --config {}` takes its channels from the watchtowers; or restore it from a backup)",
            store_path.display(),
            config_path.display()
        )
    };
    let store = SqliteStore::open(&store_path).with_context(damaged)?;
    store.check().with_context(damaged)?;
    let ledger_queue =
        Arc::new(LedgerQueue::open(&store_path).with_context(|| {
            format!("cannot open the ledger queue in {}", store_path.display())
        })?);
    let ledger = crate::evm::client(&config.ledger, &config.node.key, config_path).await?;
    // Damage is never silent: a channel a tower holds newer than the store (a lost or rolled
    // back data folder) stops the daemon with what to do.
    // (Only with towers to compare with: loading checks every record's signatures again.)
    if !config.towers.is_empty() {
        let stored = gridchan_channel::ChannelStore::load(&store)
            .with_context(|| format!("cannot read the channel store {}", store_path.display()))?;
        crate::restore::check_at_start(&config, config_path, &signer, &stored, &ledger).await?;
    }
    let interval_seconds = config.metering.interval_seconds;
    // A sped-up clock runs from a fixed epoch, so every neighbour with the same speedup tells
    // the same time and a restart finds the intervals where it left them.
    let clock = match config.metering.speedup {
        0 | 1 => SimClock::real(),
        n => SimClock::scaled_since(SPEEDUP_EPOCH_MS, n),
    };
    let zone = config.metering.zone()?;
    let meter: Option<Box<dyn MeterSource>> = match &config.meter {
        None => None,
        Some(MeterSection::Simulated {
            seed,
            pv_peak_w,
            load_avg_w,
            utc_offset_minutes,
        }) => Some(Box::new(SimulatedMeter {
            seed: *seed,
            pv_peak_w: *pv_peak_w,
            load_avg_w: *load_avg_w,
            interval_seconds,
            // A named zone wins over the fixed offset of older configurations.
            zone: match (&config.metering.time_zone, *utc_offset_minutes) {
                (None, minutes) if minutes != 0 => jiff::tz::TimeZone::fixed(
                    jiff::tz::Offset::from_seconds(minutes * 60)
                        .context("meter.utc_offset_minutes is out of range")?,
                ),
                _ => zone.clone(),
            },
        })),
        Some(MeterSection::Csv { path }) => {
            let csv = CsvMeter::open(path, interval_seconds)?;
            tracing::info!(
                "meter: {} intervals of readings from {}",
                csv.len(),
                path.display()
            );
            Some(Box::new(csv))
        }
        Some(MeterSection::P1 { port, max_power_w }) => {
            let port: P1Port = port.parse()?;
            tracing::info!("meter: reading the P1 port {port}");
            Some(Box::new(LiveSource::p1(
                port,
                interval_seconds,
                *max_power_w,
                clock.clone(),
            )))
        }
        Some(MeterSection::Mqtt {
            broker,
            import,
            export,
            unit,
            username,
            password,
            max_power_w,
        }) => {
            tracing::info!(
                "meter: reading {} and {} on {broker}",
                import.topic,
                export.topic
            );
            let m = gridchan_gateway::meter::mqtt::MqttMeter {
                broker: broker.clone(),
                import: import.clone(),
                export: export.clone(),
                unit: *unit,
                credentials: username.clone().zip(password.clone()),
            };
            Some(Box::new(LiveSource::mqtt(
                m,
                interval_seconds,
                *max_power_w,
                clock.clone(),
            )))
        }
    };
    let peers = config
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            crate::config_address(&format!("peers[{i}].address"), &p.address, config_path)
        })
        .collect::<Result<Vec<_>>>()?;
    let tower_key = signer.duplicate(&keys::random32()?);
    let in_config = |e: gridchan_gateway::error::GatewayError| {
        anyhow::anyhow!("config {}: {e}", config_path.display())
    };
    // This home's signing meter, and the neighbours' meters the owner names: what a channel's
    // evidence may name (`specs/readings.md`).
    let meter_key = match &config.signing_meter {
        Some(s) => Some(keys::load_or_create(&s.key)?),
        None => None,
    };
    let mut meters = std::collections::HashMap::new();
    for (p, addr) in config.peers.iter().zip(&peers) {
        if let Some(meter_key) = p.meter_key().map_err(in_config)? {
            meters.insert(addr.node, meter_key);
        }
    }
    let mut accept = config.accept.policy().map_err(in_config)?;
    let own_meter = meter_key.as_ref().map(|k| k.id());
    accept.own_meter = own_meter;
    accept.known_meters = meters.iter().map(|(p, m)| (*p, *m)).collect();
    // A market node takes its members' channels on its terms, depositing up to its limit in
    // each.
    let run = match &config.market_node {
        Some(m) => {
            let terms = m.terms().map_err(in_config)?;
            accept.market = Some(Box::new(terms.clone()));
            accept.max_market_members = m.max_members;
            accept.max_deposit = m
                .member_deposit
                .amount("market_node.member_deposit")
                .map_err(in_config)?;
            Some(engine::MarketNode {
                terms,
                interval_seconds,
            })
        }
        None => None,
    };
    let policy = Policy {
        interval_seconds: Some(interval_seconds),
        accept,
        min_acks: config.watchtowers.min_acks,
        ..Policy::default()
    };
    let mut parts =
        engine::EngineParts::new(config.node.listen, signer, store, ledger_queue, policy);
    parts.market = engine::MarketParts {
        run,
        limits: config.market.limits().map_err(in_config)?,
        clock: Some(clock.clone()),
        store: Some(store_path.clone()),
    };
    let engine = engine::spawn(parts)?;
    match &config.market_node {
        Some(_) => println!("market node {}", engine.address),
        None => println!("gateway {}", engine.address),
    }
    // A simulated signing meter signs every reading with its own key.
    let meter = match (meter_key, meter) {
        (Some(key), Some(inner)) => {
            println!(
                "meter key {} (this home's readings are signed with it; neighbours who require signed readings name it as your meter)",
                hex::encode(key.id().to_bytes())
            );
            let signing =
                SigningMeter::new(inner, key, interval_seconds, (WattHours(0), WattHours(0)));
            Some(Box::new(signing) as Box<dyn MeterSource>)
        }
        (_, meter) => meter,
    };
    // Neighbours whose readings must be signed by the meter the config names, whatever the
    // channel's terms.
    if !meters.is_empty() {
        engine
            .require_meters(meters.clone(), interval_seconds)
            .await
            .context("the engine stopped")?;
    }
    let towers = config
        .towers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            crate::config_address(&format!("towers[{i}].address"), &t.address, config_path)
        })
        .collect::<Result<Vec<_>>>()?;
    let daemon = daemon::start(daemon::DaemonParts {
        engine: engine.clone(),
        store_path: store_path.clone(),
        ledger: ledger.clone(),
        meter,
        interval_seconds,
        peers,
        clock: clock.clone(),
        towers,
        tower_key,
        funds: config.funds.policy().map_err(in_config)?,
        min_acks: config.watchtowers.min_acks,
        history: (config.history.keep_days > 0).then(|| gridchan_gateway::history::HistoryPolicy {
            keep_days: config.history.keep_days,
            zone: zone.clone(),
            interval_seconds,
            grid: config.grid.tariffs().ok().flatten(),
        }),
    })
    .with_context(|| {
        format!(
            "cannot start the daemon's jobs (towers, neighbours, meter readings) on {}",
            store_path.display()
        )
    })?;
    // The Prometheus endpoint, when the owner asks for one.
    let metrics = match config.metrics.listen {
        Some(listen) => {
            let sampled = gridchan_gateway::metrics::Sampled {
                towers: daemon.towers.clone(),
                ledger: ledger.clone(),
            };
            let bound =
                gridchan_gateway::metrics::serve(listen, engine.clone(), interval_seconds, sampled)
                    .await
                    .map_err(in_config)?;
            println!("metrics http://{bound}/metrics");
            Some(bound)
        }
        None => None,
    };
    // The household's page, when the owner asks for one.
    let page = match config.page.listen {
        Some(listen) => {
            let bound = crate::page::serve(
                listen,
                crate::page::Page {
                    config: config_path.to_path_buf(),
                    engine: engine.clone(),
                    peers: daemon.peers.clone(),
                    clock: clock.clone(),
                    token: config.page.token.clone(),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("config {}: {e}", config_path.display()))?;
            println!("page http://{bound}/");
            Some(bound)
        }
        None => None,
    };
    let socket = control_socket(&config);
    let control = tokio::spawn({
        let socket = socket.clone();
        let gateway = control::Gateway {
            engine: engine.clone(),
            interval_seconds,
            clock,
            towers: daemon.towers.clone(),
            peers: daemon.peers.clone(),
            meter: daemon.meter.clone(),
            ledger,
            meters,
            own_meter,
            metrics,
            page,
            data: config.node.data.clone(),
            funds: daemon.funds.clone(),
        };
        async move { control::serve(&socket, gateway).await }
    });
    tokio::select! {
        r = control => {
            r??;
        }
        signal = stop.recv() => eprintln!("{signal}: stopping the gateway"),
    }
    // No new readings, ledger events or tower pushes; then the engine finishes what it was
    // given, writes its history and tells the neighbours it is going.
    let _ = std::fs::remove_file(&socket);
    drop(daemon);
    match tokio::time::timeout(STOP_WITHIN, engine.stop()).await {
        Ok(Ok(())) => eprintln!("stopped"),
        Ok(Err(e)) => eprintln!("stopped ({e})"),
        Err(_) => eprintln!(
            "the engine did not stop within {} s; exiting anyway (nothing signed is lost)",
            STOP_WITHIN.as_secs()
        ),
    }
    Ok(())
}

/// How long a stopping daemon waits for its engine's last writes.
const STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

//! The summary: per home what trading was worth, per channel its updates and final balances,
//! the dispute, and the checks the demo's exit status rests on.

use super::*;

#[derive(Serialize)]
pub struct HomeSummary {
    pub home: String,
    pub node: String,
    pub metered_import_wh: u64,
    pub metered_export_wh: u64,
    pub bought_from_neighbours_wh: u64,
    pub sold_to_neighbours_wh: u64,
    pub bought_from_grid_wh: u64,
    pub sold_to_grid_wh: u64,
    pub paid_neighbours: String,
    pub earned_from_neighbours: String,
    pub grid_only_bill: String,
    pub bill_with_neighbours: String,
    pub savings: String,
}

#[derive(Serialize)]
pub struct ChannelSummary {
    pub channel: String,
    pub homes: [String; 2],
    pub updates: u64,
    pub energy_wh: [u64; 2],
    pub final_balances: [String; 2],
    pub closed: String,
}

#[derive(Serialize)]
pub struct DisputeSummary {
    pub channel: String,
    pub offline: String,
    pub cheater: String,
    pub registered_version: u64,
    pub newest_version: u64,
    /// The version the tower refuted with.
    pub tower_refuted_with: u64,
    pub paid_version: u64,
}

#[derive(Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Serialize)]
pub struct Summary {
    /// `local` or `evm` (see [`DemoOptions::ledger`]).
    pub ledger: String,
    pub homes: Vec<HomeSummary>,
    pub channels: Vec<ChannelSummary>,
    pub dispute: Option<DisputeSummary>,
    pub updates: u64,
    pub seconds: f64,
    pub updates_per_second: f64,
    pub data_folder: String,
    pub checks: Vec<Check>,
}

pub(super) fn money(micro: i128) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let m = micro.unsigned_abs();
    format!("{sign}{}.{:02}", m / 1_000_000, (m % 1_000_000) / 10_000)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn summarize(
    o: &DemoOptions,
    homes: &[Home],
    links: &[Link],
    chain: &Chain,
    tower: &Arc<Tower>,
    mut dispute: Option<DisputeSummary>,
    day_seconds: f64,
    root: &Path,
) -> Result<Summary> {
    let mut checks = Vec::new();
    let mut check = |what: &str, ok: bool, detail: String| {
        checks.push(Check {
            what: what.to_string(),
            ok,
            detail,
        })
    };
    // Per channel: the newest state either side holds, and what the ledger paid.
    let mut channels = Vec::new();
    let mut updates = 0;
    let mut per_home: BTreeMap<usize, (u64, u64, i128)> = BTreeMap::new(); // bought, sold, net money
    let mut all_newest = true;
    for l in links {
        let a = homes[l.a].engine().channel(l.id).await?;
        let b = homes[l.b].engine().channel(l.id).await?;
        let newest = [a.and_then(|v| v.current), b.and_then(|v| v.current)]
            .into_iter()
            .flatten()
            .max_by_key(|s| s.version())
            .context("a channel without a state")?;
        let paid = chain.channel(&l.id).await.map(|c| c.status);
        let closed = match &paid {
            Some(ChannelStatus::Concluded { version }) => {
                if *version != newest.version() {
                    all_newest = false;
                }
                format!("paid out at version {}", version.0)
            }
            other => {
                all_newest = false;
                format!("not paid out: {other:?}")
            }
        };
        if let Some(d) = dispute.as_mut().filter(|d| d.channel == l.id.to_string()) {
            if let Some(ChannelStatus::Concluded { version }) = paid {
                d.paid_version = version.0;
            }
        }
        let s = newest.state();
        updates += s.version.0;
        let e = per_home.entry(l.a).or_default();
        e.0 += s.energy_b_to_a.0;
        e.1 += s.energy_a_to_b.0;
        e.2 += i128::from(s.balance_a.0) - i128::from(DEPOSIT);
        let e = per_home.entry(l.b).or_default();
        e.0 += s.energy_a_to_b.0;
        e.1 += s.energy_b_to_a.0;
        e.2 += i128::from(s.balance_b.0) - i128::from(DEPOSIT);
        channels.push(ChannelSummary {
            channel: l.id.to_string(),
            homes: [homes[l.a].name.clone(), homes[l.b].name.clone()],
            updates: s.version.0,
            energy_wh: [s.energy_a_to_b.0, s.energy_b_to_a.0],
            final_balances: [s.balance_a.to_string(), s.balance_b.to_string()],
            closed,
        });
    }
    check(
        "every channel closed at its newest state",
        all_newest,
        format!("{} channels", links.len()),
    );
    // Money: nothing created or lost; every home's account is its start plus its net trade.
    let supply = chain.supply(homes).await?;
    let expected_supply = u128::from(START_BALANCE) * homes.len() as u128;
    check(
        "money conserved on the ledger",
        supply == expected_supply,
        format!(
            "{} tokens in all accounts and channels, {} at the start",
            Amount(u64::try_from(supply).unwrap_or(u64::MAX)),
            Amount(u64::try_from(expected_supply).unwrap_or(u64::MAX))
        ),
    );
    let mut accounts_right = true;
    for (i, h) in homes.iter().enumerate() {
        let net = per_home.get(&i).map_or(0, |e| e.2);
        let expected = i128::from(START_BALANCE) + net;
        if i128::from(chain.balance(&h.key.id()).await?.0) != expected {
            accounts_right = false;
        }
    }
    check(
        "every home holds exactly its payouts",
        accounts_right,
        "start balance + what its channels' final states pay it".into(),
    );
    // Energy: what was settled never exceeds what the meters measured, home by home and
    // interval by interval (checked on the totals the allocation rule bounds).
    let mut home_summaries = Vec::new();
    let mut energy_ok = true;
    for (i, h) in homes.iter().enumerate() {
        let mut meter = home_meter(
            o,
            i,
            IntervalIndex(WEEK_START[o.week] / 900 + o.day as u64 * 96),
        )?;
        let first = meter.first;
        let (mut import, mut export, mut grid_only) = (0u64, 0u64, 0i128);
        let mut hourly: Vec<(u64, u64, usize)> = Vec::new();
        for k in 0..o.intervals {
            let iv = IntervalIndex(first.0 + k);
            if let Some(r) = meter.reading(iv) {
                import += r.import.0;
                export += r.export.0;
                let hour = local_hour(iv);
                grid_only += i128::from(r.import.0 * retail(hour) / 1000)
                    - i128::from(r.export.0 * FEED_IN / 1000);
                hourly.push((r.import.0, r.export.0, hour));
            }
        }
        let (bought, sold, net) = per_home.get(&i).copied().unwrap_or_default();
        if bought > import || sold > export {
            energy_ok = false;
        }
        // With neighbours: the remaining import at retail, the remaining export at feed-in,
        // and the net paid to neighbours. (The split of neighbour energy over the day's hours
        // is approximated by the home's own import and export profile.)
        let from_grid = import - bought.min(import);
        let to_grid = export - sold.min(export);
        let avg_retail = if import > 0 {
            hourly
                .iter()
                .map(|(im, _, h)| i128::from(*im) * i128::from(retail(*h)))
                .sum::<i128>()
                / i128::from(import)
        } else {
            0
        };
        let with =
            i128::from(from_grid) * avg_retail / 1000 - i128::from(to_grid * FEED_IN / 1000) - net;
        let paid: i128 = if net < 0 { -net } else { 0 };
        let earned: i128 = if net > 0 { net } else { 0 };
        home_summaries.push(HomeSummary {
            home: h.name.clone(),
            node: h.key.id().to_string(),
            metered_import_wh: import,
            metered_export_wh: export,
            bought_from_neighbours_wh: bought,
            sold_to_neighbours_wh: sold,
            bought_from_grid_wh: from_grid,
            sold_to_grid_wh: to_grid,
            paid_neighbours: money(paid),
            earned_from_neighbours: money(earned),
            grid_only_bill: money(grid_only),
            bill_with_neighbours: money(with),
            savings: money(grid_only - with),
        });
    }
    check(
        "energy settled never exceeds energy metered",
        energy_ok,
        "per home: bought <= metered import, sold <= metered export".into(),
    );
    let bought: u64 = per_home.values().map(|e| e.0).sum();
    let sold: u64 = per_home.values().map(|e| e.1).sum();
    check(
        "energy bought equals energy sold",
        bought == sold,
        format!("{bought} Wh bought, {sold} Wh sold between neighbours"),
    );
    if let Some(d) = &dispute {
        let actions = gridchan_watchtower::store::TowerStore::open_read_only(&tower.store_path)
            .and_then(|s| s.actions())
            .unwrap_or_default();
        let refuted = actions.iter().any(|a| a.included_height.is_some());
        check(
            "the dispute paid the newest state, refuted by the tower",
            refuted
                && d.paid_version == d.newest_version.max(d.paid_version)
                && d.paid_version > d.registered_version,
            format!(
                "registered v{}, paid v{}",
                d.registered_version, d.paid_version
            ),
        );
    }
    Ok(Summary {
        ledger: match o.ledger {
            DemoLedger::Local => "local",
            DemoLedger::Evm => "evm",
        }
        .to_string(),
        homes: home_summaries,
        channels,
        dispute,
        updates,
        seconds: day_seconds,
        updates_per_second: updates as f64 / day_seconds,
        data_folder: root.display().to_string(),
        checks,
    })
}

pub(super) fn print_summary(s: &Summary) {
    println!();
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "home",
        "import",
        "export",
        "bought",
        "sold",
        "grid in",
        "grid out",
        "paid",
        "earned",
        "saved"
    );
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "Wh", "Wh", "Wh", "Wh", "Wh", "Wh", "tokens", "tokens", "tokens"
    );
    for h in &s.homes {
        println!(
            "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            h.home,
            h.metered_import_wh,
            h.metered_export_wh,
            h.bought_from_neighbours_wh,
            h.sold_to_neighbours_wh,
            h.bought_from_grid_wh,
            h.sold_to_grid_wh,
            h.paid_neighbours,
            h.earned_from_neighbours,
            h.savings
        );
    }
    println!();
    for c in &s.channels {
        println!(
            "channel {} {}-{}: {} updates, {} Wh and {} Wh, final balances {} / {}, {}",
            &c.channel[..8],
            c.homes[0],
            c.homes[1],
            c.updates,
            c.energy_wh[0],
            c.energy_wh[1],
            c.final_balances[0],
            c.final_balances[1],
            c.closed
        );
    }
    if let Some(d) = &s.dispute {
        println!(
            "dispute on {}: {} offline, {} registered v{} (the tower held v{}); the watchtower refuted with v{}; the ledger paid v{}",
            &d.channel[..8],
            d.offline,
            d.cheater,
            d.registered_version,
            d.newest_version,
            d.tower_refuted_with,
            d.paid_version
        );
    }
    println!(
        "{} updates in {:.1} s of trading: {:.0} updates/s",
        s.updates, s.seconds, s.updates_per_second
    );
    println!();
    for c in &s.checks {
        println!(
            "{} {} ({})",
            if c.ok { "ok  " } else { "FAIL" },
            c.what,
            c.detail
        );
    }
}

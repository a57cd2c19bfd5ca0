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

/// What the demo saw of the overbilling home: which it was, the intervals it cheated in (the
/// first and the one after the last), and each neighbour that left it out of an interval.
pub(super) struct Overbilled {
    pub(super) home: usize,
    pub(super) from: u64,
    pub(super) until: u64,
    pub(super) left_out_by: Vec<(usize, u64)>,
}

/// The home that billed energy its meter never measured, and what came of it.
#[derive(Serialize)]
pub struct OverbillingSummary {
    pub home: String,
    /// The intervals it claimed more than its meter signed (the first and the one after the
    /// last, as interval indexes).
    pub from: u64,
    pub until: u64,
    /// What it claimed on top of everything its meter measured, per interval.
    pub claimed_extra_wh: u64,
    /// Its market orders the market node refused for claiming more than the meter signed.
    pub orders_refused: usize,
    /// Energy it was paid for in the market in those intervals (must be none).
    pub market_paid_wh: u64,
    /// Times a neighbour channel left it out of an interval because its claim was not what its
    /// meter signed (one per neighbour and interval).
    pub left_out_by_neighbours: usize,
    /// Whether it was a market member, and its neighbour channels (with the demo's topology).
    pub in_market: bool,
    pub neighbour_channels: usize,
}

impl OverbillingSummary {
    /// What came of its claims, in the words of the topology it ran in.
    fn outcome(&self) -> String {
        let mut parts = Vec::new();
        if self.in_market {
            parts.push(format!(
                "{} of its orders refused by the market node, {} Wh of them paid",
                self.orders_refused, self.market_paid_wh
            ));
        }
        if self.neighbour_channels > 0 {
            parts.push(format!(
                "left out of an interval {} times by its neighbour channels",
                self.left_out_by_neighbours
            ));
        }
        parts.join("; ")
    }
}

#[derive(Serialize)]
pub struct MarketSummary {
    pub books: usize,
    pub orders: usize,
    /// Energy traded in the market's books.
    pub traded_wh: u64,
    /// Energy traded between homes (through the market and the neighbour channels).
    pub local_wh: u64,
    /// What the homes could have traded: every interval, the smaller of all homes' exports
    /// and all homes' imports.
    pub pooled_bound_wh: u64,
    /// `local_wh / pooled_bound_wh`, in percent.
    pub local_share_percent: f64,
    pub lowest_price: String,
    pub highest_price: String,
    /// What the market node kept (the fee and rounding).
    pub market_income: String,
    /// Books the members refused (interval, how many refused, why).
    pub refused_books: Vec<(u64, usize, String)>,
    pub orders_left_out: usize,
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
    pub overbilling: Option<OverbillingSummary>,
    pub market: Option<MarketSummary>,
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
    (market, log): (Option<usize>, &MarketLog),
    overbilling: Option<Overbilled>,
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
        let deposits = a
            .as_ref()
            .or(b.as_ref())
            .map(|v| (v.params.deposit_a.0, v.params.deposit_b.0))
            .unwrap_or((DEPOSIT, DEPOSIT));
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
        e.2 += i128::from(s.balance_a.0) - i128::from(deposits.0);
        let e = per_home.entry(l.b).or_default();
        e.0 += s.energy_a_to_b.0;
        e.1 += s.energy_b_to_a.0;
        e.2 += i128::from(s.balance_b.0) - i128::from(deposits.1);
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
    let expected_supply: u128 = homes.iter().map(|h| u128::from(start_balance(o, h))).sum();
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
        let expected = i128::from(start_balance(o, h)) + net;
        if i128::from(chain.balance(&h.key.id()).await?.0) != expected {
            accounts_right = false;
        }
    }
    check(
        "every home (and the market node) holds exactly its payouts",
        accounts_right,
        "start balance + what its channels' final states pay it".into(),
    );
    // Energy: what was settled never exceeds what the meters measured, home by home and
    // interval by interval (checked on the totals the allocation rule bounds).
    let mut home_summaries = Vec::new();
    let mut energy_ok = true;
    // Each home's meter, interval by interval: (import, export).
    let mut meters: Vec<Vec<(u64, u64)>> = Vec::new();
    for (i, h) in homes.iter().enumerate().take(o.homes) {
        let mut meter = home_meter(
            o,
            i,
            IntervalIndex(WEEK_START[o.week] / 900 + o.day as u64 * 96),
        )?;
        let first = meter.first;
        let (mut import, mut export, mut grid_only) = (0u64, 0u64, 0i128);
        let mut hourly: Vec<(u64, u64, usize)> = Vec::new();
        let mut own = Vec::new();
        for k in 0..o.intervals {
            let iv = IntervalIndex(first.0 + k);
            let r = meter.reading(iv);
            own.push(r.map_or((0, 0), |r| (r.import.0, r.export.0)));
            if let Some(r) = r {
                import += r.import.0;
                export += r.export.0;
                let hour = local_hour(iv);
                grid_only += i128::from(r.import.0 * retail(hour) / 1000)
                    - i128::from(r.export.0 * FEED_IN / 1000);
                hourly.push((r.import.0, r.export.0, hour));
            }
        }
        meters.push(own);
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
    let homes_only = || {
        per_home
            .iter()
            .filter(|(i, _)| **i < o.homes)
            .map(|(_, e)| e)
    };
    let bought: u64 = homes_only().map(|e| e.0).sum();
    let sold: u64 = homes_only().map(|e| e.1).sum();
    // Market settlements a member never countersigned (it went offline between the book and
    // the proposal, and its channel closed): the market node's exposure, bounded.
    let mut unsigned = Vec::new();
    if let Some(m) = market {
        let mut settled = std::collections::HashSet::new();
        for l in links.iter().filter(|l| l.b == m) {
            for t in homes[m].engine().recent_trades(l.id, 100_000).await? {
                settled.insert((l.id, t.interval));
            }
        }
        unsigned = log
            .expected
            .iter()
            .filter(|((c, i), _)| !settled.contains(&(*c, i.0)))
            .map(|((c, _), s)| (*c, *s))
            .collect();
    }
    let unsigned_sold: u64 = unsigned.iter().map(|(_, s)| s.sold.0).sum();
    let unsigned_bought: u64 = unsigned.iter().map(|(_, s)| s.bought.0).sum();
    check(
        "energy bought equals energy sold",
        bought == sold || bought + unsigned_bought == sold + unsigned_sold,
        format!(
            "{bought} Wh bought, {sold} Wh sold between homes{}",
            if unsigned.is_empty() {
                String::new()
            } else {
                format!(
                    " (and {unsigned_bought} Wh bought, {unsigned_sold} Wh sold in {} settlements a member did not countersign)",
                    unsigned.len()
                )
            }
        ),
    );
    // The pooled bound: every interval, all homes' exports against all homes' imports.
    let pooled = |k: usize| -> u64 {
        let import: u64 = meters.iter().map(|m| m[k].0).sum();
        let export: u64 = meters.iter().map(|m| m[k].1).sum();
        import.min(export)
    };
    let pooled_bound: u64 = (0..o.intervals as usize).map(pooled).sum();
    let market_summary = market.map(|m| {
        market_checks(
            o,
            log,
            m,
            &per_home,
            &meters,
            &pooled,
            (bought, pooled_bound),
            &unsigned,
            &mut check,
        )
    });
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
    // The overbilling home: the market refused its inflated orders, and nothing it claimed
    // beyond its meter was paid for (the totals above: sold <= metered export).
    let overbilling = overbilling.map(|b| {
        let Overbilled {
            home: i,
            from,
            until,
            left_out_by,
        } = b;
        let refused: Vec<u64> = log
            .left_out
            .iter()
            .filter(|(who, _, why)| *who == i && why.contains("more than the meter signed"))
            .map(|(_, interval, _)| interval.0)
            .collect();
        let paid: u64 = links
            .iter()
            .filter(|l| l.a == i && Some(l.b) == market)
            .flat_map(|l| {
                refused.iter().filter_map(move |k| {
                    log.expected
                        .get(&(l.id, IntervalIndex(*k)))
                        .map(|s| s.sold.0)
                })
            })
            .sum();
        OverbillingSummary {
            home: homes[i].name.clone(),
            from,
            until,
            claimed_extra_wh: OVERBILLED_WH,
            orders_refused: refused.len(),
            market_paid_wh: paid,
            left_out_by_neighbours: left_out_by.len(),
            in_market: market.is_some(),
            neighbour_channels: links
                .iter()
                .filter(|l| Some(l.b) != market && (l.a == i || l.b == i))
                .count(),
        }
    });
    if let Some(b) = &overbilling {
        // Every inflated order refused, and with neighbour channels each neighbour leaving it
        // out (the first and last interval may straddle the switch).
        let sure = b.until.saturating_sub(b.from).saturating_sub(2) as usize;
        let refused_enough = market.is_none() || b.orders_refused >= sure;
        let left_out_enough = b.left_out_by_neighbours >= sure * b.neighbour_channels;
        check(
            "energy a home's meter never signed is never paid for",
            energy_ok && refused_enough && left_out_enough && b.market_paid_wh == 0,
            format!(
                "{} claimed {} Wh an interval beyond its meter for an hour: {}; sold <= metered export for every home",
                b.home,
                b.claimed_extra_wh,
                b.outcome()
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
        overbilling,
        market: market_summary,
        updates,
        seconds: day_seconds,
        updates_per_second: updates as f64 / day_seconds,
        data_folder: root.display().to_string(),
        checks,
    })
}

/// The market's checks: every book checked by every member that ordered in it, the staged
/// wrong book refused by all, local trade at the pooled bound whenever every home was in the
/// book, the market node's books balanced.
#[allow(clippy::too_many_arguments)]
fn market_checks(
    o: &DemoOptions,
    log: &MarketLog,
    m: usize,
    per_home: &BTreeMap<usize, (u64, u64, i128)>,
    meters: &[Vec<(u64, u64)>],
    pooled: &impl Fn(usize) -> u64,
    (local, pooled_bound): (u64, u64),
    unsigned: &[(ChannelId, gridchan_channel::market::Settlement)],
    check: &mut impl FnMut(&str, bool, String),
) -> MarketSummary {
    let anchor = IntervalIndex(WEEK_START[o.week] / 900 + o.day as u64 * 96);
    let staged = log.staged_interval;
    let empty = std::collections::BTreeSet::new();
    let mut unchecked = Vec::new();
    // A member offline when a book went out did not get it (its order, sent before it left,
    // is in it).
    let away = |member: usize, interval: IntervalIndex| {
        log.away.iter().any(|(m, from, until)| {
            m.is_none_or(|m| m == member) && interval.0 + 1 >= *from && interval.0 <= *until
        })
    };
    for interval in log.books.keys().filter(|i| Some(**i) != staged) {
        let ordered = log.receipted.get(interval).unwrap_or(&empty);
        let checked = log.checked.get(interval).unwrap_or(&empty);
        if !ordered
            .iter()
            .all(|m| checked.contains(m) || away(*m, *interval))
        {
            unchecked.push(interval.0);
        }
    }
    let checks_made: usize = log.checked.values().map(|c| c.len()).sum();
    check(
        "every book checked by every member before it signed",
        unchecked.is_empty() && !log.books.is_empty(),
        format!(
            "{} books, {checks_made} checks by members{}",
            log.books.len(),
            if unchecked.is_empty() {
                String::new()
            } else {
                format!("; not checked by all who ordered: intervals {unchecked:?}")
            }
        ),
    );
    if log.staged {
        let ok = staged.is_some_and(|i| {
            let ordered = log.receipted.get(&i).unwrap_or(&empty);
            let refused = log.refused.get(&i).map_or(&empty, |r| &r.0);
            !ordered.is_empty() && ordered.is_subset(refused) && !log.checked.contains_key(&i)
        });
        check(
            "the market node's wrong clearing refused by every member",
            ok,
            staged.map_or("no book after the staging".into(), |i| {
                let refused = log.refused.get(&i).map_or(0, |r| r.0.len());
                format!("book of interval {}: refused by {refused} members", i.0)
            }),
        );
    }
    // Local trade at the pooled bound, in every interval every home with energy ordered in.
    let mut full = 0;
    let mut short = Vec::new();
    for (interval, book) in &log.books {
        if Some(*interval) == staged || interval.0 < anchor.0 {
            continue;
        }
        let k = (interval.0 - anchor.0) as usize;
        if k >= o.intervals as usize {
            continue;
        }
        let with_energy = (0..o.homes).filter(|i| meters[*i][k] != (0, 0)).count();
        let everyone = book.orders == with_energy;
        if !everyone {
            continue;
        }
        full += 1;
        if book.traded != pooled(k) {
            short.push((interval.0, book.traded, pooled(k)));
        }
    }
    // With neighbour channels the ring trades first: the market's books see what it leaves.
    let bound_applies = o.topology == Topology::Market;
    check(
        "local trade equals the pooled bound",
        !bound_applies || (short.is_empty() && full > 0),
        format!(
            "{full} intervals with every home in the book{}",
            if !bound_applies {
                format!(" (with the ring: {local} Wh between homes of the {pooled_bound} Wh bound)")
            } else if short.is_empty() {
                String::new()
            } else {
                format!("; short (interval, traded, bound): {short:?}")
            }
        ),
    );
    let income: u64 = log
        .books
        .iter()
        .filter(|(i, _)| Some(**i) != staged)
        .map(|(_, b)| b.income)
        .sum();
    let (in_wh, out_wh, net) = per_home.get(&m).copied().unwrap_or_default();
    // What the books say the market node keeps, less what unsigned settlements left with it
    // (a seller's earnings it did not pay, a buyer's payment it did not get).
    let kept_by_unsigned: i128 = unsigned
        .iter()
        .map(|(_, s)| i128::from(s.earned.0) - i128::from(s.paid.0))
        .sum();
    let (u_sold, u_bought): (u64, u64) = unsigned
        .iter()
        .fold((0, 0), |(a, b), (_, s)| (a + s.sold.0, b + s.bought.0));
    let mut per_channel: BTreeMap<ChannelId, usize> = BTreeMap::new();
    for (c, _) in unsigned {
        *per_channel.entry(*c).or_default() += 1;
    }
    let bounded = per_channel.values().all(|n| *n <= 2);
    check(
        "the market node's books balance",
        (in_wh == out_wh && net == i128::from(income))
            || (in_wh + u_sold == out_wh + u_bought
                && net == i128::from(income) + kept_by_unsigned
                && bounded),
        format!(
            "it bought {in_wh} Wh and sold {out_wh} Wh; kept {} (the books' income: {}){}",
            money(net),
            money(i128::from(income)),
            if unsigned.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} settlements never countersigned, at most {} per member (its exposure), left it {}",
                    unsigned.len(),
                    per_channel.values().max().copied().unwrap_or(0),
                    money(kept_by_unsigned)
                )
            }
        ),
    );
    let prices: Vec<u64> = log
        .books
        .values()
        .filter_map(|b| b.price.map(|p| p.0))
        .collect();
    MarketSummary {
        books: log.books.len(),
        orders: log.books.values().map(|b| b.orders).sum(),
        traded_wh: log.books.values().map(|b| b.traded).sum(),
        local_wh: local,
        pooled_bound_wh: pooled_bound,
        local_share_percent: if pooled_bound == 0 {
            100.0
        } else {
            local as f64 * 100.0 / pooled_bound as f64
        },
        lowest_price: Amount(prices.iter().copied().min().unwrap_or(0)).to_string(),
        highest_price: Amount(prices.iter().copied().max().unwrap_or(0)).to_string(),
        market_income: money(i128::from(income)),
        refused_books: log
            .refused
            .iter()
            .map(|(i, (who, why))| (i.0, who.len(), why.clone()))
            .collect(),
        orders_left_out: log.left_out.len(),
    }
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
    if let Some(b) = &s.overbilling {
        println!(
            "overbilling: {} claimed {} Wh an interval its meter never signed, for an hour; {}",
            b.home,
            b.claimed_extra_wh,
            b.outcome()
        );
    }
    if let Some(m) = &s.market {
        println!(
            "market: {} books, {} orders, {} Wh traded at {} to {} tokens/kWh; local share {:.1}% ({} Wh traded between homes of the {} Wh they could have traded); the market node kept {}",
            m.books,
            m.orders,
            m.traded_wh,
            m.lowest_price,
            m.highest_price,
            m.local_share_percent,
            m.local_wh,
            m.pooled_bound_wh,
            m.market_income
        );
        for (interval, n, why) in &m.refused_books {
            println!("market: the book of interval {interval} was refused by {n} members: {why}");
        }
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

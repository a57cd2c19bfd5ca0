//! The gateway's configuration file.

use crate::error::GatewayError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use gridchan_chain::LedgerSection;

mod meter;
mod template;

pub(crate) use meter::toml_string;
pub use meter::{MeterSection, MeteringSection, SigningMeterSection, MAX_SPEEDUP};
pub use template::{market_template, template};

/// A gateway's configuration, as read from TOML. Relative paths are relative to the file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeSection,
    pub ledger: LedgerSection,
    #[serde(default)]
    pub metering: MeteringSection,
    /// The home's meter; a market node has none.
    #[serde(default)]
    pub meter: Option<MeterSection>,
    #[serde(default)]
    pub peers: Vec<PeerSection>,
    /// A simulated signing meter: this home's readings signed with a key of its own.
    #[serde(default)]
    pub signing_meter: Option<SigningMeterSection>,
    /// Watchtowers that guard this gateway's channels while it is offline.
    #[serde(default)]
    pub towers: Vec<PeerSection>,
    /// Whose channel proposals, on which terms, this gateway takes up.
    #[serde(default)]
    pub accept: AcceptSection,
    /// A member's limit prices in the markets it joins.
    #[serde(default)]
    pub market: MarketSection,
    /// The market this gateway runs, if it is a market node (`gridchan market init`).
    #[serde(default)]
    pub market_node: Option<MarketNodeSection>,
    /// The Prometheus endpoint, off unless an address is given.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// The household's page, off unless an address is given.
    #[serde(default)]
    pub page: PageSection,
    /// The household's own grid prices: what its statements and page count savings against.
    #[serde(default)]
    pub grid: GridSection,
    /// The automatic top-up and sweep of channel balances, off unless configured.
    #[serde(default)]
    pub funds: FundsSection,
    /// How long per-interval history is kept before it is rolled into daily totals.
    #[serde(default)]
    pub history: HistorySection,
    /// What the channels ask of the watchtowers in `[[towers]]`.
    #[serde(default)]
    pub watchtowers: WatchtowersSection,
}

/// `[watchtowers]`: `min_acks`, the towers that must hold a channel's newest state before the
/// gateway signs a newer one (0, the default: trading never waits for a tower). At most the
/// number of `[[towers]]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchtowersSection {
    #[serde(default)]
    pub min_acks: u8,
}

/// `[history]`: `keep_days` of per-interval rows (settled intervals and meter readings; what
/// the quarter-hour statement needs), daily totals after that. 0 keeps every interval.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySection {
    #[serde(default = "ninety")]
    pub keep_days: u32,
}

fn ninety() -> u32 {
    90
}

impl Default for HistorySection {
    fn default() -> HistorySection {
        HistorySection { keep_days: 90 }
    }
}

/// The `[funds]` section: keep each open channel able to pay `keep_days` of this home's typical
/// purchases over it (topping up from the account when our side falls below half of that, by
/// at most `max_top_up` at a time), and sweep our balance above `sweep_above` back to the
/// account once it is a tenth above it. Both off by default.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FundsSection {
    #[serde(default)]
    pub keep_days: f64,
    #[serde(default)]
    pub sweep_above: Option<TokenAmount>,
    #[serde(default = "ten")]
    pub max_top_up: TokenAmount,
}

impl Default for FundsSection {
    fn default() -> FundsSection {
        FundsSection {
            keep_days: 0.0,
            sweep_above: None,
            max_top_up: ten(),
        }
    }
}

impl FundsSection {
    /// The policy, or `None` when it does nothing.
    pub fn policy(&self) -> Result<Option<crate::funds::FundsPolicy>, GatewayError> {
        if !self.keep_days.is_finite() || !(0.0..=30.0).contains(&self.keep_days) {
            return Err(GatewayError::Config(format!(
                "funds.keep_days = {}: give a number of days from 0 (off) to 30",
                self.keep_days
            )));
        }
        let sweep_above = self
            .sweep_above
            .as_ref()
            .map(|a| a.amount("funds.sweep_above"))
            .transpose()?;
        let max_top_up = self.max_top_up.amount("funds.max_top_up")?;
        if self.keep_days == 0.0 && sweep_above.is_none() {
            return Ok(None);
        }
        Ok(Some(crate::funds::FundsPolicy {
            keep_days: self.keep_days,
            sweep_above,
            max_top_up,
        }))
    }
}

/// The `[market]` section: the least this home sells for and the most it buys for in a
/// neighbourhood market, as tariffs (tokens per kWh, time-of-use capable). Left out: the
/// market's grid prices, so the home trades locally whenever that beats the grid.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketSection {
    pub sell_at_least: Option<String>,
    pub buy_at_most: Option<String>,
}

/// The `[market_node]` section: the market this gateway runs.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketNodeSection {
    /// The market's id, 64 hex digits (chosen by `gridchan market init`).
    pub market: String,
    /// `"pay-as-clear"` (the default) or `"pay-as-bid"`.
    #[serde(default = "pay_as_clear")]
    pub rule: String,
    /// Tokens per kWh charged to buyers on top of the price.
    #[serde(default = "zero")]
    pub fee: TokenAmount,
    /// The book closes this many thousandths of an interval after the interval ends.
    #[serde(default = "quarter_permille")]
    pub deadline_permille: u16,
    /// The grid's prices, every member's outside options (tariffs in tokens per kWh).
    pub feed_in: String,
    pub retail: String,
    /// The most the market node deposits in one member's channel (what it may pay the member
    /// for its sales before a top-up).
    #[serde(default = "ten")]
    pub member_deposit: TokenAmount,
    /// The most members (homes with a channel on the market being opened, funded or open); a home
    /// joining beyond it is refused with the reason.
    #[serde(default = "thousand")]
    pub max_members: usize,
}

fn thousand() -> usize {
    1_000
}

fn pay_as_clear() -> String {
    "pay-as-clear".into()
}
fn quarter_permille() -> u16 {
    250
}

/// A tariff's time-of-use tables, for a market's prices.
fn tables(field: &str, text: &str) -> Result<gridchan_channel::TimeOfUse, GatewayError> {
    let tariff: gridchan_channel::Tariff = text
        .parse()
        .map_err(|e| GatewayError::Config(format!("{field}: {e}")))?;
    gridchan_channel::TimeOfUse::of(&tariff)
        .ok_or_else(|| {
            GatewayError::Config(format!(
                "{field}: write a flat tariff or a time-of-use tariff on a fixed UTC offset (a market's prices do not follow a time zone yet)"
            ))
        })
}

impl MarketNodeSection {
    /// The market's terms, or what is wrong with the section.
    pub fn terms(&self) -> Result<gridchan_channel::market::MarketTerms, GatewayError> {
        let bad =
            |field: &str, why: String| GatewayError::Config(format!("market_node.{field}: {why}"));
        let market: [u8; 32] = hex::decode(&self.market)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("market", "expected 64 hex digits".into()))?;
        let terms = gridchan_channel::market::MarketTerms {
            market,
            rule: self.rule.parse().map_err(|e| bad("rule", format!("{e}")))?,
            fee: gridchan_channel::PricePerKwh(self.fee.amount("market_node.fee")?.0),
            deadline_permille: self.deadline_permille,
            feed_in: tables("market_node.feed_in", &self.feed_in)?,
            retail: tables("market_node.retail", &self.retail)?,
        };
        terms
            .validate()
            .map_err(|e| GatewayError::Config(format!("market_node: {e}")))?;
        Ok(terms)
    }
}

impl MarketSection {
    /// The member's limits, if the section sets them (both, or neither).
    pub fn limits(&self) -> Result<Option<gridchan_channel::market::Limits>, GatewayError> {
        match (&self.sell_at_least, &self.buy_at_most) {
            (None, None) => Ok(None),
            (Some(sell), Some(buy)) => Ok(Some(gridchan_channel::market::Limits {
                sell_at_least: tables("market.sell_at_least", sell)?,
                buy_at_most: tables("market.buy_at_most", buy)?,
            })),
            _ => Err(GatewayError::Config(
                "market: set both sell_at_least and buy_at_most, or neither (the market's grid prices)"
                    .into(),
            )),
        }
    }
}

/// The `[accept]` section: the terms of a channel a neighbour proposes that this gateway
/// accepts, and whose proposals wait for the owner's answer. Amounts and prices in tokens,
/// written as strings or numbers (`"10"`, `"0.25"`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptSection {
    /// `"ask"` (the default), `"listed"` or `"anyone"`.
    #[serde(default = "ask")]
    pub from: String,
    /// Node ids whose proposals need no answer (within the limits).
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default = "ten")]
    pub max_deposit: TokenAmount,
    /// The most deposited in one neighbour's channel, as a fraction of the balance (0 to 1).
    #[serde(default = "quarter")]
    pub max_deposit_share: f64,
    #[serde(default = "challenge_windows")]
    pub challenge_window_blocks: [u64; 2],
    #[serde(default = "funding_windows")]
    pub funding_window_blocks: [u64; 2],
    /// Every price of a proposed tariff lies between these, tokens per kWh: for example the
    /// household's feed-in tariff and its retail price.
    #[serde(default = "zero")]
    pub min_price: TokenAmount,
    #[serde(default = "one_token")]
    pub max_price: TokenAmount,
    #[serde(default = "fifty")]
    pub max_tolerance_wh: u32,
    #[serde(default = "fifty_permille")]
    pub max_tolerance_permille: u16,
    /// How long a proposal waits for the owner's answer, in hours.
    #[serde(default = "day")]
    pub offer_hours: u32,
    /// What a proposer's readings must rest on: `"any"` (its word is enough; `status` says so)
    /// or `"signed"` (its meter must sign them, `specs/readings.md`).
    #[serde(default = "any")]
    pub evidence: String,
}

fn any() -> String {
    "any".into()
}

/// Tokens in a config file: a number or a string of decimal tokens.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TokenAmount {
    Text(String),
    Integer(u64),
    Float(f64),
}

impl TokenAmount {
    pub fn amount(&self, field: &str) -> Result<gridchan_channel::Amount, GatewayError> {
        let text = match self {
            TokenAmount::Text(s) => s.clone(),
            TokenAmount::Integer(n) => n.to_string(),
            TokenAmount::Float(f) => format!("{f}"),
        };
        gridchan_channel::Amount::parse_tokens(&text)
            .map_err(|e| GatewayError::Config(format!("{field}: {e}")))
    }
}

fn ask() -> String {
    "ask".into()
}
fn ten() -> TokenAmount {
    TokenAmount::Integer(10)
}
fn quarter() -> f64 {
    0.25
}
fn challenge_windows() -> [u64; 2] {
    [10, 10_000]
}
fn funding_windows() -> [u64; 2] {
    [1, 10_000]
}
fn zero() -> TokenAmount {
    TokenAmount::Integer(0)
}
fn one_token() -> TokenAmount {
    TokenAmount::Integer(1)
}
fn fifty() -> u32 {
    50
}
fn fifty_permille() -> u16 {
    50
}
fn day() -> u32 {
    24
}

impl Default for AcceptSection {
    fn default() -> AcceptSection {
        toml::from_str("").expect("every field has a default")
    }
}

impl AcceptSection {
    /// The core's policy, or what is wrong with the section (one line, naming the field).
    pub fn policy(&self) -> Result<gridchan_channel::AcceptPolicy, GatewayError> {
        use gridchan_channel::{Acceptance, PricePerKwh};
        let from = match self.from.as_str() {
            "ask" => Acceptance::Ask,
            "listed" => Acceptance::Listed,
            "anyone" => Acceptance::Anyone,
            other => {
                return Err(GatewayError::Config(format!(
                    "accept.from = {other:?}: expected \"ask\", \"listed\" or \"anyone\""
                )))
            }
        };
        let listed = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                k.parse().map_err(|_| {
                    GatewayError::Config(format!(
                        "accept.keys[{i}] = {k:?} is not a 66-hex-digit node id"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !(0.0..=1.0).contains(&self.max_deposit_share) {
            return Err(GatewayError::Config(format!(
                "accept.max_deposit_share = {}: expected a fraction from 0 to 1",
                self.max_deposit_share
            )));
        }
        let range = |field: &str, [lo, hi]: [u64; 2]| {
            if lo > hi {
                Err(GatewayError::Config(format!(
                    "accept.{field} = [{lo}, {hi}]: the first is the least"
                )))
            } else {
                Ok((lo, hi))
            }
        };
        let (min_price, max_price) = (
            self.min_price.amount("accept.min_price")?,
            self.max_price.amount("accept.max_price")?,
        );
        if min_price > max_price {
            return Err(GatewayError::Config(
                "accept.min_price is above accept.max_price".into(),
            ));
        }
        Ok(gridchan_channel::AcceptPolicy {
            from,
            listed,
            max_deposit: self.max_deposit.amount("accept.max_deposit")?,
            max_deposit_permille: (self.max_deposit_share * 1000.0).round() as u16,
            challenge_window_blocks: range(
                "challenge_window_blocks",
                self.challenge_window_blocks,
            )?,
            funding_window_blocks: range("funding_window_blocks", self.funding_window_blocks)?,
            price: (PricePerKwh(min_price.0), PricePerKwh(max_price.0)),
            max_tolerance_wh: self.max_tolerance_wh,
            max_tolerance_permille: self.max_tolerance_permille,
            offer_ttl_ms: u64::from(self.offer_hours.max(1)) * 3_600_000,
            require_signed: match self.evidence.as_str() {
                "any" => false,
                "signed" => true,
                other => {
                    return Err(GatewayError::Config(format!(
                        "accept.evidence = {other:?}: expected \"any\" (a neighbour's readings may be its word) or \"signed\" (its meter must sign them)"
                    )))
                }
            },
            ..gridchan_channel::AcceptPolicy::default()
        })
    }
}

/// `[grid]`: the prices the household pays the grid for energy and is paid for its export
/// (tariffs in `--tariff`'s form); savings are counted against them when both are set.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridSection {
    pub retail: Option<String>,
    pub feed_in: Option<String>,
}

impl GridSection {
    /// The retail and feed-in tariffs, when both are set; what is wrong, naming the key.
    pub fn tariffs(
        &self,
    ) -> Result<Option<(gridchan_channel::Tariff, gridchan_channel::Tariff)>, GatewayError> {
        let parse = |key: &str, text: &str| {
            text.parse::<gridchan_channel::Tariff>()
                .map_err(|e| GatewayError::Config(format!("grid.{key}: {e}")))
        };
        match (&self.retail, &self.feed_in) {
            (Some(r), Some(f)) => Ok(Some((parse("retail", r)?, parse("feed_in", f)?))),
            (None, None) => Ok(None),
            _ => Err(GatewayError::Config(
                "grid: set both retail and feed_in (or neither)".into(),
            )),
        }
    }
}

/// `[page]`: where the daemon serves the household's page (`GET /`), and the token it asks for
/// (needed on any address but loopback).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageSection {
    pub listen: Option<SocketAddr>,
    pub token: Option<String>,
}

/// `[metrics]`: where the daemon serves Prometheus metrics (`GET /metrics`); none by default.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub listen: Option<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The identity key file (created by `gridchan init`, mode 0600).
    pub key: PathBuf,
    /// The data folder: the channel store lives here.
    pub data: PathBuf,
    /// Where neighbours reach this gateway.
    pub listen: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// `PUBKEY@HOST:PORT`
    pub address: String,
    /// The neighbour's meter key (hex, 33 bytes): its totals count only as that meter signed
    /// them (`specs/readings.md`).
    #[serde(default)]
    pub meter: Option<String>,
}

impl PeerSection {
    /// The meter key this neighbour's readings must be signed with, if one is named.
    pub fn meter_key(&self) -> Result<Option<gridchan_channel::NodeId>, GatewayError> {
        let Some(text) = &self.meter else {
            return Ok(None);
        };
        hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 33]>::try_from(b).ok())
            .and_then(|b| gridchan_channel::NodeId::from_bytes(&b).ok())
            .map(Some)
            .ok_or_else(|| {
                GatewayError::Config(format!(
                    "meter {text:?} is not a meter key (66 hex digits, as the neighbour's daemon prints it)"
                ))
            })
    }
}

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {detail}")]
    Io { path: String, detail: String },
    #[error("config {path}: {detail}")]
    Invalid { path: String, detail: String },
}

impl Config {
    /// Reads and checks `path`; relative paths inside become relative to its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: name.clone(),
            detail: e.to_string(),
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: name.clone(),
            // toml's message spans several lines with a source excerpt: keep the first.
            detail: e
                .message()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .to_string()
                + &e.span()
                    .map(|s| format!(" (at byte {})", s.start))
                    .unwrap_or_default(),
        })?;
        let secs = config.metering.interval_seconds;
        if secs == 0 || secs > 3600 || 3600 % secs != 0 {
            return Err(ConfigError::Invalid {
                path: name,
                detail: format!("metering.interval_seconds = {secs} does not divide an hour"),
            });
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Err(detail) = config.accept.policy() {
            return Err(ConfigError::Invalid {
                path: name,
                detail: detail.to_string(),
            });
        }
        let invalid = |detail: GatewayError| ConfigError::Invalid {
            path: name.clone(),
            detail: detail.to_string(),
        };
        if let Some(m) = &config.market_node {
            m.terms().map_err(invalid)?;
            m.member_deposit
                .amount("market_node.member_deposit")
                .map_err(invalid)?;
            if m.max_members == 0 {
                return Err(invalid(GatewayError::Config(
                    "market_node.max_members: 0 lets no home join; write at least 1".into(),
                )));
            }
        }
        config.market.limits().map_err(invalid)?;
        config.funds.policy().map_err(invalid)?;
        if usize::from(config.watchtowers.min_acks) > config.towers.len() {
            return Err(invalid(GatewayError::Config(format!(
                "watchtowers.min_acks = {} but {} [[towers]] are configured: the channels would never trade; name more towers or lower it",
                config.watchtowers.min_acks,
                config.towers.len()
            ))));
        }
        config.grid.tariffs().map_err(invalid)?;
        if let Some(listen) = config.page.listen {
            let weak = config.page.token.as_ref().is_none_or(|t| t.len() < 16);
            if !listen.ip().is_loopback() && weak {
                return Err(invalid(GatewayError::Config(format!(
                    "page.listen = {listen} is reachable from other machines: set page.token to a secret of at least 16 characters"
                ))));
            }
        }
        config.metering.zone().map_err(invalid)?;
        if config.metering.speedup > MAX_SPEEDUP {
            return Err(invalid(GatewayError::Config(format!(
                "metering.speedup = {} is more than {MAX_SPEEDUP} (an hour a second)",
                config.metering.speedup
            ))));
        }
        for (i, p) in config.peers.iter().enumerate() {
            p.meter_key()
                .map_err(|e| invalid(GatewayError::Config(format!("peers[{i}].{e}"))))?;
        }
        match &config.meter {
            Some(MeterSection::P1 { port, .. }) => {
                port.parse::<crate::meter::p1::P1Port>()
                    .map_err(|e| invalid(GatewayError::Config(format!("meter.port: {e}"))))?;
            }
            Some(MeterSection::Mqtt { broker, .. })
                if crate::meter::host_port(broker).is_none() =>
            {
                return Err(invalid(GatewayError::Config(format!(
                    "meter.broker {broker:?} is not HOST:PORT (such as \"192.168.1.20:1883\")"
                ))));
            }
            _ => {}
        }
        if config.meter.is_none() && config.market_node.is_none() {
            return Err(ConfigError::Invalid {
                path: name,
                detail: "no [meter] section: a home gateway needs a meter (only a market node runs without one)".into(),
            });
        }
        fix(&mut config.node.key);
        fix(&mut config.node.data);
        if let Some(MeterSection::Csv { path }) = &mut config.meter {
            fix(path);
        }
        if let Some(m) = &mut config.signing_meter {
            fix(&mut m.key);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home_template(listen: &str, ledger: &str) -> String {
        let meter = MeterSection::template("sim", 1).unwrap();
        template(
            listen.parse().unwrap(),
            ledger,
            &meter,
            "Europe/Amsterdam",
            1,
        )
    }

    #[test]
    fn the_funds_policy_is_off_by_default_and_a_bad_value_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gridchan.toml");
        let load = |extra: &str| {
            let text = home_template("127.0.0.1:7500", "K@127.0.0.1:1") + extra;
            std::fs::write(&path, text).unwrap();
            Config::load(&path)
        };
        assert_eq!(load("").unwrap().funds.policy().unwrap(), None);
        // More towers asked to acknowledge than are configured: refused in one line.
        let e = load("\n[watchtowers]\nmin_acks = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("watchtowers.min_acks = 1 but 0 [[towers]]"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1);
        let p = load("\n[funds]\nkeep_days = 1.5\nsweep_above = \"40\"\n")
            .unwrap()
            .funds
            .policy()
            .unwrap()
            .unwrap();
        assert_eq!(p.keep_days, 1.5);
        assert_eq!(p.sweep_above, Some(gridchan_channel::Amount(40_000_000)));
        assert_eq!(p.max_top_up, gridchan_channel::Amount(10_000_000));
        for (bad, says) in [
            ("keep_days = -1", "from 0 (off) to 30"),
            ("keep_days = 400", "from 0 (off) to 30"),
            ("sweep_above = \"lots\"", "funds.sweep_above"),
            ("keep_days = 1\nmax_top_up = -3", "funds.max_top_up"),
        ] {
            let e = load(&format!("\n[funds]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn each_meter_init_names_loads_and_a_wrong_one_says_what_to_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gridchan.toml");
        let load = |meter: &str, zone: &str| {
            let meter = MeterSection::template(meter, 42).unwrap();
            let text = template(
                "127.0.0.1:7500".parse().unwrap(),
                "K@127.0.0.1:1",
                &meter,
                zone,
                1,
            );
            std::fs::write(&path, text).unwrap();
            Config::load(&path)
        };
        let c = load("sim:0", "UTC").unwrap();
        assert!(matches!(
            c.meter,
            Some(MeterSection::Simulated { pv_peak_w: 0, .. })
        ));
        let c = load("sim", "Europe/Brussels").unwrap();
        assert!(matches!(
            c.meter,
            Some(MeterSection::Simulated { seed: 42, .. })
        ));
        assert_eq!(
            c.metering.zone().unwrap().iana_name(),
            Some("Europe/Brussels")
        );
        let c = load("p1:/dev/ttyUSB0", "UTC").unwrap();
        assert_eq!(
            c.meter,
            Some(MeterSection::P1 {
                port: "/dev/ttyUSB0".into(),
                max_power_w: 17_250
            })
        );
        let c = load("p1:p1dongle.local:23", "UTC").unwrap();
        assert!(
            matches!(c.meter, Some(MeterSection::P1 { ref port, .. }) if port == "p1dongle.local:23")
        );
        let c = load("mqtt:homeassistant.local:1883", "UTC").unwrap();
        assert!(matches!(
            c.meter,
            Some(MeterSection::Mqtt { ref broker, ref import, unit: crate::meter::mqtt::Unit::Kwh, .. })
                if broker == "homeassistant.local:1883" && import.field.as_deref() == Some("SML.Total_in")
        ));
        let c = load("csv:meter.csv", "UTC").unwrap();
        assert_eq!(
            c.meter,
            Some(MeterSection::Csv {
                path: dir.path().join("meter.csv")
            })
        );
        for (spec, says) in [
            (
                "p1:ttyUSB0",
                "neither a device path (/dev/ttyUSB0) nor HOST:PORT",
            ),
            (
                "mbus:1",
                "csv:FILE, p1:/dev/DEVICE, p1:HOST:PORT or mqtt:HOST:PORT",
            ),
            ("mqtt:broker", "or mqtt:HOST:PORT"),
            ("csv:", "write sim (or sim:PV_PEAK_W), csv:FILE"),
            ("sim:lots", "write sim (or sim:PV_PEAK_W)"),
        ] {
            let err = MeterSection::template(spec, 1).unwrap_err().to_string();
            assert!(err.contains(says), "{spec}: {err}");
        }
        // A neighbour's meter key that is not one.
        let text = std::fs::read_to_string(&path).unwrap()
            + "\n[[peers]]\naddress = \"02aa@127.0.0.1:1\"\nmeter = \"02abcd\"\n";
        std::fs::write(&path, text).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("peers[0].meter \"02abcd\" is not a meter key (66 hex digits"),
            "{err}"
        );
        let err = load("sim", "Europe/Amsterdm").unwrap_err().to_string();
        assert!(
            err.contains("metering.time_zone = \"Europe/Amsterdm\" is not a time zone name"),
            "{err}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("Europe/Amsterdm", "UTC")
                .replace("speedup = 1", "speedup = 100000"),
        )
        .unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("metering.speedup = 100000 is more than 3600"),
            "{err}"
        );
        std::fs::write(
            &path,
            std::fs::read_to_string(&path)
                .unwrap()
                .replace("speedup = 100000", "speedup = 1")
                .replace("kind = \"simulated\"", "kind = \"p1\"\nport = \"COM3\"")
                .lines()
                .filter(|l| {
                    !["seed", "pv_peak_w", "load_avg_w"]
                        .iter()
                        .any(|k| l.starts_with(k))
                })
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("meter.port: P1 port \"COM3\""), "{err}");
        // An MQTT broker that is not HOST:PORT is refused when the config is read, not left
        // to a meter that never reads.
        let meter = MeterSection::template("mqtt:broker.local:1883", 1)
            .unwrap()
            .replace("broker.local:1883", "broker.local");
        let text = template(
            "127.0.0.1:7500".parse().unwrap(),
            "K@127.0.0.1:1",
            &meter,
            "UTC",
            1,
        );
        std::fs::write(&path, text).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("meter.broker \"broker.local\" is not HOST:PORT"),
            "{err}"
        );
    }

    #[test]
    fn the_market_template_loads_as_a_market_node_without_a_meter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("market.toml");
        let text = market_template(
            "127.0.0.1:7700".parse().unwrap(),
            "03aa@127.0.0.1:7400",
            &[7; 32],
        );
        std::fs::write(&path, &text).unwrap();
        let c = Config::load(&path).unwrap();
        assert!(c.meter.is_none());
        let terms = c.market_node.as_ref().unwrap().terms().unwrap();
        assert_eq!(terms.market, [7; 32]);
        assert_eq!(terms.deadline_permille, 250);
        assert_eq!(c.market_node.as_ref().unwrap().max_members, 1_000);
        // A bad rule, a deadline out of range, and limits set by halves are refused, each
        // naming its field.
        for (from, to, field) in [
            (
                "rule = \"pay-as-clear\"",
                "rule = \"auction\"",
                "market_node.rule",
            ),
            (
                "deadline_permille = 250",
                "deadline_permille = 900",
                "deadline",
            ),
            (
                "max_members = 1000",
                "max_members = 0",
                "market_node.max_members",
            ),
        ] {
            std::fs::write(&path, text.replace(from, to)).unwrap();
            let e = Config::load(&path).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        std::fs::write(
            &path,
            format!("{text}\n[market]\nsell_at_least = \"flat 0.1\"\n"),
        )
        .unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("both"), "{e}");
        // A home without a meter is refused.
        let home = home_template("127.0.0.1:7500", "03aa@127.0.0.1:7400");
        let start = home.find("[meter]").unwrap();
        let end = home.find("# Neighbours to keep").unwrap();
        std::fs::write(&path, format!("{}{}", &home[..start], &home[end..])).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("meter"), "{e}");
    }

    #[test]
    fn the_template_loads_with_paths_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gridchan.toml");
        std::fs::write(&path, home_template("127.0.0.1:7500", "KEY@127.0.0.1:7400")).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.node.key, dir.path().join("node.key"));
        assert_eq!(c.node.data, dir.path().join("data"));
        assert_eq!(c.metering.interval_seconds, 900);
        assert!(matches!(
            c.meter,
            Some(MeterSection::Simulated { seed: 1, .. })
        ));
        assert!(c.peers.is_empty());
        let accept = c.accept.policy().unwrap();
        assert_eq!(accept, gridchan_channel::AcceptPolicy::default());
    }

    #[test]
    fn an_accept_section_that_cannot_be_used_is_one_line_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gridchan.toml");
        let template = home_template("127.0.0.1:7500", "K@127.0.0.1:1");
        for (from, to, field) in [
            ("from = \"ask\"", "from = \"everyone\"", "accept.from"),
            ("keys = []", "keys = [\"nope\"]", "accept.keys[0]"),
            (
                "max_deposit = \"10\"",
                "max_deposit = \"ten\"",
                "accept.max_deposit",
            ),
            (
                "max_deposit_share = 0.25",
                "max_deposit_share = 2.0",
                "accept.max_deposit_share",
            ),
            (
                "challenge_window_blocks = [10, 10000]",
                "challenge_window_blocks = [100, 10]",
                "accept.challenge_window_blocks",
            ),
            ("min_price = \"0\"", "min_price = \"5\"", "accept.min_price"),
            (
                "evidence = \"any\"",
                "evidence = \"always\"",
                "accept.evidence",
            ),
        ] {
            assert!(template.contains(from), "{from}");
            std::fs::write(&path, template.replace(from, to)).unwrap();
            let err = Config::load(&path).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        // Numbers work as well as strings.
        std::fs::write(
            &path,
            template
                .replace("max_deposit = \"10\"", "max_deposit = 2.5")
                .replace("from = \"ask\"", "from = \"anyone\"")
                .replace("evidence = \"any\"", "evidence = \"signed\""),
        )
        .unwrap();
        let policy = Config::load(&path).unwrap().accept.policy().unwrap();
        assert_eq!(policy.max_deposit, gridchan_channel::Amount(2_500_000));
        assert_eq!(policy.from, gridchan_channel::Acceptance::Anyone);
        assert!(policy.require_signed);
    }

    #[test]
    fn an_evm_ledger_section_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gridchan.toml");
        let text = home_template("127.0.0.1:7500", "K@127.0.0.1:1").replace(
            "mode = \"remote\"\naddress = \"K@127.0.0.1:1\"",
            "mode = \"evm\"\nrpc = \"http://127.0.0.1:8545\"\nadjudicator = \"0xe7f1725e7734ce288f8367e1bb143e90bb3f0512\"\ntoken = \"0x5fbdb2315678afecb367f032d93f642f64180aa3\"\ndeployed_at = 2",
        );
        // A misspelt key is refused, not ignored.
        std::fs::write(&path, text.replace("deployed_at", "deployed_on")).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("deployed_on"), "{err}");
        std::fs::write(&path, text).unwrap();
        let c = Config::load(&path).unwrap();
        assert!(matches!(
            c.ledger,
            LedgerSection::Evm(gridchan_chain::EvmSection {
                confirmations: 1,
                deployed_at: 2,
                ..
            })
        ));
    }

    #[test]
    fn mistakes_are_one_line_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        let text =
            home_template("127.0.0.1:7500", "K@127.0.0.1:1").replace("pv_peak_w", "pv_peek_w");
        std::fs::write(&path, text).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("config {}", path.display())),
            "{err}"
        );
        assert!(err.contains("pv_peek_w"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let text = home_template("127.0.0.1:7500", "K@127.0.0.1:1")
            .replace("interval_seconds = 900", "interval_seconds = 700");
        std::fs::write(&path, text).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("does not divide an hour"), "{err}");
    }
}

//! The commented configurations `gridchan init` and `gridchan market init` write.

use std::net::SocketAddr;

use super::{toml_string, LedgerSection};

/// The commented configuration `gridchan market init` writes: a market node (no meter), its
/// market's id chosen at random.
pub fn market_template(listen: SocketAddr, ledger: &str, market: &[u8; 32]) -> String {
    let ledger = LedgerSection::template(ledger, "funding its members' channels and closing them");
    format!(
        r#"# gridchan market node configuration. Relative paths are relative to this file.
# Homes join with `gridchan market join PUBKEY@HOST:PORT --deposit TOKENS`.

[node]
# The identity key (mode 0600). Members reach the market node by the node id derived from it.
key = "node.key"
# The data folder: the members' channels live here in SQLite. Back it up.
data = "data"
listen = "{listen}"

{ledger}
[metering]
# The members' metering interval in seconds (divides an hour).
interval_seconds = 900

[accept]
# Any home may join; every member's channel is on the market's terms below.
from = "anyone"
max_deposit_share = 1.0

[market_node]
# The market's id: members' pseudonyms are derived from it. Never change it.
market = "{market}"
# "pay-as-clear" (one uniform price) or "pay-as-bid".
rule = "pay-as-clear"
# Charged to buyers per kWh on top of the price, kept by the market node (tokens).
fee = "0"
# The book closes this many thousandths of an interval after the interval ends (after the
# neighbour channels' rounds, which take a tenth).
deadline_permille = 250
# The grid's prices: no member sells below feed_in nor buys above retail (tokens per kWh,
# `flat PRICE` or `tou +HH:MM 0-7=PRICE,...`).
feed_in = "flat 0.08"
retail = "tou +01:00 0-7=0.22,7-17=0.28,17-21=0.34,21-24=0.22"
# The most the market node deposits in one member's channel: what it may pay the member for
# its sales before the channel is topped up (tokens).
member_deposit = "10"
# The most members; a home joining beyond it is refused (every member checks every order of a
# book: its size grows with the members).
max_members = 1000
"#,
        market = hex::encode(market)
    )
}

/// The commented configuration `gridchan init` writes.
pub fn template(
    listen: SocketAddr,
    ledger: &str,
    meter: &str,
    time_zone: &str,
    speedup: u32,
) -> String {
    let time_zone = toml_string(time_zone);
    let ledger = LedgerSection::template(ledger, "opening, closing and disputing its channels");
    format!(
        r#"# gridchan gateway configuration. Relative paths are relative to this file.

[node]
# The identity key: 32 secret bytes in hex, readable by you only (mode 0600). Your node id,
# which neighbours use to reach you, is derived from it: see `gridchan status`.
key = "node.key"
# The data folder: channel states live here in SQLite. Back it up; never run two daemons on it.
data = "data"
# Where neighbours reach this gateway (UDP, QUIC). Use 0.0.0.0:PORT to accept from the network.
listen = "{listen}"

{ledger}
[metering]
# The metering interval in seconds (divides an hour). Neighbours must use the same.
interval_seconds = 900
# The household's time zone (IANA name): the simulated meter's sun, time-of-use prices and the
# times you are shown follow it, daylight saving included.
time_zone = {time_zone}
# Run the clock this many times faster than wall time, to try gridchan with simulated meters
# (1800: an interval every half second, a day in 48 s). Every neighbour must use the same; 1
# with a real meter.
speedup = {speedup}

{meter}
# Neighbours to keep channels with, one [[peers]] section each; `meter` (optional) is the
# neighbour's meter key: a channel you open names it in its terms, a proposal from that
# neighbour must name it, and its readings must be signed by it, or it is left out.
# [[peers]]
# address = "PUBKEY@HOST:PORT"
# meter = "METER KEY"

# A simulated signing meter: this home's readings go out signed with this key (created if
# missing; the daemon prints its public key for the neighbours who require signed readings).
# [signing_meter]
# key = "meter.key"

[accept]
# Channels neighbours propose. "ask": each waits for your answer (`gridchan channel list` shows
# it; `gridchan channel accept ID` or `gridchan channel reject ID`); "listed": only the keys
# below; "anyone": anyone, within the limits below. Terms outside the limits are refused.
from = "ask"
# Node ids whose proposals need no answer (still within the limits).
keys = []
# The most you deposit into a channel a neighbour proposes: tokens, and a share of your balance.
max_deposit = "10"
max_deposit_share = 0.25
# The challenge and funding windows you accept, in blocks (least, most).
challenge_window_blocks = [10, 10000]
funding_window_blocks = [1, 10000]
# Every price of a proposed tariff lies between these, tokens per kWh: say your feed-in tariff
# and your retail price.
min_price = "0"
max_price = "1"
# How far a neighbour's bill may differ from your meter: at most this many Wh and permille.
max_tolerance_wh = 50
max_tolerance_permille = 50
# How long a proposal waits for your answer, in hours.
offer_hours = 24
# What a proposer's readings must rest on: "any" (its word is enough; `status` says which
# neighbours are taken at their word) or "signed" (its meter must sign them).
evidence = "any"

# Your own grid prices (tokens per kWh, `flat PRICE` or `tou ZONE 0-7=PRICE,...`): your
# statements and page count what trading saved you against them.
# [grid]
# retail = "tou Europe/Amsterdam 0-7=0.22,7-17=0.28,17-21=0.34,21-24=0.22"
# feed_in = "flat 0.08"

# The household's page (today and this month, the day's chart, the channels, what needs
# attention) on http://ADDRESS/; off unless set. On any address but 127.0.0.1 it needs a token
# (at least 16 characters), given as ?token=... or Authorization: Bearer ....
# [page]
# listen = "127.0.0.1:9720"
# token = "a long random secret"

# Prometheus metrics (energy and money per channel, states signed, refusals, neighbours
# connected, the market's prices) on http://ADDRESS/metrics; off unless set. Keep it on
# 127.0.0.1 unless a firewall guards it: anyone who reaches it reads what you trade.
# [metrics]
# listen = "127.0.0.1:9710"

# Watchtowers that refute a neighbour's stale state while this gateway is offline, one
# [[towers]] section each (or `gridchan tower add PUBKEY@HOST:PORT` while the daemon runs):
# [[towers]]
# address = "PUBKEY@HOST:PORT"

# In a neighbourhood market (`gridchan market join PUBKEY@HOST:PORT --deposit TOKENS`): the
# least you sell for and the most you buy for, tokens per kWh. Left out: the market's grid
# prices, so you trade locally whenever that beats the grid.
# [market]
# sell_at_least = "flat 0.10"
# buy_at_most = "tou +01:00 0-7=0.20,7-24=0.30"
"#
    )
}

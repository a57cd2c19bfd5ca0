//! The automatic funds policy (`[funds]`): keep each open channel able to pay what this home
//! typically buys over it in `keep_days`, topping up from the account when our side falls below
//! half of that, and sweep our balance above `sweep_above` back to the account. Decided per
//! channel from its own state (`decide`, pure); carried out by [`keep_funded`] with the same
//! commands a person gives (`channel topup`, `channel withdraw`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gridchan_chain::Ledger;
use gridchan_channel::{Amount, ChannelView, Command, IntervalIndex, Phase};

use crate::engine::EngineHandle;

/// The policy as configured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FundsPolicy {
    /// Days of typical purchases each channel keeps on our side (0: never top up).
    pub keep_days: f64,
    /// Our balance in a channel above this goes back to the account (`None`: never).
    pub sweep_above: Option<Amount>,
    /// The most one top-up adds.
    pub max_top_up: Amount,
}

/// What the policy does for one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    TopUp(Amount),
    Withdraw(Amount),
}

/// What `status` shows of the policy.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct FundsStatus {
    /// The policy in words; `None` when it is off.
    pub policy: Option<String>,
    /// The newest thing it did, in words.
    pub last: Option<String>,
}

impl FundsPolicy {
    pub fn describe(&self) -> String {
        let keep = if self.keep_days > 0.0 {
            format!(
                "keeps {} day(s) of typical purchases in each channel (top-ups of at most {})",
                self.keep_days, self.max_top_up
            )
        } else {
            "never tops up".to_string()
        };
        match self.sweep_above {
            Some(ceiling) => {
                format!("{keep}; sweeps our balance above {ceiling} back to the account")
            }
            None => keep,
        }
    }
}

/// What this home typically pays over `v` in a day: the energy it bought since the channel
/// opened, per day of the channel's life so far, at the tariff's price now.
pub fn daily_purchases(v: &ChannelView, now: IntervalIndex) -> Option<Amount> {
    let s = v.current.as_ref()?.state();
    let bought = s.energy_from(v.me.other()).0;
    let secs = now
        .0
        .saturating_sub(v.params.opened_at.0)
        .saturating_mul(u64::from(v.params.interval_seconds))
        .max(3_600);
    let per_day = u128::from(bought) * 86_400 / u128::from(secs);
    let price = v.params.tariff.price_at(now, v.params.interval_seconds)?;
    let money = per_day * u128::from(price.0) / 1_000;
    Some(Amount(u64::try_from(money).unwrap_or(u64::MAX)))
}

/// The policy's action for channel `v` now, with `free` tokens in the account; none while a
/// top-up or withdrawal of the channel is still under way.
pub fn decide(
    policy: &FundsPolicy,
    v: &ChannelView,
    now: IntervalIndex,
    free: Amount,
) -> Option<Action> {
    if v.phase != Phase::Open || v.frozen {
        return None;
    }
    let s = v.current.as_ref()?.state();
    let me = v.me.index();
    let pending = v.funds.ledger.topped_up[me] != s.funds.topped_up[me]
        || v.funds.withdraw_wanted > s.funds.withdrawn[me]
        || v.funds.ledger.withdrawn[me] != s.funds.withdrawn[me];
    if pending {
        return None;
    }
    let mine = s.balance(v.me).0;
    let need = (daily_purchases(v, now)?.0 as f64 * policy.keep_days.max(0.0)) as u64;
    if need > 0 && mine < need / 2 {
        let add = (need - mine).min(policy.max_top_up.0).min(free.0);
        return (add > 0).then_some(Action::TopUp(Amount(add)));
    }
    // A tenth above the ceiling before a sweep: not a ledger transaction per interval's
    // earnings.
    let ceiling = policy.sweep_above?.0.max(need);
    (mine > ceiling.saturating_add(ceiling / 10)).then(|| Action::Withdraw(Amount(mine - ceiling)))
}

/// Applies `policy` to every channel once a metering interval (on the clock, so sped-up
/// clocks check more often), but never more often than every second nor less than every 30 s
/// of real time: a top-up is a ledger transaction, whatever the clock's speed.
pub async fn keep_funded(
    engine: EngineHandle,
    ledger: Arc<dyn Ledger>,
    policy: FundsPolicy,
    clock: crate::clock::SimClock,
    interval_seconds: u32,
    status: Arc<Mutex<FundsStatus>>,
) {
    let interval_ms = u64::from(interval_seconds) * 1000;
    loop {
        let wait = clock.until(clock.now_ms() + interval_ms);
        tokio::time::sleep(wait.clamp(Duration::from_secs(1), Duration::from_secs(30))).await;
        let Ok(channels) = engine.channels().await else {
            return;
        };
        let Ok(Ok(account)) =
            tokio::time::timeout(Duration::from_secs(5), ledger.account(&engine.node)).await
        else {
            continue;
        };
        let now = IntervalIndex(clock.now_ms() / 1000 / u64::from(interval_seconds));
        let mut free = account.balance;
        for v in channels {
            let Some(action) = decide(&policy, &v, now, free) else {
                continue;
            };
            let (command, said) = match action {
                Action::TopUp(amount) => {
                    free = Amount(free.0.saturating_sub(amount.0));
                    (
                        Command::TopUp {
                            channel: v.id,
                            amount,
                        },
                        format!("topped up channel {} by {amount}", v.id.short()),
                    )
                }
                Action::Withdraw(amount) => (
                    Command::Withdraw {
                        channel: v.id,
                        amount,
                    },
                    format!(
                        "swept {amount} from channel {} to the account",
                        v.id.short()
                    ),
                ),
            };
            match engine.command(command).await {
                Ok(()) => {
                    tracing::info!("funds policy: {said}");
                    if let Ok(mut s) = status.lock() {
                        s.last = Some(said);
                    }
                }
                Err(crate::engine::EngineError::Stopped) => return,
                Err(e) => tracing::warn!("funds policy: {said} failed: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridchan_channel::{
        ChannelParams, FundsRecord, MeterTolerance, Party, PricePerKwh, SignedState,
        SignedStateParts, Signer, State, Tariff, Version, WattHours,
    };

    fn params(a: &Signer, b: &Signer) -> ChannelParams {
        ChannelParams {
            party_a: a.id(),
            party_b: b.id(),
            nonce: [1; 32],
            deposit_a: Amount(10_000_000),
            deposit_b: Amount(10_000_000),
            challenge_window_blocks: 10,
            funding_window_blocks: 10,
            interval_seconds: 900,
            tolerance: MeterTolerance {
                absolute_wh: 0,
                permille: 0,
            },
            opened_at: IntervalIndex(1_000),
            tariff: Tariff::Flat(PricePerKwh(200_000)),
            evidence: Default::default(),
        }
    }

    /// A's view of a channel open for one day (96 intervals) in which A bought `bought` Wh
    /// and holds `mine`.
    fn view(bought: u64, mine: u64) -> ChannelView {
        let (a, b) = (
            Signer::new(&[1; 32], &[0; 32]).unwrap(),
            Signer::new(&[2; 32], &[0; 32]).unwrap(),
        );
        let p = params(&a, &b);
        let mut s = State::initial(&p);
        s.version = Version(5);
        s.energy_b_to_a = WattHours(bought);
        s.balance_a = Amount(mine);
        s.balance_b = Amount(20_000_000 - mine);
        s.last_interval = IntervalIndex(1_096);
        let d = s.digest();
        let signed = SignedStateParts {
            sig_a: a.sign(&d),
            sig_b: b.sign(&d),
            state: s,
        }
        .verify(&p, &p.channel_id())
        .unwrap();
        ChannelView {
            id: p.channel_id(),
            peer: b.id(),
            params: std::sync::Arc::new(p),
            me: Party::A,
            phase: Phase::Open,
            current: Some(signed as SignedState),
            proposal: None,
            highest_signed: Version(5),
            frozen: false,
            refused: None,
            funds: FundsRecord::default(),
        }
    }

    const NOW: IntervalIndex = IntervalIndex(1_096);

    fn policy() -> FundsPolicy {
        FundsPolicy {
            keep_days: 1.0,
            sweep_above: Some(Amount(15_000_000)),
            max_top_up: Amount(5_000_000),
        }
    }

    #[test]
    fn a_day_of_purchases_is_the_energy_bought_per_day_at_the_price() {
        // 20 kWh in one day at 0.2/kWh: 4.0 a day.
        assert_eq!(
            daily_purchases(&view(20_000, 1), NOW),
            Some(Amount(4_000_000))
        );
    }

    #[test]
    fn below_half_a_days_purchases_it_tops_up_to_a_day_within_its_limits() {
        let free = Amount(100_000_000);
        assert_eq!(
            decide(&policy(), &view(20_000, 1_000_000), NOW, free),
            Some(Action::TopUp(Amount(3_000_000)))
        );
        // Not while above half.
        assert_eq!(decide(&policy(), &view(20_000, 2_500_000), NOW, free), None);
        // At most max_top_up, and what the account has.
        assert_eq!(
            decide(&policy(), &view(100_000, 0), NOW, free),
            Some(Action::TopUp(Amount(5_000_000)))
        );
        assert_eq!(
            decide(&policy(), &view(20_000, 0), NOW, Amount(700)),
            Some(Action::TopUp(Amount(700)))
        );
        assert_eq!(decide(&policy(), &view(20_000, 0), NOW, Amount(0)), None);
    }

    #[test]
    fn above_the_ceiling_it_sweeps_the_surplus_but_keeps_a_day() {
        let free = Amount(0);
        assert_eq!(
            decide(&policy(), &view(0, 18_000_000), NOW, free),
            Some(Action::Withdraw(Amount(3_000_000)))
        );
        // A day of purchases above the ceiling stays.
        assert_eq!(
            decide(&policy(), &view(80_000, 18_000_000), NOW, free),
            Some(Action::Withdraw(Amount(2_000_000)))
        );
        // Within a tenth above the ceiling: left alone.
        assert_eq!(decide(&policy(), &view(0, 16_000_000), NOW, free), None);
        let no_sweep = FundsPolicy {
            sweep_above: None,
            ..policy()
        };
        assert_eq!(decide(&no_sweep, &view(0, 18_000_000), NOW, free), None);
    }

    #[test]
    fn nothing_while_a_top_up_or_withdrawal_is_under_way_or_the_channel_is_not_open() {
        let mut v = view(20_000, 0);
        v.funds.ledger.topped_up[0] = Amount(1);
        assert_eq!(decide(&policy(), &v, NOW, Amount(100)), None);
        let mut v = view(0, 18_000_000);
        v.funds.withdraw_wanted = Amount(1);
        assert_eq!(decide(&policy(), &v, NOW, Amount(0)), None);
        let mut v = view(0, 18_000_000);
        v.phase = Phase::Closing;
        assert_eq!(decide(&policy(), &v, NOW, Amount(0)), None);
        let mut v = view(0, 18_000_000);
        v.frozen = true;
        assert_eq!(decide(&policy(), &v, NOW, Amount(0)), None);
    }
}

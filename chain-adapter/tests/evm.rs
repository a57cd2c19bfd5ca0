//! The Solidity adjudicator through the Rust adapter, against anvil (one per test, instant
//! mining, a free port): every rule of `specs/adjudicator.md`, positive and negative, the
//! digest views against the published test vectors, and the high-`s` twin.
//!
//! anvil comes from the pinned npm package (`npm ci --prefix chain-adapter/evm`, which the
//! README's test command runs); without it these tests fail, they never skip.

use std::sync::Arc;
use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, FixedBytes};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use gridchan_chain::evm::{self, anvil::Anvil, EvmConfig, EvmLedger, GridchanAdjudicator};
use gridchan_chain::{ChannelStatus, Ledger, LedgerError, TxError, TxKind};
use gridchan_channel::{
    Amount, ChannelParams, IntervalIndex, MeterTolerance, NodeId, Party, PricePerKwh, Signature,
    SignedStateParts, Signer, State, Tariff, TimeOfUse, Version, WattHours,
};

const WAIT: Duration = Duration::from_secs(30);
const DEPOSIT: u64 = 50_000_000;

fn secret(n: u8) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[0] = 0x21;
    s[31] = n;
    s
}

struct Chain {
    anvil: Anvil,
    config: EvmConfig,
    a: Arc<EvmLedger>,
    b: Arc<EvmLedger>,
    /// Neither party: a watchtower, or anyone.
    other: Arc<EvmLedger>,
    sa: Signer,
    sb: Signer,
}

async fn chain(block_time: Option<u64>) -> Chain {
    let anvil = Anvil::start(block_time).expect("anvil starts (npm ci --prefix chain-adapter/evm)");
    let deployer = secret(9);
    for s in [secret(1), secret(2), secret(3), deployer] {
        let who = evm::address_of(&Signer::new(&s, &s).expect("key").id());
        anvil.fund_gas(who).await.expect("gas");
    }
    let deployed = evm::deploy(&anvil.rpc, &deployer, None, 3)
        .await
        .expect("deploys");
    let config = EvmConfig {
        rpc: anvil.rpc.clone(),
        adjudicator: deployed.adjudicator,
        token: deployed.token,
        confirmations: 1,
        deployed_at: deployed.block,
    };
    let ledger = |s: [u8; 32]| {
        Arc::new(EvmLedger::connect(config.clone(), &s, &[0x5a; 32]).expect("connects"))
    };
    let (a, b, other) = (ledger(secret(1)), ledger(secret(2)), ledger(secret(3)));
    let minter = ledger(deployer);
    for l in [&a, &b] {
        minter
            .mint_test_tokens(l.account_address(), 100_000_000)
            .await
            .expect("mints");
    }
    Chain {
        anvil,
        config,
        a,
        b,
        other,
        sa: Signer::new(&secret(1), &secret(1)).expect("key"),
        sb: Signer::new(&secret(2), &secret(2)).expect("key"),
    }
}

impl Chain {
    fn params(&self) -> ChannelParams {
        ChannelParams {
            party_a: self.sa.id(),
            party_b: self.sb.id(),
            nonce: [7; 32],
            deposit_a: Amount(DEPOSIT),
            deposit_b: Amount(DEPOSIT),
            challenge_window_blocks: 5,
            funding_window_blocks: 4,
            interval_seconds: 900,
            tolerance: MeterTolerance {
                absolute_wh: 10,
                permille: 20,
            },
            opened_at: IntervalIndex(1_000),
            tariff: Tariff::Flat(PricePerKwh(150_000)),
            evidence: Default::default(),
        }
    }

    fn state(
        &self,
        p: &ChannelParams,
        version: u64,
        to_b: u64,
        is_final: bool,
    ) -> SignedStateParts {
        let state = State {
            channel_id: p.channel_id(),
            version: Version(version),
            balance_a: Amount(DEPOSIT - to_b),
            balance_b: Amount(DEPOSIT + to_b),
            energy_a_to_b: WattHours(0),
            energy_b_to_a: WattHours(version * 100),
            last_interval: IntervalIndex(1_000 + version),
            is_final,
            book: gridchan_channel::NO_BOOK,
            funds: Default::default(),
        };
        self.sign(state)
    }

    fn sign(&self, state: State) -> SignedStateParts {
        let d = state.digest();
        SignedStateParts {
            sig_a: self.sa.sign(&d),
            sig_b: self.sb.sign(&d),
            state,
        }
    }

    /// Both deposits in: the channel is open.
    async fn open(&self) -> ChannelParams {
        let p = self.params();
        ok(&*self.a, self.a.deposit(&p, p.deposit_a).await).await;
        ok(&*self.b, self.b.deposit(&p, p.deposit_b).await).await;
        p
    }

    /// Mines `n` empty blocks.
    async fn mine(&self, n: u64) {
        self.anvil.mine(n).await.expect("mines");
    }
}

/// Waits for an accepted transaction to be included successfully.
async fn ok(
    ledger: &dyn Ledger,
    sent: Result<gridchan_chain::TxHash, LedgerError>,
) -> Vec<gridchan_chain::ChainEvent> {
    let hash = sent.expect("accepted");
    let receipt = ledger.wait_for(&hash, WAIT).await.expect("included");
    receipt.outcome.result.expect("succeeded")
}

fn refused(sent: Result<gridchan_chain::TxHash, LedgerError>) -> TxError {
    match sent {
        Err(LedgerError::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn tx(ledger: &EvmLedger, kind: TxKind) -> Result<gridchan_chain::TxHash, LedgerError> {
    ledger.submit(kind).await
}

fn register(s: &SignedStateParts) -> TxKind {
    TxKind::Register {
        state: Box::new(s.clone()),
    }
}

fn refute(s: &SignedStateParts) -> TxKind {
    TxKind::Refute {
        state: Box::new(s.clone()),
    }
}

fn conclude_final(s: &SignedStateParts) -> TxKind {
    TxKind::ConcludeFinal {
        state: Box::new(s.clone()),
    }
}

#[tokio::test]
async fn the_digest_views_equal_the_published_vectors() {
    let c = chain(None).await;
    let contract = c.config.adjudicator;
    let published: serde_json::Value =
        serde_json::from_str(include_str!("../../specs/vectors/states.json")).expect("json");
    let hex32 = |v: &serde_json::Value| -> [u8; 32] {
        hex::decode(v.as_str().expect("hex"))
            .expect("hex")
            .try_into()
            .expect("32 bytes")
    };
    let provider = c.a.provider();
    for v in published.as_array().expect("array") {
        let words = hex::decode(v["params_encoding"].as_str().expect("hex")).expect("hex");
        let word = |i: usize| &words[i * 32..(i + 1) * 32];
        let uint = |i: usize| u64::from_be_bytes(word(i)[24..].try_into().expect("8"));
        let params = GridchanAdjudicator::Params {
            partyA: Address::from_slice(&word(1)[12..]),
            partyB: Address::from_slice(&word(2)[12..]),
            nonce: FixedBytes::from_slice(word(3)),
            depositA: uint(4),
            depositB: uint(5),
            challengeWindowBlocks: uint(6),
            fundingWindowBlocks: uint(7),
            intervalSeconds: uint(8),
            toleranceAbsoluteWh: uint(9),
            tolerancePermille: uint(10),
            openedAt: uint(11),
            tariffDigest: FixedBytes::from_slice(word(12)),
        };
        let id = call(
            provider,
            contract,
            GridchanAdjudicator::channelIdCall { p: params },
        )
        .await;
        assert_eq!(id.0, hex32(&v["channel_id"]), "{}", v["name"]);
        let f = &v["state"];
        let n = |k: &str| f[k].as_u64().expect("number");
        let state = GridchanAdjudicator::State {
            channelId: FixedBytes::from(hex32(&v["channel_id"])),
            version: n("version"),
            balanceA: n("balance_a"),
            balanceB: n("balance_b"),
            energyAToB: n("energy_a_to_b"),
            energyBToA: n("energy_b_to_a"),
            lastInterval: n("last_interval"),
            isFinal: f["is_final"].as_bool().expect("bool"),
            book: FixedBytes::from(hex32(&f["book"])),
            // Absent until a state's funds change (then the digest is version 3's).
            toppedUpA: f["funds"]["topped_up_a"].as_u64().unwrap_or(0),
            toppedUpB: f["funds"]["topped_up_b"].as_u64().unwrap_or(0),
            withdrawnA: f["funds"]["withdrawn_a"].as_u64().unwrap_or(0),
            withdrawnB: f["funds"]["withdrawn_b"].as_u64().unwrap_or(0),
        };
        let digest = call(
            provider,
            contract,
            GridchanAdjudicator::stateDigestCall { s: state },
        )
        .await;
        assert_eq!(digest.0, hex32(&v["digest"]), "{}", v["name"]);
        for (sig, who) in [("sig_a", "address_a"), ("sig_b", "address_b")] {
            let bytes: [u8; 65] = hex::decode(v[sig].as_str().expect("hex"))
                .expect("hex")
                .try_into()
                .expect("65 bytes");
            let signer = call(
                provider,
                contract,
                GridchanAdjudicator::signerCall {
                    digest,
                    sig: evm::sol_sig(&Signature(bytes)),
                },
            )
            .await;
            assert_eq!(
                format!("{signer:#x}"),
                v[who].as_str().expect("address"),
                "{}",
                v["name"]
            );
        }
    }
    // A time-of-use tariff travels as its words and comes back the same.
    let mut weekday = [PricePerKwh(120_000); 24];
    weekday[18] = PricePerKwh(310_000);
    let tou = Tariff::TimeOfUse(Box::new(TimeOfUse {
        utc_offset_minutes: -300,
        weekday,
        weekend: [PricePerKwh(95_000); 24],
    }));
    assert_eq!(Tariff::from_words(&tou.words()).expect("decodes"), tou);
}

async fn call<C: SolCall>(
    provider: &alloy::providers::DynProvider,
    to: Address,
    c: C,
) -> C::Return {
    use alloy::network::TransactionBuilder;
    use alloy::providers::Provider;
    let tx = alloy::rpc::types::TransactionRequest::default()
        .with_to(to)
        .with_input(c.abi_encode());
    C::abi_decode_returns(&provider.call(tx).await.expect("view")).expect("decodes")
}

#[tokio::test]
async fn deposits_open_a_channel_and_its_parameters_come_back_whole() {
    let c = chain(None).await;
    let mut p = c.params();
    // A time-of-use tariff: the follower must rebuild the parameters from the chain exactly.
    p.tariff = "tou +01:00 0-7=0.10,7-17=0.18,17-21=0.28,21-24=0.10"
        .parse()
        .expect("tariff");
    let events = ok(&*c.a, c.a.deposit(&p, p.deposit_a).await).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let funding = c
        .other
        .channel(&p.channel_id())
        .await
        .expect("reads")
        .expect("exists");
    assert_eq!(funding.params, p);
    assert!(matches!(funding.status, ChannelStatus::Funding { .. }));
    let events = ok(&*c.b, c.b.deposit(&p, p.deposit_b).await).await;
    assert!(events
        .iter()
        .any(|e| matches!(e, gridchan_chain::ChainEvent::Funded { .. })));
    let open = c
        .other
        .channel(&p.channel_id())
        .await
        .expect("reads")
        .expect("exists");
    assert_eq!(open.status, ChannelStatus::Open);
    assert_eq!(open.deposited, [Amount(DEPOSIT); 2]);
    let a = c.a.account(&c.sa.id()).await.expect("reads");
    assert_eq!(a.balance, Amount(100_000_000 - DEPOSIT));
}

#[tokio::test]
async fn terms_with_named_meters_and_a_zoned_tariff_come_back_whole() {
    // The terms' words (tariff, then evidence) travel where the tariff's did; the contract only
    // checks them against their digest, and a follower rebuilds both.
    let c = chain(None).await;
    let mut p = c.params();
    p.tariff = "tou Europe/Amsterdam 0-7=0.10,7-17=0.18,17-21=0.28,21-24=0.10"
        .parse()
        .expect("tariff");
    let meter = |b: u8| Signer::new(&[b; 32], &[0; 32]).expect("key").id();
    p.evidence = gridchan_channel::Evidence::signed(meter(0x51), meter(0x52));
    ok(&*c.a, c.a.deposit(&p, p.deposit_a).await).await;
    let funding = c
        .other
        .channel(&p.channel_id())
        .await
        .expect("reads")
        .expect("exists");
    assert_eq!(funding.params, p);
}

#[tokio::test]
async fn deposit_rules_refuse_what_they_must() {
    let c = chain(None).await;
    let p = c.params();
    type Change = fn(&mut ChannelParams);
    let invalid: [(&str, Change); 8] = [
        ("both parties are the same key", |p| p.party_b = p.party_a),
        ("the interval does not divide an hour", |p| {
            p.interval_seconds = 7
        }),
        ("no deposit", |p| {
            (p.deposit_a, p.deposit_b) = (Amount(0), Amount(0))
        }),
        ("the deposits overflow", |p| p.deposit_b = Amount(u64::MAX)),
        ("no funding window", |p| p.funding_window_blocks = 0),
        (
            "the challenge window is shorter than the ledger's minimum",
            |p| p.challenge_window_blocks = 2,
        ),
        // The protocol's maximums: a window of 2^64 - 1 blocks would wrap a 64-bit deadline.
        (
            "the challenge window is longer than the protocol's maximum",
            |p| p.challenge_window_blocks = u64::MAX,
        ),
        (
            "the funding window is longer than the protocol's maximum",
            |p| p.funding_window_blocks = gridchan_channel::MAX_FUNDING_WINDOW_BLOCKS + 1,
        ),
    ];
    for (why, change) in invalid {
        let mut bad = p.clone();
        change(&mut bad);
        assert_eq!(
            refused(c.a.deposit(&bad, bad.deposit_a).await),
            TxError::InvalidParams(why.into())
        );
    }
    assert_eq!(
        refused(c.other.deposit(&p, p.deposit_a).await),
        TxError::NotAParty
    );
    assert_eq!(
        refused(c.a.deposit(&p, Amount(DEPOSIT - 1)).await),
        TxError::WrongDepositAmount {
            expected: Amount(DEPOSIT)
        }
    );
    let mut rich = p.clone();
    rich.deposit_a = Amount(200_000_000);
    assert!(matches!(
        refused(c.a.deposit(&rich, rich.deposit_a).await),
        TxError::InsufficientBalance { .. }
    ));
    ok(&*c.a, c.a.deposit(&p, p.deposit_a).await).await;
    assert_eq!(
        refused(c.a.deposit(&p, p.deposit_a).await),
        TxError::AlreadyDeposited
    );
    // Reclaim waits for the funding window, then refunds what was deposited.
    assert!(matches!(
        refused(c.a.reclaim(p.channel_id()).await),
        TxError::FundingOpen { .. }
    ));
    c.mine(5).await;
    assert!(matches!(
        refused(c.b.deposit(&p, p.deposit_b).await),
        TxError::FundingClosed { .. }
    ));
    assert_eq!(
        refused(c.other.reclaim(p.channel_id()).await),
        TxError::NotAParty
    );
    ok(&*c.a, c.a.reclaim(p.channel_id()).await).await;
    let ch =
        c.a.channel(&p.channel_id())
            .await
            .expect("reads")
            .expect("exists");
    assert_eq!(ch.status, ChannelStatus::Expired);
    assert_eq!(ch.claimable, [Amount(DEPOSIT), Amount(0)]);
    ok(&*c.a, c.a.withdraw(p.channel_id(), Amount(DEPOSIT)).await).await;
    assert_eq!(
        c.a.account(&c.sa.id()).await.expect("reads").balance,
        Amount(100_000_000)
    );
}

#[tokio::test]
async fn a_dispute_pays_the_newest_state_registered_or_refuted_in_time() {
    let c = chain(None).await;
    let unknown = refused(tx(&c.a, register(&c.state(&c.params(), 1, 0, false))).await);
    assert_eq!(unknown, TxError::UnknownChannel);
    let p = c.open().await;
    let v3 = c.state(&p, 3, 1_000, false);
    let v5 = c.state(&p, 5, 2_000, false);
    // Not before it is registered; and never a final state.
    assert!(matches!(
        refused(tx(&c.other, refute(&v5)).await),
        TxError::WrongPhase(_)
    ));
    assert_eq!(
        refused(tx(&c.a, register(&c.state(&p, 6, 0, true))).await),
        TxError::FinalFlag
    );
    // Money must add up.
    let mut greedy = v3.state.clone();
    greedy.balance_a = Amount(DEPOSIT * 2);
    assert_eq!(
        refused(tx(&c.a, register(&c.sign(greedy))).await),
        TxError::MoneyNotConserved
    );
    // A registers an old state; anyone (a tower) refutes with a newer one.
    let events = ok(&*c.a, tx(&c.a, register(&v3)).await).await;
    let deadline = match events[..] {
        [gridchan_chain::ChainEvent::Registered { deadline, .. }] => deadline,
        ref e => panic!("{e:?}"),
    };
    assert!(matches!(
        refused(tx(&c.b, register(&v5)).await),
        TxError::WrongPhase(_)
    ));
    assert!(matches!(
        refused(c.a.conclude(p.channel_id()).await),
        TxError::Window { .. }
    ));
    ok(&*c.other, tx(&c.other, refute(&v5)).await).await;
    assert_eq!(
        refused(tx(&c.a, refute(&v3)).await),
        TxError::NotNewer {
            registered: Version(5),
            got: Version(3)
        }
    );
    // The window does not move with a refute; after it, nothing more is heard.
    let ch =
        c.a.channel(&p.channel_id())
            .await
            .expect("reads")
            .expect("exists");
    assert!(
        matches!(ch.status, ChannelStatus::Registered { deadline: d, version: Version(5), .. } if d == deadline)
    );
    // Instant mining: the next transaction goes into the block after the newest, here the
    // window's last.
    let height = c.a.height().await.expect("height");
    c.mine(deadline - height - 1).await;
    ok(&*c.b, tx(&c.b, refute(&c.state(&p, 6, 2_500, false))).await).await;
    assert!(matches!(
        refused(tx(&c.b, refute(&c.state(&p, 7, 3_000, false))).await),
        TxError::Window { .. }
    ));
    let events = ok(&*c.other, c.other.conclude(p.channel_id()).await).await;
    assert!(matches!(
        events[..],
        [gridchan_chain::ChainEvent::Concluded { version: Version(6), payout, .. }]
            if payout == [Amount(DEPOSIT - 2_500), Amount(DEPOSIT + 2_500)]
    ));
    assert!(matches!(
        refused(c.a.conclude(p.channel_id()).await),
        TxError::WrongPhase(_)
    ));
    assert!(matches!(
        refused(tx(&c.a, register(&v5)).await),
        TxError::WrongPhase(_)
    ));
    // Each withdraws its payout, once.
    assert!(matches!(
        refused(c.a.withdraw(p.channel_id(), Amount(DEPOSIT)).await),
        TxError::InsufficientClaimable { .. }
    ));
    assert_eq!(
        refused(c.other.withdraw(p.channel_id(), Amount(1)).await),
        TxError::NotAParty
    );
    ok(
        &*c.a,
        c.a.withdraw(p.channel_id(), Amount(DEPOSIT - 2_500)).await,
    )
    .await;
    ok(
        &*c.b,
        c.b.withdraw(p.channel_id(), Amount(DEPOSIT + 2_500)).await,
    )
    .await;
    assert_eq!(
        c.a.account(&c.sa.id()).await.expect("reads").balance,
        Amount(100_000_000 - 2_500)
    );
    assert_eq!(
        c.b.account(&c.sb.id()).await.expect("reads").balance,
        Amount(100_000_000 + 2_500)
    );
}

#[tokio::test]
async fn a_transaction_that_reverts_in_its_block_names_the_rule_it_broke() {
    let c = chain(None).await;
    let p = c.open().await;
    // B's registration passes its simulation on the open channel and waits for a block. A's
    // goes straight to the chain (no simulation, a higher tip) and so runs first in that block:
    // B's then finds the channel registered.
    c.anvil.set_automine(false).await.expect("automine off");
    let second = tx(&c.b, register(&c.state(&p, 4, 0, false))).await;
    let v3 = c.state(&p, 3, 0, false);
    let call = GridchanAdjudicator::registerCall {
        s: evm::sol_state(&v3.state),
        sigA: evm::sol_sig(&v3.sig_a),
        sigB: evm::sol_sig(&v3.sig_b),
    };
    let pending =
        c.a.provider()
            .send_transaction(
                TransactionRequest::default()
                    .with_to(c.config.adjudicator)
                    .with_input(call.abi_encode())
                    .with_gas_limit(500_000)
                    .with_max_fee_per_gas(100_000_000_000)
                    .with_max_priority_fee_per_gas(50_000_000_000),
            )
            .await
            .expect("sent");
    let first = Ok(gridchan_chain::TxHash(pending.tx_hash().0));
    c.mine(1).await;
    c.anvil.set_automine(true).await.expect("automine on");
    ok(&*c.a, first).await;
    let receipt =
        c.b.wait_for(&second.expect("sent"), WAIT)
            .await
            .expect("included");
    let first_height = receipt.height;
    assert_eq!(
        receipt.outcome.result,
        Err(TxError::WrongPhase("registered".into())),
        "the rule, not a guess"
    );
    assert_eq!(
        c.a.channel(&p.channel_id()).await.unwrap().unwrap().status,
        ChannelStatus::Registered {
            version: Version(3),
            deadline: first_height + 5,
            state: c.state(&p, 3, 0, false).state,
        }
    );
}

#[tokio::test]
async fn one_account_numbers_its_transactions_across_tasks_and_clients() {
    let c = chain(None).await;
    let quarter = DEPOSIT / 4;
    let channel = |n: u8| ChannelParams {
        nonce: [n; 32],
        deposit_a: Amount(quarter),
        ..c.params()
    };
    // A tower refuting several channels at once submits concurrently from one client.
    let sent: Vec<_> = (1..=4u8)
        .map(|n| {
            let (a, p) = (c.a.clone(), channel(n));
            tokio::spawn(async move { a.deposit(&p, Amount(quarter)).await })
        })
        .collect();
    for s in sent {
        let hash = s.await.expect("joins");
        ok(&*c.a, hash).await;
    }
    // A second client of the same account (its cached nonce now behind the chain's) and
    // the first one again (its cache behind the second's): each catches up.
    let again = EvmLedger::connect(c.config.clone(), &secret(1), &[0x5a; 32]).expect("connects");
    ok(&again, again.deposit(&channel(5), Amount(quarter)).await).await;
    ok(&*c.a, c.a.deposit(&channel(6), Amount(quarter)).await).await;
    for n in 1..=6 {
        assert!(matches!(
            status(&*c.a, &channel(n)).await,
            Some(ChannelStatus::Funding { .. })
        ));
    }
    assert_eq!(
        c.a.account(&c.sa.id()).await.expect("account").balance,
        Amount(100_000_000 - 6 * quarter)
    );
}

#[tokio::test]
async fn a_client_checks_that_its_config_names_a_real_deployment() {
    let c = chain(None).await;
    let with = |adjudicator: Address, token: Address, rpc: &str| {
        EvmLedger::connect(
            EvmConfig {
                adjudicator,
                token,
                rpc: rpc.to_string(),
                ..c.config.clone()
            },
            &secret(3),
            &[0x5a; 32],
        )
        .expect("connects")
    };
    let (adjudicator, token) = (c.config.adjudicator, c.config.token);
    with(adjudicator, token, &c.config.rpc)
        .verify()
        .await
        .expect("the deployment");
    for (ledger, why) in [
        (
            with(Address::ZERO, token, &c.config.rpc),
            "there is no contract at",
        ),
        (
            with(token, token, &c.config.rpc),
            "is not a gridchan adjudicator",
        ),
        (
            with(adjudicator, adjudicator, &c.config.rpc),
            "settles in token",
        ),
    ] {
        match ledger.verify().await {
            Err(LedgerError::Failed(e)) => assert!(e.contains(why), "{e}"),
            other => panic!("{why}: {other:?}"),
        }
    }
    // Nothing listens there: the chain is not reachable, which is not a wrong config.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        l.local_addr().expect("address")
    };
    let away = with(adjudicator, token, &format!("http://{closed}"));
    assert!(matches!(
        away.verify().await,
        Err(LedgerError::Unavailable(_))
    ));
}

#[tokio::test]
async fn the_test_token_is_deployed_only_on_a_dev_chain() {
    let chain = Anvil::start_with(&["--chain-id", "5"]).expect("anvil");
    let deployer = secret(9);
    let who = evm::address_of(&Signer::new(&deployer, &deployer).expect("key").id());
    chain.fund_gas(who).await.expect("gas");
    let err = evm::deploy(&chain.rpc, &deployer, None, 3)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("not a dev chain"), "{err}");
    // Nor is an address without a contract taken for the token.
    let err = evm::deploy(&chain.rpc, &deployer, Some(Address::repeat_byte(7)), 3)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("no contract at"), "{err}");
    // With a settlement token it deploys.
    let artifact: serde_json::Value =
        serde_json::from_str(evm::TEST_TOKEN_ARTIFACT).expect("artifact");
    let code = alloy::hex::decode(artifact["bytecode"].as_str().expect("bytecode")).expect("hex");
    let ledger = EvmLedger::connect(
        EvmConfig {
            rpc: chain.rpc.clone(),
            adjudicator: Address::ZERO,
            token: Address::ZERO,
            confirmations: 1,
            deployed_at: 0,
        },
        &deployer,
        &[0x5a; 32],
    )
    .expect("connects");
    let receipt = ledger
        .provider()
        .send_transaction(TransactionRequest::default().with_deploy_code(code))
        .await
        .expect("sent")
        .get_receipt()
        .await
        .expect("included");
    let token = receipt.contract_address.expect("a token");
    let deployed = evm::deploy(&chain.rpc, &deployer, Some(token), 3)
        .await
        .expect("deploys");
    assert_eq!(deployed.chain_id, 5);
    assert_eq!(deployed.token, token);
}

/// The channel's status as `ledger` sees it.
async fn status(ledger: &dyn Ledger, p: &ChannelParams) -> Option<ChannelStatus> {
    let account = ledger.channel(&p.channel_id()).await.expect("asks");
    account.map(|a| a.status)
}

#[tokio::test]
async fn a_confirmation_depth_hides_the_newest_blocks_so_a_shallow_reorg_is_never_seen() {
    let c = chain(None).await;
    let p = c.open().await;
    // The funding confirmed three deep.
    c.mine(2).await;
    let deep = Arc::new(
        EvmLedger::connect(
            EvmConfig {
                confirmations: 3,
                ..c.config.clone()
            },
            &secret(3),
            &[0x5a; 32],
        )
        .expect("connects"),
    );
    let latest = c.a.provider().get_block_number().await.expect("height");
    assert_eq!(deep.height().await.expect("height"), latest - 2);
    let mut follower = gridchan_chain::Subscription::new(deep.clone(), latest - 1);
    // A registration in the newest block: a depth-1 client sees it at once, a depth-3 one
    // sees neither its receipt, nor its event, nor its effect.
    let hash = tx(&c.a, register(&c.state(&p, 2, 10, false)))
        .await
        .expect("sent");
    let included = c.a.wait_for(&hash, WAIT).await.expect("depth 1 sees it");
    assert_eq!(included.height, latest + 1);
    assert_eq!(deep.receipt(&hash).await.expect("asks"), None);
    assert!(deep.blocks(latest + 1, 10).await.expect("asks").is_empty());
    assert_eq!(status(&*deep, &p).await, Some(ChannelStatus::Open));
    // The chain drops its last two blocks (the registration with them) for two empty ones,
    // and moves on: the depth-3 follower never saw the registration, and never will.
    c.anvil.reorg(2).await.expect("reorg");
    c.mine(4).await;
    let top = deep.height().await.expect("height");
    assert!(top > latest + 1);
    while follower.next_height() <= top {
        let block = tokio::time::timeout(WAIT, follower.next())
            .await
            .expect("in time")
            .expect("block");
        assert!(block.outcomes.is_empty(), "{block:?}");
    }
    assert_eq!(deep.receipt(&hash).await.expect("asks"), None);
    assert_eq!(status(&*deep, &p).await, Some(ChannelStatus::Open));
    // What the depth-1 client was told is gone.
    assert_eq!(c.a.receipt(&hash).await.expect("asks"), None);
}

#[tokio::test]
async fn a_final_state_concludes_at_once() {
    let c = chain(None).await;
    let p = c.open().await;
    assert_eq!(
        refused(tx(&c.a, conclude_final(&c.state(&p, 4, 10, false))).await),
        TxError::FinalFlag
    );
    // Over a registration only when newer.
    ok(&*c.a, tx(&c.a, register(&c.state(&p, 4, 10, false))).await).await;
    assert!(matches!(
        refused(tx(&c.a, conclude_final(&c.state(&p, 3, 10, true))).await),
        TxError::NotNewer { .. }
    ));
    let events = ok(
        &*c.b,
        tx(&c.b, conclude_final(&c.state(&p, 9, 40, true))).await,
    )
    .await;
    assert!(matches!(
        events[..],
        [gridchan_chain::ChainEvent::Concluded {
            version: Version(9),
            ..
        }]
    ));
    assert!(matches!(
        refused(tx(&c.b, conclude_final(&c.state(&p, 10, 40, true))).await),
        TxError::WrongPhase(_)
    ));
}

#[tokio::test]
async fn signatures_must_be_the_parties_low_s_and_v_27_or_28() {
    let c = chain(None).await;
    let p = c.open().await;
    let good = c.state(&p, 2, 100, false);
    // Signed by someone else.
    let mut foreign = good.clone();
    let stranger = Signer::new(&secret(3), &secret(3)).expect("key");
    foreign.sig_b = stranger.sign(&good.state.digest());
    assert!(matches!(
        refused(tx(&c.a, register(&foreign)).await),
        TxError::BadStateSignature(_)
    ));
    // Swapped: A's signature where B's belongs.
    let mut swapped = good.clone();
    std::mem::swap(&mut swapped.sig_a, &mut swapped.sig_b);
    assert!(matches!(
        refused(tx(&c.a, register(&swapped)).await),
        TxError::BadStateSignature(_)
    ));
    // The high-s twin: (r, n - s, v ^ 1) recovers the same key, so ecrecover accepts it.
    let mut twin = good.clone();
    twin.sig_a = high_s_twin(&good.sig_a);
    let digest = FixedBytes::from(good.state.digest());
    let recovered_by_precompile = {
        use alloy::providers::Provider;
        let sig = twin.sig_a.0;
        let input = [
            &digest.0[..],
            &[0u8; 31][..],
            &[sig[64]][..],
            &sig[..32],
            &sig[32..64],
        ]
        .concat();
        let tx = alloy::rpc::types::TransactionRequest::default()
            .to(Address::with_last_byte(1))
            .input(input.into());
        c.a.provider().call(tx).await.expect("precompile")
    };
    assert_eq!(
        &recovered_by_precompile[12..],
        evm::address_of(&c.sa.id()).as_slice(),
        "the precompile accepts the twin"
    );
    assert_eq!(
        refused(tx(&c.a, register(&twin)).await),
        TxError::BadStateSignature("high s".into())
    );
    // v other than 27 or 28.
    let mut bad_v = good.clone();
    bad_v.sig_a.0[64] = 1;
    assert_eq!(
        refused(tx(&c.a, register(&bad_v)).await),
        TxError::BadStateSignature("v must be 27 or 28".into())
    );
    // Garbage that recovers no key at all.
    let mut zero = good.clone();
    zero.sig_b = Signature([0; 65]);
    zero.sig_b.0[64] = 27;
    assert!(matches!(
        refused(tx(&c.a, register(&zero)).await),
        TxError::BadStateSignature(_)
    ));
    // The real thing is accepted.
    ok(&*c.a, tx(&c.a, register(&good)).await).await;
}

/// The secp256k1 group order.
const ORDER: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE,
    0xBA, 0xAE, 0xDC, 0xE6, 0xAF, 0x48, 0xA0, 0x3B, 0xBF, 0xD2, 0x5E, 0x8C, 0xD0, 0x36, 0x41, 0x41,
];

fn high_s_twin(sig: &Signature) -> Signature {
    let n = alloy::primitives::U256::from_be_bytes(ORDER);
    let s = alloy::primitives::U256::from_be_slice(&sig.0[32..64]);
    let mut out = sig.0;
    out[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
    out[64] = if sig.0[64] == 27 { 28 } else { 27 };
    Signature(out)
}

#[tokio::test]
async fn a_follower_sees_every_event_in_order_and_resumes_from_any_height() {
    let c = chain(None).await;
    let p = c.open().await;
    ok(&*c.a, tx(&c.a, register(&c.state(&p, 2, 10, false))).await).await;
    ok(&*c.b, tx(&c.b, refute(&c.state(&p, 3, 20, false))).await).await;
    let mut sub = gridchan_chain::Subscription::new(c.other.clone(), 1);
    let mut seen = Vec::new();
    let top = c.other.height().await.expect("height");
    while sub.next_height() <= top {
        let block = tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("in time")
            .expect("block");
        for o in block.outcomes {
            seen.extend(o.result.expect("ok"));
        }
    }
    assert_eq!(
        names(&seen),
        ["deposited", "deposited", "funded", "registered", "refuted"]
    );
    // From the middle: only what came after.
    let later = c.other.blocks(top, 10).await.expect("blocks");
    let events: usize = later.iter().map(|b| b.outcomes.len()).sum();
    assert_eq!(events, 1);
}

/// The kinds of `events`, in order.
fn names(events: &[gridchan_chain::ChainEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            gridchan_chain::ChainEvent::Deposited { .. } => "deposited",
            gridchan_chain::ChainEvent::Funded { .. } => "funded",
            gridchan_chain::ChainEvent::Registered { .. } => "registered",
            gridchan_chain::ChainEvent::Refuted { .. } => "refuted",
            _ => "other",
        })
        .collect()
}

/// A TCP relay to the chain that can be cut (every connection dropped, new ones refused) and
/// restored: a network outage between a follower and its node.
struct Relay {
    rpc: String,
    up: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn to(rpc: &str) -> Relay {
        let target: std::net::SocketAddr = rpc
            .trim_start_matches("http://")
            .parse()
            .expect("anvil's address");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("address");
        let (up, watch) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut watch = watch.clone();
                if !*watch.borrow() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Relay {
            rpc: format!("http://{addr}"),
            up,
        }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

#[tokio::test]
async fn a_follower_cut_off_from_its_node_resumes_where_it_stopped_and_misses_nothing() {
    let c = chain(None).await;
    let p = c.open().await;
    let relay = Relay::to(&c.config.rpc).await;
    let far = Arc::new(
        EvmLedger::connect(
            EvmConfig {
                rpc: relay.rpc.clone(),
                ..c.config.clone()
            },
            &secret(3),
            &[0x5a; 32],
        )
        .expect("connects"),
    );
    let mut follower = gridchan_chain::Subscription::new(far.clone(), 1);
    let mut seen = Vec::new();
    let top = far.height().await.expect("height");
    while follower.next_height() <= top {
        let block = tokio::time::timeout(WAIT, follower.next())
            .await
            .expect("in time")
            .expect("block");
        seen.extend(
            block
                .outcomes
                .into_iter()
                .flat_map(|o| o.result.expect("ok")),
        );
    }
    assert_eq!(seen.len(), 3, "two deposits and the funding: {seen:?}");
    // The link goes down; the chain moves on without the follower.
    relay.set(false);
    ok(&*c.a, tx(&c.a, register(&c.state(&p, 2, 10, false))).await).await;
    ok(&*c.b, tx(&c.b, refute(&c.state(&p, 3, 20, false))).await).await;
    let cut = tokio::time::timeout(WAIT, follower.next())
        .await
        .expect("fails in time, never hangs");
    assert!(matches!(cut, Err(LedgerError::Unavailable(_))), "{cut:?}");
    // Back up: the follower carries on from where it stopped.
    relay.set(true);
    let top = c.a.height().await.expect("height");
    while follower.next_height() <= top {
        let block = tokio::time::timeout(WAIT, follower.next_retrying())
            .await
            .expect("in time");
        seen.extend(
            block
                .outcomes
                .into_iter()
                .flat_map(|o| o.result.expect("ok")),
        );
    }
    assert_eq!(
        names(&seen),
        ["deposited", "deposited", "funded", "registered", "refuted"]
    );
}

#[tokio::test]
async fn the_first_deposit_must_carry_the_parties_keys_and_the_tariff_of_the_parameters() {
    use alloy::primitives::Bytes;
    let c = chain(None).await;
    let p = c.params();
    // What the adapter sends, with one piece changed at a time: each is refused by name.
    let call = |keys: (Vec<u8>, Vec<u8>), tariff: Vec<u8>, params: GridchanAdjudicator::Params| {
        GridchanAdjudicator::depositCall {
            p: params,
            keyA: Bytes::from(keys.0),
            keyB: Bytes::from(keys.1),
            tariff: Bytes::from(tariff),
            amount: DEPOSIT,
        }
        .abi_encode()
    };
    let keys = (p.party_a.to_xy().to_vec(), p.party_b.to_xy().to_vec());
    let words = p.tariff.words();
    // Without the approval the token refuses, and the adjudicator says so.
    let tx = TransactionRequest::default()
        .with_from(c.a.account_address())
        .with_to(c.config.adjudicator)
        .with_input(call(keys.clone(), words.clone(), evm::sol_params(&p)));
    let err = c.a.provider().call(tx).await.expect_err("refused");
    let data = err
        .as_error_resp()
        .and_then(|r| r.as_revert_data())
        .expect("revert data");
    assert!(
        matches!(evm::decode_revert(&data), Some(TxError::TokenRefused(_))),
        "{:?}",
        evm::decode_revert(&data)
    );
    // The deposit's funds are in place, so only the rule under test can refuse.
    let approve = alloy::rpc::types::TransactionRequest::default()
        .with_to(c.config.token)
        .with_input(
            evm::Erc20::approveCall {
                spender: c.config.adjudicator,
                amount: alloy::primitives::U256::from(DEPOSIT),
            }
            .abi_encode(),
        );
    let pending =
        c.a.provider()
            .send_transaction(approve)
            .await
            .expect("sent");
    assert!(pending.get_receipt().await.expect("included").status());
    let swapped_keys = (keys.1.clone(), keys.0.clone());
    let other_tariff = Tariff::Flat(PricePerKwh(1)).words();
    let mut zero_party = evm::sol_params(&p);
    zero_party.partyB = Address::ZERO;
    for (input, why) in [
        (
            call(swapped_keys, words.clone(), evm::sol_params(&p)),
            "keyA is not party A's public key",
        ),
        (
            call(
                (keys.0.clone(), vec![1; 63]),
                words.clone(),
                evm::sol_params(&p),
            ),
            "keyB is not party B's public key",
        ),
        (
            call(keys.clone(), other_tariff, evm::sol_params(&p)),
            "tariff does not match its digest",
        ),
        (
            call(keys.clone(), words.clone(), zero_party),
            "a party is the zero address",
        ),
    ] {
        let tx = alloy::rpc::types::TransactionRequest::default()
            .with_from(c.a.account_address())
            .with_to(c.config.adjudicator)
            .with_input(input);
        let err = c.a.provider().call(tx).await.expect_err("refused");
        let data = err
            .as_error_resp()
            .and_then(|r| r.as_revert_data())
            .expect("revert data");
        assert_eq!(
            evm::decode_revert(&data),
            Some(TxError::InvalidParams(why.into())),
            "{why}"
        );
    }
    // The same call with everything right goes through.
    let tx = alloy::rpc::types::TransactionRequest::default()
        .with_from(c.a.account_address())
        .with_to(c.config.adjudicator)
        .with_input(call(keys, words, evm::sol_params(&p)));
    c.a.provider().call(tx).await.expect("accepted");
    // Only the adjudicator's rules go through this client; a token transfer is a wallet's.
    let to = Signer::new(&secret(3), &secret(3)).expect("key").id();
    assert!(matches!(
        c.a.transfer(to, Amount(1)).await,
        Err(LedgerError::Failed(_))
    ));
}

/// The same rules as `tests/funds.rs` on the contract: a top-up while open (the token approved
/// and taken), a withdrawal paid once, a state from before it refused, a state from before the
/// top-up still paying it, and the payout adding what the registered state does not count.
#[tokio::test]
async fn top_ups_and_withdrawals_while_open_pay_once_and_are_never_lost() {
    let c = chain(None).await;
    let p = c.open().await;
    let id = p.channel_id();
    let balance =
        |l: Arc<EvmLedger>, s: NodeId| async move { l.account(&s).await.expect("reads").balance.0 };
    let a0 = balance(c.a.clone(), c.sa.id()).await;
    // B tops up 3,000 while A's state v3 (from before it) stands.
    let v3 = c.state(&p, 3, 1_000, false);
    let events = ok(
        &*c.b,
        tx(
            &c.b,
            TxKind::TopUp {
                channel: id,
                amount: Amount(3_000),
            },
        )
        .await,
    )
    .await;
    assert!(matches!(
        events[..],
        [gridchan_chain::ChainEvent::ToppedUp {
            party: Party::B,
            amount: Amount(3_000),
            total: Amount(3_000),
            ..
        }]
    ));
    assert_eq!(
        refused(
            tx(
                &c.other,
                TxKind::TopUp {
                    channel: id,
                    amount: Amount(1)
                }
            )
            .await
        ),
        TxError::NotAParty
    );
    // v4 counts the top-up; v5 has A take 500 of its balance out.
    let v4 = c.sign(
        v3.state
            .with_funds(Version(4), Party::B, Amount(3_000), Amount(0))
            .expect("valid"),
    );
    let v5 = c.sign(
        v4.state
            .with_funds(Version(5), Party::A, Amount(0), Amount(500))
            .expect("valid"),
    );
    let mut ahead = v5.state.clone();
    ahead.funds.topped_up[1] = Amount(4_000);
    ahead.balance_b = Amount(ahead.balance_b.0 + 1_000);
    assert_eq!(
        refused(
            tx(
                &c.a,
                TxKind::WithdrawOpen {
                    state: Box::new(c.sign(ahead))
                }
            )
            .await
        ),
        TxError::TopUpNotMade
    );
    let withdraw = TxKind::WithdrawOpen {
        state: Box::new(v5.clone()),
    };
    let events = ok(&*c.other, tx(&c.other, withdraw.clone()).await).await;
    assert!(matches!(
        events[..],
        [gridchan_chain::ChainEvent::WithdrawnOpen {
            party: Party::A,
            amount: Amount(500),
            total: Amount(500),
            ..
        }]
    ));
    assert_eq!(balance(c.a.clone(), c.sa.id()).await, a0 + 500);
    assert_eq!(
        refused(tx(&c.a, withdraw).await),
        TxError::NothingToWithdraw
    );
    // v4 is from before the paid withdrawal: refused; v3 too. v5 is registered.
    assert_eq!(
        refused(tx(&c.b, register(&v4)).await),
        TxError::WithdrawalNotInState
    );
    ok(&*c.a, tx(&c.a, register(&v5)).await).await;
    let ch = c.a.channel(&id).await.expect("reads").expect("exists");
    assert_eq!(ch.funds.topped_up, [Amount(0), Amount(3_000)]);
    assert_eq!(ch.funds.withdrawn, [Amount(500), Amount(0)]);
    assert!(
        matches!(ch.status, ChannelStatus::Registered { ref state, .. } if state.funds == v5.state.funds)
    );
    c.mine(6).await;
    let events = ok(&*c.b, c.b.conclude(id).await).await;
    // A paid B 1,000 and took 500 out while open (paid then, not again); B has its deposit,
    // the 1,000 and its top-up.
    assert!(matches!(
        events[..],
        [gridchan_chain::ChainEvent::Concluded { version: Version(5), payout, .. }]
            if payout == [Amount(DEPOSIT - 1_500), Amount(DEPOSIT + 1_000 + 3_000)]
    ));
}

/// A batch on the contract: several channels funded, closed and paid out in one transaction
/// each; an operation that reverts is reported in its place and the others go on.
#[tokio::test]
async fn a_batch_funds_closes_and_pays_many_channels_each_on_its_own() {
    let c = chain(None).await;
    let channels: Vec<ChannelParams> = (0..4u8)
        .map(|n| {
            let mut p = c.params();
            p.nonce = [0x60 + n; 32];
            p.deposit_a = Amount(DEPOSIT / 4);
            p.deposit_b = Amount(DEPOSIT / 4);
            p
        })
        .collect();
    // A batch of one works as well.
    let mut single = c.params();
    single.nonce = [0x5f; 32];
    single.deposit_a = Amount(1_000_000);
    let events = ok(
        &*c.a,
        tx(
            &c.a,
            TxKind::Batch {
                items: vec![TxKind::Deposit {
                    params: Box::new(single.clone()),
                    amount: single.deposit_a,
                }],
            },
        )
        .await,
    )
    .await;
    assert!(
        matches!(events[..], [gridchan_chain::ChainEvent::Deposited { .. }]),
        "{events:?}"
    );
    let deposits = |a_side: bool| TxKind::Batch {
        items: channels
            .iter()
            .map(|p| TxKind::Deposit {
                params: Box::new(p.clone()),
                amount: if a_side { p.deposit_a } else { p.deposit_b },
            })
            .collect(),
    };
    let events = ok(&*c.a, tx(&c.a, deposits(true)).await).await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, gridchan_chain::ChainEvent::BatchItemFailed { .. })),
        "{events:?}"
    );
    ok(&*c.b, tx(&c.b, deposits(false)).await).await;
    for p in &channels {
        assert_eq!(status(&*c.a, p).await, Some(ChannelStatus::Open));
    }
    // B is paid 700 in each channel's final state.
    let quarter = |p: &ChannelParams, is_final: bool| {
        let mut s = State::initial(p).finalized(Version(3));
        s.is_final = is_final;
        s.balance_a = Amount(DEPOSIT / 4 - 700);
        s.balance_b = Amount(DEPOSIT / 4 + 700);
        c.sign(s)
    };
    let mut finals: Vec<TxKind> = channels
        .iter()
        .map(|p| conclude_final(&quarter(p, true)))
        .collect();
    finals[1] = conclude_final(&quarter(&channels[1], false));
    let events = ok(&*c.a, tx(&c.a, TxKind::Batch { items: finals }).await).await;
    let _ = &events;
    assert!(
        events.contains(&gridchan_chain::ChainEvent::BatchItemFailed {
            index: 1,
            error: TxError::FinalFlag
        })
    );
    assert_eq!(status(&*c.a, &channels[1]).await, Some(ChannelStatus::Open));
    let payouts = [0usize, 2, 3]
        .iter()
        .map(|i| TxKind::Withdraw {
            channel: channels[*i].channel_id(),
            amount: Amount(DEPOSIT / 4 + 700),
        })
        .collect();
    let events = ok(&*c.b, tx(&c.b, TxKind::Batch { items: payouts }).await).await;
    let paid = events
        .iter()
        .filter(|e| matches!(e, gridchan_chain::ChainEvent::Withdrawn { .. }))
        .count();
    assert_eq!(paid, 3, "{events:?}");
    assert_eq!(
        refused(tx(&c.a, TxKind::Batch { items: vec![] }).await),
        TxError::InvalidBatch("1 to 1000 operations".into())
    );
}

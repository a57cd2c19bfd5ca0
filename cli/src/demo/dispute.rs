//! The dispute: midday, a home goes offline and its neighbour registers an old state that pays
//! it more; the watchtower refutes it.

use super::*;

/// Midway through the day: the home owed money on `link` goes offline; the other registers an
/// old state that pays it more; the tower refutes; both come back.
#[allow(clippy::too_many_arguments)]
pub(super) async fn stage_dispute(
    o: &DemoOptions,
    net: &Net,
    homes: &mut [Home],
    link: &Link,
    old_states: &HashMap<ChannelId, SignedState>,
    tower: &Arc<Tower>,
    say: &impl Fn(String),
) -> Result<DisputeSummary> {
    let Some(old) = old_states.get(&link.id).cloned() else {
        bail!("no traded state on channel {}", link.id.short());
    };
    let e = homes[link.a]
        .daemon
        .as_ref()
        .expect("running")
        .engine
        .clone();
    let newest = e
        .channel(link.id)
        .await?
        .and_then(|v| v.current)
        .context("the disputed channel has no state")?;
    // The old state favours whoever's balance was higher then than now.
    let (cheater, victim) = if old.state().balance_a > newest.state().balance_a {
        (link.a, link.b)
    } else {
        (link.b, link.a)
    };
    say(format!(
        "dispute: {} goes offline; {} registers version {} of their channel (it holds {}), which pays it more",
        homes[victim].name, homes[cheater].name, old.version(), newest.version()
    ));
    // The tower has the newest state (the victim's gateway pushes each one as it is signed;
    // give it a moment to land, as it would have in fifteen real minutes).
    let ask = gridchan_watchtower::TowerClient::new(
        net.tower_addr.clone(),
        homes[victim].key.duplicate(&blinding()),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let newest_version = loop {
        let cur = e
            .channel(link.id)
            .await?
            .and_then(|v| v.current)
            .map(|s| s.version());
        let held = ask.held(link.id).await.ok().flatten();
        if held.is_some() && held >= cur {
            break held.unwrap_or_default();
        }
        if Instant::now() > deadline {
            bail!("the watchtower did not get the newest state within 10 s (it holds {held:?}, the channel is at {cur:?})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Offline: the victim's gateway stops. The cheater runs other software meanwhile.
    homes[victim].daemon = None;
    homes[cheater].daemon = None;
    let cheat = net.chain.client(&homes[cheater].secret)?;
    cheat
        .register(&old)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let refuted = loop {
        if let Some(ChannelStatus::Registered { version, .. }) = cheat
            .channel(&link.id)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .map(|c| c.status)
        {
            if version > old.version() {
                break version;
            }
        }
        if Instant::now() > deadline {
            bail!("the tower did not refute within 30 s");
        }
        let h = cheat.height().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let _ = cheat.wait_above(h, Duration::from_secs(2)).await;
    };
    say(format!(
        "the watchtower refuted it with version {refuted}; the others trade on"
    ));
    // Both come back (the victim catches up from the ledger; the cheater's gateway is honest),
    // on new ports: each dials all its neighbours, who cannot know the new address.
    for i in [cheater, victim] {
        let engine = listen(o, &mut homes[i])?;
        let peers = dial_list(homes, i);
        let d = start_home(o, net, homes, i, engine, peers).await?;
        homes[i].daemon = Some(d);
    }
    say(format!(
        "{} and {} are back online",
        homes[victim].name, homes[cheater].name
    ));
    let _ = tower;
    Ok(DisputeSummary {
        channel: link.id.to_string(),
        offline: homes[victim].name.clone(),
        cheater: homes[cheater].name.clone(),
        registered_version: old.version().0,
        newest_version: newest_version.0,
        tower_refuted_with: refuted.0,
        paid_version: 0,
    })
}

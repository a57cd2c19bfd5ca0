//! The SQLite channel store keeps records exactly, and refuses damaged ones.

use gridchan_channel::{ChannelStore, IntervalIndex, WattHours};
use std::sync::{Arc, Mutex};

use gridchan_gateway::store::SqliteStore;
use gridchan_harness::FaultyStore;
use gridchan_harness::{Pair, PairConfig, Side, Trade};

fn records() -> Vec<gridchan_channel::ChannelRecord> {
    let mut pair = Pair::new(PairConfig::default());
    let start = PairConfig::default().opened_at.0;
    for i in 1..=5 {
        let seller = if i % 2 == 0 { Side::A } else { Side::B };
        pair.trade(Trade::agreed(
            IntervalIndex(start + i),
            seller,
            WattHours(100 * i),
        ));
        pair.drive();
    }
    // Leave a proposal of A's outstanding, so the record carries one.
    pair.trade(Trade::agreed(
        IntervalIndex(start + 6),
        Side::A,
        WattHours(5),
    ));
    pair.flush_outputs();
    let a = pair.store(Side::A).inner().load().unwrap();
    let b = pair.store(Side::B).inner().load().unwrap();
    assert!(a[0].proposal.is_some());
    vec![a[0].clone(), b[0].clone()]
}

#[test]
fn records_survive_a_reopen_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("channels.sqlite");
    let recs = records();
    {
        let mut store = SqliteStore::open(&path).unwrap();
        // A's and B's records share a channel id: write A's, then check an update replaces it.
        store.write(&recs[1]).unwrap();
        store.write(&recs[0]).unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded, vec![recs[0].clone()]);
}

#[test]
fn a_tampered_record_is_refused_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("channels.sqlite");
    let recs = records();
    SqliteStore::open(&path).unwrap().write(&recs[0]).unwrap();
    let db = rusqlite::Connection::open(&path).unwrap();
    let mut blob: Vec<u8> = db
        .query_row("SELECT record FROM channels", [], |r| r.get(0))
        .unwrap();
    let n = blob.len();
    blob[n - 20] ^= 0x40; // inside the last signature
    db.execute("UPDATE channels SET record = ?1", [blob])
        .unwrap();
    drop(db);
    let err = SqliteStore::open(&path).unwrap().load().unwrap_err();
    assert!(err.to_string().contains("channel"), "{err}");
}

#[test]
fn a_store_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("channels.sqlite");
    SqliteStore::open(&path).unwrap();
    let db = rusqlite::Connection::open(&path).unwrap();
    db.pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    let err = SqliteStore::open(&path).err().unwrap();
    assert!(err.to_string().contains("upgrade gridchan"), "{err}");
}

#[test]
fn the_ledger_queue_keeps_its_order_and_its_history_across_a_reopen() {
    use gridchan_chain::TxKind;
    use gridchan_gateway::ledger_queue::LedgerQueue;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("channels.sqlite");
    let channel = gridchan_channel::ChannelId([7; 32]);
    {
        let _store = SqliteStore::open(&path).unwrap();
        // Two connections to the queue (the engine's and the daemon's) share one order.
        LedgerQueue::open(&path)
            .unwrap()
            .push(Some(&channel), &TxKind::Conclude { channel })
            .unwrap();
        let queue = LedgerQueue::open(&path).unwrap();
        queue
            .push(
                Some(&channel),
                &TxKind::Withdraw {
                    channel,
                    amount: gridchan_channel::Amount(5),
                },
            )
            .unwrap();
        let first = queue.pending().unwrap()[0].id;
        queue.attempt_failed(first, "ledger unavailable").unwrap();
    }
    let queue = LedgerQueue::open(&path).unwrap();
    let pending = queue.pending().unwrap();
    let names: Vec<&str> = pending.iter().map(|p| p.tx.name()).collect();
    assert_eq!(names, ["conclude", "withdraw"], "oldest first");
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(pending[0].last_error.as_deref(), Some("ledger unavailable"));
    assert_eq!(pending[0].channel, Some(channel));
    queue.finish(pending[0].id, "included at 9").unwrap();
    assert_eq!(queue.pending_count().unwrap(), 1);
    let done = queue.finished(5).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].what.as_str(), done[0].attempts), ("conclude", 2));
    assert_eq!(done[0].outcome, "included at 9");
}

#[tokio::test]
async fn the_writer_answers_in_order_fails_a_whole_transaction_and_recovers() {
    use gridchan_channel::UpdateId;
    use gridchan_gateway::writer::{Writer, Written};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("channels.sqlite");
    let store = FaultyStore::new(SqliteStore::open(&path).unwrap());
    let faults = store.switch();
    let (writer, mut written) = Writer::spawn(Arc::new(Mutex::new(store)));
    let recs = records();
    let answer = |w: Option<Written>| match w.expect("an answer") {
        Written::Durable(u) => Ok(u),
        Written::Failed { updates, .. } => Err(updates),
    };
    // Batches handed together are answered at most once each, in order, the last one covering
    // them all; what was answered durable is on disk.
    writer.write(vec![(UpdateId(1), recs[1].clone())]);
    writer.write(vec![(UpdateId(2), recs[0].clone())]);
    let mut last = answer(written.recv().await).unwrap();
    if last < UpdateId(2) {
        last = answer(written.recv().await).unwrap();
    }
    assert_eq!(last, UpdateId(2));
    assert_eq!(
        SqliteStore::open(&path).unwrap().load().unwrap(),
        vec![recs[0].clone()]
    );
    // A failing disk fails every update of the transaction, and nothing is written.
    faults.fail_now();
    writer.write(vec![(UpdateId(3), recs[1].clone())]);
    assert_eq!(answer(written.recv().await), Err(vec![UpdateId(3)]));
    assert_eq!(
        SqliteStore::open(&path).unwrap().load().unwrap(),
        vec![recs[0].clone()]
    );
    // The disk is back: writing again works.
    faults.heal();
    writer.write(vec![(UpdateId(4), recs[1].clone())]);
    assert_eq!(answer(written.recv().await), Ok(UpdateId(4)));
    assert_eq!(
        SqliteStore::open(&path).unwrap().load().unwrap(),
        vec![recs[1].clone()]
    );
}

//! The ledger survives restarts and refuses a damaged database with a clear error.

mod common;

use common::Fixture;
use gridchan_chain::chainstore::ChainStoreError;
use gridchan_chain::{LocalLedger, TxKind};
use gridchan_channel::Amount;

fn ledger_file(f: &Fixture) -> std::path::PathBuf {
    f.dir.path().join("ledger.sqlite")
}

/// A ledger with some history: a funded channel, a registration, a refute, transfers.
fn with_history() -> Fixture {
    let mut f = Fixture::new();
    f.fund();
    f.submit(
        &f.b,
        TxKind::Register {
            state: f.signed(3, 100),
        },
    )
    .unwrap();
    f.block();
    f.submit(
        &f.a,
        TxKind::Refute {
            state: f.signed(4, 400),
        },
    )
    .unwrap();
    f.submit(
        &f.c,
        TxKind::Transfer {
            to: f.a.id(),
            amount: Amount(77),
        },
    )
    .unwrap();
    f.block();
    f.blocks(3);
    f
}

fn close(f: &mut Fixture) {
    // Replace the open ledger with a throwaway one so the database file is closed.
    let spare = tempfile::tempdir().unwrap();
    f.ledger = LocalLedger::open(spare.path(), f.genesis.clone()).unwrap();
}

#[test]
fn a_restart_finds_the_same_state_and_height() {
    let mut f = with_history();
    let id = f.params.channel_id();
    let before = (
        f.ledger.height(),
        f.ledger.channel(&id),
        f.ledger.account(&f.a.id()),
        f.ledger.account(&f.c.id()),
        f.ledger.blocks(1, 100).unwrap(),
    );
    f.reopen();
    let after = (
        f.ledger.height(),
        f.ledger.channel(&id),
        f.ledger.account(&f.a.id()),
        f.ledger.account(&f.c.id()),
        f.ledger.blocks(1, 100).unwrap(),
    );
    assert_eq!(before, after);
    assert_eq!(after.0, 6);
    // It keeps going from there: nonces continue, blocks link.
    f.submit(
        &f.c,
        TxKind::Transfer {
            to: f.b.id(),
            amount: Amount(1),
        },
    )
    .unwrap();
    f.block();
    f.reopen();
    assert_eq!(f.ledger.height(), 7);
    assert_eq!(f.ledger.total_supply(), 30_000_000);
}

fn reopen_err(f: &Fixture) -> String {
    match LocalLedger::open(f.dir.path(), f.genesis.clone()) {
        Ok(_) => panic!("a damaged database was used"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_tampered_block_is_reported() {
    let mut f = with_history();
    close(&mut f);
    let db = rusqlite::Connection::open(ledger_file(&f)).unwrap();
    // Flip a byte inside block 2's body (the registration).
    let mut body: Vec<u8> = db
        .query_row("SELECT body FROM blocks WHERE height = 2", [], |r| r.get(0))
        .unwrap();
    let n = body.len();
    body[n - 40] ^= 0x01;
    db.execute("UPDATE blocks SET body = ?1 WHERE height = 2", [body])
        .unwrap();
    drop(db);
    let err = reopen_err(&f);
    assert!(err.contains("corrupt at block 2"), "{err}");
}

#[test]
fn a_truncated_chain_is_reported() {
    let mut f = with_history();
    close(&mut f);
    let db = rusqlite::Connection::open(ledger_file(&f)).unwrap();
    db.execute("DELETE FROM blocks WHERE height = 6", [])
        .unwrap();
    drop(db);
    let err = reopen_err(&f);
    assert!(err.contains("truncated"), "{err}");
    assert!(err.contains("height 6"), "{err}");
}

#[test]
fn a_block_missing_in_the_middle_is_reported() {
    let mut f = with_history();
    close(&mut f);
    let db = rusqlite::Connection::open(ledger_file(&f)).unwrap();
    db.execute("DELETE FROM blocks WHERE height = 3", [])
        .unwrap();
    drop(db);
    assert!(reopen_err(&f).contains("truncated"));
}

#[test]
fn a_file_that_is_not_a_database_is_reported() {
    let mut f = with_history();
    close(&mut f);
    let path = ledger_file(&f);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    std::fs::write(&path, vec![0x5a; len.max(4096)]).unwrap();
    let _ = std::fs::remove_file(path.with_extension("sqlite-wal"));
    let err = reopen_err(&f);
    assert!(err.contains("ledger database"), "{err}");
}

#[test]
fn a_folder_of_another_ledger_is_refused() {
    let mut f = with_history();
    close(&mut f);
    let mut other = f.genesis.clone();
    other.chain_id = [1; 32];
    match LocalLedger::open(f.dir.path(), other) {
        Err(ChainStoreError::GenesisMismatch) => {}
        other => panic!("{:?}", other.err()),
    }
}

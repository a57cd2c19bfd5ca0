//! The library behind the `gridchan` binary: everything a subcommand does lives here, so
//! tests can call it without the binary.

pub mod channel;
pub mod daemon;
pub mod init;
pub mod keys;
pub mod ledger;
pub mod vectors;

use anyhow::Result;

/// `gridchan bench core`.
pub fn bench_core(updates: u64) -> Result<()> {
    eprintln!("settling {updates} updates through the in-memory harness...");
    println!("{}", gridchan_harness::bench::run(updates).report());
    Ok(())
}

/// `gridchan bench ledger`.
pub fn bench_ledger(transactions: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    eprintln!("signing {transactions} transactions, then applying and committing them...");
    println!(
        "{}",
        gridchan_chain::bench::run(dir.path(), transactions).report()
    );
    Ok(())
}

//! The library behind the `gridchan` binary: everything a subcommand does lives here, so
//! tests can call it without the binary.

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

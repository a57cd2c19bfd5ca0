//! The library behind the `gridchan` binary: everything a subcommand does lives here, so
//! tests can call it without the binary.

pub mod vectors;

use anyhow::Result;

/// `gridchan bench core`.
pub fn bench_core(updates: u64) -> Result<()> {
    eprintln!("settling {updates} updates through the in-memory harness...");
    let b = gridchan_harness::bench::run(updates);
    println!("core benchmark: one channel, two nodes in memory, {updates} updates");
    println!(
        "  protocol   {:>8.1} us/update  {:>9.0} updates/s",
        us(b.per_update()),
        b.updates_per_second()
    );
    println!(
        "  floor      {:>8.1} us/update  (2 signs + 2 verifications by key recovery)",
        us(b.crypto_floor)
    );
    println!(
        "  reference  {:>8.1} us/update  (2 signs + 2 plain ECDSA verifications)",
        us(b.plain_verify_floor)
    );
    println!(
        "  ratio      {:>8.3}x the floor (goal: at most 1.15x)",
        b.ratio()
    );
    Ok(())
}

fn us(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

//! `cargo bench -p gridchan-bench`: the core benchmark (the same as `gridchan bench core`).

fn main() {
    let updates = std::env::var("GRIDCHAN_BENCH_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let b = gridchan_bench::core::run(updates);
    println!("{}", b.report());
}

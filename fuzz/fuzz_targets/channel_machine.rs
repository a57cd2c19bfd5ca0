//! Two channel state machines driven by an arbitrary script (intervals, one-sided readings,
//! lost, duplicated and reordered frames, disconnections, crashes and restarts, failing stores,
//! time): the harness referee must see no violation, and after healing both sides must agree on
//! the newest state with money conserved.
#![no_main]

use gridchan_harness::script::{check, run, Op};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<Op>| {
    if ops.len() > 100 {
        return;
    }
    let pair = run(&ops);
    if let Err(e) = check(&pair) {
        panic!("{e}");
    }
});

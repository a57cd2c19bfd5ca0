//! Client bytes into the ledger's RPC decoder, and any transaction that decodes through the
//! ledger's rules (signature checked, and again as if already checked so the rules themselves
//! see arbitrary transactions): never a panic, and the token supply never changes.
#![no_main]

use gridchan_chain::rpc::{self, Request};
use gridchan_chain::rules::LedgerState;
use gridchan_chain::Genesis;
use gridchan_channel::Amount;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rpc::decode::<rpc::Response>(data);
    let Ok(Request::Submit(tx)) = rpc::decode::<Request>(data) else {
        return;
    };
    let genesis = Genesis {
        chain_id: [1; 32],
        min_challenge_window: 2,
        balances: vec![(tx.sender, Amount(1_000_000_000))],
    };
    let mut state = LedgerState::new(genesis);
    let supply = state.total_supply();
    let _ = state.apply(&tx, 1);
    let _ = state.apply_presigned(&tx, 2);
    let _ = state.apply_presigned(&tx, u64::MAX);
    assert_eq!(state.total_supply(), supply);
});

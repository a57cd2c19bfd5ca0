//! Client bytes into the watchtower's RPC decoder: never a panic; what decodes re-encodes.
#![no_main]

use gridchan_watchtower::rpc::{self, Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = rpc::decode::<Request>(data) {
        assert_eq!(
            rpc::decode::<Request>(&rpc::encode(&r)).expect("re-decodes"),
            r
        );
    }
    let _ = rpc::decode::<Response>(data);
});

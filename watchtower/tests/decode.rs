//! The proptest twin of the `tower_rpc` fuzz target: client bytes into the tower's decoder never
//! panic, and what decodes encodes back to itself.

use gridchan_watchtower::rpc::{self, Request, Response};
use proptest::prelude::*;

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2_000)) {
        if let Ok(r) = rpc::decode::<Request>(&bytes) {
            prop_assert_eq!(rpc::decode::<Request>(&rpc::encode(&r)).unwrap(), r);
        }
        let _ = rpc::decode::<Response>(&bytes);
    }

    #[test]
    fn corrupted_requests_never_panic(flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut frame = rpc::encode(&Request::Held(gridchan_channel::ChannelId([3; 32])));
        for (at, byte) in flips {
            let i = at % frame.len();
            frame[i] ^= byte;
        }
        let _ = rpc::decode::<Request>(&frame);
    }
}

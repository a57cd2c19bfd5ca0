//! Peer bytes into the wire decoders: the connection's key proof (the first bytes a peer sends),
//! the frame length and the message decoder. Never a panic; what decodes re-encodes to the same
//! message; a proof made of arbitrary bytes never verifies.
#![no_main]

use gridchan_channel::wire::{frame_length, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let (Some(hello), Some(km)) = (data.get(..98), data.get(98..130)) {
        let hello: [u8; 98] = hello.try_into().expect("98 bytes");
        let km: [u8; 32] = km.try_into().expect("32 bytes");
        let _ = gridchan_transport::testing::check(&hello, &km);
    }
    let _ = frame_length(data);
    if let Ok(m) = Message::decode(data) {
        let again = Message::decode(&m.encode()).expect("an encoded message decodes");
        assert_eq!(again, m);
    }
});

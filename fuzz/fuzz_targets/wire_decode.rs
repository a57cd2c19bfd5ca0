//! Peer bytes into the wire decoder: never a panic; what decodes re-encodes to the same frame.
#![no_main]

use gridchan_channel::wire::{frame_length, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame_length(data);
    if let Ok(m) = Message::decode(data) {
        let again = Message::decode(&m.encode()).expect("an encoded message decodes");
        assert_eq!(again, m);
    }
});

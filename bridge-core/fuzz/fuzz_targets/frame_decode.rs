//! Whole datagrams: envelope + payload, with and without a session key.
#![no_main]
use bridge_core::protocol::{decode, SessionKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data, None);
    let _ = decode(data, Some(&SessionKey([0x42; 32])));
});

//! STANDARD_JSON JMID payloads; valid ones must re-encode and parse back equal.
#![no_main]
use bridge_core::protocol::JmidEvent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = JmidEvent::parse_json(data) {
        let mut out = vec![0u8; data.len() * 2 + 256];
        let n = event.write_json(&mut out).expect("re-encode");
        assert_eq!(JmidEvent::parse_json(&out[..n]).expect("re-parse"), event);
    }
});

//! COMPACT_JSONL JMID payloads; valid ones must re-encode and parse back equal.
#![no_main]
use bridge_core::protocol::JmidCompact;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = JmidCompact::parse(data) {
        let mut out = vec![0u8; data.len() * 2 + 256];
        let n = batch.write_jsonl(&mut out).expect("re-encode");
        assert_eq!(JmidCompact::parse(&out[..n]).expect("re-parse"), batch);
    }
});

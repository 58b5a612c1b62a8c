//! Audio payloads, binary and JSON; valid binary ones re-encode byte-exactly
//! (but for the reserved byte, which is written as 0).
#![no_main]
use bridge_core::protocol::AudioPayload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = AudioPayload::parse_binary(data) {
        let mut out = vec![0u8; data.len()];
        let n = a.write_binary(&mut out).expect("re-encode");
        assert_eq!(n, data.len());
        assert_eq!(&out[..19], &data[..19]);
        assert_eq!(&out[20..], &data[20..]);
        let mut f = vec![0f32; a.sample_count()];
        assert_eq!(a.read_into(&mut f), a.sample_count());
    }
    if let Ok(a) = AudioPayload::parse_json(data) {
        let mut out = vec![0u8; data.len() * 2 + 256];
        let n = a.write_json(&mut out).expect("re-encode");
        assert_eq!(AudioPayload::parse_json(&out[..n]).expect("re-parse"), a);
    }
});

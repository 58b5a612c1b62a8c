//! Heartbeat, goodbye, clock_ping/pong, sync_calibration_block and transport
//! payloads: the first byte picks the kind, the rest is the payload. Valid
//! messages must re-encode and decode back equal.
#![no_main]
use bridge_core::protocol::{
    decode, encode_frame, FormatType, Header, Message, MessageKind,
};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

const KINDS: [MessageKind; 6] = [
    MessageKind::Heartbeat,
    MessageKind::Goodbye,
    MessageKind::ClockPing,
    MessageKind::ClockPong,
    MessageKind::SyncCalibrationBlock,
    MessageKind::Transport,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else { return };
    let kind = KINDS[usize::from(pick) % KINDS.len()];
    let header = Header::new(kind, FormatType::StandardJson, Uuid::nil(), 1, 0, 0);
    let mut frame = vec![0u8; payload.len() + 64];
    let Ok(n) = encode_frame(&header, payload, None, &mut frame) else { return };
    if let Ok((_, msg)) = decode(&frame[..n], None) {
        let mut out = vec![0u8; payload.len() * 2 + 256];
        let m = msg.encode(&header, None, &mut out).expect("re-encode");
        let (_, back) = decode(&out[..m], None).expect("re-decode");
        assert_eq!(back, msg);
        let _: &Message = &back;
    }
});

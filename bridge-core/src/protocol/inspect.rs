//! Frames as JSON, for tools and tests: the shape of `toaster decode` and of
//! the test vectors (`tests/data/frames.json`'s README).
//!
//! Realtime-safe: no (builds `serde_json::Value`s). For tools only.

use super::audio::AudioPayload;
use super::frame::{FormatType, Frame, SessionKey};
use super::messages::Message;
use super::{decode, RejectReason};
use serde_json::{json, Map, Value};

/// Decode `datagram` and describe it: `{"valid":true,"header":{…},"payload":…}`
/// or `{"valid":false,"reason":"…"}`.
pub fn describe(datagram: &[u8], key: Option<&SessionKey>) -> Value {
    match decode(datagram, key) {
        Ok((frame, message)) => json!({
            "valid": true,
            "header": header_json(&frame),
            "payload": payload_json(&frame, &message),
        }),
        Err(reason) => rejection_json(reason),
    }
}

/// `{"valid":false,"reason":"…"}`.
pub fn rejection_json(reason: RejectReason) -> Value {
    json!({"valid": false, "reason": reason.as_str()})
}

/// Every header field, decoded, as in the vectors.
pub fn header_json(frame: &Frame<'_>) -> Value {
    let h = &frame.header;
    json!({
        "stream_type": h.stream_type as u8,
        "format_type": h.format_type as u8,
        "version": super::VERSION,
        "flags": h.flags.0,
        "kind": h.kind,
        "timestamp": h.timestamp,
        "sequence": h.sequence,
        "session": h.session.hyphenated().to_string(),
        "source": h.source,
    })
}

/// The payload as in the vectors: JSON messages as received (unknown fields
/// kept), COMPACT_JSONL as the list of line objects, audio with `samples`.
pub fn payload_json(frame: &Frame<'_>, message: &Message<'_>) -> Value {
    let raw = || serde_json::from_slice::<Value>(frame.payload).unwrap_or(Value::Null);
    match (message, frame.header.format_type) {
        (Message::JmidCompact(_), _) => Value::Array(
            std::str::from_utf8(frame.payload)
                .unwrap_or("")
                .split('\n')
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
                .collect(),
        ),
        (Message::Audio(audio), FormatType::GpuBinary) => {
            let mut m = Map::new();
            m.insert("stream_id".into(), audio.stream_id.into());
            m.insert("channels".into(), audio.channels.into());
            m.insert("sample_format".into(), (audio.sample_format as u8).into());
            m.insert("sample_rate".into(), audio.sample_rate.into());
            m.insert("first_sample".into(), audio.first_sample.into());
            m.insert("frames".into(), audio.frames.into());
            m.insert("jellie".into(), audio.jellie.into());
            m.insert("samples".into(), samples_json(audio));
            Value::Object(m)
        }
        (Message::Audio(audio), _) => {
            let mut v = raw();
            if let Value::Object(m) = &mut v {
                m.insert("samples".into(), samples_json(audio));
            }
            v
        }
        _ => raw(),
    }
}

/// Interleaved samples: integers for i16/i24, floats for f32.
pub fn samples_json(audio: &AudioPayload<'_>) -> Value {
    Value::Array(
        (0..audio.sample_count())
            .map(|i| match audio.sample_int(i) {
                Some(v) => Value::from(v),
                None => Value::from(f64::from(audio.sample_f32(i))),
            })
            .collect(),
    )
}

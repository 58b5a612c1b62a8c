//! The shipped JSON Schemas (`schemas/*.schema.json`) and the typed validator
//! agree: on every vector, and on systematic mutations of every valid JSON
//! vector (each required field removed, each field given a wrong type or an
//! out-of-range value).

use bridge_core::protocol::{decode_frame, encode_frame, FormatType, Header, Message, MessageKind};
use serde_json::{json, Value};

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas");

fn vectors() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/frames.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["vectors"].as_array().unwrap().clone()
}

fn schema(name: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(format!("{SCHEMAS}/{name}.schema.json"))
        .unwrap_or_else(|e| panic!("schema {name}: {e}"));
    let s: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&s).unwrap_or_else(|e| panic!("schema {name} invalid: {e}"))
}

fn schema_name(kind: MessageKind, format: FormatType) -> &'static str {
    match (kind, format) {
        (MessageKind::Jmid, FormatType::CompactJsonl) => "jmid_compact_line",
        _ => kind.name(),
    }
}

/// Does the payload satisfy the schema(s) of its kind?
fn schema_accepts(kind: MessageKind, format: FormatType, payload: &[u8]) -> bool {
    let validator = schema(schema_name(kind, format));
    let Ok(text) = std::str::from_utf8(payload) else {
        return false;
    };
    if format == FormatType::CompactJsonl {
        let lines: Vec<&str> = text.split('\n').filter(|l| !l.trim().is_empty()).collect();
        return !lines.is_empty()
            && lines
                .iter()
                .all(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| validator.is_valid(&v)));
    }
    serde_json::from_str::<Value>(text).is_ok_and(|v| validator.is_valid(&v))
}

fn typed_accepts(header: &Header, payload: &[u8]) -> bool {
    let mut buf = vec![0u8; payload.len() + 64];
    let n = encode_frame(header, payload, None, &mut buf).unwrap();
    let frame = decode_frame(&buf[..n], None).unwrap();
    Message::parse(&frame).is_ok()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// JSON-payload vectors whose envelope is fine: (name, header, payload, valid).
fn json_cases() -> Vec<(String, Header, Vec<u8>, bool)> {
    let mut cases = Vec::new();
    for v in vectors() {
        let bytes = unhex(v["hex"].as_str().unwrap());
        let key = v
            .get("key_hex")
            .and_then(Value::as_str)
            .map(|k| bridge_core::protocol::SessionKey::from_hex(k).unwrap());
        let Ok(frame) = decode_frame(&bytes, key.as_ref()) else {
            continue;
        };
        if frame.header.format_type == FormatType::GpuBinary {
            continue;
        }
        let mut header = frame.header;
        header.flags.0 &= !bridge_core::protocol::Flags::AUTH;
        cases.push((
            v["name"].as_str().unwrap().to_string(),
            header,
            frame.payload.to_vec(),
            v["valid"] == true,
        ));
    }
    cases
}

#[test]
fn every_schema_compiles_and_every_kind_has_one() {
    for kind in [
        MessageKind::Heartbeat,
        MessageKind::Goodbye,
        MessageKind::ClockPing,
        MessageKind::ClockPong,
        MessageKind::SyncCalibrationBlock,
        MessageKind::Transport,
        MessageKind::Jmid,
        MessageKind::Audio,
    ] {
        schema(kind.name());
    }
    schema("jmid_compact_line");
}

#[test]
fn schemas_and_typed_validator_agree_on_every_vector() {
    let cases = json_cases();
    assert!(cases.len() >= 20, "only {} JSON cases", cases.len());
    for (name, header, payload, valid) in cases {
        let kind = header.message_kind().unwrap();
        let by_schema = schema_accepts(kind, header.format_type, &payload);
        let by_type = typed_accepts(&header, &payload);
        assert_eq!(by_type, valid, "{name}: typed validator");
        assert_eq!(by_schema, valid, "{name}: schema");
    }
}

fn mutations(obj: &serde_json::Map<String, Value>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (field, value) in obj {
        if field == "type" {
            continue;
        }
        let mut removed = obj.clone();
        removed.remove(field);
        out.push((format!("remove {field}"), Value::Object(removed)));
        let bad: Vec<Value> = match value {
            Value::Number(_) => vec![
                json!("7"),
                json!(-1),
                json!(0.5),
                json!(1_000_000_000_000_u64),
                json!(null),
                json!(1e300),
                json!(-1e300),
            ],
            Value::String(_) => vec![json!(7), json!(null), json!("NOT-valid!"), json!([])],
            Value::Array(_) => vec![json!("x"), json!([]), json!([0, 0])],
            _ => vec![json!(0)],
        };
        for b in bad {
            let mut m = obj.clone();
            m.insert(field.clone(), b.clone());
            out.push((format!("{field} = {b}"), Value::Object(m)));
        }
    }
    out
}

#[test]
fn schemas_and_typed_validator_agree_on_mutations() {
    let mut checked = 0;
    for (name, header, payload, valid) in json_cases() {
        if !valid || header.format_type == FormatType::CompactJsonl {
            continue;
        }
        let kind = header.message_kind().unwrap();
        let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&payload) else {
            panic!("{name}")
        };
        for (what, mutated) in mutations(&obj) {
            let bytes = serde_json::to_vec(&mutated).unwrap();
            let by_schema = schema_accepts(kind, header.format_type, &bytes);
            let by_type = typed_accepts(&header, &bytes);
            assert_eq!(
                by_schema, by_type,
                "{name}: {what}: schema {by_schema}, typed {by_type}"
            );
            checked += 1;
        }
    }
    assert!(checked > 300, "only {checked} mutations checked");
}

//! `toaster decode` against every vector, through the real binary.

use serde_json::Value;
use std::process::Command;

fn vectors() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bridge-core/tests/data/frames.json"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["vectors"].as_array().unwrap().clone()
}

#[test]
fn decode_prints_the_vector_shapes() {
    for v in vectors() {
        let name = v["name"].as_str().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_toaster"));
        cmd.arg("decode");
        if let Some(k) = v.get("key_hex").and_then(Value::as_str) {
            cmd.args(["--key", k]);
        }
        // An empty datagram is given as an empty argument.
        cmd.arg(v["hex"].as_str().unwrap());
        let out = cmd.output().unwrap();
        let printed: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{name}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let valid = v["valid"].as_bool().unwrap();
        assert_eq!(printed["valid"], valid, "{name}");
        assert_eq!(out.status.code(), Some(if valid { 0 } else { 1 }), "{name}");
        if valid {
            assert_eq!(printed["header"], v["header"], "{name}");
            assert_eq!(printed["payload"], v["payload"], "{name}");
            assert_eq!(
                printed.as_object().unwrap().len(),
                3,
                "{name}: exactly valid/header/payload"
            );
        } else {
            assert_eq!(printed["reason"], v["reason"], "{name}");
            assert_eq!(
                printed.as_object().unwrap().len(),
                2,
                "{name}: exactly valid/reason"
            );
        }
    }
}

#[test]
fn decode_rejects_bad_arguments_with_status_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_toaster"))
        .args(["decode", "abc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_toaster"))
        .args(["decode", "--key", "00", "00"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

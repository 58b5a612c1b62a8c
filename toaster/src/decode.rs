//! `toaster decode [--key HEX] HEX`: decode one TOAST v2 frame and print one
//! JSON object, `{"valid":true,"header":{…},"payload":…}` or
//! `{"valid":false,"reason":"…"}` (the shapes of the test vectors).
//! Exit status: 0 valid, 1 rejected, 2 bad arguments.

use anyhow::{bail, Context};
use bridge_core::protocol::{inspect, SessionKey};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Session key (64 hex digits) for authenticated sessions.
    #[arg(long)]
    pub key: Option<String>,
    /// The whole datagram as hex (whitespace allowed); `-` reads it from stdin.
    pub hex: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let key = match &args.key {
        Some(k) => Some(SessionKey::from_hex(k.trim()).context("--key must be 64 hex digits")?),
        None => None,
    };
    let text = if args.hex == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        args.hex
    };
    let bytes = parse_hex(&text)?;
    let described = inspect::describe(&bytes, key.as_ref());
    println!("{described}");
    Ok(if described["valid"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn parse_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        bail!("hex input has an odd number of digits");
    }
    digits
        .chunks_exact(2)
        .map(|p| {
            let s = std::str::from_utf8(p).unwrap_or("zz");
            u8::from_str_radix(s, 16).with_context(|| format!("not hex: {s:?}"))
        })
        .collect()
}

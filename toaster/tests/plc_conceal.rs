//! CLI test of `toaster conceal`: real WAV files in, real WAV file out.

use std::path::Path;
use std::process::Command;

fn write_tone(path: &Path, spec: hound::WavSpec, frames: usize) -> Vec<f32> {
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let mut v = Vec::new();
    for i in 0..frames {
        for ch in 0..spec.channels {
            let x = 0.4
                * (2.0 * std::f32::consts::PI * (330.0 + 110.0 * ch as f32) * i as f32
                    / spec.sample_rate as f32)
                    .sin();
            v.push(x);
            match spec.sample_format {
                hound::SampleFormat::Float => w.write_sample(x).unwrap(),
                hound::SampleFormat::Int => w.write_sample((x * 32767.0) as i16).unwrap(),
            }
        }
    }
    w.finalize().unwrap();
    v
}

fn read(path: &Path) -> (hound::WavSpec, Vec<f32>) {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    let v = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().map(|s| s.unwrap()).collect(),
        hound::SampleFormat::Int => r
            .samples::<i16>()
            .map(|s| s.unwrap() as f32 / 32768.0)
            .collect(),
    };
    (spec, v)
}

fn conceal(
    method: &str,
    packet: usize,
    mask: &Path,
    input: &Path,
    output: &Path,
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_toaster"))
        .args([
            "conceal",
            "--method",
            method,
            "--packet",
            &packet.to_string(),
            "--loss-mask",
        ])
        .arg(mask)
        .arg("--in")
        .arg(input)
        .arg("--out")
        .arg(output)
        .output()
        .unwrap()
}

#[test]
fn conceal_keeps_format_and_fills_lost_packets() {
    let dir = std::env::temp_dir().join(format!("toaster-conceal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mask = dir.join("mask.txt");
    // 40 packets of 128 frames: lose packets 20, 21 and 30.
    let lines: Vec<&str> = (0..40)
        .map(|p| if [20, 21, 30].contains(&p) { "1" } else { "0" })
        .collect();
    std::fs::write(&mask, lines.join("\n") + "\n").unwrap();
    for (channels, rate, fmt, bits) in [
        (1u16, 48_000u32, hound::SampleFormat::Int, 16u16),
        (2, 44_100, hound::SampleFormat::Float, 32),
    ] {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: fmt,
        };
        let input = dir.join(format!("in{channels}.wav"));
        let reference = write_tone(&input, spec, 40 * 128 + 50);
        for method in ["zero", "repeat", "burg", "pnbtr"] {
            let output = dir.join(format!("out-{method}-{channels}.wav"));
            let res = conceal(method, 128, &mask, &input, &output);
            assert!(
                res.status.success(),
                "{method}: {}",
                String::from_utf8_lossy(&res.stderr)
            );
            let (ospec, y) = read(&output);
            assert_eq!(ospec, spec, "{method}: format kept");
            assert_eq!(y.len(), reference.len(), "{method}: length kept");
            let ch = channels as usize;
            let lost = 20 * 128 * ch..22 * 128 * ch;
            let err: f32 = y[lost.clone()]
                .iter()
                .zip(&reference[lost.clone()])
                .map(|(a, b)| (a - b).powi(2))
                .sum();
            let sig: f32 = reference[lost.clone()].iter().map(|a| a * a).sum();
            match method {
                "zero" => assert!(y[lost].iter().all(|&v| v == 0.0)),
                // A steady tone: the predictors must get well under the
                // signal's energy (0 dB); repeat at least produces audio.
                "burg" | "pnbtr" => assert!(err < 0.5 * sig, "{method}: err {err} sig {sig}"),
                _ => assert!(y[lost].iter().any(|&v| v != 0.0)),
            }
            // Received audio before the first gap is untouched (16-bit
            // round trip tolerance).
            let head = 10 * 128 * ch;
            assert!(y[..head]
                .iter()
                .zip(&reference[..head])
                .all(|(a, b)| (a - b).abs() < 1e-3));
        }
    }
    // Bad input is a clear error, not a panic.
    std::fs::write(&mask, "0\n2\n").unwrap();
    let res = conceal(
        "pnbtr",
        128,
        &mask,
        &dir.join("in1.wav"),
        &dir.join("bad.wav"),
    );
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("expected 0 or 1"));
    let res = conceal(
        "nonsense",
        128,
        &mask,
        &dir.join("in1.wav"),
        &dir.join("bad.wav"),
    );
    assert!(!res.status.success());
    std::fs::remove_dir_all(&dir).ok();
}

//! `toaster bench …`: measurements anyone can rerun. Human table by default,
//! `--json` for one JSON object.

use bridge_core::bench::{codec_cases, time_case};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand)]
pub enum What {
    /// TOAST v2 codec: encode/decode, JMID and transport parsing, CRC and BLAKE3.
    Codec(CodecArgs),
    /// Loopback latency (one-way transit and added playout latency, p50/p99) and CPU per stream.
    Net(crate::live::BenchNetArgs),
    /// MIDI delivery within a deadline vs loss (iid 10/33/50/66 %, Gilbert-Elliott), bursts vs bursts + journal, simulated network.
    Midi(crate::bench_net::Args),
}

#[derive(clap::Args)]
pub struct CodecArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Batches per case (the median of their means is reported).
    #[arg(long, default_value_t = 31)]
    pub batches: usize,
    /// Length of one batch, ms.
    #[arg(long, default_value_t = 20)]
    pub batch_ms: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Codec(a) => codec(a),
        What::Net(a) => crate::live::bench(crate::live::BenchCmd::Net(a)),
        What::Midi(a) => crate::bench_net::run_bench(crate::bench_net::BenchCmd::Net(a)),
    }
}

fn codec(args: CodecArgs) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    if !args.json {
        println!(
            "{:<8} {:<50} {:>10} {:>10} {:>10} {:>10}",
            "group", "case", "median ns", "p10 ns", "p90 ns", "MB/s"
        );
    }
    for mut case in codec_cases() {
        let t = time_case(
            &mut case,
            Duration::from_millis(args.batch_ms),
            args.batches,
        );
        let mbps = case.bytes as f64 / t.median_ns * 1e3;
        if !args.json {
            println!(
                "{:<8} {:<50} {:>10.1} {:>10.1} {:>10.1} {:>10.0}",
                case.group, case.name, t.median_ns, t.p10_ns, t.p90_ns, mbps
            );
        }
        rows.push(serde_json::json!({
            "group": case.group, "case": case.name, "bytes": case.bytes,
            "median_ns": t.median_ns, "p10_ns": t.p10_ns, "p90_ns": t.p90_ns, "mb_per_s": mbps,
        }));
    }
    if args.json {
        println!("{}", serde_json::json!({ "bench": "codec", "cases": rows }));
    }
    Ok(ExitCode::SUCCESS)
}

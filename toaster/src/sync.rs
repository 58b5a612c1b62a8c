//! `toaster sync`: clock and transport sync of N peers on the simulated
//! network (bridge_core::clock::syncsim), with injected clock offsets and
//! drifts, so the truth is known. Prints per-peer offset error (p99 after
//! the warm-up), drift error and transport start alignment; `--assert-*`
//! turn the targets into an exit code for CI.

use bridge_core::clock::syncsim::{self, SimConfig};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of peers.
    #[arg(long, default_value_t = 3)]
    pub peers: usize,
    /// Simulated seconds.
    #[arg(long, default_value_t = 15.0)]
    pub seconds: f64,
    /// One-way base delay, ms.
    #[arg(long, default_value_t = 0.1)]
    pub delay_ms: f64,
    /// One-way jitter, uniform ± this, ms.
    #[arg(long, default_value_t = 0.0)]
    pub jitter_ms: f64,
    /// Message loss probability (0–1).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Ping rate, Hz (1–100).
    #[arg(long, default_value_t = 20.0)]
    pub rate_hz: f64,
    /// Ping rate while a peer's drift is still uncertain (the start-up
    /// burst), Hz (1–100; 0: no burst).
    #[arg(long, default_value_t = 100.0)]
    pub burst_hz: f64,
    /// Injected clock offsets are uniform in ± this, ns.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub max_offset_ns: i64,
    /// Injected clock drifts are uniform in ± this, ppm.
    #[arg(long, default_value_t = 200.0)]
    pub max_drift_ppm: f64,
    /// Peer i starts at i × stagger seconds.
    #[arg(long, default_value_t = 0.0)]
    pub stagger_s: f64,
    /// Measure from this long after the last peer started, s.
    #[arg(long, default_value_t = 5.0)]
    pub warmup_s: f64,
    /// The master leaves silently at this time (s); the others re-elect.
    #[arg(long)]
    pub master_leaves_at_s: Option<f64>,
    /// Each peer also streams this many frames per second to the others
    /// (375: 128-sample audio blocks at 48 kHz); their header timestamps
    /// sharpen the clock models. 0: clock messages only.
    #[arg(long, default_value_t = 0.0)]
    pub stream_fps: f64,
    /// Seed (runs are deterministic).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Fail (exit 1) if any peer's offset error p99 exceeds this, µs.
    #[arg(long)]
    pub assert_p99_us: Option<f64>,
    /// Fail if any peer's drift error exceeds this, ppm.
    #[arg(long)]
    pub assert_drift_ppm: Option<f64>,
    /// Fail if any peer's |start error| exceeds this, samples.
    #[arg(long)]
    pub assert_start_samples: Option<f64>,
}

pub fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let config = SimConfig {
        peers: args.peers,
        seconds: args.seconds,
        delay_ms: args.delay_ms,
        jitter_ms: args.jitter_ms,
        loss: args.loss,
        ping_rate_hz: args.rate_hz,
        burst_hz: args.burst_hz,
        max_offset_ns: args.max_offset_ns,
        max_drift_ppm: args.max_drift_ppm,
        stagger_s: args.stagger_s,
        warmup_s: args.warmup_s,
        seed: args.seed,
        master_leaves_at_s: args.master_leaves_at_s,
        stream_fps: args.stream_fps,
        ..SimConfig::default()
    };
    let res = syncsim::run(&config)?;
    if args.json {
        println!("{}", serde_json::to_string(&res)?);
    } else {
        println!(
            "{} peers, {} s, delay {} ms ± {} ms, loss {}, ping {} Hz; master {}",
            config.peers,
            config.seconds,
            config.delay_ms,
            config.jitter_ms,
            config.loss,
            config.ping_rate_hz,
            res.master
        );
        println!(
            "{:<10} {:>7} {:>14} {:>10} {:>12} {:>10} {:>12} {:>10}",
            "peer",
            "master",
            "offset_ns",
            "drift_ppm",
            "err_p99_us",
            "err_p50_us",
            "drift_err",
            "start_smp"
        );
        for p in &res.peers {
            println!(
                "{:<10} {:>7} {:>14} {:>10.2} {:>12.3} {:>10.3} {:>12.4} {:>10.2}",
                p.peer_id,
                p.is_master,
                p.clock_offset_ns,
                p.clock_drift_ppm,
                p.offset_error_us_p99,
                p.offset_error_us_p50,
                p.drift_error_ppm,
                p.start_error_samples
            );
        }
    }
    let mut failures = Vec::new();
    // A peer that left (the vanished master) has no figures to assert.
    for p in res
        .peers
        .iter()
        .filter(|p| !p.start_error_samples.is_nan() || args.master_leaves_at_s.is_none())
    {
        if let Some(max) = args.assert_p99_us {
            if exceeds(p.offset_error_us_p99, max) {
                failures.push(format!(
                    "{}: offset error p99 {} µs > {max}",
                    p.peer_id, p.offset_error_us_p99
                ));
            }
        }
        if let Some(max) = args.assert_drift_ppm {
            if exceeds(p.drift_error_ppm, max) {
                failures.push(format!(
                    "{}: drift error {} ppm > {max}",
                    p.peer_id, p.drift_error_ppm
                ));
            }
        }
        if let Some(max) = args.assert_start_samples {
            if exceeds(p.start_error_samples.abs(), max) {
                failures.push(format!(
                    "{}: start error {} samples > ±{max}",
                    p.peer_id, p.start_error_samples
                ));
            }
        }
    }
    if failures.is_empty() {
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        for f in failures {
            eprintln!("toaster sync: FAIL {f}");
        }
        Ok(std::process::ExitCode::from(1))
    }
}

/// True when `value` is above `max` or not a number (a missing figure fails).
fn exceeds(value: f64, max: f64) -> bool {
    value.is_nan() || value > max
}

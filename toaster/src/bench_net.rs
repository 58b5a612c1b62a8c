//! `toaster bench net`, MIDI part: delivery within a deadline versus loss,
//! plain bursts against bursts plus the recovery journal, over the seeded
//! simulated network (`bridge_core::sim`) with real TOAST v2 jmid frames.
//!
//! Deterministic: the same options print the same table on every machine.
//!
//! Loss models: iid; Gilbert–Elliott stepped per packet (netem's `gemodel`,
//! ~20 % loss in bursts of 6 packets); Gilbert–Elliott in time (fades of 2
//! or 4 ms on average, ~20 % loss). For fades, no repetition scheme can beat
//! `1 − 0.2·exp(−(deadline − delay)/mean_fade)` on-time delivery (an event
//! sent into a fade longer than the deadline is late whatever is sent):
//! about 99.8 % for 2 ms fades and 97.9 % for 4 ms fades here (99.7 % and
//! 97.3 % counted from the sender's last repair at its 8 ms journal horizon).
//! The loopback-UDP latency and CPU parts of `bench net` live with the
//! driver; they call [`midi_rows`], [`midi_table`] and [`midi_json`].

use std::process::ExitCode;

use bridge_core::burst::simrun::{run, MidiSimParams, MidiSimReport};
use bridge_core::burst::BurstConfig;
use bridge_core::sim::{SimLinkConfig, SimLoss};

/// `toaster bench`.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// MIDI delivery vs loss (iid 10/33/50/66 %, Gilbert-Elliott per packet and in time) on the simulated network.
    Net(Args),
}

/// Options of the MIDI delivery bench.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// MIDI events per row.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// One-way base latency of the simulated path, ms.
    #[arg(long, default_value_t = 1.0)]
    pub latency_ms: f64,
    /// Uniform jitter (±) of the simulated path, ms.
    #[arg(long, default_value_t = 0.5)]
    pub jitter_ms: f64,
    /// An event counts as on time when delivered within this long, ms.
    #[arg(long, default_value_t = 10.0)]
    pub deadline_ms: f64,
    /// Mean gap between events, ms (a fifth of events come as chords, gap 0).
    #[arg(long, default_value_t = 10.0)]
    pub gap_ms: f64,
    /// Seed for the path and the event timing.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One row of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MidiRow {
    /// Loss model, e.g. `iid 33%` or `gilbert-elliott`.
    pub loss_model: String,
    /// Long-run loss rate of the model.
    pub model_loss: f64,
    /// Frame loss measured on the link in this run.
    pub measured_frame_loss: f64,
    /// `bursts` (adaptive k, no journal) or `bursts+journal`.
    pub mode: &'static str,
    /// What the run measured.
    pub report: MidiSimReport,
    /// `report.on_time / report.events`.
    pub on_time_ratio: f64,
    /// Frames sent per event.
    pub frames_per_event: f64,
}

/// The loss models of the table.
pub fn loss_models() -> Vec<(String, SimLoss)> {
    let mut v: Vec<(String, SimLoss)> = [0.10f32, 0.33, 0.50, 0.66]
        .iter()
        .map(|p| (format!("iid {:.0}%", p * 100.0), SimLoss::Iid(*p)))
        .collect();
    v.push(("gilbert-elliott/packet".into(), SimLoss::bursty_default()));
    v.push((
        "gilbert-elliott/time 2 ms fades".into(),
        SimLoss::bursty_time(2_000_000),
    ));
    v.push((
        "gilbert-elliott/time 4 ms fades".into(),
        SimLoss::bursty_time(4_000_000),
    ));
    v
}

/// Run every (loss model × mode) row.
pub fn midi_rows(args: &Args) -> Vec<MidiRow> {
    let mut rows = Vec::new();
    for (name, loss) in loss_models() {
        for (mode, burst) in [
            (
                "bursts",
                BurstConfig {
                    journal: false,
                    ..BurstConfig::default()
                },
            ),
            ("bursts+journal", BurstConfig::default()),
        ] {
            let params = MidiSimParams {
                link: SimLinkConfig {
                    latency_ns: (args.latency_ms * 1e6) as u64,
                    jitter_ns: (args.jitter_ms * 1e6) as u64,
                    loss,
                    seed: args.seed,
                    ..Default::default()
                },
                burst,
                adapt: true,
                events: args.events,
                mean_gap_ns: (args.gap_ms * 1e6) as u64,
                deadline_ns: (args.deadline_ms * 1e6) as u64,
                seed: args.seed,
            };
            let report = run(&params);
            rows.push(MidiRow {
                loss_model: name.clone(),
                model_loss: loss.mean_loss(),
                measured_frame_loss: 1.0
                    - report.frames_delivered as f64 / report.frames_sent.max(1) as f64,
                mode,
                on_time_ratio: report.on_time_ratio(),
                frames_per_event: report.frames_sent as f64 / report.events.max(1) as f64,
                report,
            });
        }
    }
    rows
}

/// The rows as a human table (Markdown, so it can go into the README as is).
pub fn midi_table(args: &Args, rows: &[MidiRow]) -> String {
    let mut s = format!(
        "MIDI delivery within {} ms, {} events per row, simulated path {} ms ± {} ms, seed {}\n\n",
        args.deadline_ms, args.events, args.latency_ms, args.jitter_ms, args.seed
    );
    s.push_str("| loss model | frame loss | mode | on time | delivered | duplicates | p50 | p99 | frames/event | mean k |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let e = r.report.events.max(1) as f64;
        s.push_str(&format!(
            "| {} | {:.1}% | {} | {:.3}% | {:.3}% | {} | {:.2} ms | {:.2} ms | {:.1} | {:.2} |\n",
            r.loss_model,
            r.measured_frame_loss * 100.0,
            r.mode,
            r.on_time_ratio * 100.0,
            r.report.delivered as f64 / e * 100.0,
            r.report.duplicates_delivered,
            r.report.delay_p50_ns as f64 / 1e6,
            r.report.delay_p99_ns as f64 / 1e6,
            r.frames_per_event,
            r.report.mean_burst,
        ));
    }
    s
}

/// The rows as one JSON value.
pub fn midi_json(args: &Args, rows: &[MidiRow]) -> serde_json::Value {
    serde_json::json!({
        "bench": "midi_delivery_vs_loss",
        "events_per_row": args.events,
        "latency_ms": args.latency_ms,
        "jitter_ms": args.jitter_ms,
        "deadline_ms": args.deadline_ms,
        "mean_gap_ms": args.gap_ms,
        "seed": args.seed,
        "rows": rows,
    })
}

/// `toaster bench net` (MIDI part).
pub fn run_bench(cmd: BenchCmd) -> anyhow::Result<ExitCode> {
    let BenchCmd::Net(args) = cmd;
    let rows = midi_rows(&args);
    if args.json {
        println!("{}", midi_json(&args, &rows));
    } else {
        print!("{}", midi_table(&args, &rows));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_every_row_and_journal_beats_plain_at_66() {
        let args = Args {
            events: 1500,
            latency_ms: 1.0,
            jitter_ms: 0.5,
            deadline_ms: 10.0,
            gap_ms: 10.0,
            seed: 1,
            json: false,
        };
        let rows = midi_rows(&args);
        assert_eq!(rows.len(), 14);
        assert!(rows.iter().all(|r| r.report.duplicates_delivered == 0));
        let at66: Vec<&MidiRow> = rows.iter().filter(|r| r.loss_model == "iid 66%").collect();
        assert!(at66[1].on_time_ratio > at66[0].on_time_ratio);
        assert!(at66[1].on_time_ratio >= 0.999);
        let table = midi_table(&args, &rows);
        assert_eq!(
            table
                .lines()
                .filter(|l| l.starts_with("| iid") || l.starts_with("| gilbert"))
                .count(),
            10
        );
        let j = midi_json(&args, &rows);
        assert_eq!(j["rows"].as_array().unwrap().len(), 14);
    }
}

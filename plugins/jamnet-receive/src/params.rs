//! JAMNet Receive's parameters (short stable IDs: never rename them) and
//! persisted settings.

use std::sync::Arc;

use bridge_core::worker::peer::{PeerReport, StreamFilter};
use jamnet_plugin_kit::SessionSettings;
use nice_plug::prelude::*;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

/// How the jitter buffer is sized.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitterMode {
    /// From measured jitter.
    #[id = "auto"]
    #[name = "Auto"]
    Auto,
    /// The "Jitter buffer" parameter.
    #[id = "manual"]
    #[name = "Manual"]
    Manual,
}

/// Concealment method for missing audio.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concealment {
    /// The project's best method at one stream: PNBTR on the CPU (the GPU
    /// path pays off when many streams share a dispatch, and a plugin must
    /// not depend on a GPU being free); repeat if it cannot be built.
    #[id = "auto"]
    #[name = "Auto (best available)"]
    Auto,
    /// PNBTR on the GPU (wgpu), if a GPU is available.
    #[id = "pnbtr-gpu"]
    #[name = "PNBTR (GPU)"]
    PnbtrGpu,
    /// PNBTR on the CPU.
    #[id = "pnbtr"]
    #[name = "PNBTR (CPU)"]
    Pnbtr,
    /// Burg linear prediction.
    #[id = "burg"]
    #[name = "Burg"]
    Burg,
    /// Repeat the last block, fading.
    #[id = "repeat"]
    #[name = "Repeat"]
    Repeat,
    /// Silence.
    #[id = "zero"]
    #[name = "Silence"]
    Zero,
}

/// Which stream this instance plays: chosen in the editor from those
/// discovered, remembered by the sending peer's name and the stream id
/// (peer ids change between runs, names do not; JAMNet Send sends stream 1).
/// Empty name and no id: every stream of the session, mixed.
///
/// Thread-safe: yes (plain value). Realtime-safe: no.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamChoice {
    /// Sending peer's name (empty: any).
    pub peer_name: String,
    /// Stream id within that peer (`None`: all of its streams).
    pub stream_id: Option<u16>,
}

impl StreamChoice {
    /// The live core's filter for this choice.
    pub fn filter(&self) -> StreamFilter {
        StreamFilter {
            peer_name: (!self.peer_name.is_empty()).then(|| self.peer_name.clone()),
            stream_id: self.stream_id,
        }
    }

    /// How the editor shows it, with the stream's announced name if any.
    pub fn label(&self, stream_name: Option<&str>) -> String {
        match (self.peer_name.is_empty(), self.stream_id, stream_name) {
            (true, None, _) => "all streams (mixed)".into(),
            (true, Some(id), _) => format!("stream {id} of any peer"),
            (false, None, _) => format!("{}: all streams", self.peer_name),
            (false, Some(id), None) => format!("{}: stream {id}", self.peer_name),
            (false, Some(id), Some(n)) => format!("{}: {n} (stream {id})", self.peer_name),
        }
    }
}

/// The choices the editor offers from a worker's report, each with the
/// stream name its sender announces (if any): every stream mixed, then each
/// received stream of each peer still present.
pub fn stream_options(r: &PeerReport) -> Vec<(StreamChoice, Option<String>)> {
    let mut options = vec![(StreamChoice::default(), None)];
    for p in &r.peers {
        for s in r.streams.iter().filter(|s| s.source == p.peer_id) {
            let c = StreamChoice {
                peer_name: p.name.clone(),
                stream_id: Some(s.stream_id),
            };
            let name = p
                .streams
                .iter()
                .find(|i| i.stream_id == s.stream_id)
                .and_then(|i| i.name.clone());
            if !options.iter().any(|(o, _)| *o == c) {
                options.push((c, name));
            }
        }
    }
    options
}

/// One line for the editor: which playout runs and which received rates
/// are converted to the host's `host_rate`, so that a `Low latency` that
/// does not apply, or a converted stream, is not a surprise.
pub fn playout_summary(r: &PeerReport, host_rate: u32, low_latency_on: bool) -> String {
    let khz = |hz: u32| format!("{} kHz", f64::from(hz) / 1000.0);
    let mode = if r.low_latency_active {
        "low latency".to_string()
    } else if low_latency_on && !r.streams.is_empty() {
        "buffered (Low latency plays one stream of 64-frame blocks)".to_string()
    } else {
        "buffered".to_string()
    };
    let mut converted: Vec<u32> = r
        .streams
        .iter()
        .map(|s| s.sample_rate)
        .filter(|&hz| hz != host_rate)
        .collect();
    converted.sort_unstable();
    converted.dedup();
    let rates: Vec<String> = converted.into_iter().map(khz).collect();
    if rates.is_empty() || host_rate == 0 {
        format!("Playout: {mode}")
    } else {
        format!(
            "Playout: {mode}; converting {} to {}",
            rates.join(", "),
            khz(host_rate)
        )
    }
}

/// Parameters and persisted settings of one JAMNet Receive instance.
///
/// Thread-safe: yes. Realtime-safe: parameter reads are; `process()` never
/// takes the persisted settings' locks.
#[derive(Params)]
pub struct ReceiveParams {
    /// Session, key, destination (listen address), peer name.
    #[persist = "session"]
    pub session: Arc<RwLock<SessionSettings>>,
    /// The chosen stream.
    #[persist = "stream"]
    pub stream: Arc<RwLock<StreamChoice>>,

    /// Jitter buffer sizing.
    #[id = "jmode"]
    pub jitter_mode: EnumParam<JitterMode>,
    /// Manual jitter buffer depth.
    #[id = "jms"]
    pub jitter_ms: FloatParam,
    /// Low-latency playout: blocks play as they arrive, no output cushion
    /// (the jitter buffer is only how long a missing block is waited for).
    #[id = "lolat"]
    pub low_latency: BoolParam,
    /// Concealment method.
    #[id = "concl"]
    pub concealment: EnumParam<Concealment>,
    /// Output gain.
    #[id = "gain"]
    pub gain: FloatParam,
    /// Pass received MIDI to the host's MIDI output.
    #[id = "midi"]
    pub midi_out: BoolParam,
}

impl Default for ReceiveParams {
    fn default() -> Self {
        Self {
            session: Arc::new(RwLock::new(SessionSettings::default())),
            stream: Arc::new(RwLock::new(StreamChoice::default())),
            jitter_mode: EnumParam::new("Jitter mode", JitterMode::Auto),
            jitter_ms: FloatParam::new(
                "Jitter buffer",
                10.0,
                FloatRange::Skewed {
                    min: 1.0,
                    max: 200.0,
                    factor: FloatRange::skew_factor(-1.5),
                },
            )
            .with_unit(" ms")
            .with_step_size(0.1),
            low_latency: BoolParam::new("Low latency", false),
            concealment: EnumParam::new("Concealment", Concealment::Auto),
            gain: FloatParam::new(
                "Output gain",
                util::db_to_gain(0.0),
                FloatRange::Skewed {
                    min: util::db_to_gain(-60.0),
                    max: util::db_to_gain(12.0),
                    factor: FloatRange::gain_skew_factor(-60.0, 12.0),
                },
            )
            .with_smoother(SmoothingStyle::Logarithmic(20.0))
            .with_unit(" dB")
            .with_value_to_string(formatters::v2s_f32_gain_to_db(1))
            .with_string_to_value(formatters::s2v_f32_gain_to_db()),
            midi_out: BoolParam::new("MIDI out", true),
        }
    }
}

//! # JAMNet Receive
//!
//! An instrument-style plugin (audio and MIDI out) that plays one stream of a
//! JAMNet session into the DAW. `process()` only pulls what the worker has
//! prepared (audio from the jitter buffer, concealed where missing; MIDI),
//! applies the output gain and meters; the worker owns the sockets, the
//! jitter buffer and concealment.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use jamnet_plugin_kit::{
    AtomicF32Cell, PeakMeter, RateCounter, Supervisor, WorkerError, WorkerStatus,
};
use nice_plug::prelude::*;
use nice_plug_egui::EguiEditorState;

pub mod editor;
pub mod params;

use params::ReceiveParams;

/// What the editor shows about one Receive instance.
///
/// Thread-safe: yes (atomics). Realtime-safe: the counters are.
#[derive(Debug, Default)]
pub struct ReceiveStats {
    /// Worker state and message.
    pub status: Arc<WorkerStatus>,
    /// Output peaks since the editor last looked.
    pub peak_l: PeakMeter,
    /// Output peaks since the editor last looked.
    pub peak_r: PeakMeter,
    /// Blocks `process()` handled.
    pub blocks: RateCounter,
    /// Audio datagrams received for the chosen stream.
    pub packets: RateCounter,
    /// End-to-end latency estimate (sender's block to our output), ms.
    pub latency_ms: AtomicF32Cell,
    /// Measured inter-arrival jitter, ms.
    pub jitter_ms: AtomicF32Cell,
    /// Blocks never received (before JELLIE or concealment).
    pub lost: AtomicU64,
    /// Blocks that arrived after their playout time.
    pub late: AtomicU64,
    /// Blocks rebuilt from JELLIE redundancy.
    pub jellie_rebuilt: AtomicU64,
    /// Blocks concealed (predicted).
    pub concealed: AtomicU64,
    /// MIDI events passed to the host.
    pub midi_out: RateCounter,
    /// Bumped by the editor when settings changed; the worker reloads them.
    pub settings_gen: AtomicU32,
    /// Sample rate the host activated us with (Hz).
    pub sample_rate: AtomicU32,
}

/// The JAMNet Receive plugin.
///
/// Thread-safe: no (host-serialised). Realtime-safe: `process()` is.
pub struct JamnetReceive {
    params: Arc<ReceiveParams>,
    stats: Arc<ReceiveStats>,
    supervisor: Supervisor,
    editor_state: Arc<EguiEditorState>,
    /// Debug-only negative control for the allocation checker.
    alloc_probe: bool,
}

impl Default for JamnetReceive {
    fn default() -> Self {
        let stats = Arc::new(ReceiveStats::default());
        Self {
            params: Arc::new(ReceiveParams::default()),
            supervisor: Supervisor::new(stats.status.clone()),
            stats,
            editor_state: editor::default_state(),
            alloc_probe: false,
        }
    }
}

impl JamnetReceive {
    /// Shared statistics (for tests and the editor).
    pub fn stats(&self) -> &Arc<ReceiveStats> {
        &self.stats
    }
}

fn run_worker(
    _params: Arc<ReceiveParams>,
    _stats: Arc<ReceiveStats>,
    _ctl: &jamnet_plugin_kit::WorkerCtl,
) -> Result<(), WorkerError> {
    Err(WorkerError::EngineUnavailable(
        "live audio receiving (bridge_core audio handle) is not in this build yet",
    ))
}

impl Plugin for JamnetReceive {
    const NAME: &'static str = "JAMNet Receive";
    const VENDOR: &'static str = "JAMNet";
    const URL: &'static str = "https://example.invalid/jamnet";
    const EMAIL: &'static str = "jamnet@example.invalid";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = &[
        AudioIOLayout {
            main_input_channels: None,
            main_output_channels: NonZeroU32::new(2),
            ..AudioIOLayout::const_default()
        },
        AudioIOLayout {
            main_input_channels: None,
            main_output_channels: NonZeroU32::new(1),
            ..AudioIOLayout::const_default()
        },
    ];
    const MIDI_OUTPUT: MidiConfig = MidiConfig::MidiCCs;

    type SysExMessage = ();
    type BackgroundTask = ();
    type Editor = nice_plug_egui::EguiEditor<editor::ReceiveEditor>;

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
    }

    fn editor(&mut self, _async_executor: AsyncExecutor<Self>) -> Option<Self::Editor> {
        editor::create(
            self.params.clone(),
            self.stats.clone(),
            self.editor_state.clone(),
        )
    }

    fn activate(
        &mut self,
        _audio_io_layout: &AudioIOLayout,
        buffer_config: &BufferConfig,
        _context: &mut impl ActivateContext<Self>,
    ) -> bool {
        self.stats
            .sample_rate
            .store(buffer_config.sample_rate as u32, Ordering::Relaxed);
        let (params, stats) = (self.params.clone(), self.stats.clone());
        self.supervisor
            .start("jamnet-receive", move |ctl| run_worker(params, stats, ctl));
        self.alloc_probe = jamnet_plugin_kit::alloc_probe_requested();
        true
    }

    fn deactivate(&mut self) {
        self.supervisor.stop();
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        _aux: &mut AuxiliaryBuffers,
        _context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        if self.alloc_probe {
            jamnet_plugin_kit::alloc_probe();
        }
        // No stream yet: play silence (never stale host memory), with the
        // gain smoother still advancing so automation stays in step.
        for mut frame in buffer.iter_samples() {
            let _gain = self.params.gain.smoothed.next();
            for s in frame.iter_mut() {
                *s = 0.0;
            }
        }
        let out = buffer.as_slice_immutable();
        if let Some(l) = out.first() {
            self.stats.peak_l.observe(l);
        }
        if let Some(r) = out.get(1) {
            self.stats.peak_r.observe(r);
        }
        self.stats.blocks.add(1);
        ProcessStatus::KeepAlive
    }
}

impl ClapPlugin for JamnetReceive {
    const CLAP_ID: &'static str = "net.jamnet.receive";
    const CLAP_DESCRIPTION: Option<&'static str> =
        Some("Plays a JAMNet stream (audio and MIDI) into the DAW");
    const CLAP_MANUAL_URL: Option<&'static str> = None;
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] = &[
        ClapFeature::Instrument,
        ClapFeature::Utility,
        ClapFeature::Stereo,
    ];
}

impl Vst3Plugin for JamnetReceive {
    const VST3_CLASS_ID: [u8; 16] = *b"JAMNetReceiveV1_";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Instrument, Vst3SubCategory::Network];
}

nice_export_clap!(JamnetReceive);
nice_export_vst3!(JamnetReceive);

//! # JAMNet Receive
//!
//! An instrument-style plugin (audio and MIDI out) that plays one stream of a
//! JAMNet session into the DAW. `process()` only pulls what the worker has
//! prepared (audio from the jitter buffer, concealed where missing; MIDI),
//! applies the output gain and meters; the worker owns the sockets, the
//! jitter buffer and concealment.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bridge_core::conceal::ConcealMethod;
use bridge_core::handle::{AudioHandle, LinkStats};
use bridge_core::worker::peer::{SharedReport, SharedStreamFilter};
use jamnet_plugin_kit::live::{LiveConfig, LiveEvent, LiveHooks, LiveSession};
use jamnet_plugin_kit::{AtomicF32Cell, PeakMeter, RateCounter, WorkerState, WorkerStatus};
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
    /// Bumped by the editor when settings changed; the live session applies
    /// them (restarting its worker) about 300 ms later.
    pub settings_gen: AtomicU32,
    /// Sample rate the host activated us with (Hz).
    pub sample_rate: AtomicU32,
    /// The live worker's counters (set on activate; the editor reads them).
    pub link: parking_lot::Mutex<Option<Arc<LinkStats>>>,
    /// The live worker's report: discovered peers and their streams, per
    /// stream counters (set on activate; the editor lists streams from it).
    pub report: parking_lot::Mutex<Option<SharedReport>>,
    /// Which streams the worker plays; the editor changes it live.
    pub filter: SharedStreamFilter,
    /// Playout delay for the worker, ns (0 = adaptive): `process()` stores
    /// the jitter parameters here every block, so changes apply live.
    pub playout_ns: Arc<AtomicU64>,
    /// Low-latency playout for the worker: `process()` stores the parameter
    /// here every block, so it applies live.
    pub low_latency: Arc<std::sync::atomic::AtomicBool>,
}

/// The JAMNet Receive plugin.
///
/// Thread-safe: no (host-serialised). Realtime-safe: `process()` is.
pub struct JamnetReceive {
    params: Arc<ReceiveParams>,
    stats: Arc<ReceiveStats>,
    /// Audio-thread end of the live link (made in `activate`).
    handle: Option<AudioHandle>,
    /// The live worker and its settings supervisor (stopped in `deactivate`).
    live: Option<LiveSession>,
    editor_state: Arc<EguiEditorState>,
    /// Debug-only negative control for the allocation checker.
    alloc_probe: bool,
}

impl Default for JamnetReceive {
    fn default() -> Self {
        let stats = Arc::new(ReceiveStats::default());
        Self {
            params: Arc::new(ReceiveParams::default()),
            handle: None,
            live: None,
            stats,
            editor_state: editor::default_state(),
            alloc_probe: false,
        }
    }
}

impl JamnetReceive {
    fn stop_live(&mut self) {
        // The session first (its supervisor would report the worker's exit
        // on a dropped handle as a failure), then the audio end.
        let was_live = self.live.take().is_some();
        self.handle = None;
        if was_live {
            self.stats.status.report(WorkerState::Stopped, "");
        }
    }

    /// Start the live session (from `activate`; tests call it directly):
    /// `channels` at `sample_rate`, the host's buffers at most
    /// `max_host_block`. Settings changes apply live from then on.
    fn start_live(&mut self, channels: usize, sample_rate: u32, max_host_block: usize) {
        self.stop_live();
        *self.stats.filter.lock() = self.params.stream.read().filter();
        let conceal = match self.params.concealment.value() {
            params::Concealment::Auto | params::Concealment::Pnbtr => ConcealMethod::Pnbtr,
            params::Concealment::PnbtrGpu => ConcealMethod::PnbtrGpu,
            params::Concealment::Burg => ConcealMethod::Burg,
            params::Concealment::Repeat => ConcealMethod::Repeat,
            params::Concealment::Zero => ConcealMethod::Zero,
        };
        self.stats
            .playout_ns
            .store(self.playout_ns(), Ordering::Relaxed);
        self.stats
            .low_latency
            .store(self.params.low_latency.value(), Ordering::Relaxed);
        let (params, gen_stats, stats) =
            (self.params.clone(), self.stats.clone(), self.stats.clone());
        let hooks = LiveHooks {
            settings: Box::new(move || params.session.read().clone()),
            settings_gen: Box::new(move || gen_stats.settings_gen.load(Ordering::Acquire)),
            publish: Box::new(move |event| match event {
                LiveEvent::Running {
                    settings,
                    local,
                    report,
                } => {
                    *stats.report.lock() = Some(report.clone());
                    stats.status.report(
                        WorkerState::Running,
                        format!("session {:?}, listening on {local}", settings.session),
                    );
                }
                LiveEvent::Failed(e) => {
                    *stats.report.lock() = None;
                    stats.status.report(WorkerState::Failed, e.to_string());
                }
            }),
        };
        let config = LiveConfig {
            channels,
            sample_rate,
            max_host_block,
            send: None,
            recv: jamnet_plugin_kit::live::ReceiveSpec {
                playout_delay_ms: 0.0,
                conceal,
                filter: Some(self.stats.filter.clone()),
                playout_live: Some(self.stats.playout_ns.clone()),
                low_latency_live: Some(self.stats.low_latency.clone()),
                play: true,
            },
            thread_name: "jamnet-receive".into(),
        };
        match jamnet_plugin_kit::live::start(config, hooks) {
            Ok((handle, link_stats, live)) => {
                *self.stats.link.lock() = Some(link_stats);
                self.handle = Some(handle);
                self.live = Some(live);
            }
            Err(e) => self.stats.status.report(WorkerState::Failed, e.to_string()),
        }
    }

    /// The jitter parameters as the live core's playout delay, ns: Auto is
    /// 0 (the adaptive jitter buffer follows the measured jitter), Manual
    /// the `Jitter buffer` value.
    fn playout_ns(&self) -> u64 {
        match self.params.jitter_mode.value() {
            params::JitterMode::Auto => 0,
            params::JitterMode::Manual => (f64::from(self.params.jitter_ms.value()) * 1e6) as u64,
        }
    }

    /// Shared statistics (for tests and the editor).
    pub fn stats(&self) -> &Arc<ReceiveStats> {
        &self.stats
    }
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
        audio_io_layout: &AudioIOLayout,
        buffer_config: &BufferConfig,
        _context: &mut impl ActivateContext<Self>,
    ) -> bool {
        self.stats
            .sample_rate
            .store(buffer_config.sample_rate as u32, Ordering::Relaxed);
        let channels = audio_io_layout
            .main_output_channels
            .map_or(2, NonZeroU32::get) as usize;
        self.start_live(
            channels,
            buffer_config.sample_rate as u32,
            buffer_config.max_buffer_size as usize,
        );
        self.alloc_probe = jamnet_plugin_kit::alloc_probe_requested();
        true
    }

    fn deactivate(&mut self) {
        self.stop_live();
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        _aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        if self.alloc_probe {
            jamnet_plugin_kit::alloc_probe();
        }
        let frames = buffer.samples();
        // Jitter parameters apply live (an atomic store; the worker reads it).
        self.stats
            .playout_ns
            .store(self.playout_ns(), Ordering::Relaxed);
        self.stats
            .low_latency
            .store(self.params.low_latency.value(), Ordering::Relaxed);
        match self.handle.as_mut() {
            Some(handle) => {
                let start = handle.output_frames();
                // Received (or rebuilt/concealed) audio, a whole buffer or
                // silence (counted as underrun; the audio waits as cushion).
                let real = handle.pull_planar(buffer.as_slice());
                // MIDI rides the audio's timeline: while the audio waits,
                // its events wait too. With no audio queued at all (a
                // MIDI-only stream) events play at once.
                let horizon = if real > 0 || handle.output_frames_queued() == 0 {
                    start + frames as u64
                } else {
                    start
                };
                let midi_out = self.params.midi_out.value();
                while let Some(ev) = handle.pop_midi_before(horizon) {
                    if !midi_out {
                        continue;
                    }
                    let offset = ev.offset_in(start, frames).unwrap_or(0);
                    if let Ok(note) = NoteEvent::from_midi(offset, ev.bytes()) {
                        if context.try_send_event(note).is_ok() {
                            self.stats.midi_out.add(1);
                        }
                    }
                }
            }
            None => {
                for ch in buffer.as_slice() {
                    ch.fill(0.0);
                }
            }
        }
        for mut frame in buffer.iter_samples() {
            let gain = self.params.gain.smoothed.next();
            for s in frame.iter_mut() {
                *s *= gain;
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

jamnet_plugin_kit::jamnet_export_clap!(JamnetReceive);
nice_export_vst3!(JamnetReceive);

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::net::NetConfig;
    use bridge_core::protocol::audio::SampleFormat;
    use bridge_core::worker::peer::{AudioSource, AudioTxConfig, LivePeer, PeerConfig};
    use bridge_core::worker::{MonotonicClock, Worker, WorkerConfig};
    use std::net::{Ipv4Addr, UdpSocket};
    use std::time::{Duration, Instant};

    #[test]
    fn the_editor_says_which_playout_runs_and_what_it_converts() {
        use bridge_core::worker::peer::{PeerReport, StreamReport};
        let stream = |sample_rate| StreamReport {
            source: bridge_core::protocol::messages::PeerId(1),
            stream_id: 1,
            channels: 2,
            sample_rate,
            block_frames: 64,
            jellie: false,
            first_sample: None,
            next_sample: None,
            stats: Default::default(),
            transit_p50_us: None,
            transit_p99_us: None,
            latency_p50_us: None,
            latency_p99_us: None,
        };
        let mut r = PeerReport::default();
        assert_eq!(
            params::playout_summary(&r, 48_000, true),
            "Playout: buffered"
        );
        r.streams.push(stream(48_000));
        r.low_latency_active = true;
        assert_eq!(
            params::playout_summary(&r, 48_000, true),
            "Playout: low latency"
        );
        r.low_latency_active = false;
        r.streams[0].sample_rate = 44_100;
        assert_eq!(
            params::playout_summary(&r, 48_000, true),
            "Playout: buffered (Low latency plays one stream of 64-frame blocks); \
             converting 44.1 kHz to 48 kHz"
        );
        r.low_latency_active = true;
        assert_eq!(
            params::playout_summary(&r, 48_000, true),
            "Playout: low latency; converting 44.1 kHz to 48 kHz"
        );
        r.low_latency_active = false;
        r.streams.push(stream(96_000));
        r.streams.push(stream(44_100));
        assert_eq!(
            params::playout_summary(&r, 48_000, false),
            "Playout: buffered; converting 44.1 kHz, 96 kHz to 48 kHz"
        );
    }

    fn free_port() -> u16 {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn wait_status(stats: &ReceiveStats, state: WorkerState, contains: &str) {
        let t0 = Instant::now();
        while stats.status.state() != state || !stats.status.message().contains(contains) {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "want {state:?} with {contains:?}, have {:?}: {}",
                stats.status.state(),
                stats.status.message()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The plugin as the editor drives it: an Apply of a new port and
    /// session while active moves the worker there (no re-activation), and
    /// a real sender's audio for the new session plays through the
    /// plugin's own handle. Invalid settings show as Failed and recover.
    #[test]
    fn settings_applied_in_the_editor_take_effect_while_active() {
        let (p1, p2) = (free_port(), free_port());
        let mut plugin = JamnetReceive::default();
        {
            let mut s = plugin.params.session.write();
            s.session = "rx-plugin-a".into();
            s.destination = format!("127.0.0.1:{p1}");
        }
        plugin.start_live(1, 48_000, 64);
        let stats = plugin.stats.clone();
        wait_status(&stats, WorkerState::Running, &format!(":{p1}"));
        let report_a = stats.report.lock().clone().unwrap();

        // The editor's Apply: persisted settings, then the generation bump.
        let edit = |destination: String| {
            let mut s = plugin.params.session.write();
            s.session = "rx-plugin-b".into();
            s.destination = destination;
            drop(s);
            stats.settings_gen.fetch_add(1, Ordering::Release);
        };
        edit("no such host".into());
        wait_status(&stats, WorkerState::Failed, "not an IP address");
        edit(format!("127.0.0.1:{p2}"));
        wait_status(&stats, WorkerState::Running, &format!(":{p2}"));
        assert!(stats.status.message().contains("rx-plugin-b"));
        let report_b = stats.report.lock().clone().unwrap();
        assert!(!Arc::ptr_eq(&report_a, &report_b), "report not replaced");
        assert!(UdpSocket::bind(("127.0.0.1", p1)).is_ok(), "old port held");

        // A real sender in session B, to the new port.
        let session_b = plugin.params.session.read().session_uuid();
        let (core, _) = LivePeer::new(PeerConfig {
            session: session_b,
            name: "remote".into(),
            stream_name: "Room mics".into(),
            unicast_targets: vec![(Ipv4Addr::LOCALHOST, p2).into()],
            use_group: false,
            audio_tx: Some((
                AudioTxConfig {
                    stream_id: 1,
                    channels: 1,
                    sample_rate: 48_000,
                    block_frames: 64,
                    format: SampleFormat::F32,
                    jellie: false,
                },
                AudioSource::Generator(Box::new(|_, block| block.fill(0.5))),
            )),
            ..PeerConfig::default()
        });
        let sender = Worker::spawn(
            WorkerConfig {
                net: NetConfig {
                    bind_ip: Ipv4Addr::LOCALHOST,
                    group: None,
                    ..NetConfig::default()
                },
                ..WorkerConfig::default()
            },
            Arc::new(MonotonicClock),
            core,
            None,
            Arc::new(LinkStats::default()),
        )
        .unwrap();
        // Pull host-sized blocks from the plugin's handle, paced in real time.
        let handle = plugin.handle.as_mut().expect("handle kept");
        let mut out = [[0.0f32; 64]; 1];
        let t0 = Instant::now();
        let mut heard = false;
        for n in 1..=3_000u32 {
            if handle.pull_planar(&mut out) == 64 && out[0].iter().all(|&s| s == 0.5) {
                heard = true;
                break;
            }
            let due = t0 + Duration::from_micros(1_333) * n;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        assert!(
            heard,
            "no audio from the new session: {:?}",
            handle.stats().snapshot()
        );
        // The editor's stream picker lists it by peer and stream name (once
        // a heartbeat and a report refresh came).
        let labels = || -> Vec<String> {
            params::stream_options(&report_b.lock())
                .iter()
                .map(|(c, n)| c.label(n.as_deref()))
                .collect()
        };
        let t0 = Instant::now();
        while labels().len() < 2 && t0.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let labels = labels();
        assert_eq!(
            labels,
            ["all streams (mixed)", "remote: Room mics (stream 1)"],
            "{labels:?}"
        );
        drop(sender);
        plugin.stop_live();
        assert_eq!(stats.status.state(), WorkerState::Stopped);
    }
}

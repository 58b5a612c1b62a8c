//! # JAMNet Send
//!
//! An audio effect that passes its input through unchanged and streams it
//! (and its MIDI input, as JMID) to a JAMNet session. The plugin is a thin
//! shell: `process()` only meters, counts and hands blocks to the worker
//! through lock-free structures; the worker owns the sockets.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bridge_core::handle::{AudioHandle, LinkStats, MidiEvent};
use bridge_core::protocol::audio::SampleFormat;
use jamnet_plugin_kit::live::{LiveConfig, LiveEvent, LiveHooks, LiveSession, SendSpec};
use jamnet_plugin_kit::{PeakMeter, RateCounter, WorkerState, WorkerStatus};
use nice_plug::midi::MidiResult;
use nice_plug::prelude::*;
use nice_plug_egui::EguiEditorState;

pub mod editor;
pub mod params;

use params::SendParams;

/// What the editor shows about one Send instance; written by `process()`
/// and the worker, read by the editor.
///
/// Thread-safe: yes (atomics; the status message has its own lock that
/// `process()` never takes). Realtime-safe: the counters are.
#[derive(Debug, Default)]
pub struct SendStats {
    /// Worker state and message.
    pub status: Arc<WorkerStatus>,
    /// Peak of the left (or mono) input since the editor last looked.
    pub peak_l: PeakMeter,
    /// Peak of the right input since the editor last looked.
    pub peak_r: PeakMeter,
    /// Blocks `process()` handled.
    pub blocks: RateCounter,
    /// MIDI events received from the host.
    pub midi_in: RateCounter,
    /// Datagrams sent by the worker.
    pub packets: RateCounter,
    /// Send errors (socket errors, or blocks the worker could not take in time).
    pub send_errors: AtomicU64,
    /// Peers currently listening to this stream (from their heartbeats).
    pub listeners: AtomicU32,
    /// Bumped by the editor when the session settings changed; the live
    /// session applies them (restarting its worker) about 300 ms later.
    pub settings_gen: AtomicU32,
    /// Sample rate the host activated us with (Hz).
    pub sample_rate: AtomicU32,
    /// Input channel count the host activated us with.
    pub channels: AtomicU32,
    /// The live worker's counters (set on activate; the editor reads them).
    pub link: parking_lot::Mutex<Option<Arc<LinkStats>>>,
    /// Local unicast address of the worker's socket.
    pub local: parking_lot::Mutex<Option<std::net::SocketAddr>>,
}

/// The JAMNet Send plugin.
///
/// Thread-safe: no (the host serialises calls as nice-plug requires).
/// Realtime-safe: `process()` is (proven under `assert_process_allocs`).
pub struct JamnetSend {
    params: Arc<SendParams>,
    stats: Arc<SendStats>,
    /// Audio-thread end of the live link (made in `activate`).
    handle: Option<AudioHandle>,
    /// The live worker and its settings supervisor (stopped in `deactivate`).
    live: Option<LiveSession>,
    editor_state: Arc<EguiEditorState>,
    /// Debug-only negative control for the allocation checker.
    alloc_probe: bool,
}

impl Default for JamnetSend {
    fn default() -> Self {
        let stats = Arc::new(SendStats::default());
        Self {
            params: Arc::new(SendParams::default()),
            handle: None,
            live: None,
            stats,
            editor_state: editor::default_state(),
            alloc_probe: false,
        }
    }
}

impl JamnetSend {
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
        let spec = SendSpec {
            format: match self.params.format.value() {
                params::WireFormat::I16 => SampleFormat::I16,
                params::WireFormat::I24 => SampleFormat::I24,
                params::WireFormat::F32 => SampleFormat::F32,
            },
            jellie: self.params.jellie.value(),
            midi_burst: self.params.burst.value() as u8,
            stream_name: self.params.stream_name.clone(),
        };
        let (params, gen_stats, stats) =
            (self.params.clone(), self.stats.clone(), self.stats.clone());
        let hooks = LiveHooks {
            settings: Box::new(move || params.session.read().clone()),
            settings_gen: Box::new(move || gen_stats.settings_gen.load(Ordering::Acquire)),
            publish: Box::new(move |event| match event {
                LiveEvent::Running {
                    settings, local, ..
                } => {
                    *stats.local.lock() = Some(local);
                    stats.status.report(
                        WorkerState::Running,
                        format!("session {:?}, sending from {local}", settings.session),
                    );
                }
                LiveEvent::Failed(e) => {
                    *stats.local.lock() = None;
                    stats.status.report(WorkerState::Failed, e.to_string());
                }
            }),
        };
        let config = LiveConfig {
            channels,
            sample_rate,
            max_host_block,
            send: Some(spec),
            // Send passes its input through and never plays what it hears
            // (it listens for peers and their receive reports only): other
            // peers' streams are counted, not rendered.
            recv: jamnet_plugin_kit::live::ReceiveSpec {
                playout_delay_ms: 20.0,
                conceal: bridge_core::conceal::ConcealMethod::Zero,
                filter: None,
                playout_live: None,
                low_latency_live: None,
                play: false,
            },
            thread_name: "jamnet-send".into(),
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

    /// Shared statistics (for tests and the editor).
    pub fn stats(&self) -> &Arc<SendStats> {
        &self.stats
    }
}

impl Plugin for JamnetSend {
    const NAME: &'static str = "JAMNet Send";
    const VENDOR: &'static str = "JAMNet";
    const URL: &'static str = "https://example.invalid/jamnet";
    const EMAIL: &'static str = "jamnet@example.invalid";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = &[
        AudioIOLayout {
            main_input_channels: NonZeroU32::new(2),
            main_output_channels: NonZeroU32::new(2),
            ..AudioIOLayout::const_default()
        },
        AudioIOLayout {
            main_input_channels: NonZeroU32::new(1),
            main_output_channels: NonZeroU32::new(1),
            ..AudioIOLayout::const_default()
        },
    ];
    const MIDI_INPUT: MidiConfig = MidiConfig::MidiCCs;
    const SAMPLE_ACCURATE_AUTOMATION: bool = false;

    type SysExMessage = ();
    type BackgroundTask = ();
    type Editor = nice_plug_egui::EguiEditor<editor::SendEditor>;

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
        let channels = audio_io_layout
            .main_input_channels
            .map_or(0, NonZeroU32::get);
        self.stats.channels.store(channels, Ordering::Relaxed);
        self.stats
            .sample_rate
            .store(buffer_config.sample_rate as u32, Ordering::Relaxed);
        self.start_live(
            channels.max(1) as usize,
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
        // Audio passes through unchanged: nice-plug already copied input to
        // output; we only look at it.
        let channels = buffer.as_slice_immutable();
        if let Some(l) = channels.first() {
            self.stats.peak_l.observe(l);
        }
        if let Some(r) = channels.get(1) {
            self.stats.peak_r.observe(r);
        }
        let enabled = self.params.enabled.value();
        let send_midi = self.params.midi.value();
        let block_start = self.handle.as_ref().map_or(0, |h| h.input_frames());
        let mut midi = 0;
        while let Some(event) = context.next_event() {
            midi += 1;
            if !(enabled && send_midi) {
                continue;
            }
            if let (Some(handle), Some(MidiResult::Basic(bytes))) =
                (self.handle.as_mut(), event.as_midi())
            {
                let len = midi_len(bytes[0]);
                if let Some(ev) =
                    MidiEvent::new(block_start + u64::from(event.timing()), 0, &bytes[..len])
                {
                    handle.push_midi(ev);
                }
            }
        }
        if let Some(handle) = self.handle.as_mut() {
            if enabled {
                handle.push_planar(buffer.as_slice_immutable());
            }
        }
        if midi > 0 {
            self.stats.midi_in.add(midi);
        }
        self.stats.blocks.add(1);
        ProcessStatus::Normal
    }
}

/// Length of a channel voice message from its status byte.
fn midi_len(status: u8) -> usize {
    match status & 0xf0 {
        0xc0 | 0xd0 => 2,
        _ => 3,
    }
}

impl ClapPlugin for JamnetSend {
    const CLAP_ID: &'static str = "net.jamnet.send";
    const CLAP_DESCRIPTION: Option<&'static str> =
        Some("Streams this track's audio and MIDI to a JAMNet session");
    const CLAP_MANUAL_URL: Option<&'static str> = None;
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] = &[
        ClapFeature::AudioEffect,
        ClapFeature::Utility,
        ClapFeature::Stereo,
        ClapFeature::Mono,
    ];
}

impl Vst3Plugin for JamnetSend {
    const VST3_CLASS_ID: [u8; 16] = *b"JAMNetSendV1____";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Fx, Vst3SubCategory::Network];
}

jamnet_plugin_kit::jamnet_export_clap!(JamnetSend);
nice_export_vst3!(JamnetSend);

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::protocol::frame::decode_frame;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    fn wait_status(stats: &SendStats, state: WorkerState, contains: &str) {
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

    /// Session frames for `session` arriving on `sock` within a second.
    fn frames_for(sock: &UdpSocket, settings: &jamnet_plugin_kit::SessionSettings) -> usize {
        let session = settings.session_uuid();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let t0 = Instant::now();
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while t0.elapsed() < Duration::from_secs(1) {
            if let Ok((len, _)) = sock.recv_from(&mut buf) {
                if decode_frame(&buf[..len], None).is_ok_and(|f| f.header.session == session) {
                    n += 1;
                }
            }
        }
        n
    }

    /// The plugin as the editor drives it: an Apply of a new destination
    /// and session while active sends there from then on (no
    /// re-activation), through the plugin's own handle.
    #[test]
    fn settings_applied_in_the_editor_take_effect_while_active() {
        let old_dest = UdpSocket::bind("127.0.0.1:0").unwrap();
        let new_dest = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut plugin = JamnetSend::default();
        {
            let mut s = plugin.params.session.write();
            s.session = "tx-plugin-a".into();
            s.destination = old_dest.local_addr().unwrap().to_string();
        }
        plugin.start_live(1, 48_000, 64);
        let stats = plugin.stats.clone();
        wait_status(&stats, WorkerState::Running, "tx-plugin-a");
        let local_a = stats.local.lock().unwrap();
        let settings_a = plugin.params.session.read().clone();
        for _ in 0..10 {
            plugin.handle.as_mut().unwrap().push_planar(&[[0.1f32; 64]]);
        }
        assert!(frames_for(&old_dest, &settings_a) > 0);

        {
            let mut s = plugin.params.session.write();
            s.session = "tx-plugin-b".into();
            s.destination = new_dest.local_addr().unwrap().to_string();
        }
        stats.settings_gen.fetch_add(1, Ordering::Release);
        wait_status(&stats, WorkerState::Running, "tx-plugin-b");
        assert_ne!(stats.local.lock().unwrap(), local_a, "same socket");
        let session_b = plugin.params.session.read().session_uuid();
        // Audio pushed through the plugin's handle goes to the new place.
        let handle = plugin.handle.as_mut().expect("handle kept");
        let pushed_before = handle.stats().snapshot().audio_frames_pushed;
        for _ in 0..40 {
            handle.push_planar(&[[0.25f32; 64]]);
        }
        let mut buf = [0u8; 2048];
        new_dest
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let t0 = Instant::now();
        let mut audio = 0;
        while t0.elapsed() < Duration::from_secs(2) && audio < 40 {
            let Ok((len, _)) = new_dest.recv_from(&mut buf) else {
                break;
            };
            let Ok(f) = decode_frame(&buf[..len], None) else {
                continue;
            };
            if f.header.session != session_b {
                continue;
            }
            if let Ok(bridge_core::protocol::messages::Message::Audio(a)) =
                bridge_core::protocol::messages::Message::parse(&f)
            {
                assert!((0..a.sample_count()).all(|i| a.sample_f32(i) == 0.25));
                audio += 1;
            }
        }
        assert_eq!(audio, 40, "audio blocks at the new destination");
        assert!(handle.stats().snapshot().audio_frames_pushed >= pushed_before + 40 * 64);
        plugin.stop_live();
        assert_eq!(stats.status.state(), WorkerState::Stopped);
    }
}

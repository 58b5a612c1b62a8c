//! `jamnet-clap-host`: a small CLAP host built on `clack-host`, used to test
//! the JAMNet `.clap` bundles the way a DAW uses them (no ready CLAP host
//! ships in Debian or PyPI).
//!
//! ```text
//! jamnet-clap-host check BUNDLE.clap...   load, activate, process with a moving
//!                                         transport, check output, params, state
//!                                         round-trip, all instances alive at once
//! jamnet-clap-host bench [--blocks N] [--paced] [--follow] BUNDLE.clap...
//!                                         process() cost per 64-sample block
//! jamnet-clap-host follow [--multicast] TRANSPORT.clap
//!                                         JAMNet Transport in follow mode, fed
//!                                         real UDP `transport` frames (play at
//!                                         120 BPM, seek, stop) on loopback,
//!                                         processed in real time: checks MIDI
//!                                         Clock rate and spacing, Start, SPP,
//!                                         Continue, Stop, MTC quarter frames
//!                                         (unicast, or a loopback multicast group)
//! jamnet-clap-host follow-host TRANSPORT.clap
//!                                         follow mode with Host transport control
//!                                         in a host offering CLAP transport
//!                                         control: the host's own transport must
//!                                         start, seek and stop with the session
//! jamnet-clap-host live-settings SEND.clap RECEIVE.clap
//!                                         session settings restored into active
//!                                         Send and Receive while process() runs
//!                                         in real time: both move (port, session,
//!                                         destination) without re-activation
//! jamnet-clap-host alloc-probe BUNDLE.clap
//!                                         negative control: with
//!                                         JAMNET_DEBUG_ALLOC_IN_PROCESS=1 a debug
//!                                         bundle must abort in process()
//! jamnet-clap-host gui [--out DIR] [--settle-ms N] BUNDLE.clap...
//!                                         open each editor through the CLAP gui
//!                                         extension (X11, embedded in a window
//!                                         this host creates) while processing in
//!                                         real time, check the rendered frame,
//!                                         save DIR/<bundle>.png (needs DISPLAY)
//! ```
//!
//! Run against DEBUG bundles (`cargo xtask bundle …` without `--release`),
//! `check` is the allocation proof: nice-plug's `assert_process_allocs`
//! aborts the process on any allocation inside `process()`.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{anyhow, bail, ensure, Context, Result};
use clack_extensions::audio_ports::{AudioPortInfoBuffer, PluginAudioPorts};
use clack_extensions::gui::{GuiSize, HostGui, HostGuiImpl, PluginGui};
use clack_extensions::params::{ParamInfoBuffer, ParamInfoFlags, PluginParams};
use clack_extensions::state::{HostState, HostStateImpl, PluginState};
use clack_host::events::event_types::{
    MidiEvent, MidiSysExEvent, ParamValueEvent, TransportEvent, TransportFlags,
};
use clack_host::events::io::{OutputEventBuffer, TryPushError};
use clack_host::events::{EventFlags, UnknownEvent};
use clack_host::prelude::*;
use clack_host::utils::{BeatTime, SecondsTime};

mod gui;
mod latency;
mod transport_control;

use transport_control::{
    HostTransportControl, HostTransportControlImpl, TransportRequest, TransportRequests,
};

const SAMPLE_RATE: f64 = 48_000.0;
const BLOCK: usize = 64;
const TEMPO: f64 = 133.0;

struct Host;

struct Shared {
    state: OnceLock<Option<PluginState>>,
    params: OnceLock<Option<PluginParams>>,
    audio_ports: OnceLock<Option<PluginAudioPorts>>,
    gui: OnceLock<Option<PluginGui>>,
    callback_requested: AtomicBool,
    /// Offer `clap.transport-control` (only `follow-host` does, so every
    /// other check sees a host without it).
    offer_transport_control: bool,
    transport_requests: TransportRequests,
}

impl HostTransportControlImpl for Shared {
    fn transport_request(&self, r: TransportRequest) {
        self.transport_requests.push(r);
    }
}

impl<'a> SharedHandler<'a> for Shared {
    fn initializing(&self, instance: InitializingPluginHandle<'a>) {
        let _ = self.state.set(instance.get_extension());
        let _ = self.params.set(instance.get_extension());
        let _ = self.audio_ports.set(instance.get_extension());
        let _ = self.gui.set(instance.get_extension());
    }
    fn request_restart(&self) {}
    fn request_process(&self) {}
    fn request_callback(&self) {
        self.callback_requested.store(true, Ordering::Release);
    }
}

/// The host side of the gui extension (nice-plug requires it before it opens
/// an editor). The harness's parent window has a fixed size, so resize
/// requests are refused.
impl HostGuiImpl for Shared {
    fn resize_hints_changed(&self) {}
    fn request_resize(&self, _new_size: GuiSize) -> Result<(), HostError> {
        Err(HostError::Message("the test harness does not resize"))
    }
    fn request_show(&self) -> Result<(), HostError> {
        Ok(())
    }
    fn request_hide(&self) -> Result<(), HostError> {
        Ok(())
    }
    fn closed(&self, _was_destroyed: bool) {}
}

struct MainThread;
impl<'a> MainThreadHandler<'a> for MainThread {}
impl HostStateImpl for MainThread {
    fn mark_dirty(&self) {}
}

impl HostHandlers for Host {
    type Shared<'a> = Shared;
    type MainThread<'a> = MainThread;
    type AudioProcessor<'a> = ();

    fn declare_extensions(builder: &mut HostExtensions<Self>, shared: &Self::Shared<'_>) {
        builder.register::<HostState>();
        builder.register::<HostGui>();
        if shared.offer_transport_control {
            builder.register::<HostTransportControl>();
        }
    }
}

/// One loaded plugin instance.
struct Loaded {
    name: String,
    id: CString,
    instance: PluginInstance<Host>,
    inputs: usize,
    outputs: usize,
}

fn host_info() -> Result<HostInfo> {
    Ok(HostInfo::new(
        "jamnet-clap-host",
        "JAMNet",
        "https://example.invalid/jamnet",
        "0.1.0",
    )?)
}

fn load_entry(path: &Path) -> Result<PluginEntry> {
    // SAFETY: loading a plugin library runs its initialisers; these are the
    // bundles this repository builds, which is what this harness exists to test.
    let path =
        std::fs::canonicalize(path).with_context(|| format!("no bundle at {}", path.display()))?;
    unsafe { PluginEntry::load(&path) }.with_context(|| format!("loading {}", path.display()))
}

fn instantiate(entry: &PluginEntry) -> Result<Loaded> {
    instantiate_with(entry, false)
}

/// Instantiate, offering transport control or not.
fn instantiate_with(entry: &PluginEntry, offer_transport_control: bool) -> Result<Loaded> {
    let factory = entry
        .get_plugin_factory()
        .ok_or_else(|| anyhow!("no plugin factory"))?;
    let descriptors: Vec<_> = factory.plugin_descriptors().collect();
    ensure!(
        descriptors.len() == 1,
        "expected one plugin per bundle, got {}",
        descriptors.len()
    );
    let d = &descriptors[0];
    let id = d
        .id()
        .ok_or_else(|| anyhow!("descriptor without id"))?
        .to_owned();
    let name = d
        .name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut instance = PluginInstance::<Host>::new(
        |_| Shared {
            state: OnceLock::new(),
            params: OnceLock::new(),
            audio_ports: OnceLock::new(),
            gui: OnceLock::new(),
            callback_requested: AtomicBool::new(false),
            offer_transport_control,
            transport_requests: TransportRequests::default(),
        },
        |_| MainThread,
        entry,
        &id,
        &host_info()?,
    )?;
    let ports = instance
        .access_shared_handler(|s| *s.audio_ports.get().unwrap_or(&None))
        .ok_or_else(|| anyhow!("{name}: no audio-ports extension"))?;
    let mut count = |is_input: bool| -> usize {
        let mut buf = AudioPortInfoBuffer::new();
        let handle = instance.plugin_handle();
        let n = ports.count(&handle, is_input);
        (0..n)
            .filter_map(|i| {
                ports
                    .get(&handle, i, is_input, &mut buf)
                    .map(|p| p.channel_count as usize)
            })
            .sum()
    };
    let inputs = count(true);
    let outputs = count(false);
    Ok(Loaded {
        name,
        id,
        instance,
        inputs,
        outputs,
    })
}

/// Parameter ids, names and ranges.
struct ParamDesc {
    id: ClapId,
    name: String,
    min: f64,
    max: f64,
    default: f64,
    stepped: bool,
}

fn list_params(p: &mut Loaded) -> Result<Vec<ParamDesc>> {
    let ext = p
        .instance
        .access_shared_handler(|s| *s.params.get().unwrap_or(&None))
        .ok_or_else(|| anyhow!("{}: no params extension", p.name))?;
    let handle = p.instance.plugin_handle();
    let mut out = Vec::new();
    let mut buf = ParamInfoBuffer::new();
    for i in 0..ext.count(&handle) {
        let info = ext
            .get_info(&handle, i, &mut buf)
            .ok_or_else(|| anyhow!("param {i}: no info"))?;
        out.push(ParamDesc {
            id: info.id,
            name: String::from_utf8_lossy(info.name).into_owned(),
            min: info.min_value,
            max: info.max_value,
            default: info.default_value,
            stepped: info.flags.contains(ParamInfoFlags::IS_STEPPED),
        });
    }
    Ok(out)
}

fn param_value(p: &mut Loaded, id: ClapId) -> Result<f64> {
    let ext = p
        .instance
        .access_shared_handler(|s| *s.params.get().unwrap_or(&None))
        .ok_or_else(|| anyhow!("no params extension"))?;
    ext.get_value(&p.instance.plugin_handle(), id)
        .ok_or_else(|| anyhow!("param {id:?}: no value"))
}

fn save_state(p: &mut Loaded) -> Result<Vec<u8>> {
    let ext = p
        .instance
        .access_shared_handler(|s| *s.state.get().unwrap_or(&None))
        .ok_or_else(|| anyhow!("{}: no state extension", p.name))?;
    let mut out = Vec::new();
    ext.save(&p.instance.plugin_handle(), &mut out)?;
    Ok(out)
}

fn load_state(p: &mut Loaded, bytes: &[u8]) -> Result<()> {
    let ext = p
        .instance
        .access_shared_handler(|s| *s.state.get().unwrap_or(&None))
        .ok_or_else(|| anyhow!("{}: no state extension", p.name))?;
    ext.load(
        &p.instance.plugin_handle(),
        &mut std::io::Cursor::new(bytes),
    )?;
    Ok(())
}

/// nice-plug's CLAP state is a little-endian u64 length, then JSON.
fn state_json(bytes: &[u8]) -> Result<serde_json::Value> {
    ensure!(bytes.len() >= 8, "state shorter than its length prefix");
    let len = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
    ensure!(
        bytes.len() == 8 + len,
        "state length prefix {len} vs {} bytes",
        bytes.len() - 8
    );
    serde_json::from_slice(&bytes[8..]).context("state is not JSON")
}

fn json_state(json: &serde_json::Value) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(json)?;
    let mut out = (body.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Point an instance at `dest` in `session` through its persisted session
/// settings, restored the way a saved project restores them.
fn restore_session(p: &mut Loaded, dest: &str, session: impl std::fmt::Display) -> Result<()> {
    let mut json = state_json(&save_state(p)?)?;
    let fields = json["fields"]
        .as_object_mut()
        .ok_or_else(|| anyhow!("no fields"))?;
    let mut settings: serde_json::Value = serde_json::from_str(
        fields
            .get("session")
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow!("{}: no session settings", p.name))?,
    )?;
    settings["session"] = session.to_string().into();
    settings["destination"] = dest.into();
    fields.insert("session".into(), settings.to_string().into());
    load_state(p, &json_state(&json)?)
}

fn transport_at(sample: u64, playing: bool) -> TransportEvent {
    let seconds = sample as f64 / SAMPLE_RATE;
    transport_event(seconds * TEMPO / 60.0, TEMPO, playing)
}

/// The host transport at song position `beats` (quarter notes) and a
/// constant `tempo`, 4/4.
fn transport_event(beats: f64, tempo: f64, playing: bool) -> TransportEvent {
    let seconds = beats * 60.0 / tempo;
    let mut flags = TransportFlags::HAS_TEMPO
        | TransportFlags::HAS_BEATS_TIMELINE
        | TransportFlags::HAS_SECONDS_TIMELINE
        | TransportFlags::HAS_TIME_SIGNATURE;
    if playing {
        flags |= TransportFlags::IS_PLAYING;
    }
    TransportEvent {
        header: EventHeader::new_core(0, EventFlags::empty()),
        flags,
        song_pos_beats: BeatTime::from_float(beats),
        song_pos_seconds: SecondsTime::from_float(seconds),
        tempo,
        tempo_inc: 0.0,
        loop_start_beats: BeatTime::from_float(0.0),
        loop_end_beats: BeatTime::from_float(0.0),
        loop_start_seconds: SecondsTime::from_float(0.0),
        loop_end_seconds: SecondsTime::from_float(0.0),
        bar_start: BeatTime::from_float((beats / 4.0).floor() * 4.0),
        bar_number: (beats / 4.0).floor() as i32,
        time_signature_numerator: 4,
        time_signature_denominator: 4,
    }
}

/// Audio buffers and event buffers for one instance, allocated once.
struct Io {
    input: Vec<Vec<f32>>,
    output: Vec<Vec<f32>>,
    in_ports: AudioPorts,
    out_ports: AudioPorts,
    in_events: EventBuffer,
    out_events: Captured,
}

/// Output events of one block: MIDI (`CLAP_EVENT_MIDI`) and MIDI SysEx
/// events, in order. SysEx bytes are copied inside `try_push`: CLAP only
/// guarantees the plugin's buffer pointer during that call (nice-plug points
/// it at a stack buffer). Fixed capacity, so the copy never allocates inside
/// the plugin's `process()` (which runs under `assert_process_allocs`).
struct Captured {
    midi: Vec<MidiOut>,
    other: usize,
    overflow: usize,
}

/// One captured MIDI message.
#[derive(Clone, Copy)]
struct MidiOut {
    /// Sample offset in the block.
    time: u32,
    bytes: [u8; 16],
    len: u8,
    /// Came as a SysEx event (else as a 3-byte MIDI event).
    sysex: bool,
}

impl MidiOut {
    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Length of a MIDI message from its status byte (a CLAP MIDI event always
/// carries 3 bytes).
fn midi_len(status: u8) -> u8 {
    match status {
        0xC0..=0xDF | 0xF1 | 0xF3 => 2,
        0xF6 | 0xF8..=0xFF => 1,
        _ => 3,
    }
}

impl Captured {
    const CAPACITY: usize = 1024;

    fn new() -> Self {
        Self {
            midi: Vec::with_capacity(Self::CAPACITY),
            other: 0,
            overflow: 0,
        }
    }

    fn clear(&mut self) {
        self.midi.clear();
        self.other = 0;
        self.overflow = 0;
    }
}

impl OutputEventBuffer for Captured {
    fn try_push(&mut self, event: &UnknownEvent) -> std::result::Result<(), TryPushError> {
        let time = event.header().time();
        let mut out = MidiOut {
            time,
            bytes: [0u8; 16],
            len: 0,
            sysex: false,
        };
        if let Some(m) = event.as_event::<MidiSysExEvent>() {
            // SAFETY: CLAP guarantees the event's buffer for the duration
            // of this try_push call; it is copied before returning.
            let data = unsafe { m.data() };
            if data.len() > 16 {
                self.overflow += 1;
                return Ok(());
            }
            out.bytes[..data.len()].copy_from_slice(data);
            out.len = data.len() as u8;
            out.sysex = true;
        } else if let Some(m) = event.as_event::<MidiEvent>() {
            let data = m.data();
            out.len = midi_len(data[0]);
            out.bytes[..3].copy_from_slice(&data);
        } else {
            self.other += 1;
            return Ok(());
        }
        if self.midi.len() == Self::CAPACITY {
            // Counted; the checks fail on any overflow.
            self.overflow += 1;
        } else {
            self.midi.push(out);
        }
        Ok(())
    }
}

impl Io {
    fn new(inputs: usize, outputs: usize) -> Self {
        Self {
            input: vec![vec![0.0; BLOCK]; inputs],
            output: vec![vec![0.0; BLOCK]; outputs],
            in_ports: AudioPorts::with_capacity(inputs, 1),
            out_ports: AudioPorts::with_capacity(outputs, 1),
            in_events: EventBuffer::with_capacity(64),
            out_events: Captured::new(),
        }
    }

    /// Fill the input with a 440 Hz sine (left) and 660 Hz (right) at `sample`.
    fn fill_input(&mut self, sample: u64) {
        for (c, ch) in self.input.iter_mut().enumerate() {
            let f = 440.0 * (1.0 + 0.5 * c as f64);
            for (i, s) in ch.iter_mut().enumerate() {
                let t = (sample + i as u64) as f64 / SAMPLE_RATE;
                *s = (0.5 * (2.0 * std::f64::consts::PI * f * t).sin()) as f32;
            }
        }
    }

    fn run(
        &mut self,
        proc: &mut StartedPluginAudioProcessor<Host>,
        sample: u64,
        transport: &TransportEvent,
    ) -> Result<(ProcessStatus, std::time::Duration)> {
        let has_in = !self.input.is_empty();
        let has_out = !self.output.is_empty();
        let inputs = self.in_ports.with_input_buffers(has_in.then(|| {
            AudioPortBuffer {
                latency: 0,
                channels: AudioPortBufferType::f32_input_only(
                    self.input
                        .iter_mut()
                        .map(|b| InputChannel::variable(b.as_mut_slice())),
                ),
            }
        }));
        let mut outputs = self
            .out_ports
            .with_output_buffers(has_out.then(|| AudioPortBuffer {
                latency: 0,
                channels: AudioPortBufferType::f32_output_only(
                    self.output.iter_mut().map(|b| b.as_mut_slice()),
                ),
            }));
        self.out_events.clear();
        let in_events = InputEvents::from_buffer(&self.in_events);
        let mut out_events = OutputEvents::from_buffer(&mut self.out_events);
        let t0 = Instant::now();
        let status = proc.process(
            &inputs,
            &mut outputs,
            &in_events,
            &mut out_events,
            Some(sample),
            Some(transport),
        )?;
        let took = t0.elapsed();
        self.in_events.clear();
        Ok((status, took))
    }
}

fn activate(p: &mut Loaded) -> Result<StartedPluginAudioProcessor<Host>> {
    activate_at(p, SAMPLE_RATE)
}

/// [`activate`] at another sample rate.
fn activate_at(p: &mut Loaded, sample_rate: f64) -> Result<StartedPluginAudioProcessor<Host>> {
    let cfg = PluginAudioConfiguration {
        sample_rate,
        min_frames_count: 1,
        max_frames_count: BLOCK as u32,
    };
    let stopped = p.instance.activate(|_, _| (), cfg)?;
    stopped
        .start_processing()
        .map_err(|_| anyhow!("{}: start_processing failed", p.name))
}

fn pump_main_thread(p: &mut Loaded) {
    let wanted = p
        .instance
        .access_shared_handler(|s| s.callback_requested.swap(false, Ordering::AcqRel));
    if wanted {
        p.instance.call_on_main_thread_callback();
    }
}

/// Pick a parameter to change for the state test and the value to set.
fn pick_change(params: &[ParamDesc]) -> Option<(ClapId, f64)> {
    params
        .iter()
        .find(|d| d.stepped && d.max > d.min)
        .map(|d| (d.id, if d.default == d.max { d.min } else { d.max }))
}

/// Session settings restored (CLAP state load, as a host restoring a
/// preset or undoing) into *active* Send and Receive instances while
/// `process()` runs, paced in real time (debug bundles: under
/// `assert_process_allocs`, so the live worker restart must not touch the
/// audio thread). Receive must then listen on the new unicast port, and
/// Send's audio must reach the new destination in the new session, without
/// re-activation.
fn live_settings(send: &Path, receive: &Path) -> Result<()> {
    let session = uuid::Uuid::new_v4();
    let rx_port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let tx_dest = std::net::UdpSocket::bind("127.0.0.1:0")?;
    tx_dest.set_nonblocking(true)?;
    let destinations = [
        tx_dest.local_addr()?.to_string(),
        format!("127.0.0.1:{rx_port}"),
    ];
    let mut loaded = vec![
        instantiate(&load_entry(send)?)?,
        instantiate(&load_entry(receive)?)?,
    ];
    let mut procs = Vec::new();
    let mut ios = Vec::new();
    for p in &mut loaded {
        procs.push(activate(p)?);
        ios.push(Io::new(p.inputs, p.outputs));
    }
    ensure!(
        std::net::UdpSocket::bind(("127.0.0.1", rx_port)).is_ok(),
        "the new port is taken before the change"
    );
    // 0.3 s before the change, 1.7 s after it, 64-sample blocks at 48 kHz.
    let (change_at, blocks) = (225u64, 1_500u64);
    // What reaches Send's new destination, drained every block.
    let (mut audio, mut frames) = (0u32, 0u32);
    let mut buf = [0u8; 2048];
    let t0 = Instant::now();
    for b in 0..blocks {
        let sample = b * BLOCK as u64;
        let transport = transport_at(sample, true);
        if b == change_at {
            for (p, dest) in loaded.iter_mut().zip(&destinations) {
                restore_session(p, dest, session)?;
            }
        }
        for (i, p) in loaded.iter_mut().enumerate() {
            ios[i].fill_input(sample);
            ios[i]
                .run(&mut procs[i], sample, &transport)
                .with_context(|| format!("{}: process block {b}", p.name))?;
            pump_main_thread(p);
        }
        while let Ok((n, _)) = tx_dest.recv_from(&mut buf) {
            let Ok(f) = bridge_core::protocol::frame::decode_frame(&buf[..n], None) else {
                continue;
            };
            if f.header.session != session {
                continue;
            }
            frames += 1;
            if matches!(
                bridge_core::protocol::messages::Message::parse(&f),
                Ok(bridge_core::protocol::messages::Message::Audio(_))
            ) {
                audio += 1;
            }
        }
        let due =
            t0 + std::time::Duration::from_secs_f64((b + 1) as f64 * BLOCK as f64 / SAMPLE_RATE);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    ensure!(
        std::net::UdpSocket::bind(("127.0.0.1", rx_port)).is_err(),
        "Receive does not listen on its new port {rx_port}"
    );
    ensure!(
        audio > 100,
        "Send's new destination got {audio} audio frames of the new session ({frames} frames)"
    );
    for (p, proc) in loaded.iter_mut().zip(procs) {
        p.instance.deactivate(proc.stop_processing());
    }
    println!(
        "live-settings ok: Receive listens on {rx_port}, Send's new destination got {audio} audio frames ({frames} frames) of session {session}, no re-activation"
    );
    Ok(())
}

fn check(paths: &[PathBuf]) -> Result<()> {
    let entries: Vec<PluginEntry> = paths.iter().map(|p| load_entry(p)).collect::<Result<_>>()?;
    // One instance per bundle, plus a second instance of every bundle, all
    // alive and processing at once (two Receives of different streams, a Send
    // and a Receive of the same session, in one host process).
    let mut loaded: Vec<Loaded> = Vec::new();
    for e in &entries {
        loaded.push(instantiate(e)?);
        loaded.push(instantiate(e)?);
    }
    for p in &mut loaded {
        let params = list_params(p)?;
        ensure!(!params.is_empty(), "{}: no parameters", p.name);
        println!(
            "{} ({}) in={} out={} params: {}",
            p.name,
            p.id.to_string_lossy(),
            p.inputs,
            p.outputs,
            params
                .iter()
                .map(|d| format!("{}[{}..{}]", d.name, d.min, d.max))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    // Change one stepped parameter through a process() call (as automation
    // arrives), then check the host sees the new value.
    let mut changes = Vec::new();
    for p in &mut loaded {
        let params = list_params(p)?;
        changes.push(pick_change(&params));
    }

    let mut procs = Vec::new();
    let mut ios = Vec::new();
    for p in &mut loaded {
        procs.push(activate(p)?);
        ios.push(Io::new(p.inputs, p.outputs));
    }
    // ~4 s of audio at 48 kHz in 64-sample blocks, transport playing at 133 BPM.
    let blocks = 3000u64;
    for b in 0..blocks {
        let sample = b * BLOCK as u64;
        let transport = transport_at(sample, b >= 10);
        for (i, p) in loaded.iter_mut().enumerate() {
            let io = &mut ios[i];
            io.fill_input(sample);
            if b == 5 {
                if let Some((id, v)) = changes[i] {
                    io.in_events
                        .push(&ParamValueEvent::new(0, id, Pckn::match_all(), v));
                }
            }
            // A plugin's process error comes back as Err.
            io.run(&mut procs[i], sample, &transport)
                .with_context(|| format!("{}: process block {b}", p.name))?;
            for (c, out) in io.output.iter().enumerate() {
                ensure!(
                    out.iter().all(|s| s.is_finite()),
                    "{}: non-finite output",
                    p.name
                );
                if p.inputs > 0 {
                    // Send and Transport pass audio through unchanged.
                    ensure!(
                        out == &io.input[c],
                        "{}: channel {c} not passed through unchanged at block {b}",
                        p.name
                    );
                }
            }
            pump_main_thread(p);
        }
    }
    for (i, p) in loaded.iter_mut().enumerate() {
        if let Some((id, v)) = changes[i] {
            let got = param_value(p, id)?;
            ensure!(
                (got - v).abs() < 1e-6,
                "{}: param {id:?} is {got}, want {v}",
                p.name
            );
        }
    }
    // Deactivate all, state round trip on the first instance of each bundle.
    for (p, proc) in loaded.iter_mut().zip(procs) {
        p.instance.deactivate(proc.stop_processing());
    }
    for (k, e) in entries.iter().enumerate() {
        let p = &mut loaded[2 * k];
        let saved = save_state(p)?;
        let mut json = state_json(&saved)?;
        // Edit the persisted (non-parameter) session settings as a user would.
        let fields = json["fields"]
            .as_object_mut()
            .ok_or_else(|| anyhow!("no fields"))?;
        let session = fields
            .get("session")
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow!("{}: no persisted session settings", p.name))?;
        let mut settings: serde_json::Value = serde_json::from_str(session)?;
        settings["session"] = "harness-session-42".into();
        settings["destination"] = "127.0.0.1:47811".into();
        fields.insert("session".into(), settings.to_string().into());
        let edited = json_state(&json)?;

        let mut fresh = instantiate(e)?;
        load_state(&mut fresh, &edited)?;
        // Restored settings survive an activate/deactivate cycle and a save.
        let proc = activate(&mut fresh)?;
        fresh.instance.deactivate(proc.stop_processing());
        let again = state_json(&save_state(&mut fresh)?)?;
        let restored: serde_json::Value =
            serde_json::from_str(again["fields"]["session"].as_str().unwrap_or("null"))?;
        ensure!(
            restored["session"] == "harness-session-42"
                && restored["destination"] == "127.0.0.1:47811",
            "{}: session settings not restored: {restored}",
            p.name
        );
        ensure!(
            again["params"] == json["params"],
            "{}: parameters not restored: {} vs {}",
            p.name,
            again["params"],
            json["params"]
        );
        if let Some((id, v)) = changes[2 * k] {
            let got = param_value(&mut fresh, id)?;
            ensure!(
                (got - v).abs() < 1e-6,
                "{}: restored param {id:?} is {got}, want {v}",
                p.name
            );
        }
        println!(
            "{}: state round trip ok ({} bytes, {} params, fields {:?})",
            p.name,
            saved.len(),
            json["params"].as_object().map_or(0, |m| m.len()),
            json["fields"]
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
        );
    }
    println!(
        "check ok: {} instances processed {blocks} blocks of {BLOCK} with transport, alive together",
        loaded.len()
    );
    Ok(())
}

/// `paced`: sleep so blocks come at the real-time rate (as in a DAW and in
/// `follow`), instead of back to back (hot caches).
/// `follow`: JAMNet Transport in follow mode with a session playing at
/// 120 BPM (one PLAY frame over loopback UDP before the run), MTC on.
fn bench(paths: &[PathBuf], blocks: usize, paced: bool, follow: bool) -> Result<()> {
    for path in paths {
        let entry = load_entry(path)?;
        let mut p = instantiate(&entry)?;
        let follow_setup = if follow {
            Some(configure_follow(&mut p, false)?)
        } else {
            None
        };
        let mut proc = activate(&mut p)?;
        let mut io = Io::new(p.inputs, p.outputs);
        if let Some((mode_id, follow_value, mtc_id, _, _)) = &follow_setup {
            io.in_events.push(&ParamValueEvent::new(
                0,
                *mode_id,
                Pckn::match_all(),
                *follow_value,
            ));
            io.in_events
                .push(&ParamValueEvent::new(0, *mtc_id, Pckn::match_all(), 1.0));
        }
        let mut lead = match &follow_setup {
            Some((_, _, _, dest, session)) => Some(Lead::new(dest, *session)?),
            None => None,
        };
        let mut midi_out = 0usize;
        let mut times = Vec::with_capacity(blocks);
        let t0 = Instant::now();
        for b in 0..(blocks + 1000) as u64 {
            let sample = b * BLOCK as u64;
            if paced {
                let due = std::time::Duration::from_secs_f64(sample as f64 / SAMPLE_RATE);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            let transport = transport_at(sample, true);
            io.fill_input(sample);
            let (_, dt) = io.run(&mut proc, sample, &transport)?;
            midi_out += io.out_events.midi.len();
            if let (1, Some(lead)) = (b, lead.as_mut()) {
                // Warm-up (not measured): let the worker switch to follow
                // and bind, then start the session and let it hand over.
                std::thread::sleep(std::time::Duration::from_millis(100));
                let now = bridge_core::worker::clock::monotonic_ns();
                lead.send(
                    bridge_core::protocol::messages::TransportCommand::Play,
                    now,
                    0.0,
                    120.0,
                    1,
                )?;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if b >= 1000 {
                times.push(dt.as_nanos() as u64);
            }
        }
        p.instance.deactivate(proc.stop_processing());
        let argmax = times
            .iter()
            .enumerate()
            .max_by_key(|(_, t)| **t)
            .map_or(0, |(i, _)| i);
        times.sort_unstable();
        let q = |f: f64| times[((times.len() - 1) as f64 * f) as usize];
        println!(
            "{{\"plugin\":\"{}\",\"paced\":{paced},\"follow\":{follow},\"midi_out\":{midi_out},\"block\":{BLOCK},\"blocks\":{},\"median_ns\":{},\"p99_ns\":{},\"max_ns\":{},\"max_at_block\":{}}}",
            p.name,
            times.len(),
            q(0.5),
            q(0.99),
            times[times.len() - 1],
            argmax + 1000
        );
    }
    Ok(())
}

/// Sends TOAST `transport` frames the way a lead peer does.
struct Lead {
    socket: std::net::UdpSocket,
    dest: std::net::SocketAddr,
    session: uuid::Uuid,
    seq: u32,
    buf: Vec<u8>,
}

impl Lead {
    /// A lead sending to `dest` (unicast or a loopback multicast group).
    fn new(dest: &str, session: uuid::Uuid) -> Result<Self> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        socket.set_multicast_loop_v4(true)?;
        socket.set_multicast_ttl_v4(0)?;
        Ok(Self {
            socket,
            dest: dest.parse()?,
            session,
            seq: 0,
            buf: vec![0u8; 1472],
        })
    }

    fn send(
        &mut self,
        command: bridge_core::protocol::messages::TransportCommand,
        timestamp: u64,
        position_ms: f64,
        bpm: f64,
        change: u64,
    ) -> Result<()> {
        use bridge_core::protocol::frame::{FormatType, Header, MessageKind};
        use bridge_core::protocol::messages::{Message, PeerId, TimeSignature, Transport};
        const SOURCE: u32 = 0x1EAD_0001;
        let msg = Message::Transport(Transport {
            command,
            timestamp,
            position: position_ms,
            bpm,
            time_signature: TimeSignature {
                numerator: 4,
                denominator: 4,
            },
            master_peer: PeerId(SOURCE),
            beat: Some(position_ms * bpm / 60_000.0),
            seq: Some(change),
        });
        let header = Header::new(
            MessageKind::Transport,
            FormatType::StandardJson,
            self.session,
            SOURCE,
            self.seq,
            timestamp,
        );
        self.seq += 1;
        let n = msg
            .encode(&header, None, &mut self.buf)
            .map_err(|e| anyhow!("encode: {e:?}"))?;
        self.socket.send_to(&self.buf[..n], self.dest)?;
        Ok(())
    }
}

/// The session timeline the follow checks play (local CLOCK_MONOTONIC; same
/// host): play from 0 at 120 BPM 0.5 s in, re-announce every 250 ms, seek
/// to 8 s at +1.5 s, stop at +3 s; run to +3.5 s. Each command leaves 50 ms
/// ahead of its effect (DESIGN.md); junk datagrams go out once at the start.
struct LeadScript {
    origin: u64,
    play: u64,
    seek: u64,
    stop: u64,
    end: u64,
    sent_play: bool,
    sent_seek: bool,
    sent_stop: bool,
    garbage_sent: bool,
    next_announce: u64,
}

impl LeadScript {
    const BPM: f64 = 120.0;

    fn new(origin: u64) -> Self {
        let play = origin + 500_000_000;
        let seek = play + 1_500_000_000;
        let stop = play + 3_000_000_000;
        Self {
            origin,
            play,
            seek,
            stop,
            end: stop + 500_000_000,
            sent_play: false,
            sent_seek: false,
            sent_stop: false,
            garbage_sent: false,
            next_announce: play + 250_000_000,
        }
    }

    /// Session position (ms) at local time `t`.
    fn position_ms(&self, t: u64) -> f64 {
        if t < self.play {
            0.0
        } else if t < self.seek {
            (t - self.play) as f64 / 1e6
        } else {
            8000.0 + (t.min(self.stop) - self.seek) as f64 / 1e6
        }
    }

    fn playing(&self, t: u64) -> bool {
        (self.play..self.stop).contains(&t)
    }

    /// Pace block `b` in real time: sleep until it is due (the harness's
    /// clock: block k at origin + k·64/48 kHz), send what the lead has due,
    /// and return its due time; None once the timeline is over.
    fn pace(&mut self, lead: &mut Lead, b: u64) -> Result<Option<u64>> {
        use bridge_core::worker::clock::monotonic_ns;
        let block_ns = BLOCK as f64 * 1e9 / SAMPLE_RATE;
        let due = self.origin + (b as f64 * block_ns) as u64;
        let now = monotonic_ns();
        if due > now {
            std::thread::sleep(std::time::Duration::from_nanos(due - now));
        }
        let now = monotonic_ns();
        if now >= self.end {
            return Ok(None);
        }
        self.tick(lead, now)?;
        Ok(Some(due))
    }

    /// Send what is due at `now`.
    fn tick(&mut self, lead: &mut Lead, now: u64) -> Result<()> {
        use bridge_core::protocol::messages::TransportCommand as Cmd;
        let bpm = Self::BPM;
        if !self.sent_play && now + 50_000_000 >= self.play {
            lead.send(Cmd::Play, self.play, 0.0, bpm, 1)?;
            self.sent_play = true;
        }
        if self.sent_play
            && !self.sent_seek
            && now >= self.next_announce
            && self.next_announce < self.seek
        {
            // A re-announce of the unchanged state.
            let (t, pos) = (self.next_announce, self.position_ms(self.next_announce));
            lead.send(Cmd::Play, t, pos, bpm, 1)?;
            self.next_announce += 250_000_000;
        }
        if !self.garbage_sent && now >= self.play {
            // Untrusted input: junk and a truncated frame must be counted, not crash.
            lead.socket.send_to(b"not a toast frame", lead.dest)?;
            lead.socket.send_to(&[0u8; 3], lead.dest)?;
            self.garbage_sent = true;
        }
        if !self.sent_seek && now + 50_000_000 >= self.seek {
            lead.send(Cmd::Seek, self.seek, 8000.0, bpm, 2)?;
            self.sent_seek = true;
        }
        if !self.sent_stop && now + 50_000_000 >= self.stop {
            lead.send(Cmd::Stop, self.stop, self.position_ms(self.stop), bpm, 3)?;
            self.sent_stop = true;
        }
        Ok(())
    }
}

/// Follow-mode set-up shared by `follow` and `bench --follow`: finds the
/// Mode and MTC parameters and points the instance at a private unicast port
/// (or loopback multicast group) and session through restored state, the way
/// a saved project does. Returns (mode id, follow value, MTC id, destination,
/// session).
fn configure_follow(
    p: &mut Loaded,
    multicast: bool,
) -> Result<(ClapId, f64, ClapId, String, uuid::Uuid)> {
    let params = list_params(p)?;
    let mode = params
        .iter()
        .find(|d| d.name == "Mode")
        .ok_or_else(|| anyhow!("{}: no Mode parameter", p.name))?;
    let (mode_id, follow_value) = (mode.id, mode.max);
    let mtc_id = params
        .iter()
        .find(|d| d.name == "MTC out")
        .ok_or_else(|| anyhow!("{}: no MTC out parameter", p.name))?
        .id;

    // A private unicast port and session, set through the persisted settings
    // the way a saved project restores them.
    let listener = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    // Multicast: a group of our own on loopback (the plugin shares the
    // port with SO_REUSEADDR/SO_REUSEPORT like every JAMNet peer).
    let dest = if multicast {
        format!("239.255.77.{}:{port}", 100 + port % 100)
    } else {
        format!("127.0.0.1:{port}")
    };
    let session = uuid::Uuid::from_u128(0x5e55_1011_f011_0000_0000_0000_0000_0001);
    restore_session(p, &dest, session)?;
    Ok((mode_id, follow_value, mtc_id, dest, session))
}

/// JAMNet Transport in follow mode fed real UDP transport frames.
fn follow(path: &Path, multicast: bool) -> Result<()> {
    use bridge_core::worker::clock::monotonic_ns;
    const BPM: f64 = LeadScript::BPM;
    let entry = load_entry(path)?;
    let mut p = instantiate(&entry)?;
    let (mode_id, follow_value, mtc_id, dest, session) = configure_follow(&mut p, multicast)?;

    let mut proc = activate(&mut p)?;
    let mut io = Io::new(p.inputs, p.outputs);
    let mut lead = Lead::new(&dest, session)?;
    let mut script = LeadScript::new(monotonic_ns() + 20_000_000);
    let (origin_ns, t_play, t_seek, t_stop) =
        (script.origin, script.play, script.seek, script.stop);
    let mut midi: Vec<(u64, Vec<u8>, bool)> = Vec::new();
    let mut other_events = 0usize;
    let mut process_ns: Vec<u64> = Vec::with_capacity(4096);
    let mut b = 0u64;
    while script.pace(&mut lead, b)?.is_some() {
        let sample = b * BLOCK as u64;
        if b == 0 {
            io.in_events.push(&ParamValueEvent::new(
                0,
                mode_id,
                Pckn::match_all(),
                follow_value,
            ));
            io.in_events
                .push(&ParamValueEvent::new(0, mtc_id, Pckn::match_all(), 1.0));
        }
        io.fill_input(sample);
        let (_, took) = io
            .run(&mut proc, sample, &transport_at(sample, false))
            .with_context(|| format!("{}: process block {b}", p.name))?;
        process_ns.push(took.as_nanos() as u64);
        for m in &io.out_events.midi {
            midi.push((sample + m.time as u64, m.bytes().to_vec(), m.sysex));
        }
        other_events += io.out_events.other + io.out_events.overflow;
        pump_main_thread(&mut p);
        b += 1;
    }
    p.instance.deactivate(proc.stop_processing());
    let end_sample = b * BLOCK as u64;

    // Where the harness's pacing clock puts each session instant: block k is
    // due at origin + k·64/48 kHz. (A late wake-up delays a call, not the
    // timeline; the plugin's DAW clock fit is built to see through that.)
    let sample_at = |t: u64| -> f64 { (t as f64 - origin_ns as f64) * SAMPLE_RATE / 1e9 };
    let find =
        |bytes: &[u8]| -> Vec<u64> { midi.iter().filter(|m| m.1 == bytes).map(|m| m.0).collect() };
    let starts = find(&[0xFA]);
    let stops = find(&[0xFC]);
    let conts = find(&[0xFB]);
    let spps: Vec<&(u64, Vec<u8>, bool)> =
        midi.iter().filter(|m| m.1.first() == Some(&0xF2)).collect();
    let ticks = find(&[0xF8]);
    ensure!(other_events == 0, "{other_events} non-MIDI output events");
    // Through JAMNet's CLAP shim, system messages (Clock, Start/Continue/
    // Stop, SPP, MTC quarter frames) arrive as CLAP MIDI events, and only
    // the MTC full frame (a real F0…F7 SysEx) as a SysEx event.
    let misfiled: Vec<&(u64, Vec<u8>, bool)> = midi
        .iter()
        .filter(|m| m.2 != (m.1.first() == Some(&0xF0)))
        .collect();
    ensure!(
        misfiled.is_empty(),
        "{} messages in the wrong event type (sysex flag), first {:?}",
        misfiled.len(),
        misfiled.first()
    );
    ensure!(starts.len() == 1, "want one Start (FA), got {starts:?}");
    // Seek while playing: Stop, SPP, Continue on one sample; then the final Stop.
    ensure!(
        stops.len() == 2,
        "want Stop at the seek and at the end, got {stops:?}"
    );
    ensure!(
        conts.len() == 1,
        "want one Continue (after the seek), got {conts:?}"
    );
    ensure!(spps.len() == 1, "want one SPP (the seek), got {spps:?}");
    // 8 s at 120 BPM = 16 quarter notes = 64 sixteenths = LSB 64, MSB 0.
    ensure!(
        spps[0].1 == [0xF2, 64, 0] && spps[0].0 == conts[0] && stops[0] == conts[0],
        "seek messages: SPP {:?}, Stop {}, Continue {}",
        spps[0],
        stops[0],
        conts[0]
    );
    let (s_start, s_seek, s_stop) = (starts[0], conts[0], stops[1]);
    let land_err = |got: u64, t: u64| got as f64 - sample_at(t);
    let (e_start, e_seek, e_stop) = (
        land_err(s_start, t_play),
        land_err(s_seek, t_seek),
        land_err(s_stop, t_stop),
    );
    ensure!(
        ticks.iter().all(|&t| t >= s_start && t < s_stop),
        "clocks outside the playing span"
    );
    let secs = (s_stop - s_start) as f64 / SAMPLE_RATE;
    // Per piece of the timeline (start → seek, seek → stop): a tick every
    // 1/24 beat from the piece's first sample = 48 per second at 120 BPM,
    // so ceil(frames / 1000) ticks (± 1 for landing rounding).
    let samples_per_tick = SAMPLE_RATE * 60.0 / BPM / 24.0;
    for (what, a, z) in [
        ("start→seek", s_start, s_seek),
        ("seek→stop", s_seek, s_stop),
    ] {
        let got = ticks.iter().filter(|&&t| t >= a && t < z).count() as f64;
        let want = ((z - a) as f64 / samples_per_tick).ceil();
        ensure!(
            (got - want).abs() <= 1.0,
            "{what}: {got} clocks over {} samples, want {want} (48/s at 120 BPM)",
            z - a
        );
    }
    // Between the events, consecutive clocks are one 1/24 beat apart
    // (1000 samples at 120 BPM, 48 kHz) within 1 ms.
    let mut gaps: Vec<i64> = ticks
        .windows(2)
        .filter(|w| !(w[0] < s_seek && w[1] >= s_seek))
        .map(|w| w[1] as i64 - w[0] as i64)
        .collect();
    gaps.sort_unstable();
    let (gmin, gmed, gmax) = (gaps[0], gaps[gaps.len() / 2], gaps[gaps.len() - 1]);
    ensure!(
        gmed == 1000 && (952..=1048).contains(&gmin) && (952..=1048).contains(&gmax),
        "clock spacing min/median/max {gmin}/{gmed}/{gmax} samples, want 1000 ± 48"
    );
    // MTC (default 25 fps): 4 quarter frames per frame = 100/s while
    // playing, and a full-frame SysEx at the start and at the seek.
    let qf = midi
        .iter()
        .filter(|m| m.1.len() == 2 && m.1[0] == 0xF1)
        .count();
    let full = midi
        .iter()
        .filter(|m| m.1.len() == 10 && m.1[..5] == [0xF0, 0x7F, 0x7F, 0x01, 0x01])
        .count();
    let want_qf = secs * 100.0;
    ensure!(
        (qf as f64 - want_qf).abs() <= 4.0 && full == 2,
        "MTC: {qf} quarter frames (want {want_qf:.0} ± 4), {full} full frames (want 2)"
    );
    let per_s = ticks.len() as f64 / secs;
    process_ns.sort_unstable();
    let pq = |f: f64| process_ns[((process_ns.len() - 1) as f64 * f) as usize];
    println!(
        "{{\"plugin\":\"{}\",\"check\":\"follow\",\"blocks\":{b},\"samples\":{end_sample},\"clocks\":{},\"playing_s\":{secs:.4},\"clocks_per_s\":{per_s:.3},\"want_per_s\":48.0,\"gap_min\":{gmin},\"gap_median\":{gmed},\"gap_max\":{gmax},\"start_sample\":{s_start},\"start_err_samples\":{e_start:.1},\"seek_err_samples\":{e_seek:.1},\"stop_err_samples\":{e_stop:.1},\"mtc_quarter_frames\":{qf},\"destination\":\"{dest}\",\"midi_messages\":{},\"process_median_ns\":{},\"process_p99_ns\":{}}}",
        p.name,
        ticks.len(),
        midi.len(),
        pq(0.5),
        pq(0.99)
    );
    // Landing: the DAW clock fit maps session time to samples; on a paced
    // (not hard real-time) harness on a shared machine allow 5 ms.
    for (what, e) in [("start", e_start), ("seek", e_seek), ("stop", e_stop)] {
        ensure!(e.abs() <= 240.0, "{what} landed {e:.1} samples off");
    }
    println!("follow ok");
    Ok(())
}

/// JAMNet Transport in follow mode with `Host transport control` on, in a
/// host that offers CLAP transport control: the harness's transport starts
/// stopped at beat 10 and obeys the plugin's requests between blocks (as a
/// DAW's main thread would); the lead plays the `LeadScript` timeline. The
/// host must start with the session, be relocated on the seek, stop where
/// the session stops, and stay within the follower's tolerance meanwhile.
fn follow_host(path: &Path) -> Result<()> {
    use bridge_core::worker::clock::monotonic_ns;
    let bpm = LeadScript::BPM;
    let entry = load_entry(path)?;
    let mut p = instantiate_with(&entry, true)?;
    let (mode_id, follow_value, _mtc, dest, session) = configure_follow(&mut p, false)?;
    let hostctl_id = list_params(&mut p)?
        .iter()
        .find(|d| d.name == "Host transport control")
        .ok_or_else(|| anyhow!("{}: no Host transport control parameter", p.name))?
        .id;
    let mut proc = activate(&mut p)?;
    let mut io = Io::new(p.inputs, p.outputs);
    let mut lead = Lead::new(&dest, session)?;
    let mut script = LeadScript::new(monotonic_ns() + 20_000_000);
    let per_block = BLOCK as f64 / SAMPLE_RATE * bpm / 60.0;
    let (mut host_playing, mut host_beats) = (false, 10.0f64);
    // (due time, host playing, host beats) per block, and the requests.
    let mut trace: Vec<(u64, bool, f64)> = Vec::with_capacity(4096);
    let mut requests: Vec<(u64, TransportRequest)> = Vec::new();
    let mut b = 0u64;
    while let Some(due) = script.pace(&mut lead, b)? {
        let sample = b * BLOCK as u64;
        if b == 0 {
            for (id, v) in [(mode_id, follow_value), (hostctl_id, 1.0)] {
                io.in_events
                    .push(&ParamValueEvent::new(0, id, Pckn::match_all(), v));
            }
        }
        io.fill_input(sample);
        io.run(
            &mut proc,
            sample,
            &transport_event(host_beats, bpm, host_playing),
        )
        .with_context(|| format!("{}: process block {b}", p.name))?;
        trace.push((due, host_playing, host_beats));
        if host_playing {
            host_beats += per_block;
        }
        // The main thread: the plugin's callback, then the host's transport
        // obeys what was asked.
        pump_main_thread(&mut p);
        for r in p
            .instance
            .access_shared_handler(|s| s.transport_requests.take())
        {
            match r {
                TransportRequest::Jump(beats) => host_beats = beats,
                TransportRequest::Continue => host_playing = true,
                TransportRequest::Pause => host_playing = false,
                TransportRequest::Start => (host_beats, host_playing) = (0.0, true),
                TransportRequest::Stop => (host_beats, host_playing) = (0.0, false),
                TransportRequest::TogglePlay => host_playing = !host_playing,
                TransportRequest::Other => {}
            }
            requests.push((b, r));
        }
        b += 1;
    }
    p.instance.deactivate(proc.stop_processing());

    let ms = |t: u64, from: u64| (t as f64 - from as f64) / 1e6;
    let session_beats = |t: u64| script.position_ms(t) * bpm / 60_000.0;
    let off_ms = |&(t, _, beats): &(u64, bool, f64)| (beats - session_beats(t)) * 60_000.0 / bpm;
    let started = trace
        .iter()
        .find(|e| e.1)
        .ok_or_else(|| anyhow!("the host was never started; requests {requests:?}"))?;
    let start_delay = ms(started.0, script.play);
    let stopped = trace
        .iter()
        .find(|e| e.0 >= script.stop && !e.1)
        .ok_or_else(|| anyhow!("the host was not stopped; requests {requests:?}"))?;
    let stop_delay = ms(stopped.0, script.stop);
    let stop_err = off_ms(stopped);
    // After the seek: the first block back within 1 ms of the session.
    let relocated = trace
        .iter()
        .find(|e| e.0 >= script.seek && off_ms(e).abs() <= 1.0)
        .ok_or_else(|| anyhow!("the host was not relocated after the seek"))?;
    let seek_delay = ms(relocated.0, script.seek);
    // Offsets while both play, outside the 100 ms after start and seek.
    let settle = 100_000_000;
    let mut offs: Vec<f64> = trace
        .iter()
        .filter(|e| e.1 && script.playing(e.0))
        .filter(|e| {
            e.0 >= started.0 + settle && !(script.seek..script.seek + settle).contains(&e.0)
        })
        .map(|e| off_ms(e).abs())
        .collect();
    ensure!(offs.len() > 1000, "only {} playing blocks", offs.len());
    // After the seek the locate was aimed with the measured reaction.
    let after_seek_max = trace
        .iter()
        .filter(|e| e.1 && e.0 >= script.seek + settle && e.0 < script.stop)
        .map(|e| off_ms(e).abs())
        .fold(0.0f64, f64::max);
    offs.sort_by(f64::total_cmp);
    let (off_med, off_max) = (offs[offs.len() / 2], offs[offs.len() - 1]);
    let kinds: Vec<&TransportRequest> = requests.iter().map(|r| &r.1).collect();
    println!(
        "{{\"plugin\":\"{}\",\"check\":\"follow-host\",\"blocks\":{b},\"requests\":{},\"start_delay_ms\":{start_delay:.2},\"seek_relocate_ms\":{seek_delay:.2},\"stop_delay_ms\":{stop_delay:.2},\"stop_position_err_ms\":{stop_err:.3},\"offset_median_ms\":{off_med:.3},\"offset_max_ms\":{off_max:.3},\"offset_after_seek_max_ms\":{after_seek_max:.3}}}",
        p.name,
        requests.len()
    );
    println!("requests: {requests:?}");
    ensure!(
        !kinds
            .iter()
            .any(|k| matches!(k, TransportRequest::Start | TransportRequest::Stop)),
        "request_start/request_stop return to the start marker; want locate + continue/pause"
    );
    ensure!(
        requests.len() <= 8,
        "{} requests: a request storm",
        requests.len()
    );
    // The harness obeys between blocks, so a few blocks each (a paced
    // harness on a shared machine: allow 20 ms).
    for (what, d) in [
        ("start", start_delay),
        ("seek", seek_delay),
        ("stop", stop_delay),
    ] {
        ensure!(
            (0.0..=20.0).contains(&d),
            "host {what} {d:.2} ms after the session's"
        );
    }
    ensure!(
        stop_err.abs() <= 1.0,
        "host stopped {stop_err:.3} ms from the session's stop position"
    );
    ensure!(
        off_max <= host_follow_tolerance_ms(),
        "host {off_max:.2} ms off the session while both played (median {off_med:.3})"
    );
    println!("follow-host ok");
    Ok(())
}

/// The Transport plugin's tolerance before it relocates a playing host
/// (`host_follow::TOLERANCE_MS`).
fn host_follow_tolerance_ms() -> f64 {
    20.0
}

fn alloc_probe(path: &Path) -> Result<()> {
    let entry = load_entry(path)?;
    let mut p = instantiate(&entry)?;
    let mut proc = activate(&mut p)?;
    let mut io = Io::new(p.inputs, p.outputs);
    for b in 0..10u64 {
        io.run(
            &mut proc,
            b * BLOCK as u64,
            &transport_at(b * BLOCK as u64, true),
        )?;
    }
    p.instance.deactivate(proc.stop_processing());
    println!("alloc-probe: {} processed without aborting", p.name);
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = args
        .split_first()
        .ok_or_else(|| anyhow!("usage: check|bench|follow|alloc-probe|gui BUNDLE.clap..."))?;
    match cmd.as_str() {
        "check" => check(&rest.iter().map(PathBuf::from).collect::<Vec<_>>()),
        "live-settings" => match rest {
            [send, receive] => live_settings(Path::new(send), Path::new(receive)),
            _ => bail!("live-settings SEND.clap RECEIVE.clap"),
        },
        "bench" => {
            let mut blocks = 20_000;
            let mut paths = Vec::new();
            let mut paced = false;
            let mut follow = false;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                if a == "--paced" {
                    paced = true;
                } else if a == "--follow" {
                    follow = true;
                } else if a == "--blocks" {
                    blocks = it.next().ok_or_else(|| anyhow!("--blocks N"))?.parse()?;
                } else {
                    paths.push(PathBuf::from(a));
                }
            }
            bench(&paths, blocks, paced, follow)
        }
        "follow" => {
            let multicast = rest.iter().any(|a| a == "--multicast");
            let bundle = rest
                .iter()
                .find(|a| !a.starts_with("--"))
                .ok_or_else(|| anyhow!("follow [--multicast] BUNDLE.clap"))?;
            follow(Path::new(bundle), multicast)
        }
        "follow-host" => follow_host(Path::new(
            rest.first()
                .ok_or_else(|| anyhow!("follow-host TRANSPORT.clap"))?,
        )),
        "gui" => {
            let mut out = PathBuf::from("target/editor-shots");
            let mut settle_ms = 1500;
            let mut paths = Vec::new();
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                if a == "--out" {
                    out = it.next().ok_or_else(|| anyhow!("--out DIR"))?.into();
                } else if a == "--settle-ms" {
                    settle_ms = it.next().ok_or_else(|| anyhow!("--settle-ms N"))?.parse()?;
                } else {
                    paths.push(PathBuf::from(a));
                }
            }
            gui::gui(&paths, &out, std::time::Duration::from_millis(settle_ms))
        }
        "latency" => {
            let mut plan = latency::Plan {
                seconds: 20.0,
                jitter_ms: None,
                phase: 0.5,
                warmup_s: 2.0,
                receive_ppm: 0.0,
                max_creep_ms: None,
                low_latency: false,
                max_beyond_block_ms: None,
                send_rate: SAMPLE_RATE,
            };
            let mut paths = Vec::new();
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                let mut val = || it.next().ok_or_else(|| anyhow!("{a} needs a value"));
                match a.as_str() {
                    "--seconds" => plan.seconds = val()?.parse()?,
                    "--warmup" => plan.warmup_s = val()?.parse()?,
                    "--phase" => plan.phase = val()?.parse()?,
                    "--receive-ppm" => plan.receive_ppm = val()?.parse()?,
                    "--send-rate" => plan.send_rate = val()?.parse()?,
                    "--max-creep-ms" => plan.max_creep_ms = Some(val()?.parse()?),
                    "--low-latency" => plan.low_latency = true,
                    "--max-beyond-block-ms" => plan.max_beyond_block_ms = Some(val()?.parse()?),
                    "--jitter-ms" => {
                        let v = val()?;
                        plan.jitter_ms = (v != "auto").then(|| v.parse()).transpose()?;
                    }
                    _ => paths.push(PathBuf::from(a)),
                }
            }
            let [send, receive] = paths.as_slice() else {
                bail!("latency [--seconds S] [--jitter-ms auto|MS] [--low-latency] [--max-beyond-block-ms MS] [--phase F] [--send-rate HZ] SEND.clap RECEIVE.clap");
            };
            latency::latency(send, receive, &plan)
        }
        "latency-role" => latency::role(rest),
        "alloc-probe" => alloc_probe(Path::new(rest.first().ok_or_else(|| anyhow!("bundle"))?)),
        _ => bail!("unknown command {cmd}"),
    }
}

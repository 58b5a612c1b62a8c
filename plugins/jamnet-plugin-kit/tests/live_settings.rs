//! Session-settings changes apply live: the supervisor restarts the worker
//! on the new settings while an "audio thread" keeps using the same
//! `AudioHandle` — over real loopback UDP, with a counting allocator
//! proving that the audio thread never allocates or frees, restarts included.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_core::conceal::ConcealMethod;
use bridge_core::handle::{AudioHandle, LinkStats};
use bridge_core::net::NetConfig;
use bridge_core::protocol::audio::SampleFormat;
use bridge_core::protocol::frame::decode_frame;
use bridge_core::protocol::messages::{Message, StreamKind};
use bridge_core::worker::peer::{AudioSource, AudioTxConfig, LivePeer, PeerConfig};
use bridge_core::worker::{MonotonicClock, Worker, WorkerConfig};
use jamnet_plugin_kit::live::{
    start, LiveConfig, LiveEvent, LiveHooks, LiveSession, ReceiveSpec, SendSpec, BLOCK_FRAMES,
};
use jamnet_plugin_kit::SessionSettings;
use parking_lot::Mutex;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    // `try_with`: the thread-local may be gone during thread teardown.
    if ARMED.try_with(|a| a.get()).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to the system allocator unchanged; the only
// addition is a relaxed counter and a const-initialised thread-local read,
// neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A loopback port nobody holds right now.
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn settings(session: &str, destination: String) -> SessionSettings {
    SessionSettings {
        session: session.into(),
        destination,
        peer_name: "live-settings-test".into(),
        ..SessionSettings::default()
    }
}

/// The plugin side: settings the test edits, the editor's generation
/// counter, and every published event as text.
struct Plugin {
    settings: Arc<Mutex<SessionSettings>>,
    gen: Arc<AtomicU32>,
    events: Arc<Mutex<Vec<String>>>,
}

impl Plugin {
    fn new(initial: SessionSettings) -> (Self, LiveHooks) {
        let p = Plugin {
            settings: Arc::new(Mutex::new(initial)),
            gen: Arc::new(AtomicU32::new(0)),
            events: Arc::new(Mutex::new(Vec::new())),
        };
        let (s, g, e) = (p.settings.clone(), p.gen.clone(), p.events.clone());
        let hooks = LiveHooks {
            settings: Box::new(move || s.lock().clone()),
            settings_gen: Box::new(move || g.load(Ordering::Acquire)),
            publish: Box::new(move |ev| {
                e.lock().push(match ev {
                    LiveEvent::Running {
                        settings, local, ..
                    } => format!("running {} {local}", settings.session),
                    LiveEvent::Failed(err) => format!("failed {err}"),
                })
            }),
        };
        (p, hooks)
    }

    /// What the editor's Apply does.
    fn apply(&self, s: SessionSettings) {
        *self.settings.lock() = s;
        self.gen.fetch_add(1, Ordering::Release);
    }

    /// What a host's state restore does: new settings, no generation bump.
    fn restore(&self, s: SessionSettings) {
        *self.settings.lock() = s;
    }

    fn wait_event(&self, contains: &str) -> String {
        let t0 = Instant::now();
        loop {
            if let Some(e) = self.events.lock().iter().find(|e| e.contains(contains)) {
                return e.clone();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "no event with {contains:?}: {:?}",
                self.events.lock()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// An audio thread paced like a host at 48 kHz in blocks of `BLOCK_FRAMES`,
/// armed against allocation: `pull` plays (records the loudest sample,
/// as f32 bits) or `push`es a constant 0.25.
struct AudioThread {
    stop: Arc<AtomicBool>,
    loudest: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<AudioHandle>>,
}

impl AudioThread {
    fn spawn(mut handle: AudioHandle, pull: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let loudest = Arc::new(AtomicU64::new(0));
        let (s, l) = (stop.clone(), loudest.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![[0.0f32; BLOCK_FRAMES]; 1];
            let block = Duration::from_secs_f64(BLOCK_FRAMES as f64 / 48_000.0);
            let t0 = Instant::now();
            let mut n = 0u32;
            ARMED.with(|a| a.set(true));
            while !s.load(Ordering::Relaxed) {
                if pull {
                    handle.pull_planar(&mut buf);
                    let peak = buf[0].iter().fold(0.0f32, |m, x| m.max(x.abs()));
                    l.fetch_max(u64::from(peak.to_bits()), Ordering::Relaxed);
                } else {
                    buf[0].fill(0.25);
                    handle.push_planar(&buf);
                }
                n += 1;
                if let Some(wait) = (t0 + block * n).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            ARMED.with(|a| a.set(false));
            handle
        });
        AudioThread {
            stop,
            loudest,
            thread: Some(thread),
        }
    }

    fn loudest(&self) -> f32 {
        f32::from_bits(self.loudest.load(Ordering::Relaxed) as u32)
    }

    fn reset_loudest(&self) {
        self.loudest.store(0, Ordering::Relaxed);
    }

    fn stop(mut self) -> AudioHandle {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// A remote sender on loopback: a bridge-core peer streaming a 0.5 sine
/// (mono f32, 64-frame blocks) to `to` in `session`.
fn remote_sender(session: &SessionSettings, to: SocketAddr) -> Worker<LivePeer> {
    let (core, _) = LivePeer::new(PeerConfig {
        session: session.session_uuid(),
        name: "remote".into(),
        unicast_targets: vec![to],
        use_group: false,
        audio_tx: Some((
            AudioTxConfig {
                stream_id: 1,
                channels: 1,
                sample_rate: 48_000,
                block_frames: BLOCK_FRAMES as u16,
                format: SampleFormat::F32,
                jellie: false,
            },
            AudioSource::Generator(Box::new(|first, block| {
                for (i, s) in block.iter_mut().enumerate() {
                    let t = (first + i as u64) as f32 / 48_000.0;
                    *s = (t * 440.0 * std::f32::consts::TAU).sin() * 0.5;
                }
            })),
        )),
        ..PeerConfig::default()
    });
    Worker::spawn(
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
    .unwrap()
}

fn receive_config() -> LiveConfig {
    LiveConfig {
        channels: 1,
        sample_rate: 48_000,
        max_host_block: BLOCK_FRAMES,
        send: None,
        recv: ReceiveSpec {
            // Concealment plays silence: whatever is loud was received.
            conceal: ConcealMethod::Zero,
            ..ReceiveSpec::default()
        },
        thread_name: "live-settings-rx".into(),
    }
}

fn wait_loud(audio: &AudioThread, what: &str) {
    let t0 = Instant::now();
    while audio.loudest() < 0.3 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{what}: no audio (loudest {})",
            audio.loudest()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Receive-style session: moved to a new port and session while the audio
/// thread plays, it listens there (the old port is released) and a real
/// sender's audio for the new session arrives through the same handle.
/// Invalid settings and a taken port are reported, and fixed by Apply.
#[test]
fn receive_follows_new_port_and_session_live() {
    let (p1, p2) = (free_port(), free_port());
    let a = settings("live-a", format!("127.0.0.1:{p1}"));
    let (plugin, hooks) = Plugin::new(a.clone());
    let (handle, stats, session): (AudioHandle, Arc<LinkStats>, LiveSession) =
        start(receive_config(), hooks).unwrap();
    plugin.wait_event(&format!("running live-a 0.0.0.0:{p1}"));
    let audio = AudioThread::spawn(handle, true);

    // A sender for session B on the new port: nothing plays before the change.
    let b = settings("live-b", format!("127.0.0.1:{p2}"));
    let sender = remote_sender(&b, SocketAddr::from((Ipv4Addr::LOCALHOST, p2)));
    std::thread::sleep(Duration::from_millis(400));
    assert!(audio.loudest() < 1e-6, "played before the change");

    plugin.apply(b.clone());
    plugin.wait_event(&format!("running live-b 0.0.0.0:{p2}"));
    assert_eq!(session.restarts(), 1);
    // The old port is free, the new one taken.
    assert!(UdpSocket::bind(("127.0.0.1", p1)).is_ok());
    assert!(UdpSocket::bind(("127.0.0.1", p2)).is_err());
    wait_loud(&audio, "after the change");

    // Invalid settings: reported, the audio thread goes on (silence).
    plugin.apply(settings("live-b", "not an address".into()));
    let failed = plugin.wait_event("failed");
    assert!(failed.contains("not an IP address"), "{failed}");
    std::thread::sleep(Duration::from_millis(100));
    audio.reset_loudest();
    std::thread::sleep(Duration::from_millis(300));
    assert!(audio.loudest() < 1e-6, "played with no worker");

    // A taken port fails too; Apply (same settings) once it is free retries.
    let blocker = UdpSocket::bind(("0.0.0.0", p2)).unwrap();
    plugin.events.lock().clear();
    plugin.apply(b.clone());
    let failed = plugin.wait_event("failed");
    assert!(failed.contains("network"), "{failed}");
    drop(blocker);
    plugin.events.lock().clear();
    plugin.apply(b.clone());
    plugin.wait_event(&format!("running live-b 0.0.0.0:{p2}"));
    audio.reset_loudest();
    wait_loud(&audio, "after the retry");

    let handle = audio.stop();
    drop(sender);
    drop(session);
    drop(handle);
    let s = stats.snapshot();
    assert!(s.audio_frames_pulled > 0, "{s:?}");
    // The gaps (no worker) were counted as underruns.
    assert!(s.audio_frames_underrun > 0, "{s:?}");
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        0,
        "the audio thread allocated or freed"
    );
}

/// Hand each TOAST message of `session`'s frames arriving at `sock` to
/// `take` until it returns `Some` or `within` has passed.
fn first_on<T>(
    sock: &UdpSocket,
    session: &SessionSettings,
    within: Duration,
    mut take: impl FnMut(Message<'_>) -> Option<T>,
) -> Option<T> {
    let want = session.session_uuid();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 2048];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            break;
        };
        let Ok(frame) = decode_frame(&buf[..n], None) else {
            continue;
        };
        if frame.header.session != want {
            continue;
        }
        if let Some(t) = Message::parse(&frame).ok().and_then(&mut take) {
            return Some(t);
        }
    }
    None
}

/// Frames on `sock` for `session` within `within`: the loudest audio sample
/// seen, or `None` if no audio frame of that session came.
fn audio_on(sock: &UdpSocket, session: &SessionSettings, within: Duration) -> Option<f32> {
    let mut loudest: Option<f32> = None;
    first_on(sock, session, within, |m| {
        if let Message::Audio(a) = m {
            let peak = (0..a.sample_count()).fold(0.0f32, |m, i| m.max(a.sample_f32(i).abs()));
            loudest = Some(loudest.unwrap_or(0.0).max(peak));
        }
        None::<()>
    });
    loudest
}

/// The audio stream names in the first heartbeat of `session` that arrives
/// at `sock` within `within` (empty: none came).
fn stream_names_on(
    sock: &UdpSocket,
    session: &SessionSettings,
    within: Duration,
) -> Vec<Option<String>> {
    first_on(sock, session, within, |m| match m {
        Message::Heartbeat(h) => Some(
            h.streams
                .into_iter()
                .filter(|s| s.kind == StreamKind::Audio)
                .map(|s| s.name)
                .collect(),
        ),
        _ => None,
    })
    .unwrap_or_default()
}

/// Send-style session: moved to a new destination and session while the
/// audio thread pushes, the audio (through the same handle) goes there, in
/// the new session, and no longer to the old destination.
#[test]
fn send_follows_new_destination_and_session_live() {
    let old_dest = UdpSocket::bind("127.0.0.1:0").unwrap();
    let new_dest = UdpSocket::bind("127.0.0.1:0").unwrap();
    let a = settings("send-a", old_dest.local_addr().unwrap().to_string());
    let (plugin, hooks) = Plugin::new(a.clone());
    let stream_name = Arc::new(parking_lot::RwLock::new("Guitar DI".to_owned()));
    let config = LiveConfig {
        send: Some(SendSpec {
            format: SampleFormat::F32,
            jellie: false,
            midi_burst: 3,
            stream_name: stream_name.clone(),
        }),
        recv: ReceiveSpec {
            play: false,
            ..ReceiveSpec::default()
        },
        thread_name: "live-settings-tx".into(),
        ..receive_config()
    };
    let (handle, stats, session) = start(config, hooks).unwrap();
    plugin.wait_event("running send-a");
    let audio = AudioThread::spawn(handle, false);
    let got = audio_on(&old_dest, &a, Duration::from_millis(500));
    assert!(
        got.is_some_and(|p| (p - 0.25).abs() < 1e-6),
        "old destination: {got:?}"
    );
    assert_eq!(
        stream_names_on(&old_dest, &a, Duration::from_millis(600)),
        vec![Some("Guitar DI".to_owned())]
    );

    // A burst of changes (an edit, then a state restore 50 ms later)
    // restarts the worker once, on the last settings.
    let b = settings("send-b", new_dest.local_addr().unwrap().to_string());
    plugin.apply(settings(
        "send-c",
        old_dest.local_addr().unwrap().to_string(),
    ));
    std::thread::sleep(Duration::from_millis(50));
    *stream_name.write() = "Bass".to_owned();
    plugin.restore(b.clone());
    plugin.wait_event("running send-b");
    assert_eq!(session.restarts(), 1);
    assert!(
        !plugin.events.lock().iter().any(|e| e.contains("send-c")),
        "{:?}",
        plugin.events.lock()
    );
    let got = audio_on(&new_dest, &b, Duration::from_millis(500));
    assert!(
        got.is_some_and(|p| (p - 0.25).abs() < 1e-6),
        "new destination: {got:?}"
    );
    // The restarted worker announces the name as it was then.
    assert_eq!(
        stream_names_on(&new_dest, &b, Duration::from_millis(600)),
        vec![Some("Bass".to_owned())]
    );
    // Drain what the old worker sent before it stopped; then nothing more.
    audio_on(&old_dest, &a, Duration::from_millis(50));
    let mut buf = [0u8; 2048];
    old_dest
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        old_dest.recv_from(&mut buf).is_err(),
        "the old destination still gets frames"
    );

    let handle = audio.stop();
    drop(session);
    drop(handle);
    let s = stats.snapshot();
    assert!(s.audio_frames_pushed > 0, "{s:?}");
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        0,
        "the audio thread allocated or freed"
    );
}

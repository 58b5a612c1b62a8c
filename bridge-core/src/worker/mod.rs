//! The worker thread: owns the UDP driver and a sans-IO session core, and
//! runs the deadline-driven loop between them.
//!
//! The loop, once per wake-up: ask the core for its next deadline, wait on the
//! sockets until a datagram arrives or the deadline passes
//! ([`UdpDriver::poll`]), feed every datagram to the core with the current
//! time, run the core's timers ([`Core::on_tick`]), and send what it queued.
//! The core never sees a socket or a clock: time is a parameter.
//!
//! A panic inside the core or the driver is caught on the worker thread
//! (`catch_unwind`), recorded in [`LinkStats`] (state `Failed`, message) and
//! returned by [`Worker::join`]; it never propagates into the host.

pub mod cadence;
pub mod clock;
pub mod peer;

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use clock::{Clock, MonotonicClock, SkewedClock};

use crate::handle::{LinkStats, WorkerLink, WorkerState};
use crate::net::{DriverStats, NetConfig, NetError, StageStats, UdpDriver, Via};

/// Where a queued datagram goes.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// The multicast group (dropped if none is joined).
    Group,
    /// One unicast address.
    To(SocketAddr),
}

/// Datagrams a core wants sent. Buffers are recycled between wake-ups.
///
/// Thread-safe: no. Realtime-safe: no (may grow).
#[derive(Debug, Default)]
pub struct Outbox {
    queued: Vec<(Dest, Vec<u8>)>,
    len: usize,
}

impl Outbox {
    /// Queue a copy of `bytes` for `dest`.
    pub fn send(&mut self, dest: Dest, bytes: &[u8]) {
        if self.len < self.queued.len() {
            let slot = &mut self.queued[self.len];
            slot.0 = dest;
            slot.1.clear();
            slot.1.extend_from_slice(bytes);
        } else {
            self.queued.push((dest, bytes.to_vec()));
        }
        self.len += 1;
    }

    /// Queue a datagram built in place by `build` (returns its length; 0 = nothing).
    pub fn send_with(
        &mut self,
        dest: Dest,
        max_len: usize,
        build: impl FnOnce(&mut [u8]) -> usize,
    ) {
        if self.len == self.queued.len() {
            self.queued.push((dest, Vec::new()));
        }
        let slot = &mut self.queued[self.len];
        slot.0 = dest;
        slot.1.clear();
        slot.1.resize(max_len, 0);
        let n = build(&mut slot.1);
        if n > 0 {
            slot.1.truncate(n);
            self.len += 1;
        }
    }

    /// Datagrams queued and not yet sent.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Take everything queued (for tests and in-process drivers).
    pub fn drain(&mut self) -> impl Iterator<Item = (Dest, &[u8])> + '_ {
        let n = std::mem::take(&mut self.len);
        self.queued[..n].iter().map(|(d, b)| (*d, b.as_slice()))
    }
}

/// What the worker knows about its sockets, handed to the core each tick.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetInfo {
    /// Local unicast address (the port goes into heartbeats).
    pub local: SocketAddr,
    /// Driver counters.
    pub driver: DriverStats,
    /// Impairment stage counters (test option), if on.
    pub stage: Option<StageStats>,
}

/// A sans-IO session core driven by the worker.
///
/// Thread-safe: no (moved into the worker thread, hence `Send`).
/// Realtime-safe: no (runs on the worker).
pub trait Core: Send + 'static {
    /// A datagram that arrived at `arrived_ns` (the kernel's receive time,
    /// at most `now_ns`) is handled at `now_ns` (`link`: the plugin's, for
    /// received MIDI). Arrival times never go backwards from one datagram
    /// to the next, but may lie before the last tick's `now_ns` (a worker
    /// that woke late finds datagrams that came while it slept).
    fn on_datagram(
        &mut self,
        now_ns: u64,
        arrived_ns: u64,
        via: Via,
        from: SocketAddr,
        bytes: &[u8],
        link: Option<&mut WorkerLink>,
    );
    /// Run timers due at `now_ns`, exchange audio/MIDI/transport with the
    /// plugin through `link` (if any), and queue datagrams to send.
    fn on_tick(
        &mut self,
        now_ns: u64,
        net: &NetInfo,
        link: Option<&mut WorkerLink>,
        out: &mut Outbox,
    );
    /// When `on_tick` must run next (ns, same clock). The worker also ticks
    /// after every batch of datagrams.
    fn next_deadline_ns(&self, now_ns: u64) -> u64;
    /// The driver's counters as the thread stops, after the last datagram
    /// was handled (so final reports agree with what the core saw).
    fn on_final_net_info(&mut self, _net: &NetInfo) {}
    /// The worker is stopping: queue last words (goodbye).
    fn on_stop(&mut self, now_ns: u64, out: &mut Outbox) {
        let _ = (now_ns, out);
    }
}

/// Worker errors.
///
/// Thread-safe: yes. Realtime-safe: no.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The sockets could not be opened or polled.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The worker thread could not be started.
    #[error("spawning the worker thread: {0}")]
    Spawn(std::io::Error),
    /// The core or driver panicked; the panic was caught.
    #[error("worker panicked: {0}")]
    Panicked(String),
}

/// How a worker thread ended: the core (or why not) and the link it held.
type WorkerOutcome<C> = (Result<C, WorkerError>, Option<WorkerLink>);

/// Why [`Worker::try_spawn`] failed, with the link it was given (to retry).
///
/// Thread-safe: no (holds the link; `Send`). Realtime-safe: no.
#[derive(thiserror::Error)]
#[error("{error}")]
pub struct SpawnError {
    /// What went wrong.
    pub error: WorkerError,
    /// The [`WorkerLink`] passed to [`Worker::try_spawn`], unused.
    pub link: Option<WorkerLink>,
}

impl std::fmt::Debug for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpawnError")
            .field("error", &self.error)
            .field("link", &self.link.is_some())
            .finish()
    }
}

/// Worker settings.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Sockets to open.
    pub net: NetConfig,
    /// Longest sleep between ticks even if the core asks for more.
    pub max_sleep: Duration,
    /// Thread name.
    pub thread_name: String,
    /// Ask for `SCHED_FIFO` at this priority (1–99) for the worker thread,
    /// best effort (Linux; refused without `CAP_SYS_NICE` or an `rtprio`
    /// limit, as for a user outside the `audio` group). `None`: normal.
    ///
    /// Why: a plugin's worker renders the audio its host will play a few
    /// milliseconds later; on a busy machine a normal-priority thread
    /// wakes late, the ring runs dry and the host plays a dropout. A low
    /// real-time priority (plugins use [`WORKER_REALTIME_PRIORITY`]) stays
    /// below the hosts' audio threads (JACK: 70+) while preempting the
    /// desktop. Whether it was granted is in `LinkStats::worker_realtime`.
    pub realtime_priority: Option<i32>,
}

/// The real-time priority plugins ask for their workers (below audio
/// threads, above everything that is not real-time).
pub const WORKER_REALTIME_PRIORITY: i32 = 20;

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            net: NetConfig::default(),
            max_sleep: Duration::from_millis(50),
            thread_name: "jamnet-worker".into(),
            realtime_priority: None,
        }
    }
}

/// Put the calling thread in `SCHED_FIFO` at `priority` (1–99).
///
/// Thread-safe: yes (affects the calling thread only). Realtime-safe: no (a
/// syscall). Errors with the OS's reason (`EPERM` without the right to).
pub fn set_current_thread_realtime(priority: i32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param {
            sched_priority: priority.clamp(1, 99),
        };
        // SAFETY: `pthread_self()` is always a valid handle for the calling
        // thread and `param` is a fully initialised `sched_param` that
        // outlives the call; the call only reads it.
        let rc =
            unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(rc))
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = priority;
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

/// A running worker thread.
///
/// Thread-safe: `stop` may be called from any thread holding it; `Send`.
/// Realtime-safe: no (never touch it from the audio thread; the audio thread
/// holds only the [`crate::handle::AudioHandle`]).
pub struct Worker<C: Core> {
    thread: Option<JoinHandle<WorkerOutcome<C>>>,
    stop: Arc<AtomicBool>,
    stats: Arc<LinkStats>,
    local: SocketAddr,
}

impl<C: Core> Worker<C> {
    /// Open the sockets (errors are returned here, synchronously), then start
    /// the thread running `core`. `link` is the worker end of a plugin's
    /// handle (or `None` for headless peers); `stats` is where the worker
    /// reports (use the link's own stats if there is a link).
    pub fn spawn(
        config: WorkerConfig,
        clock: Arc<dyn Clock>,
        core: C,
        link: Option<WorkerLink>,
        stats: Arc<LinkStats>,
    ) -> Result<Self, WorkerError> {
        Self::try_spawn(config, clock, core, link, stats).map_err(|e| e.error)
    }

    /// [`Self::spawn`], but a failure hands the [`WorkerLink`] back (in
    /// [`SpawnError::link`]), so a plugin can retry with other settings
    /// while its audio thread keeps the same [`crate::handle::AudioHandle`].
    pub fn try_spawn(
        config: WorkerConfig,
        clock: Arc<dyn Clock>,
        core: C,
        link: Option<WorkerLink>,
        stats: Arc<LinkStats>,
    ) -> Result<Self, Box<SpawnError>> {
        stats.set_worker_state(WorkerState::Starting);
        let mut link = link;
        if let Some(l) = link.as_mut() {
            l.set_clock(clock.clone());
        }
        let (driver, local) = match UdpDriver::open(&config.net).and_then(|d| {
            let local = d.local_addr().map_err(NetError::Poll)?;
            Ok((d, local))
        }) {
            Ok(v) => v,
            Err(e) => {
                return Err(Box::new(SpawnError {
                    error: WorkerError::Net(e),
                    link,
                }))
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        // The link travels through a slot so that a failed thread spawn
        // (which drops the closure) can still hand it back.
        let link_slot = Arc::new(parking_lot::Mutex::new(link));
        let spawned = std::thread::Builder::new()
            .name(config.thread_name.clone())
            .spawn({
                let stop = stop.clone();
                let stats = stats.clone();
                let link_slot = link_slot.clone();
                move || {
                    if let Some(priority) = config.realtime_priority {
                        let granted = set_current_thread_realtime(priority).is_ok();
                        stats.worker_realtime.store(granted, Ordering::Relaxed);
                    }
                    let link = link_slot.lock().take();
                    drop(link_slot);
                    let mut state = LoopState {
                        driver,
                        core,
                        link,
                        clock,
                        stop,
                        stats: stats.clone(),
                        max_sleep: config.max_sleep,
                        out: Outbox::default(),
                        local,
                    };
                    let result = catch_unwind(AssertUnwindSafe(|| state.run()));
                    let link = state.link.take();
                    let result = match result {
                        Ok(Ok(())) => {
                            stats.set_worker_state(WorkerState::Stopped);
                            Ok(state.core)
                        }
                        Ok(Err(e)) => {
                            stats.set_error(e.to_string());
                            Err(e)
                        }
                        Err(panic) => {
                            let msg = panic_message(&panic);
                            stats.set_error(format!("worker panicked: {msg}"));
                            Err(WorkerError::Panicked(msg))
                        }
                    };
                    (result, link)
                }
            });
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => {
                return Err(Box::new(SpawnError {
                    error: WorkerError::Spawn(e),
                    link: link_slot.lock().take(),
                }))
            }
        };
        Ok(Self {
            thread: Some(thread),
            stop,
            stats,
            local,
        })
    }

    /// Local unicast address of the worker's socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Shared counters.
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    /// Ask the thread to stop (it sends the core's last words first).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether the thread has ended (stopped, failed or panicked).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stop the thread and take the core back (for final summaries), or the
    /// error / caught panic that ended it.
    pub fn join(self) -> Result<C, WorkerError> {
        self.join_keeping_link().0
    }

    /// Stop the thread (it sends the core's last words first) and take back
    /// both the core's outcome (as [`Self::join`]) and the [`WorkerLink`] it
    /// was given, so a new worker (say, on new session settings) can serve
    /// the same [`crate::handle::AudioHandle`]: its rings and sample counters
    /// carry on. The link is `None` only if none was given.
    pub fn join_keeping_link(mut self) -> WorkerOutcome<C> {
        self.request_stop();
        let t = self.thread.take().expect("joined once");
        match t.join() {
            Ok(r) => r,
            // Unreachable in practice: the closure catches every panic.
            Err(p) => (Err(WorkerError::Panicked(panic_message(&p))), None),
        }
    }
}

impl<C: Core> Drop for Worker<C> {
    fn drop(&mut self) {
        self.request_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

struct LoopState<C: Core> {
    driver: UdpDriver,
    core: C,
    link: Option<WorkerLink>,
    clock: Arc<dyn Clock>,
    stop: Arc<AtomicBool>,
    stats: Arc<LinkStats>,
    max_sleep: Duration,
    out: Outbox,
    local: SocketAddr,
}

impl<C: Core> LoopState<C> {
    fn info(&self) -> NetInfo {
        NetInfo {
            local: self.local,
            driver: self.driver.stats(),
            stage: self.driver.stage_stats(),
        }
    }

    fn flush(&mut self) {
        for (dest, bytes) in self.out.drain() {
            match dest {
                Dest::Group => self.driver.send_group(bytes),
                Dest::To(a) => self.driver.send_to(bytes, a),
            };
        }
        let d = self.driver.stats();
        self.stats.frames_sent.store(d.sent, Ordering::Relaxed);
        self.stats
            .frames_received
            .store(d.received, Ordering::Relaxed);
    }

    fn run(&mut self) -> Result<(), WorkerError> {
        self.stats.set_worker_state(WorkerState::Running);
        let mut datagrams: Vec<(Via, SocketAddr, Vec<u8>, Instant)> = Vec::new();
        let mut spare: Vec<Vec<u8>> = Vec::new();
        loop {
            let now = self.clock.now_ns();
            if self.stop.load(Ordering::Relaxed)
                || self.link.as_ref().is_some_and(|l| l.plugin_gone())
            {
                let info = self.info();
                self.core.on_final_net_info(&info);
                self.core.on_stop(now, &mut self.out);
                self.flush();
                return Ok(());
            }
            let info = self.info();
            self.core
                .on_tick(now, &info, self.link.as_mut(), &mut self.out);
            self.flush();
            let now = self.clock.now_ns();
            let wait_ns = self.core.next_deadline_ns(now).saturating_sub(now);
            let deadline = Instant::now() + Duration::from_nanos(wait_ns).min(self.max_sleep);
            // Collect first, then feed: the driver's buffer is borrowed
            // during the callback, and the core wants `now` per datagram.
            self.driver.poll(deadline, |via, from, bytes, arrived| {
                let mut b = spare.pop().unwrap_or_default();
                b.clear();
                b.extend_from_slice(bytes);
                datagrams.push((via, from, b, arrived));
            })?;
            let now = self.clock.now_ns();
            let now_instant = Instant::now();
            for (via, from, bytes, arrived) in datagrams.drain(..) {
                // The injected clock's rate differs from the monotonic one by
                // ppm: over an age of milliseconds that is nanoseconds.
                let age = now_instant.saturating_duration_since(arrived).as_nanos() as u64;
                self.core.on_datagram(
                    now,
                    now.saturating_sub(age),
                    via,
                    from,
                    &bytes,
                    self.link.as_mut(),
                );
                spare.push(bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::Mutex;

    fn cfg() -> WorkerConfig {
        WorkerConfig {
            net: NetConfig {
                bind_ip: Ipv4Addr::LOCALHOST,
                group: None,
                ..NetConfig::default()
            },
            ..WorkerConfig::default()
        }
    }

    /// Echoes every datagram back to its sender; ticks every 5 ms.
    struct Echo {
        got: Arc<Mutex<Vec<Vec<u8>>>>,
        pending: Vec<(SocketAddr, Vec<u8>)>,
        ticks: u64,
        panic_on: Option<u8>,
        /// A datagram starting 0x51 makes the next tick sleep this long.
        stall: Duration,
        stall_next: bool,
        /// (first byte, now − arrived) per datagram.
        ages: Arc<Mutex<Vec<(u8, u64)>>>,
    }

    impl Core for Echo {
        fn on_datagram(
            &mut self,
            now: u64,
            arrived: u64,
            _via: Via,
            from: SocketAddr,
            bytes: &[u8],
            _l: Option<&mut WorkerLink>,
        ) {
            if self.panic_on.is_some_and(|p| bytes.first() == Some(&p)) {
                panic!("core saw poison byte");
            }
            assert!(arrived <= now, "arrived {arrived} after now {now}");
            let first = bytes.first().copied().unwrap_or(0);
            self.ages.lock().unwrap().push((first, now - arrived));
            self.stall_next |= first == 0x51;
            self.got.lock().unwrap().push(bytes.to_vec());
            self.pending.push((from, bytes.to_vec()));
        }
        fn on_tick(
            &mut self,
            _now: u64,
            _n: &NetInfo,
            _l: Option<&mut WorkerLink>,
            out: &mut Outbox,
        ) {
            self.ticks += 1;
            for (to, b) in self.pending.drain(..) {
                out.send(Dest::To(to), &b);
            }
            if std::mem::take(&mut self.stall_next) {
                std::thread::sleep(self.stall);
            }
        }
        fn next_deadline_ns(&self, now: u64) -> u64 {
            now + 5_000_000
        }
    }

    fn echo(panic_on: Option<u8>) -> (Echo, Arc<Mutex<Vec<Vec<u8>>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        (
            Echo {
                got: got.clone(),
                pending: Vec::new(),
                ticks: 0,
                panic_on,
                stall: Duration::from_millis(40),
                stall_next: false,
                ages: Arc::new(Mutex::new(Vec::new())),
            },
            got,
        )
    }

    #[test]
    fn worker_echoes_over_real_udp_and_returns_core() {
        let (core, got) = echo(None);
        let stats = Arc::new(LinkStats::default());
        let w = Worker::spawn(
            cfg(),
            Arc::new(MonotonicClock::new()),
            core,
            None,
            stats.clone(),
        )
        .unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 64];
        for i in 0..20u8 {
            client.send_to(&[i, 1, 2, 3], w.local_addr()).unwrap();
            let (n, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i, 1, 2, 3]);
        }
        assert_eq!(stats.worker_state(), WorkerState::Running);
        let core = w.join().unwrap();
        assert_eq!(got.lock().unwrap().len(), 20);
        assert!(core.ticks >= 20);
        assert_eq!(stats.worker_state(), WorkerState::Stopped);
        assert_eq!(stats.snapshot().frames_received, 20);
    }

    /// A datagram that arrives while the worker is busy reaches the core
    /// with its kernel arrival time, not the time the worker got to it.
    #[test]
    fn a_datagram_that_waits_for_a_busy_worker_keeps_its_arrival_time() {
        let (core, _got) = echo(None);
        let ages = core.ages.clone();
        let w = Worker::spawn(
            cfg(),
            Arc::new(MonotonicClock::new()),
            core,
            None,
            Arc::new(LinkStats::default()),
        )
        .unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 8];
        // Let the host-wide stamping switch on (see net::rx_stamp).
        std::thread::sleep(Duration::from_millis(50));
        client.send_to(&[0x51], w.local_addr()).unwrap();
        // The worker's next tick sleeps 40 ms: this arrives while it does.
        std::thread::sleep(Duration::from_millis(10));
        client.send_to(&[0x52], w.local_addr()).unwrap();
        client.recv_from(&mut buf).unwrap();
        client.recv_from(&mut buf).unwrap();
        assert_eq!(buf[0], 0x52);
        let core = w.join().unwrap();
        let ages = ages.lock().unwrap().clone();
        let waited = ages.iter().find(|a| a.0 == 0x52).expect("seen").1;
        assert!(
            waited >= 20_000_000,
            "the core saw an age of {waited} ns for a datagram that waited ~40 ms: {ages:?}"
        );
        assert!(waited < 1_000_000_000, "{waited}");
        drop(core);
    }

    #[test]
    fn a_panic_in_the_core_is_caught_and_reported() {
        let (core, _got) = echo(Some(0xEE));
        let stats = Arc::new(LinkStats::default());
        let w = Worker::spawn(
            cfg(),
            Arc::new(MonotonicClock::new()),
            core,
            None,
            stats.clone(),
        )
        .unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(&[0xEE], w.local_addr()).unwrap();
        let t0 = Instant::now();
        while !w.is_finished() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(stats.worker_state(), WorkerState::Failed);
        assert!(stats.error().unwrap().contains("poison byte"));
        match w.join() {
            Err(WorkerError::Panicked(m)) => assert!(m.contains("poison byte")),
            other => panic!("expected a caught panic, got {:?}", other.err()),
        }
    }

    /// A stopped worker hands its link back; a second worker on another
    /// socket serves the same audio handle (rings and counters carry on),
    /// and a spawn that fails hands the link back too.
    #[test]
    fn the_link_survives_a_worker_restart() {
        let (mut h, l) = crate::handle::link(crate::handle::LinkConfig {
            channels: 1,
            block_frames: 16,
            ..crate::handle::LinkConfig::default()
        })
        .unwrap();
        let stats = l.stats().clone();
        let (core, _) = echo(None);
        let clock = Arc::new(MonotonicClock::new());
        let w = Worker::spawn(cfg(), clock.clone(), core, Some(l), stats.clone()).unwrap();
        let (result, l) = w.join_keeping_link();
        assert!(result.is_ok());
        let mut l = l.expect("link handed back");
        // A port that is taken: the spawn fails and the link comes back.
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut busy = cfg();
        busy.net.unicast_port = taken.local_addr().unwrap().port();
        let (core, _) = echo(None);
        let err = match Worker::try_spawn(busy, clock.clone(), core, Some(l), stats.clone()) {
            Ok(_) => panic!("bound a port that is taken"),
            Err(e) => e,
        };
        assert!(matches!(err.error, WorkerError::Net(_)), "{err}");
        l = err.link.expect("link handed back after a failed spawn");
        // The same handle still talks to whoever holds the link next.
        assert!(h.push_interleaved(&[0.5; 16]));
        let (core, _) = echo(None);
        let w = Worker::spawn(cfg(), clock, core, Some(l), stats).unwrap();
        let (_, l) = w.join_keeping_link();
        let mut l = l.unwrap();
        let mut block = [0.0f32; 16];
        assert_eq!(l.pop_input_block(&mut block), Some(0));
        assert_eq!(block, [0.5; 16]);
        assert!(l.push_output_block(&[0.25; 16]));
        drop(l);
        assert!(h.worker_gone());
    }

    #[test]
    fn worker_stops_when_the_plugin_drops_its_handle() {
        let (core, _got) = echo(None);
        let (h, l) = crate::handle::link(crate::handle::LinkConfig::default()).unwrap();
        let stats = l.stats().clone();
        let w = Worker::spawn(
            cfg(),
            Arc::new(MonotonicClock::new()),
            core,
            Some(l),
            stats.clone(),
        )
        .unwrap();
        drop(h);
        let t0 = Instant::now();
        while !w.is_finished() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(w.is_finished());
        assert!(w.join().is_ok());
        assert_eq!(stats.worker_state(), WorkerState::Stopped);
    }
}

//! Live session commands: `toaster peer`, `send`, `recv`, `demo`, `bench net`.
//!
//! Each runs one or more [`LivePeer`] cores on real UDP sockets through the
//! bridge-core worker. Human output by default (peers as they come and go,
//! a live status line on a terminal); `--json` prints one JSON summary at the
//! end (and, for `peer`, one clock line per second).

use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bridge_core::clock::ArbiterConfig;
use bridge_core::conceal::ConcealMethod;
use bridge_core::discovery::mdns::MdnsDiscovery;
use bridge_core::discovery::PeerEvent;
use bridge_core::handle::LinkStats;
use bridge_core::net::{NetConfig, StageConfig, DEFAULT_GROUP, DEFAULT_PORT};
use bridge_core::protocol::{PeerId, SampleFormat, SessionKey};
use bridge_core::transport::live::{Applied, IssueConfig};
use bridge_core::worker::clock::monotonic_ns;
use bridge_core::worker::peer::{
    shared_targets, AudioSource, AudioTxConfig, LivePeer, PeerConfig, PeerReport, SharedReport,
    SharedTargets,
};
use bridge_core::worker::{Clock, MonotonicClock, SkewedClock, Worker, WorkerConfig};
use serde_json::json;
use uuid::Uuid;

const MS: u64 = 1_000_000;

/// Options every live command shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Session UUID (peers of other sessions are ignored).
    #[arg(long, default_value = "00000000-0000-0000-0000-000000000000")]
    pub session: Uuid,
    /// Multicast group, ADDR or ADDR:PORT (default 239.255.77.77:47700 unless --to is given).
    #[arg(long)]
    pub group: Option<String>,
    /// No multicast group at all (unicast --to and/or --mdns only).
    #[arg(long, conflicts_with = "group")]
    pub no_group: bool,
    /// Unicast peer HOST:PORT (repeatable); without --group this disables multicast.
    #[arg(long)]
    pub to: Vec<String>,
    /// Local unicast port (0 = any).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Local address to bind the unicast socket to.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: Ipv4Addr,
    /// Interface address for multicast (0.0.0.0 = by route).
    #[arg(long, default_value = "0.0.0.0")]
    pub iface: Ipv4Addr,
    /// Multicast TTL.
    #[arg(long, default_value_t = 1)]
    pub ttl: u32,
    /// Display name.
    #[arg(long, default_value = "toaster")]
    pub name: String,
    /// Run this long, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// One JSON summary at the end instead of human output.
    #[arg(long)]
    pub json: bool,
    /// Session key, 64 hex digits (AUTH).
    #[arg(long)]
    pub key: Option<String>,
    /// Test option: seeded delay added to every received datagram, ms.
    #[arg(long, default_value_t = 0.0)]
    pub impair_delay_ms: f64,
    /// Test option: ± jitter around the delay, ms.
    #[arg(long, default_value_t = 0.0)]
    pub impair_jitter_ms: f64,
    /// Test option: percent of received datagrams corrupted (one byte flipped).
    #[arg(long, default_value_t = 0.0)]
    pub impair_corrupt: f64,
    /// Test option: percent of received datagrams dropped.
    #[arg(long, default_value_t = 0.0)]
    pub impair_loss: f64,
    /// Also announce and browse DNS-SD `_toast._udp.local.` (mdns-sd); found
    /// peers get our heartbeats by unicast.
    #[arg(long)]
    pub mdns: bool,
    /// Test option: seed of the impairment stage.
    #[arg(long, default_value_t = 1)]
    pub impair_seed: u64,
}

/// `toaster peer`.
#[derive(clap::Args, Debug)]
pub struct PeerArgs {
    #[command(flatten)]
    common: Common,
    /// Injected local clock offset, ns: local = CLOCK_MONOTONIC × (1 + D·1e-6) + O.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    clock_offset_ns: i64,
    /// Injected local clock drift, ppm.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    clock_drift_ppm: f64,
    /// Issue a transport command every S seconds once the session clock is
    /// synced (PLAY at a new position and tempo, then STOP, alternating),
    /// stamped --transport-lead-ms ahead in session time, each sent 3 times
    /// 2 ms apart; 0 = never. Every peer applies every command it gets (its
    /// own too) at the command's session instant; with --json it prints one
    /// line per command: {"transport", "seq", "session_target_ns",
    /// "local_target_ns", "local_applied_ns", "late", "master", …}.
    #[arg(long, default_value_t = 0.0)]
    transport_every_s: f64,
    /// Lead of issued transport commands (session time between issuing and
    /// effect), ms.
    #[arg(long, default_value_t = 50.0)]
    transport_lead_ms: f64,
    /// clock_ping rate, Hz (1–100).
    #[arg(long, default_value_t = 20.0)]
    ping_hz: f64,
    /// clock_ping rate while a new peer's drift is still uncertain (the
    /// start-up burst, at most 20 s per peer), Hz (1–100; 0: no burst).
    #[arg(long, default_value_t = 100.0)]
    burst_hz: f64,
}

/// `toaster send`.
#[derive(clap::Args, Debug)]
pub struct SendArgs {
    #[command(flatten)]
    common: Common,
    /// Send a sine tone of this frequency, Hz.
    #[arg(long, conflicts_with = "wav")]
    tone: Option<f32>,
    /// Send this WAV file (looped).
    #[arg(long)]
    wav: Option<PathBuf>,
    /// Wire sample format.
    #[arg(long, default_value = "f32", value_parser = ["i16", "i24", "f32"])]
    format: String,
    /// Channels (tone only; a WAV brings its own).
    #[arg(long, default_value_t = 1)]
    channels: u8,
    /// Sample rate, Hz (tone only).
    #[arg(long, default_value_t = 48_000)]
    rate: u32,
    /// Frames per network block.
    #[arg(long, default_value_t = 128)]
    block: u16,
    /// Stream id.
    #[arg(long, default_value_t = 1)]
    stream_id: u16,
    /// Stream name announced in heartbeats (receivers list it; at most 64
    /// bytes, longer is cut).
    #[arg(long, default_value = "")]
    stream_name: String,
    /// Send as JELLIE (mono only).
    #[arg(long)]
    jellie: bool,
    /// Send a demo MIDI note pattern (an event every --midi-interval-ms).
    #[arg(long)]
    midi_demo: bool,
    /// Interval between demo MIDI events, ms.
    #[arg(long, default_value_t = 125.0)]
    midi_interval_ms: f64,
    /// Copies per MIDI event (1–8).
    #[arg(long, default_value_t = 3)]
    burst: u8,
}

/// `toaster recv`.
#[derive(clap::Args, Debug)]
pub struct RecvArgs {
    #[command(flatten)]
    common: Common,
    /// Write the audio played from the first received stream to this WAV file.
    #[arg(long)]
    wav: Option<PathBuf>,
    /// Playout delay above the fastest path seen, ms; 0 = adaptive (the
    /// jitter buffer follows measured jitter to a 0.1 % late rate).
    #[arg(long, default_value_t = 0.0)]
    playout_ms: f64,
    /// Concealment of missing audio: zero, repeat, burg, pnbtr, pnbtr-gpu
    /// (falls back to repeat when the method cannot be built).
    #[arg(long, default_value = "pnbtr", value_parser = parse_conceal)]
    conceal: ConcealMethod,
}

fn parse_conceal(s: &str) -> Result<ConcealMethod, String> {
    Ok(match s {
        "zero" => ConcealMethod::Zero,
        "repeat" => ConcealMethod::Repeat,
        "burg" => ConcealMethod::Burg,
        "pnbtr" => ConcealMethod::Pnbtr,
        "pnbtr-gpu" => ConcealMethod::PnbtrGpu,
        other => return Err(format!("unknown concealment method {other:?}")),
    })
}

/// `toaster demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Run this long, seconds.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Simulated link: percent of datagrams lost.
    #[arg(long, default_value_t = 10.0)]
    loss: f64,
    /// Simulated link: delay, ms.
    #[arg(long, default_value_t = 5.0)]
    delay_ms: f64,
    /// Simulated link: ± jitter, ms.
    #[arg(long, default_value_t = 2.0)]
    jitter_ms: f64,
    /// Simulated link: percent of datagrams corrupted.
    #[arg(long, default_value_t = 2.0)]
    corrupt: f64,
    /// Seed of the simulated link.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// One JSON summary at the end.
    #[arg(long)]
    json: bool,
}

/// `toaster bench`.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// Loopback latency (one-way transit and added playout latency, p50/p99) and CPU per stream.
    Net(BenchNetArgs),
}

/// `toaster bench net`.
#[derive(clap::Args, Debug)]
pub struct BenchNetArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent streams for the CPU measurement.
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// Playout delay of the receiver, ms.
    #[arg(long, default_value_t = 5.0)]
    playout_ms: f64,
    /// Frames per block (48 kHz mono f32).
    #[arg(long, default_value_t = 128)]
    block: u16,
    /// Discovery repetitions (two peers on loopback multicast).
    #[arg(long, default_value_t = 10)]
    discovery_runs: usize,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

fn parse_group(s: &str) -> anyhow::Result<SocketAddrV4> {
    if let Ok(a) = s.parse::<SocketAddrV4>() {
        return Ok(a);
    }
    let ip: Ipv4Addr = s
        .parse()
        .with_context(|| format!("--group {s}: not ADDR or ADDR:PORT"))?;
    Ok(SocketAddrV4::new(ip, DEFAULT_PORT))
}

fn resolve(s: &str) -> anyhow::Result<SocketAddr> {
    s.to_socket_addrs()
        .with_context(|| format!("--to {s}"))?
        .find(|a| a.is_ipv4())
        .with_context(|| format!("--to {s}: no IPv4 address"))
}

impl Common {
    fn net(&self) -> anyhow::Result<NetConfig> {
        let group = match (&self.group, self.to.is_empty()) {
            _ if self.no_group => None,
            (Some(g), _) => Some(parse_group(g)?),
            (None, true) => Some(SocketAddrV4::new(DEFAULT_GROUP, DEFAULT_PORT)),
            (None, false) => None,
        };
        let impaired = self.impair_delay_ms > 0.0
            || self.impair_jitter_ms > 0.0
            || self.impair_corrupt > 0.0
            || self.impair_loss > 0.0;
        Ok(NetConfig {
            bind_ip: self.bind,
            unicast_port: self.port,
            group,
            multicast_interface: self.iface,
            multicast_ttl: self.ttl,
            stage: impaired.then(|| StageConfig {
                seed: self.impair_seed,
                delay_ns: (self.impair_delay_ms * 1e6) as u64,
                jitter_ns: (self.impair_jitter_ms * 1e6) as u64,
                corrupt: self.impair_corrupt / 100.0,
                loss: self.impair_loss / 100.0,
                ..StageConfig::default()
            }),
            ..NetConfig::default()
        })
    }

    /// DNS-SD settings if `--mdns`: the address to announce is --iface,
    /// --bind, or the one the route to the mDNS group leaves from.
    fn mdns(
        &self,
        pc: &mut PeerConfig,
    ) -> anyhow::Result<Option<(Uuid, String, Ipv4Addr, SharedTargets)>> {
        if !self.mdns {
            return Ok(None);
        }
        let ip = if !self.iface.is_unspecified() {
            self.iface
        } else if !self.bind.is_unspecified() {
            self.bind
        } else {
            let probe = std::net::UdpSocket::bind("0.0.0.0:0")?;
            probe
                .connect("224.0.0.251:5353")
                .context("--mdns: no route for multicast DNS")?;
            match probe.local_addr()? {
                SocketAddr::V4(a) => *a.ip(),
                SocketAddr::V6(_) => bail!("--mdns: no IPv4 address"),
            }
        };
        let targets = shared_targets();
        pc.heartbeat_targets = Some(targets.clone());
        Ok(Some((self.session, self.name.clone(), ip, targets)))
    }

    fn peer(&self, net: &NetConfig) -> anyhow::Result<PeerConfig> {
        let key = match &self.key {
            Some(k) => Some(SessionKey::from_hex(k.trim()).context("--key must be 64 hex digits")?),
            None => None,
        };
        Ok(PeerConfig {
            session: self.session,
            name: self.name.clone(),
            app: concat!("toaster/", env!("CARGO_PKG_VERSION")).into(),
            use_group: net.group.is_some(),
            unicast_targets: self
                .to
                .iter()
                .map(|t| resolve(t))
                .collect::<Result<_, _>>()?,
            key,
            ..PeerConfig::default()
        })
    }
}

/// Runs a worker until `seconds` pass or Ctrl-C-less end, printing peer
/// events and a status line; returns the core.
#[allow(clippy::too_many_arguments)] // one call per command; a struct would only rename them
fn run_worker(
    net: NetConfig,
    clock: Arc<dyn Clock>,
    core: LivePeer,
    report: SharedReport,
    seconds: f64,
    human: bool,
    mdns: Option<(Uuid, String, Ipv4Addr, SharedTargets)>,
    mut each_second: impl FnMut(f64),
) -> anyhow::Result<LivePeer> {
    let start_ns = clock.now_ns();
    let worker = Worker::spawn(
        WorkerConfig {
            net,
            ..WorkerConfig::default()
        },
        clock.clone(),
        core,
        None,
        Arc::new(LinkStats::default()),
    )?;
    // The worker publishes its peer id when its core starts, on its own
    // thread: wait for it (bounded) instead of racing it.
    let own_id = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(id) = report.lock().peer_id {
                break Some(id);
            }
            if Instant::now() >= deadline || worker.is_finished() {
                break None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    if human {
        println!(
            "local {} , peer id {}",
            worker.local_addr(),
            own_id.map(|p| p.to_string()).unwrap_or_default()
        );
    }
    let mut mdns = match mdns {
        Some((session, name, ip, targets)) => {
            let own = own_id.context("the worker did not start within 5 s (no peer id)")?;
            let d = MdnsDiscovery::start(own, session, &name, ip, worker.local_addr().port())?;
            Some((d, targets))
        }
        None => None,
    };
    let tty = std::io::stderr().is_terminal();
    let t0 = Instant::now();
    let mut printed_events = 0usize;
    let mut next_second = 1.0;
    while t0.elapsed().as_secs_f64() < seconds && !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
        if let Some((d, targets)) = &mut mdns {
            for p in d.poll() {
                if human {
                    println!("dns-sd: {} at {} ({})", p.peer_id, p.addr, p.fullname);
                }
                targets.lock().push(p.addr);
            }
        }
        let r = report.lock().clone();
        if human {
            for ev in &r.peer_events[printed_events.min(r.peer_events.len())..] {
                let since = |at: u64| at.saturating_sub(start_ns) as f64 / 1e6;
                match ev {
                    PeerEvent::Joined {
                        peer_id,
                        name,
                        addr,
                        at_ns,
                    } => {
                        println!(
                            "+ peer {peer_id} \"{name}\" at {addr} (+{:.1} ms)",
                            since(*at_ns)
                        )
                    }
                    PeerEvent::Left { peer_id, at_ns } => {
                        println!("- peer {peer_id} left (+{:.1} ms)", since(*at_ns))
                    }
                    PeerEvent::TimedOut { peer_id, at_ns } => {
                        println!("- peer {peer_id} timed out (+{:.1} ms)", since(*at_ns))
                    }
                }
            }
            if tty {
                eprint!("\r{}   ", status_line(&r));
                let _ = std::io::stderr().flush();
            }
        }
        printed_events = r.peer_events.len();
        if t0.elapsed().as_secs_f64() >= next_second {
            each_second(next_second);
            next_second += 1.0;
        }
    }
    if human && tty {
        eprintln!();
    }
    if let Some((d, _)) = mdns {
        d.stop();
    }
    Ok(worker.join()?)
}

fn status_line(r: &PeerReport) -> String {
    let mut s = format!(
        "peers {} | midi rx {}",
        r.peers.len(),
        r.midi_delivered.len()
    );
    for st in &r.streams {
        s += &format!(
            " | {}#{} played {} rebuilt {} concealed {} late {} jitter {:.2} ms",
            st.source,
            st.stream_id,
            st.stats.blocks_played,
            st.stats.blocks_rebuilt,
            st.stats.blocks_concealed,
            st.stats.late,
            st.stats.jitter_us / 1000.0
        );
    }
    let rejected: u64 = r.drops.values().sum();
    s + &format!(" | dropped {rejected}")
}

fn summary_json(r: &PeerReport) -> serde_json::Value {
    json!({
        "peer_id": r.peer_id,
        "name": r.name,
        "session": r.session,
        "local_addr": r.local_addr,
        "started_ns": r.started_ns,
        "clock": r.clock,
        "peers": r.peers.iter().map(|p| json!({"peer_id": p.peer_id, "name": p.name, "addr": p.addr, "streams": p.streams})).collect::<Vec<_>>(),
        "peer_events": r.peer_events,
        "midi_sent": r.midi_sent,
        "midi_duplicates_dropped": r.midi_duplicates,
        "midi": r.midi_delivered.iter().map(|m| json!({
            "source": m.source, "burst_id": format!("{:016x}", m.burst_id),
            "timestamp": m.timestamp, "bytes": m.bytes, "latency_us": m.latency_us})).collect::<Vec<_>>(),
        "audio_blocks_sent": r.audio_blocks_sent,
        "streams": r.streams,
        "drops": r.drops,
        "discovery": r.discovery,
        "driver": r.driver,
        "impairment": r.stage,
        "transport": r.transport,
    })
}

fn print_human_summary(r: &PeerReport) {
    let joined = r
        .peer_events
        .iter()
        .filter(|e| matches!(e, PeerEvent::Joined { .. }))
        .count();
    let now: Vec<String> = r
        .peers
        .iter()
        .map(|p| {
            let named: Vec<String> = p
                .streams
                .iter()
                .filter_map(|s| Some(format!("#{} \"{}\"", s.stream_id, s.name.as_ref()?)))
                .collect();
            if named.is_empty() {
                format!("{} \"{}\"", p.peer_id, p.name)
            } else {
                format!("{} \"{}\" ({})", p.peer_id, p.name, named.join(", "))
            }
        })
        .collect();
    println!(
        "peers now: {} ({joined} joined during the run)",
        if now.is_empty() {
            "none".to_string()
        } else {
            now.join(", ")
        }
    );
    if r.midi_sent > 0 {
        println!("midi sent: {}", r.midi_sent);
    }
    if r.audio_blocks_sent > 0 {
        println!("audio blocks sent: {}", r.audio_blocks_sent);
    }
    println!(
        "midi delivered: {} (duplicates dropped {})",
        r.midi_delivered.len(),
        r.midi_duplicates
    );
    for s in &r.streams {
        println!(
            "stream {}#{}: {} ch {} Hz{} | datagrams {} | played {} rebuilt {} concealed {} lost {} late {} dup {} reordered {} | jitter {:.2} ms | transit p50 {:.2} ms | latency p50 {:.2} ms p99 {:.2} ms",
            s.source, s.stream_id, s.channels, s.sample_rate, if s.jellie { " JELLIE" } else { "" },
            s.stats.frames_received, s.stats.blocks_played, s.stats.blocks_rebuilt, s.stats.blocks_concealed,
            s.stats.blocks_lost, s.stats.late, s.stats.duplicated, s.stats.reordered, s.stats.jitter_us / 1000.0,
            s.transit_p50_us.unwrap_or(f64::NAN) / 1000.0, s.latency_p50_us.unwrap_or(f64::NAN) / 1000.0,
            s.latency_p99_us.unwrap_or(f64::NAN) / 1000.0,
        );
    }
    let drops: Vec<String> = r
        .drops
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!(
        "dropped: {}",
        if drops.is_empty() {
            "none".to_string()
        } else {
            drops.join(", ")
        }
    );
}

/// `toaster peer`.
pub fn peer(args: PeerArgs) -> anyhow::Result<ExitCode> {
    let c = &args.common;
    let net = c.net()?;
    let clock: Arc<dyn Clock> = if args.clock_offset_ns != 0 || args.clock_drift_ppm != 0.0 {
        Arc::new(SkewedClock::new(args.clock_offset_ns, args.clock_drift_ppm))
    } else {
        Arc::new(MonotonicClock)
    };
    let mut pc = c.peer(&net)?;
    anyhow::ensure!(
        args.transport_every_s >= 0.0 && args.transport_every_s.is_finite(),
        "--transport-every-s must be ≥ 0"
    );
    anyhow::ensure!(
        args.transport_lead_ms >= 0.0 && args.transport_lead_ms <= 10_000.0,
        "--transport-lead-ms must be 0–10000"
    );
    pc.arbiter = ArbiterConfig::with_rate_hz(args.ping_hz)?.with_burst_hz(args.burst_hz)?;
    if args.transport_every_s > 0.0 {
        let mut issue = IssueConfig::every((args.transport_every_s * 1e9) as u64);
        issue.lead_ns = (args.transport_lead_ms * 1e6) as u64;
        pc.transport_issue = Some(issue);
    }
    // Every applied command becomes a JSON line.
    pc.keep_transport_log = 100_000;
    let mdns = c.mdns(&mut pc)?;
    let (core, report) = LivePeer::new(pc);
    let shared = report.clone();
    let own = core.peer_id();
    let json_mode = c.json;
    let clk = clock.clone();
    // Applied transport commands printed so far (one JSON line each).
    let printed = std::cell::Cell::new(0usize);
    let print_transport = |applied: &[Applied]| {
        for a in &applied[printed.get().min(applied.len())..] {
            println!("{}", transport_line(a));
        }
        printed.set(applied.len());
    };
    let core = run_worker(
        net,
        clock,
        core,
        report,
        c.seconds,
        !json_mode,
        mdns,
        |_| {
            if json_mode {
                // The session timeline from bridge-core's ClockDriftArbiter
                // (clock_ping/pong with every peer, lowest settled id is
                // master); before its first refresh, our own local clock.
                let local = clk.now_ns();
                let clock = shared.lock().clock;
                let (session_ns, master, synced, source) = match clock {
                    Some(c) => (
                        c.estimate.to_remote(local),
                        c.master,
                        c.synced,
                        "clock_drift_arbiter",
                    ),
                    None => (local, None, false, "local_clock_before_arbiter"),
                };
                println!(
                    "{}",
                    json!({"local_ns": local, "session_ns": session_ns, "master": master,
                           "self": own, "synced": synced, "session_source": source,
                           "monotonic_ns": monotonic_ns()})
                );
                // Clone first: printing must not hold the worker's report lock.
                let applied = shared.lock().transport_applied.clone();
                print_transport(&applied);
            }
        },
    )?;
    let mut core = core;
    if json_mode {
        print_transport(&core.report().transport_applied);
    }
    finish(core, json_mode)
}

/// One applied transport command as a JSON line (`toaster peer --json`).
fn transport_line(a: &Applied) -> serde_json::Value {
    json!({
        "transport": a.kind.as_str().to_ascii_lowercase(),
        "seq": a.seq,
        "from": PeerId(a.from),
        "own": a.own,
        "session_target_ns": a.session_target_ns,
        "local_target_ns": a.local_target_ns,
        "local_applied_ns": a.local_applied_ns,
        "late": a.late,
        "master": a.master.map(PeerId),
        "position_ms": a.position_ms,
        "bpm": a.bpm,
    })
}

fn finish(mut core: LivePeer, json_mode: bool) -> anyhow::Result<ExitCode> {
    let r = core.report();
    if json_mode {
        println!("{}", summary_json(&r));
    } else {
        print_human_summary(&r);
    }
    Ok(ExitCode::SUCCESS)
}

fn load_wav(path: &PathBuf) -> anyhow::Result<(Vec<f32>, u16, u32)> {
    let mut reader =
        hound::WavReader::open(path).with_context(|| format!("opening {}", path.display()))?;
    let spec = reader.spec();
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()?
        }
    };
    if samples.is_empty() {
        bail!("{}: no samples", path.display());
    }
    Ok((samples, spec.channels, spec.sample_rate))
}

/// `toaster send`.
pub fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let c = &args.common;
    let net = c.net()?;
    let format = match args.format.as_str() {
        "i16" => SampleFormat::I16,
        "i24" => SampleFormat::I24,
        _ => SampleFormat::F32,
    };
    let (source, channels, rate): (AudioSource, u8, u32) = match (&args.wav, args.tone) {
        (Some(path), _) => {
            let (samples, ch, rate) = load_wav(path)?;
            let chs = ch as usize;
            let frames = samples.len() / chs;
            (
                AudioSource::Generator(Box::new(move |first, block| {
                    for (i, s) in block.iter_mut().enumerate() {
                        let frame = (first as usize + i / chs) % frames;
                        *s = samples[frame * chs + i % chs];
                    }
                })),
                ch.min(64) as u8,
                rate,
            )
        }
        (None, tone) => {
            let hz = tone.unwrap_or(440.0);
            let (ch, rate) = (args.channels.max(1) as usize, args.rate);
            (
                AudioSource::Generator(Box::new(move |first, block| {
                    for (i, s) in block.iter_mut().enumerate() {
                        let t = (first + (i / ch) as u64) as f64 / rate as f64;
                        *s = ((t * hz as f64 * std::f64::consts::TAU).sin() * 0.5) as f32;
                    }
                })),
                args.channels.max(1),
                rate,
            )
        }
    };
    if args.jellie && channels != 1 {
        bail!("--jellie needs a mono stream (got {channels} channels)");
    }
    if 20 + args.block as usize * channels as usize * format.size() + 42 + 4 + 16 > 1472 {
        bail!(
            "--block {} × {channels} ch × {} bytes exceeds one 1472-byte datagram",
            args.block,
            format.size()
        );
    }
    let mut pc = c.peer(&net)?;
    pc.audio_tx = Some((
        AudioTxConfig {
            stream_id: args.stream_id,
            channels,
            sample_rate: rate,
            block_frames: args.block,
            format,
            jellie: args.jellie,
        },
        source,
    ));
    pc.stream_name = args.stream_name.clone();
    pc.midi_demo = args.midi_demo;
    pc.midi_demo_interval_ns = (args.midi_interval_ms * 1e6) as u64;
    pc.midi_burst = args.burst.clamp(1, 8);
    let mdns = c.mdns(&mut pc)?;
    let (core, report) = LivePeer::new(pc);
    let core = run_worker(
        net,
        Arc::new(MonotonicClock),
        core,
        report,
        c.seconds,
        !c.json,
        mdns,
        |_| {},
    )?;
    finish(core, c.json)
}

/// `toaster recv`.
pub fn recv(args: RecvArgs) -> anyhow::Result<ExitCode> {
    let c = &args.common;
    let net = c.net()?;
    let mut pc = c.peer(&net)?;
    pc.playout_delay_ns = (args.playout_ms.max(0.0) * 1e6) as u64;
    pc.conceal = args.conceal;
    if args.wav.is_some() {
        pc.record_frames = 48_000 * 600;
    }
    let mdns = c.mdns(&mut pc)?;
    let (core, report) = LivePeer::new(pc);
    let core = run_worker(
        net,
        Arc::new(MonotonicClock),
        core,
        report,
        c.seconds,
        !c.json,
        mdns,
        |_| {},
    )?;
    if let Some(path) = &args.wav {
        let (samples, fmt) = core.recorded();
        let (channels, sample_rate) = fmt.unwrap_or((1, 48_000));
        let spec = hound::WavSpec {
            channels,
            sample_rate,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(path, spec)
            .with_context(|| format!("creating {}", path.display()))?;
        for s in samples {
            w.write_sample(*s)?;
        }
        w.finalize()?;
    }
    finish(core, c.json)
}

fn tone_source(hz: f64) -> AudioSource {
    AudioSource::Generator(Box::new(move |first, block| {
        for (i, s) in block.iter_mut().enumerate() {
            let t = (first + i as u64) as f64 / 48_000.0;
            *s = ((t * hz * std::f64::consts::TAU).sin() * 0.5) as f32;
        }
    }))
}

/// `toaster demo`: two peers in this process over real loopback UDP, the
/// receiver's sockets behind a seeded lossy, jittery link.
pub fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let session = Uuid::new_v4();
    let human = !args.json;
    let rx_net = NetConfig {
        bind_ip: Ipv4Addr::LOCALHOST,
        group: None,
        stage: Some(StageConfig {
            seed: args.seed,
            delay_ns: (args.delay_ms * 1e6) as u64,
            jitter_ns: (args.jitter_ms * 1e6) as u64,
            loss: args.loss / 100.0,
            corrupt: args.corrupt / 100.0,
            ..StageConfig::default()
        }),
        ..NetConfig::default()
    };
    let (rx_core, rx_report) = LivePeer::new(PeerConfig {
        session,
        name: "demo-receiver".into(),
        use_group: false,
        // Adaptive: the jitter buffer finds the delay the link needs.
        playout_delay_ns: 0,
        ..PeerConfig::default()
    });
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let rx = Worker::spawn(
        WorkerConfig {
            net: rx_net,
            ..WorkerConfig::default()
        },
        clock.clone(),
        rx_core,
        None,
        Arc::new(LinkStats::default()),
    )?;
    let rx_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, rx.local_addr().port()));
    let (tx_core, tx_report) = LivePeer::new(PeerConfig {
        session,
        name: "demo-sender".into(),
        use_group: false,
        unicast_targets: vec![rx_addr],
        audio_tx: Some((
            AudioTxConfig {
                stream_id: 1,
                channels: 1,
                sample_rate: 48_000,
                block_frames: 128,
                format: SampleFormat::F32,
                jellie: true,
            },
            tone_source(440.0),
        )),
        midi_demo: true,
        midi_demo_interval_ns: 125 * MS,
        ..PeerConfig::default()
    });
    let tx = Worker::spawn(
        WorkerConfig {
            net: NetConfig {
                bind_ip: Ipv4Addr::LOCALHOST,
                group: None,
                ..NetConfig::default()
            },
            ..WorkerConfig::default()
        },
        clock,
        tx_core,
        None,
        Arc::new(LinkStats::default()),
    )?;
    if human {
        println!(
            "JAMNet demo: a 440 Hz JELLIE tone + MIDI notes, sender {} -> receiver {} over loopback UDP",
            tx.local_addr(),
            rx_addr
        );
        println!(
            "simulated link on the receiver: {:.0}% loss, {:.1} ± {:.1} ms delay, {:.0}% corrupted (seed {})\n",
            args.loss, args.delay_ms, args.jitter_ms, args.corrupt, args.seed
        );
        println!(
            "{:>4} {:>6} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>7} {:>8}",
            "t s",
            "peers",
            "latency",
            "p99",
            "jitter",
            "blocks",
            "lost",
            "rebuilt",
            "conceal",
            "midi tx",
            "midi rx",
            "dropped"
        );
    }
    let t0 = Instant::now();
    let mut next = 1.0;
    while t0.elapsed().as_secs_f64() < args.seconds {
        std::thread::sleep(Duration::from_millis(20));
        if t0.elapsed().as_secs_f64() >= next {
            next += 1.0;
            if human {
                let r = rx_report.lock().clone();
                let t = tx_report.lock().clone();
                let s = r.streams.first();
                let f = |v: Option<f64>| v.map_or("-".into(), |x| format!("{:.2}ms", x / 1000.0));
                println!(
                    "{:>4.0} {:>6} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>7} {:>8}",
                    t0.elapsed().as_secs_f64(),
                    t.peers.len().min(r.peers.len()) + 1,
                    f(s.and_then(|s| s.latency_p50_us)),
                    f(s.and_then(|s| s.latency_p99_us)),
                    f(s.map(|s| s.stats.jitter_us)),
                    s.map_or(0, |s| s.stats.blocks_played
                        + s.stats.blocks_rebuilt
                        + s.stats.blocks_concealed),
                    s.map_or(0, |s| s.stats.blocks_lost + s.stats.blocks_rebuilt),
                    s.map_or(0, |s| s.stats.blocks_rebuilt),
                    s.map_or(0, |s| s.stats.blocks_concealed),
                    t.midi_sent,
                    r.midi_delivered.len(),
                    r.drops.values().sum::<u64>(),
                );
            }
        }
    }
    let mut txc = tx.join()?;
    std::thread::sleep(Duration::from_millis(
        50 + (args.delay_ms + args.jitter_ms) as u64 * 2,
    ));
    let mut rxc = rx.join()?;
    let t = txc.report();
    let r = rxc.report();
    let mut ids: Vec<u64> = r.midi_delivered.iter().map(|m| m.burst_id).collect();
    let delivered = ids.len();
    ids.sort_unstable();
    ids.dedup();
    let exactly_once = ids.len() == delivered && delivered as u64 == t.midi_sent;
    if args.json {
        println!(
            "{}",
            json!({"sender": summary_json(&t), "receiver": summary_json(&r), "midi_exactly_once": exactly_once})
        );
    } else {
        println!();
        print_human_summary(&r);
        println!(
            "MIDI: {} sent, {} delivered, each exactly once: {}",
            t.midi_sent,
            delivered,
            if exactly_once { "yes" } else { "NO" }
        );
    }
    Ok(if exactly_once {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn process_cpu_seconds() -> f64 {
    // utime + stime (fields 14 and 15) of /proc/self/stat, in clock ticks (100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After the ")" field 3 (state) is index 0, so utime (14) is index 11.
    (tick(11) + tick(12)) / 100.0
}

/// One measured run: `n` senders → one receiver on loopback, plain mono f32.
fn bench_run(
    n: usize,
    seconds: f64,
    playout_ms: f64,
    block: u16,
) -> anyhow::Result<(PeerReport, f64, f64)> {
    let session = Uuid::new_v4();
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let (rx_core, _) = LivePeer::new(PeerConfig {
        session,
        name: "bench-rx".into(),
        use_group: false,
        playout_delay_ns: (playout_ms * 1e6) as u64,
        ..PeerConfig::default()
    });
    let rx = Worker::spawn(
        WorkerConfig {
            net: NetConfig {
                bind_ip: Ipv4Addr::LOCALHOST,
                group: None,
                ..NetConfig::default()
            },
            ..WorkerConfig::default()
        },
        clock.clone(),
        rx_core,
        None,
        Arc::new(LinkStats::default()),
    )?;
    let target = rx.local_addr();
    let cpu0 = process_cpu_seconds();
    let t0 = Instant::now();
    let mut senders = Vec::new();
    for i in 0..n {
        let (core, _) = LivePeer::new(PeerConfig {
            session,
            name: format!("bench-tx-{i}"),
            use_group: false,
            unicast_targets: vec![target],
            audio_tx: Some((
                AudioTxConfig {
                    stream_id: 1,
                    channels: 1,
                    sample_rate: 48_000,
                    block_frames: block,
                    format: SampleFormat::F32,
                    jellie: false,
                },
                tone_source(220.0 * (i + 1) as f64),
            )),
            ..PeerConfig::default()
        });
        senders.push(Worker::spawn(
            WorkerConfig {
                net: NetConfig {
                    bind_ip: Ipv4Addr::LOCALHOST,
                    group: None,
                    ..NetConfig::default()
                },
                ..WorkerConfig::default()
            },
            clock.clone(),
            core,
            None,
            Arc::new(LinkStats::default()),
        )?);
    }
    std::thread::sleep(Duration::from_secs_f64(seconds));
    for s in senders {
        s.join()?;
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut rxc = rx.join()?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu0;
    Ok((rxc.report(), cpu, wall))
}

/// Time until two peers list each other after the second one starts, ns:
/// (newcomer lists the old peer, old peer lists the newcomer).
fn discovery_run(group: SocketAddrV4) -> anyhow::Result<(u64, u64)> {
    let session = Uuid::new_v4();
    let net = NetConfig {
        group: Some(group),
        multicast_interface: Ipv4Addr::LOCALHOST,
        ..NetConfig::default()
    };
    let spawn = |name: &str| -> anyhow::Result<(Worker<LivePeer>, SharedReport)> {
        let (core, report) = LivePeer::new(PeerConfig {
            session,
            name: name.into(),
            ..PeerConfig::default()
        });
        let w = Worker::spawn(
            WorkerConfig {
                net: net.clone(),
                ..WorkerConfig::default()
            },
            Arc::new(MonotonicClock),
            core,
            None,
            Arc::new(LinkStats::default()),
        )?;
        Ok((w, report))
    };
    let (old, old_r) = spawn("old")?;
    std::thread::sleep(Duration::from_millis(300));
    let (new, new_r) = spawn("new")?;
    let t0 = Instant::now();
    let joined_at = |r: &SharedReport| {
        r.lock().peer_events.iter().find_map(|e| match e {
            PeerEvent::Joined { at_ns, .. } => Some(*at_ns),
            _ => None,
        })
    };
    let mut result = None;
    while t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(2));
        let start = new_r.lock().started_ns;
        if let (Some(start), Some(a), Some(b)) = (start, joined_at(&new_r), joined_at(&old_r)) {
            result = Some((a.saturating_sub(start), b.saturating_sub(start)));
            break;
        }
    }
    new.join()?;
    old.join()?;
    result.context("peers did not discover each other within 3 s")
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1e6
}

/// `toaster bench net`.
pub fn bench(cmd: BenchCmd) -> anyhow::Result<ExitCode> {
    let BenchCmd::Net(args) = cmd;
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 78), 47778);
    let (mut new_sees_old, mut old_sees_new) = (Vec::new(), Vec::new());
    for _ in 0..args.discovery_runs {
        let (a, b) = discovery_run(group)?;
        new_sees_old.push(a);
        old_sees_new.push(b);
    }
    let (lat, _, _) = bench_run(1, args.seconds, args.playout_ms, args.block)?;
    let s = lat
        .streams
        .first()
        .context("no stream received in the latency run")?;
    let (multi, cpu, wall) = bench_run(args.streams, args.seconds, args.playout_ms, args.block)?;
    let received = multi.streams.len();
    let cpu_pct_per_stream = cpu / wall * 100.0 / args.streams as f64;
    let out = json!({
        "block_frames": args.block, "sample_rate": 48000, "playout_delay_ms": args.playout_ms,
        "one_way_transit_p50_us": s.transit_p50_us, "one_way_transit_p99_us": s.transit_p99_us,
        "added_latency_p50_us": s.latency_p50_us, "added_latency_p99_us": s.latency_p99_us,
        "latency_blocks": s.stats.blocks_played, "latency_concealed": s.stats.blocks_concealed,
        "cpu_streams": args.streams, "cpu_streams_received": received,
        "cpu_seconds": cpu, "wall_seconds": wall, "cpu_percent_per_stream": cpu_pct_per_stream,
        "discovery_runs": args.discovery_runs,
        "discovery_newcomer_lists_existing_ms_p50": pct(&mut new_sees_old, 0.5),
        "discovery_newcomer_lists_existing_ms_max": pct(&mut new_sees_old, 1.0),
        "discovery_existing_lists_newcomer_ms_p50": pct(&mut old_sees_new, 0.5),
        "discovery_existing_lists_newcomer_ms_max": pct(&mut old_sees_new, 1.0),
        "note": "added latency = play time at the receiver − sender's timestamp when the block was ready; CPU covers sender + receiver of each stream (one process, loopback)",
    });
    if args.json {
        println!("{out}");
    } else {
        println!(
            "loopback, 48 kHz mono f32, {}-frame blocks, playout delay {} ms",
            args.block, args.playout_ms
        );
        let ms = |v: Option<f64>| v.map_or("-".into(), |x| format!("{:.3} ms", x / 1000.0));
        println!(
            "one-way transit   p50 {}  p99 {}",
            ms(s.transit_p50_us),
            ms(s.transit_p99_us)
        );
        println!(
            "added latency     p50 {}  p99 {}",
            ms(s.latency_p50_us),
            ms(s.latency_p99_us)
        );
        println!(
            "CPU: {} streams ({} received) used {:.2} s CPU in {:.2} s: {:.2}% of one core per stream (send + receive)",
            args.streams, received, cpu, wall, cpu_pct_per_stream
        );
        println!(
            "discovery ({} runs, loopback multicast): newcomer lists existing p50 {:.2} ms max {:.2} ms; existing lists newcomer p50 {:.2} ms max {:.2} ms",
            args.discovery_runs,
            pct(&mut new_sees_old, 0.5), pct(&mut new_sees_old, 1.0),
            pct(&mut old_sees_new, 0.5), pct(&mut old_sees_new, 1.0)
        );
    }
    Ok(ExitCode::SUCCESS)
}

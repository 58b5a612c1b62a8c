//! The UDP driver: real sockets (socket2), thin.
//!
//! A [`UdpDriver`] owns up to two sockets:
//!
//! * a **unicast socket** bound to `bind_ip:unicast_port` (0 = any free port).
//!   Everything is *sent* from it, so unicast replies come back to it, and its
//!   port is what a peer advertises in its heartbeats;
//! * a **group socket** bound to the multicast group address and port
//!   (default 239.255.77.77:47700) with `SO_REUSEADDR` + `SO_REUSEPORT`, so
//!   several peers (plugin instances) on one host all share port 47700 and
//!   each receives every group datagram. Binding to the group address (not
//!   0.0.0.0) keeps unicast traffic for the port out of it.
//!
//! Both sockets are non-blocking. [`UdpDriver::poll`] waits (with `ppoll`)
//! until a datagram arrives or a deadline passes, then drains every socket:
//! that is the worker's deadline-driven loop. An optional seeded
//! [`ImpairmentStage`] (a test option) holds received datagrams to add delay,
//! jitter, reordering and corruption, since this kernel has no `netem`.

mod rx_stamp;
pub mod stage;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

pub use stage::{ImpairmentStage, StageConfig, StageStats};

/// Default TOAST port.
pub const DEFAULT_PORT: u16 = 47700;
/// Default TOAST multicast group.
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 77, 77);
/// Largest datagram a receiver accepts (PROTOCOL.md section 1).
pub const MAX_DATAGRAM: usize = 65_507;

/// How to open the sockets.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    /// Local address for the unicast socket (0.0.0.0 = all interfaces).
    pub bind_ip: Ipv4Addr,
    /// Unicast port; 0 picks a free one.
    pub unicast_port: u16,
    /// Multicast group and port to join, or `None` for unicast only.
    pub group: Option<SocketAddrV4>,
    /// Interface address for joining and sending multicast (0.0.0.0 = the
    /// kernel's choice by route).
    pub multicast_interface: Ipv4Addr,
    /// Multicast TTL (1 = this link only).
    pub multicast_ttl: u32,
    /// Whether our own multicast comes back to sockets on this host (needed
    /// for several peers on one host; the session ignores its own source id).
    pub multicast_loop: bool,
    /// SO_RCVBUF request, bytes (the kernel may double or clamp it).
    pub recv_buffer: usize,
    /// SO_SNDBUF request, bytes.
    pub send_buffer: usize,
    /// Test option: seeded delay/jitter/corruption stage on received datagrams.
    pub stage: Option<StageConfig>,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            bind_ip: Ipv4Addr::UNSPECIFIED,
            unicast_port: 0,
            group: Some(SocketAddrV4::new(DEFAULT_GROUP, DEFAULT_PORT)),
            multicast_interface: Ipv4Addr::UNSPECIFIED,
            multicast_ttl: 1,
            multicast_loop: true,
            recv_buffer: 1 << 20,
            send_buffer: 1 << 20,
            stage: None,
        }
    }
}

/// Driver errors.
///
/// Thread-safe: yes. Realtime-safe: no.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Opening or configuring the unicast socket failed.
    #[error("unicast socket on {addr}: {source}")]
    Unicast {
        /// Address we tried.
        addr: SocketAddrV4,
        /// Cause.
        source: io::Error,
    },
    /// Opening, binding or joining the multicast group failed.
    #[error("multicast group {group}: {source}")]
    Group {
        /// Group we tried.
        group: SocketAddrV4,
        /// Cause.
        source: io::Error,
    },
    /// Waiting for the sockets failed.
    #[error("poll: {0}")]
    Poll(io::Error),
}

/// Where a datagram came in.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The unicast socket.
    Unicast,
    /// The multicast group socket.
    Group,
}

/// Counters of the driver itself.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DriverStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Bytes sent.
    pub sent_bytes: u64,
    /// Sends that failed (buffer full, unreachable...).
    pub send_errors: u64,
    /// Datagrams received from the kernel.
    pub received: u64,
    /// Bytes received.
    pub received_bytes: u64,
    /// Receive errors other than "would block".
    pub recv_errors: u64,
    /// Datagrams that carried a kernel receive timestamp (arrival times
    /// then exclude the worker's wake-up latency; see [`UdpDriver::poll`]).
    pub kernel_stamped: u64,
}

/// The UDP driver.
///
/// Thread-safe: no (owned by the worker thread; `Send`). Realtime-safe: no
/// (syscalls).
#[derive(Debug)]
pub struct UdpDriver {
    unicast: UdpSocket,
    group_socket: Option<UdpSocket>,
    group: Option<SocketAddrV4>,
    stage: Option<ImpairmentStage>,
    buf: Vec<u8>,
    origin: Instant,
    /// When the sockets were last found empty: every later datagram arrived after it.
    drained_at: Instant,
    stats: DriverStats,
}

fn configure_common(sock: &Socket, cfg: &NetConfig) -> io::Result<()> {
    // Buffer sizes are requests: a kernel clamp (rmem_max) is not an error.
    let _ = sock.set_recv_buffer_size(cfg.recv_buffer);
    let _ = sock.set_send_buffer_size(cfg.send_buffer);
    // Without stamps arrival is the read instant (counted: `kernel_stamped`).
    let _ = rx_stamp::enable(sock);
    sock.set_nonblocking(true)
}

fn open_unicast(cfg: &NetConfig) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    configure_common(&sock, cfg)?;
    sock.set_multicast_ttl_v4(cfg.multicast_ttl)?;
    sock.set_multicast_loop_v4(cfg.multicast_loop)?;
    if !cfg.multicast_interface.is_unspecified() {
        sock.set_multicast_if_v4(&cfg.multicast_interface)?;
    }
    sock.bind(&SockAddr::from(SocketAddrV4::new(
        cfg.bind_ip,
        cfg.unicast_port,
    )))?;
    Ok(sock.into())
}

fn open_group(cfg: &NetConfig, group: SocketAddrV4) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Several peers on one host share the group port: every socket that
    // joined gets its own copy of each multicast datagram.
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    configure_common(&sock, cfg)?;
    // Only datagrams for the groups this socket joined, not every group any
    // socket on the host joined (Linux default is "all").
    sock.set_multicast_all_v4(false)?;
    sock.bind(&SockAddr::from(group))?;
    sock.join_multicast_v4(group.ip(), &cfg.multicast_interface)?;
    sock.set_multicast_loop_v4(cfg.multicast_loop)?;
    Ok(sock.into())
}

impl UdpDriver {
    /// Open the sockets described by `cfg`.
    pub fn open(cfg: &NetConfig) -> Result<Self, NetError> {
        let uaddr = SocketAddrV4::new(cfg.bind_ip, cfg.unicast_port);
        let unicast = open_unicast(cfg).map_err(|source| NetError::Unicast {
            addr: uaddr,
            source,
        })?;
        let group_socket = match cfg.group {
            Some(g) => {
                Some(open_group(cfg, g).map_err(|source| NetError::Group { group: g, source })?)
            }
            None => None,
        };
        Ok(Self {
            unicast,
            group_socket,
            group: cfg.group,
            stage: cfg.stage.map(ImpairmentStage::new),
            buf: vec![0u8; MAX_DATAGRAM + 1],
            origin: Instant::now(),
            drained_at: Instant::now(),
            stats: DriverStats::default(),
        })
    }

    /// The unicast socket's local address (its port goes into heartbeats).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.unicast.local_addr()
    }

    /// The multicast group, if joined.
    pub fn group(&self) -> Option<SocketAddrV4> {
        self.group
    }

    /// Driver counters.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// Impairment stage counters, if the test stage is on.
    pub fn stage_stats(&self) -> Option<StageStats> {
        self.stage.as_ref().map(|s| s.stats())
    }

    /// Send one datagram to `dest`. Errors are counted, not fatal (a full
    /// send buffer or an unreachable peer must not stop the session).
    pub fn send_to(&mut self, bytes: &[u8], dest: SocketAddr) -> bool {
        match self.unicast.send_to(bytes, dest) {
            Ok(n) => {
                self.stats.sent += 1;
                self.stats.sent_bytes += n as u64;
                true
            }
            Err(_) => {
                self.stats.send_errors += 1;
                false
            }
        }
    }

    /// Send one datagram to the multicast group (false if none is joined).
    pub fn send_group(&mut self, bytes: &[u8]) -> bool {
        match self.group {
            Some(g) => self.send_to(bytes, SocketAddr::V4(g)),
            None => false,
        }
    }

    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Wait until a datagram arrives or `deadline` passes (whichever is
    /// first), then hand every datagram now available to `on_datagram`
    /// (after the impairment stage, if on) with the instant it arrived.
    /// Returns the number delivered. A deadline already past only drains.
    ///
    /// The arrival instant is the kernel's receive timestamp, not the
    /// moment this thread read the datagram: a worker that wakes late must
    /// not make the network look late (the jitter buffer would grow, and
    /// the clock exchange would read the delay as path asymmetry). With the
    /// impairment stage, it is the instant the stage releases the datagram
    /// (its arrival on the emulated path).
    pub fn poll(
        &mut self,
        deadline: Instant,
        mut on_datagram: impl FnMut(Via, SocketAddr, &[u8], Instant),
    ) -> Result<usize, NetError> {
        let now = Instant::now();
        let mut wait = deadline.saturating_duration_since(now);
        if let Some(due) = self.stage.as_ref().and_then(|s| s.next_release_ns()) {
            let stage_wait = Duration::from_nanos(due.saturating_sub(self.now_ns()));
            wait = wait.min(stage_wait);
        }
        self.wait_readable(wait)?;
        let mut delivered = 0usize;
        let not_before = self.drained_at;
        // Drain both sockets until they would block.
        for via in [Via::Unicast, Via::Group] {
            loop {
                let sock = match via {
                    Via::Unicast => &self.unicast,
                    Via::Group => match &self.group_socket {
                        Some(s) => s,
                        None => break,
                    },
                };
                match rx_stamp::recv(sock, &mut self.buf) {
                    Ok(r) => {
                        let n = r.len.min(self.buf.len());
                        self.stats.received += 1;
                        self.stats.received_bytes += n as u64;
                        self.stats.kernel_stamped += u64::from(r.stamp.is_some());
                        let arrived = rx_stamp::arrival_instant(
                            r.stamp,
                            rx_stamp::realtime_now(),
                            Instant::now(),
                            not_before,
                        );
                        if let Some(stage) = self.stage.as_mut() {
                            let t =
                                arrived.saturating_duration_since(self.origin).as_nanos() as u64;
                            // The stage does not know the socket; group
                            // traffic is told apart by content, not path.
                            stage.push(t, r.from, &self.buf[..n]);
                        } else {
                            delivered += 1;
                            on_datagram(via, r.from, &self.buf[..n], arrived);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        // e.g. ECONNREFUSED from an earlier ICMP: counted, keep going.
                        self.stats.recv_errors += 1;
                        break;
                    }
                }
            }
        }
        self.drained_at = Instant::now();
        if let Some(stage) = self.stage.as_mut() {
            let t = self.origin.elapsed().as_nanos() as u64;
            let origin = self.origin;
            stage.release(t, |release_ns, from, bytes| {
                delivered += 1;
                on_datagram(
                    Via::Unicast,
                    from,
                    bytes,
                    origin + Duration::from_nanos(release_ns),
                );
            });
        }
        Ok(delivered)
    }

    fn wait_readable(&self, wait: Duration) -> Result<(), NetError> {
        let mut fds = [
            libc::pollfd {
                fd: self.unicast.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.group_socket.as_ref().map_or(-1, |s| s.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ts = libc::timespec {
            tv_sec: wait.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `fds` is a valid array of two initialised pollfd structs that
        // lives across the call (a negative fd is ignored by ppoll); `ts` is a
        // valid timespec; a null sigmask means "keep the current mask".
        let rc = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(NetError::Poll(err));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unicast_only() -> NetConfig {
        NetConfig {
            bind_ip: Ipv4Addr::LOCALHOST,
            group: None,
            ..NetConfig::default()
        }
    }

    fn recv_all(d: &mut UdpDriver, want: usize, within: Duration) -> Vec<(Via, Vec<u8>)> {
        let end = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < want && Instant::now() < end {
            d.poll(
                Instant::now() + Duration::from_millis(20),
                |via, _, b, _| got.push((via, b.to_vec())),
            )
            .unwrap();
        }
        got
    }

    #[test]
    fn unicast_loopback_round_trip() {
        let mut a = UdpDriver::open(&unicast_only()).unwrap();
        let mut b = UdpDriver::open(&unicast_only()).unwrap();
        let b_addr = b.local_addr().unwrap();
        for i in 0..50u8 {
            assert!(a.send_to(&[i; 100], b_addr));
        }
        let got = recv_all(&mut b, 50, Duration::from_secs(2));
        assert_eq!(got.len(), 50);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, (via, p))| *via == Via::Unicast && p[0] == i as u8));
        assert_eq!(b.stats().received, 50);
        assert_eq!(a.stats().sent, 50);
    }

    #[test]
    fn poll_returns_at_deadline_when_idle() {
        let mut a = UdpDriver::open(&unicast_only()).unwrap();
        let t0 = Instant::now();
        let n = a
            .poll(t0 + Duration::from_millis(30), |_, _, _, _| {})
            .unwrap();
        let waited = t0.elapsed();
        assert_eq!(n, 0);
        assert!(waited >= Duration::from_millis(29), "{waited:?}");
        assert!(waited < Duration::from_millis(500), "{waited:?}");
    }

    #[test]
    fn two_peers_share_the_group_port_and_both_hear_the_group() {
        // A group/port of our own so parallel tests do not cross-talk.
        let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 91), 47791);
        let cfg = NetConfig {
            group: Some(group),
            multicast_interface: Ipv4Addr::LOCALHOST,
            ..NetConfig::default()
        };
        let mut a = UdpDriver::open(&cfg).unwrap();
        let mut b = UdpDriver::open(&cfg).unwrap();
        let mut c = UdpDriver::open(&cfg).unwrap();
        assert!(c.send_group(b"hello group"));
        let ga = recv_all(&mut a, 1, Duration::from_secs(2));
        let gb = recv_all(&mut b, 1, Duration::from_secs(2));
        assert_eq!(ga, vec![(Via::Group, b"hello group".to_vec())]);
        assert_eq!(gb, vec![(Via::Group, b"hello group".to_vec())]);
        // The sender hears itself too (loopback on): the session filters its own id.
        let gc = recv_all(&mut c, 1, Duration::from_secs(2));
        assert_eq!(gc.len(), 1);
    }

    #[test]
    fn impairment_stage_delays_real_datagrams() {
        let mut cfg = unicast_only();
        cfg.stage = Some(StageConfig {
            delay_ns: 20_000_000,
            ..StageConfig::default()
        });
        let mut rx = UdpDriver::open(&cfg).unwrap();
        let mut tx = UdpDriver::open(&unicast_only()).unwrap();
        let t0 = Instant::now();
        tx.send_to(b"x", rx.local_addr().unwrap());
        let got = recv_all(&mut rx, 1, Duration::from_secs(2));
        assert_eq!(got.len(), 1);
        assert!(
            t0.elapsed() >= Duration::from_millis(19),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(rx.stage_stats().unwrap().released, 1);
    }
}

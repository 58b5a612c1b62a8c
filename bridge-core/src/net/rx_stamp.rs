//! Kernel receive timestamps (`SO_TIMESTAMPNS`).
//!
//! A datagram's arrival time is the instant the kernel queued it, not the
//! instant the worker got round to reading it. The difference is the
//! worker's wake-up latency, which on a busy machine reaches milliseconds:
//! taken as arrival time it looks like network jitter to the jitter buffer
//! (which then grows) and like path asymmetry to the clock exchange (which
//! then misreads the offset). The kernel stamps with `CLOCK_REALTIME`; the
//! driver converts a stamp to an [`Instant`] through the datagram's *age*
//! (realtime now − stamp), so a realtime clock step between datagrams does
//! not matter, and bounds it (see [`arrival_instant`]).
//!
//! Linux enables stamping host-wide from a work queue when the first socket
//! asks for it; datagrams read before that are stamped at the read, which
//! is what the driver did anyway.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Ask the kernel to stamp every datagram received on `sock`.
pub(super) fn enable(sock: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int that lives across the call and its size
    // is passed; the fd is open (borrowed from a live socket).
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One received datagram's length, sender and kernel stamp (time since the
/// Unix epoch on `CLOCK_REALTIME`; `None` when the kernel gave none).
pub(super) struct Received {
    pub len: usize,
    pub from: SocketAddr,
    pub stamp: Option<Duration>,
}

/// `recvmsg` on a non-blocking IPv4 UDP socket into `buf`, with the
/// `SCM_TIMESTAMPNS` control message read out.
pub(super) fn recv(sock: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Received> {
    let mut addr = MaybeUninit::<libc::sockaddr_in>::zeroed();
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid value (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_mut_ptr().cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>() as _;
    // SAFETY: `msg` points at `iov` (over `buf`), `addr` and `control`, all
    // live and writable for the call, with their true lengths.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: recvmsg filled `msg_namelen` bytes of `addr`; a zeroed
    // sockaddr_in is valid whatever it wrote (we check the family).
    let sin = unsafe { addr.assume_init() };
    let from = if sin.sin_family as libc::c_int == libc::AF_INET {
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            u16::from_be(sin.sin_port),
        ))
    } else {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
    };
    let mut stamp = None;
    // SAFETY: the CMSG_* macros walk the control buffer recvmsg filled, within
    // `msg_controllen`; the timespec is read unaligned from a cmsg whose
    // level/type say it is one.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                if ts.tv_sec >= 0 && (0..1_000_000_000).contains(&ts.tv_nsec) {
                    stamp = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Received {
        len: n as usize,
        from,
        stamp,
    })
}

/// When a datagram stamped `stamp` (realtime) arrived, as an [`Instant`]:
/// `now` minus its age (`realtime_now − stamp`), kept within
/// `[not_before, now]`. `not_before` is when the socket was last found
/// empty: the datagram came after that, whatever the stamp says (a
/// realtime clock stepped by NTP or by hand). No stamp: `now`.
pub(super) fn arrival_instant(
    stamp: Option<Duration>,
    realtime_now: Duration,
    now: Instant,
    not_before: Instant,
) -> Instant {
    let Some(stamp) = stamp else {
        return now;
    };
    let age = realtime_now.saturating_sub(stamp);
    let t = now.checked_sub(age).unwrap_or(not_before);
    t.clamp(not_before.min(now), now)
}

/// Realtime clock now, as time since the Unix epoch.
pub(super) fn realtime_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_is_now_minus_age_within_bounds() {
        let now = Instant::now();
        let nb = now - Duration::from_millis(10);
        let rt = Duration::from_secs(1_000_000);
        let at = |stamp| arrival_instant(stamp, rt, now, nb);
        assert_eq!(at(None), now);
        assert_eq!(
            at(Some(rt - Duration::from_millis(3))),
            now - Duration::from_millis(3)
        );
        // A stamp older than the last time the socket was empty: clamped.
        assert_eq!(at(Some(rt - Duration::from_secs(5))), nb);
        // A stamp in the future (realtime stepped back): now.
        assert_eq!(at(Some(rt + Duration::from_secs(5))), now);
    }

    #[test]
    fn loopback_datagrams_carry_a_kernel_stamp_of_when_they_arrived() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        enable(&rx).unwrap();
        // The kernel turns stamping on for the whole host from a work queue
        // when the first socket asks; until then a datagram is stamped when
        // read (the worker's first datagrams may be, too: as before).
        std::thread::sleep(Duration::from_millis(50));
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sent_at = realtime_now();
        tx.send_to(b"stamp me", rx.local_addr().unwrap()).unwrap();
        // Read it 30 ms later: the stamp must still say when it arrived.
        std::thread::sleep(Duration::from_millis(30));
        let mut buf = [0u8; 64];
        let r = recv(&rx, &mut buf).unwrap();
        let read_at = realtime_now();
        assert_eq!(&buf[..r.len], b"stamp me");
        assert_eq!(r.from, tx.local_addr().unwrap());
        let stamp = r.stamp.expect("the kernel stamped the datagram");
        assert!(
            stamp >= sent_at - Duration::from_millis(1),
            "{stamp:?} {sent_at:?}"
        );
        assert!(
            read_at - stamp >= Duration::from_millis(25),
            "age {:?}: the stamp is the read time, not the arrival",
            read_at - stamp
        );
    }
}

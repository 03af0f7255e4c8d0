//! A continuous ICMP echo stream from inside a namespace, counted exactly.
//!
//! `ping(8)` cannot be stopped without possibly counting the request still in flight as lost,
//! which would make "no packet lost" assertions flaky; this stream stops sending first and
//! then waits (bounded) for outstanding replies.

use std::collections::HashSet;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::Result;
use crate::netns;

/// How long to wait for replies still in flight after the last request.
const DRAIN: Duration = Duration::from_secs(1);

/// Counts of a finished (or running) stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PingStats {
    /// Echo requests the stream tried to send (a send error counts as sent and lost).
    pub sent: u64,
    /// Distinct requests that got their reply.
    pub received: u64,
}

impl PingStats {
    pub fn lost(&self) -> u64 {
        self.sent - self.received
    }
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    sent: AtomicU64,
    received: AtomicU64,
}

/// A running echo stream; see [`crate::Host::spawn_ping_stream`]. Dropping it stops it.
pub struct PingStream {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl PingStream {
    pub(crate) fn start(ns: String, dst: IpAddr, interval_ms: u64) -> Self {
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let interval = Duration::from_millis(interval_ms.max(1));
        let handle = std::thread::spawn(move || {
            netns::enter(&ns)?;
            stream(&s, dst, interval)
        });
        PingStream {
            shared,
            handle: Some(handle),
        }
    }

    /// Counts so far, while the stream runs (for waiting until it has got going).
    pub fn progress(&self) -> PingStats {
        PingStats {
            sent: self.shared.sent.load(Ordering::SeqCst),
            received: self.shared.received.load(Ordering::SeqCst),
        }
    }

    /// Stops sending, waits up to a second for replies in flight, and returns the totals.
    pub fn stop(mut self) -> Result<PingStats> {
        self.finish()?;
        Ok(self.progress())
    }

    fn finish(&mut self) -> Result<()> {
        self.shared.stop.store(true, Ordering::SeqCst);
        match self.handle.take() {
            Some(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => Ok(()),
        }
    }
}

impl Drop for PingStream {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn stream(shared: &Shared, dst: IpAddr, interval: Duration) -> Result<()> {
    let (domain, proto, request, reply) = match dst {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128, 129),
    };
    let sock = Socket::new(domain, Type::RAW, Some(proto))?;
    // connect() makes the kernel deliver only packets from dst to this socket.
    sock.connect(&SocketAddr::new(dst, 0).into())?;
    let ident = (std::process::id() as u16) ^ (next_stream_id() << 8);
    let mut outstanding: HashSet<u16> = HashSet::new();
    let mut seq: u16 = 0;
    let mut next_send = Instant::now();
    let mut buf = [0u8; 1500];

    let mut receive_until = |deadline: Instant, outstanding: &mut HashSet<u16>| -> Result<()> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            sock.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))?;
            match (&sock).read(&mut buf) {
                Ok(n) => {
                    if let Some(s) = parse_reply(&buf[..n], dst.is_ipv4(), reply, ident) {
                        if outstanding.remove(&s) {
                            shared.received.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                // ICMP errors (unreachable) surface as socket errors: the request is lost.
                Err(_) => {}
            }
        }
    };

    while !shared.stop.load(Ordering::SeqCst) {
        let packet = echo_request(request, ident, seq, dst.is_ipv4());
        shared.sent.fetch_add(1, Ordering::SeqCst);
        if sock.send(&packet).is_ok() {
            outstanding.insert(seq);
        }
        seq = seq.wrapping_add(1);
        next_send += interval;
        receive_until(next_send, &mut outstanding)?;
    }
    let drain_deadline = Instant::now() + DRAIN;
    while !outstanding.is_empty() && Instant::now() < drain_deadline {
        receive_until(
            (Instant::now() + Duration::from_millis(20)).min(drain_deadline),
            &mut outstanding,
        )?;
    }
    Ok(())
}

fn next_stream_id() -> u16 {
    static N: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

fn echo_request(kind: u8, ident: u16, seq: u16, v4: bool) -> Vec<u8> {
    let mut p = vec![kind, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"symroute");
    // The kernel checksums ICMPv6 on raw sockets itself, but not ICMPv4.
    if v4 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

fn parse_reply(data: &[u8], v4: bool, reply: u8, ident: u16) -> Option<u16> {
    // IPv4 raw sockets hand over the IP header too; IPv6 ones do not.
    let icmp = if v4 {
        let ihl = usize::from(*data.first()? & 0x0f) * 4;
        data.get(ihl..)?
    } else {
        data
    };
    if icmp.len() < 8 || icmp[0] != reply || u16::from_be_bytes([icmp[4], icmp[5]]) != ident {
        return None;
    }
    Some(u16::from_be_bytes([icmp[6], icmp[7]]))
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_echo_request() {
        // Echo request id 1 seq 1 without payload: checksum is 0xf7fd.
        let p = [8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(checksum(&p), 0xf7fd);
    }

    #[test]
    fn reply_parsing_checks_type_and_ident() {
        let mut ip = vec![0x45u8; 1];
        ip.extend_from_slice(&[0; 19]);
        ip.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert_eq!(parse_reply(&ip, true, 0, 0x1234), Some(7));
        assert_eq!(parse_reply(&ip, true, 0, 0x9999), None);
        assert_eq!(parse_reply(&ip[20..], false, 129, 0x1234), None);
    }
}

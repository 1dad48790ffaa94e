//! Batched datagram I/O: `recvmmsg(2)` and `sendmmsg(2)` over a fixed set of buffers.
//!
//! This is, with `snapshot/memory.rs` (one `malloc_trim(3)`), the crate's only `unsafe` code (the
//! crate denies it elsewhere). Why: the standard
//! library and socket2 receive or send one datagram per system call, and the fast path's cost
//! is dominated by system calls; the two batch calls exist only as raw `libc` functions (the
//! `nix` crate that wraps them is not a dependency). The unsafe surface is kept to the two calls:
//! every pointer handed to the kernel points into buffers owned by [`Batch`], which outlives the
//! call, and every length passed is the length of the buffer pointed to. Address decoding reads
//! the kernel-written `sockaddr_storage` through typed copies, checked against the family.
//!
//! Two more calls live here for the same reason: [`raise_open_file_limit`]
//! (`getrlimit(2)`/`setrlimit(2)`) and [`coarse_seconds`] (`clock_gettime(2)`).
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Receive and send buffers for up to `capacity` datagrams, with their peer addresses.
///
/// The message headers handed to the kernel point into the buffers of the same `Batch`; they are
/// set up once in [`Batch::new`] (a `Vec`'s heap buffer never moves while it is not resized, and
/// none is resized after that), and each call only resets the few fields the kernel rewrites.
pub(crate) struct Batch {
    rx: Vec<u8>,
    tx: Vec<u8>,
    buf_size: usize,
    addrs: Vec<libc::sockaddr_storage>,
    rx_iovecs: Vec<libc::iovec>,
    rx_headers: Vec<libc::mmsghdr>,
    tx_iovecs: Vec<libc::iovec>,
    tx_headers: Vec<libc::mmsghdr>,
    /// Replies queued for the next [`Batch::send`].
    replies: usize,
    received: usize,
}

// SAFETY: the raw pointers inside the headers and iovecs point into this struct's own heap
// buffers and are only dereferenced by the kernel during a call made through `&mut self`.
unsafe impl Send for Batch {}

const ADDR_LEN: libc::socklen_t = size_of::<libc::sockaddr_storage>() as libc::socklen_t;

impl Batch {
    /// Buffers for `capacity` datagrams of at most `buf_size` bytes each, both ways.
    pub(crate) fn new(capacity: usize, buf_size: usize) -> Batch {
        let mut b = Batch {
            rx: vec![0; capacity * buf_size],
            tx: vec![0; capacity * buf_size],
            buf_size,
            // SAFETY: sockaddr_storage, iovec and mmsghdr are plain old data; all-zero (null
            // pointers, zero lengths) is a valid value of each.
            addrs: vec![unsafe { zeroed() }; capacity],
            rx_iovecs: vec![unsafe { zeroed() }; capacity],
            rx_headers: vec![unsafe { zeroed() }; capacity],
            tx_iovecs: vec![unsafe { zeroed() }; capacity],
            tx_headers: vec![unsafe { zeroed() }; capacity],
            replies: 0,
            received: 0,
        };
        for i in 0..capacity {
            b.rx_iovecs[i] = libc::iovec {
                iov_base: b.rx[i * buf_size..].as_mut_ptr().cast(),
                iov_len: buf_size,
            };
            let h = &mut b.rx_headers[i].msg_hdr;
            h.msg_name = (&raw mut b.addrs[i]).cast();
            h.msg_namelen = ADDR_LEN;
            h.msg_iov = &raw mut b.rx_iovecs[i];
            h.msg_iovlen = 1;
            b.tx_iovecs[i] = libc::iovec {
                iov_base: b.tx[i * buf_size..].as_mut_ptr().cast(),
                iov_len: 0,
            };
            b.tx_headers[i].msg_hdr.msg_iov = &raw mut b.tx_iovecs[i];
            b.tx_headers[i].msg_hdr.msg_iovlen = 1;
        }
        b
    }

    /// Blocks until at least one datagram arrives (or the socket's receive timeout passes), then
    /// takes every datagram already queued, up to the capacity. Returns how many.
    pub(crate) fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        // The kernel rewrote the address length and flags of the datagrams it filled last time.
        for h in &mut self.rx_headers[..self.received] {
            h.msg_hdr.msg_namelen = ADDR_LEN;
            h.msg_hdr.msg_flags = 0;
        }
        self.replies = 0;
        self.received = 0;
        // SAFETY: `rx_headers` point to `rx_iovecs`/`addrs`/`rx`, all owned by `self` and alive
        // for the call (see the struct docs); each iovec covers exactly its `buf_size` slice of
        // `rx`, and the count passed is the headers' length.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.rx_headers.as_mut_ptr(),
                self.rx_headers.len() as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = n as usize;
        Ok(self.received)
    }

    /// Datagram `i` of the last [`Batch::recv`]: its bytes, whether the kernel cut it
    /// (longer than the buffer), and its sender.
    pub(crate) fn datagram(&self, i: usize) -> (&[u8], bool, Option<SocketAddr>) {
        let off = i * self.buf_size;
        let h = &self.rx_headers[i];
        let len = (h.msg_len as usize).min(self.buf_size);
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (&self.rx[off..off + len], truncated, self.addr(i))
    }

    /// Datagram `i` and the reply buffer of the next reply, for answering in place.
    pub(crate) fn datagram_and_reply_buf(&mut self, i: usize) -> (&[u8], &mut [u8]) {
        let off = i * self.buf_size;
        let len = (self.rx_headers[i].msg_len as usize).min(self.buf_size);
        let slot = self.replies * self.buf_size;
        (
            &self.rx[off..off + len],
            &mut self.tx[slot..slot + self.buf_size],
        )
    }

    /// Queues the reply just written (see [`Batch::datagram_and_reply_buf`]) to datagram `i`'s sender.
    pub(crate) fn push_reply(&mut self, i: usize, len: usize) {
        let k = self.replies;
        self.tx_iovecs[k].iov_len = len.min(self.buf_size);
        let h = &mut self.tx_headers[k].msg_hdr;
        h.msg_name = (&raw mut self.addrs[i]).cast();
        h.msg_namelen = self.rx_headers[i].msg_hdr.msg_namelen;
        self.replies += 1;
    }

    fn addr(&self, i: usize) -> Option<SocketAddr> {
        let storage = &self.addrs[i];
        let len = self.rx_headers[i].msg_hdr.msg_namelen as usize;
        match i32::from(storage.ss_family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the storage holds a sockaddr_in, and the kernel wrote
                // at least its size; sockaddr_storage is aligned for every sockaddr type.
                let a: libc::sockaddr_in = unsafe { std::ptr::read((&raw const *storage).cast()) };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let a: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const *storage).cast()) };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Sends every queued reply to its datagram's sender, in as few calls as the kernel allows.
    /// A reply the kernel refuses is skipped (UDP: the client retries). Returns how many were sent.
    pub(crate) fn send(&mut self, fd: BorrowedFd<'_>) -> usize {
        let n = self.replies;
        let mut done = 0;
        let mut sent = 0;
        while done < n {
            // SAFETY: `tx_headers[done..n]` point into `tx_iovecs`/`addrs`/`tx`, owned by `self`
            // and alive for the call; each iovec covers at most `buf_size` bytes of its `tx`
            // slot, and `n` ≤ the headers' length.
            let r = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    self.tx_headers[done..].as_mut_ptr(),
                    (n - done) as libc::c_uint,
                    0,
                )
            };
            if r > 0 {
                done += r as usize;
                sent += r as usize;
            } else if r == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                // The datagram at `done` failed (e.g. unreachable destination): skip it.
                done += 1;
            }
        }
        self.replies = 0;
        sent
    }

    /// Number of datagrams taken by the last [`Batch::recv`].
    pub(crate) fn received(&self) -> usize {
        self.received
    }
}

/// Raises this process's soft limit on open files to its hard limit, so the API can hold its
/// connection cap (`[api] max_connections`, plus the DNS's and the store's descriptors) where the
/// soft limit is the common 1,024. Returns the soft limit now in force (`None`: unknown).
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given, which lives on our stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Some(limit.rlim_cur)
}

/// Whole seconds of the system's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`: read from
/// the vDSO without touching the hardware counter, a few nanoseconds, with a resolution of a
/// scheduler tick). The response-rate limit reads it per negative answer, so it must cost next
/// to nothing; `std::time::Instant` reads the precise clock.
pub(crate) fn coarse_seconds() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the struct it is given, on our stack.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0)
}

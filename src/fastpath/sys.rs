//! Batched datagram I/O: `recvmmsg(2)` and `sendmmsg(2)` over a fixed set of buffers.
//!
//! This is the crate's only `unsafe` code (the crate denies it elsewhere). Why: the standard
//! library and socket2 receive or send one datagram per system call, and the fast path's cost
//! is dominated by system calls; the two batch calls exist only as raw `libc` functions (the
//! `nix` crate that wraps them is not a dependency). The unsafe surface is kept to the two calls:
//! every pointer handed to the kernel points into buffers owned by [`Batch`], which outlives the
//! call, and every length passed is the length of the buffer pointed to. Address decoding reads
//! the kernel-written `sockaddr_storage` through typed copies, checked against the family.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Receive and send buffers for up to `capacity` datagrams, with their peer addresses.
pub(crate) struct Batch {
    rx: Vec<u8>,
    tx: Vec<u8>,
    buf_size: usize,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    rx_lens: Vec<usize>,
    rx_flags: Vec<libc::c_int>,
    /// (index of the received datagram whose address to answer, reply length) per reply.
    replies: Vec<(u32, u32)>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    received: usize,
}

// SAFETY: the raw pointers inside `iovecs`/`headers` are only written and used during a call
// by the owning thread; between calls they are dead values.
unsafe impl Send for Batch {}

impl Batch {
    /// Buffers for `capacity` datagrams of at most `buf_size` bytes each, both ways.
    pub(crate) fn new(capacity: usize, buf_size: usize) -> Batch {
        Batch {
            rx: vec![0; capacity * buf_size],
            tx: vec![0; capacity * buf_size],
            buf_size,
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            addrs: vec![unsafe { zeroed() }; capacity],
            addr_lens: vec![0; capacity],
            rx_lens: vec![0; capacity],
            rx_flags: vec![0; capacity],
            replies: Vec::with_capacity(capacity),
            // SAFETY: iovec and mmsghdr are plain old data (null pointers, zero lengths).
            iovecs: vec![unsafe { zeroed() }; capacity],
            headers: vec![unsafe { zeroed() }; capacity],
            received: 0,
        }
    }

    /// How many datagrams fit.
    pub(crate) fn capacity(&self) -> usize {
        self.addrs.len()
    }

    /// Blocks until at least one datagram arrives (or the socket's receive timeout passes), then
    /// takes every datagram already queued, up to the capacity. Returns how many.
    pub(crate) fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let cap = self.capacity();
        self.replies.clear();
        self.received = 0;
        for i in 0..cap {
            self.iovecs[i] = libc::iovec {
                iov_base: self.rx[i * self.buf_size..].as_mut_ptr().cast(),
                iov_len: self.buf_size,
            };
            let h = &mut self.headers[i].msg_hdr;
            h.msg_name = (&raw mut self.addrs[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &raw mut self.iovecs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        // SAFETY: `headers[..cap]` point to `iovecs`/`addrs`/`rx`, all owned by `self` and alive
        // for the call; each iovec covers exactly its `buf_size` slice of `rx`.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.headers.as_mut_ptr(),
                cap as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            self.rx_lens[i] = self.headers[i].msg_len as usize;
            self.addr_lens[i] = self.headers[i].msg_hdr.msg_namelen;
            self.rx_flags[i] = self.headers[i].msg_hdr.msg_flags;
        }
        self.received = n;
        Ok(n)
    }

    /// Datagram `i` of the last [`Batch::recv`]: its bytes, whether the kernel cut it
    /// (longer than the buffer), and its sender.
    pub(crate) fn datagram(&self, i: usize) -> (&[u8], bool, Option<SocketAddr>) {
        let off = i * self.buf_size;
        let len = self.rx_lens[i].min(self.buf_size);
        let truncated = self.rx_flags[i] & libc::MSG_TRUNC != 0;
        (&self.rx[off..off + len], truncated, self.addr(i))
    }

    /// Datagram `i` and the reply buffer of the next reply, for answering in place.
    pub(crate) fn datagram_and_reply_buf(&mut self, i: usize) -> (&[u8], &mut [u8]) {
        let off = i * self.buf_size;
        let len = self.rx_lens[i].min(self.buf_size);
        let slot = self.replies.len() * self.buf_size;
        (
            &self.rx[off..off + len],
            &mut self.tx[slot..slot + self.buf_size],
        )
    }

    /// Queues the reply just written (see [`Batch::datagram_and_reply_buf`]) to datagram `i`'s sender.
    pub(crate) fn push_reply(&mut self, i: usize, len: usize) {
        self.replies.push((i as u32, len as u32));
    }

    fn addr(&self, i: usize) -> Option<SocketAddr> {
        let storage = &self.addrs[i];
        let len = self.addr_lens[i] as usize;
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
        let n = self.replies.len();
        for (k, &(i, len)) in self.replies.iter().enumerate() {
            let i = i as usize;
            self.iovecs[k] = libc::iovec {
                iov_base: self.tx[k * self.buf_size..].as_mut_ptr().cast(),
                iov_len: len as usize,
            };
            let h = &mut self.headers[k].msg_hdr;
            h.msg_name = (&raw mut self.addrs[i]).cast();
            h.msg_namelen = self.addr_lens[i];
            h.msg_iov = &raw mut self.iovecs[k];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        let mut done = 0;
        let mut sent = 0;
        while done < n {
            // SAFETY: `headers[done..n]` point into `iovecs`/`addrs`/`tx`, owned by `self` and
            // alive for the call; each iovec covers `len` ≤ `buf_size` bytes of its `tx` slot.
            let r = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    self.headers[done..].as_mut_ptr(),
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
        self.replies.clear();
        sent
    }

    /// Number of datagrams taken by the last [`Batch::recv`].
    pub(crate) fn received(&self) -> usize {
        self.received
    }
}

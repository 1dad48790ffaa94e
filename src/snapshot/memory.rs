//! Giving the memory a rebuild freed back to the operating system (`malloc_trim(3)`), the one
//! system call of the snapshot side; the fast path's socket calls live in `fastpath::sys`.
#![allow(unsafe_code)]

/// Hands memory the allocator holds free back to the operating system. A full rebuild of a big
/// snapshot frees gigabytes of short-lived rows and strings; glibc keeps them in its arenas (the
/// server's RSS would stay at its peak) unless asked. A no-op elsewhere.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes a plain integer and only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

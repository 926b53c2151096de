//! Handing freed memory back to the OS at once, after a large short-lived allocation.
//!
//! Why: the node runs on jemalloc (`main.rs`), whose background thread returns pages a
//! few hundred milliseconds after they are freed. A snapshot build at a million stock
//! levels copied ~75 MB (~45 MB since the stock copy shrank) and freed it at its end; a
//! second build started within that window stacked its copy on the first's unreturned
//! pages, and resident memory peaked at 281 MiB where one build alone peaked at 240
//! (benches/RESULTS.md, fourteenth session). Purging right after the free makes each
//! build's peak its own.

/// Returns every arena's unused dirty pages to the OS now (jemalloc's
/// `arena.<MALLCTL_ARENAS_ALL>.purge`). Costs a few milliseconds of `madvise` per
/// hundred MB; call it off the runtime's worker threads, after freeing something large.
/// Where jemalloc is not the global allocator (the library's tests) it purges jemalloc's
/// own, near-empty arenas: harmless.
pub fn return_freed_pages() {
    // jemalloc 5's MALLCTL_ARENAS_ALL: the pseudo-arena index meaning "all arenas".
    const NAME: &std::ffi::CStr = c"arena.4096.purge";
    // SAFETY: a NUL-terminated control name; no old or new value is read or written
    // (null pointers and a zero length are what a void control takes).
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            NAME.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        tracing::debug!(
            rc,
            "jemalloc purge refused; freed pages go back on its timer"
        );
    }
}

#[cfg(test)]
mod tests {
    /// The control name is one jemalloc knows: `mallctlnametomib` refuses an unknown
    /// name with ENOENT, so a typo here would fail, not purge nothing in silence.
    #[test]
    fn the_purge_control_exists() {
        let mut mib = [0usize; 4];
        let mut len = mib.len();
        // SAFETY: a NUL-terminated name and a MIB buffer of `len` entries.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctlnametomib(
                c"arena.4096.purge".as_ptr(),
                mib.as_mut_ptr(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "jemalloc does not know arena.4096.purge");
        assert_eq!(len, 3);
        assert_eq!(mib[1], 4096);
        super::return_freed_pages();
    }
}

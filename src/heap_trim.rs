//! Gives the C heap's freed pages back to the kernel, every few seconds.
//!
//! Rust allocations go to mimalloc, which returns what it frees by itself.
//! The C code in the process does not: aws-lc (DTLS and SRTP under str0m)
//! allocates with glibc's `malloc`, and glibc returns memory only from the
//! top of a heap. A join's DTLS handshake takes tens of KB of aws-lc heap
//! and frees it, but the listener's SRTP context (≈ 600 B) is allocated
//! among those blocks and stays live, so the freed pages around it stay
//! resident: after 1,000 listeners joined at once that was ≈ 5.5 KB of RSS
//! per listener (docs/benchmarks.md, "Where a listener's memory goes").
//!
//! `malloc_trim(0)` walks every glibc arena and hands the free pages inside
//! it to the kernel (`MADV_DONTNEED`), without moving a live block. It
//! takes the arenas' locks in turn, so it runs on a thread of its own. What
//! it can hold up is a C allocation made meanwhile: on the engine thread,
//! a DTLS handshake in progress, which then waits for at most one walk
//! (0.1–4.3 ms measured with up to 10,000 listeners; the talkers' jitter
//! buffers absorb that). Mixing and forwarding allocate through mimalloc
//! and never wait for it.

use std::time::{Duration, Instant};

/// How often the trimmer runs: a join storm's handshake heap is back with
/// the kernel within this long after the storm.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Starts the trimmer thread (for the life of the process).
pub fn spawn_trimmer(every: Duration) {
    let started = std::thread::Builder::new()
        .name("heap-trim".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let start = Instant::now();
                let released = release_freed_c_heap();
                tracing::debug!(
                    released,
                    micros = start.elapsed().as_micros() as u64,
                    "heap trimmed"
                );
            }
        });
    if let Err(error) = started {
        tracing::warn!(%error, "no heap trimmer: freed handshake memory stays resident");
    }
}

/// Hands glibc's free pages back to the kernel; `true` when it released any.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_freed_c_heap() -> bool {
    // SAFETY: `malloc_trim` takes no pointer and touches no live block; glibc
    // serialises it with every other allocator call through the arena locks.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other C libraries (musl) keep no freed pages this way: nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_freed_c_heap() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Anonymous resident memory of this process, in KB.
    fn rss_anon_kb() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("RssAnon in /proc/self/status")
    }

    /// The pattern a join storm leaves in aws-lc's heap, at 64 MB: many
    /// small blocks freed, one in sixteen still live among them.
    #[test]
    #[allow(unsafe_code)]
    fn freed_blocks_among_live_ones_go_back_to_the_kernel() {
        const BLOCK: usize = 4096;
        const BLOCKS: usize = 16 * 1024;
        // A thread of its own, so the blocks are in an arena no other test
        // allocates from while this one measures.
        std::thread::spawn(|| {
            let blocks: Vec<*mut u8> = (0..BLOCKS)
                .map(|_| {
                    // SAFETY: a plain C allocation, written before it is read
                    // and freed below exactly once.
                    let p = unsafe { libc::malloc(BLOCK) }.cast::<u8>();
                    assert!(!p.is_null());
                    // SAFETY: `p` points to BLOCK writable bytes.
                    unsafe { p.write_bytes(0xA5, BLOCK) };
                    p
                })
                .collect();
            let mut live = Vec::new();
            for (i, p) in blocks.into_iter().enumerate() {
                if i % 16 == 15 {
                    live.push(p);
                } else {
                    // SAFETY: allocated above by `malloc`, freed once.
                    unsafe { libc::free(p.cast()) };
                }
            }
            let before = rss_anon_kb();
            release_freed_c_heap();
            let after = rss_anon_kb();
            for p in live {
                // SAFETY: allocated above by `malloc`, freed once.
                unsafe { libc::free(p.cast()) };
            }
            // 60 MB were freed among the live blocks; at least half of it
            // must have left RSS (the rest is pages shared with live blocks).
            let released = before.saturating_sub(after);
            assert!(
                released > 30 * 1024,
                "RSS {before} kB before the trim, {after} kB after"
            );
        })
        .join()
        .expect("trim test thread");
    }
}

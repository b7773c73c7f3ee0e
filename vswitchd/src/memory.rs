//! The process's own memory: the figures `memory-show` reports (what the
//! kernel says is resident, what the allocator says is in use), and
//! keeping the first close to the second.
//!
//! RSS alone cannot tell a leak from an allocator keeping freed memory or a
//! buffer whose pages traffic touched for the first time; the allocator's
//! in-use figure only grows with live allocations. glibc's `mallinfo2`
//! walks every arena under its locks, so this is for a person or a script
//! asking now and then, never for the packet path.
//!
//! glibc keeps what is freed for reuse, and after a big block is freed it
//! raises its threshold for serving blocks from their own mappings, so
//! later big blocks (a `dump-conntrack` answer, a grown queue) land in the
//! arenas too and stay there once freed. The soak showed RSS swinging by
//! 2.5 MB with the bytes in use flat. So, as OVS does with
//! `memory/trim-on-compaction`, the daemon pins that threshold
//! ([`tune_allocator`]) and hands free pages back every few seconds
//! ([`release_free_memory`]).

use proto::MemoryView;

/// Fills in the process-wide figures of `view`.
pub fn fill_process_figures(view: &mut MemoryView) {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        view.rss_kib = status_kib(&status, "VmRSS:").unwrap_or(0);
        view.peak_rss_kib = status_kib(&status, "VmHWM:").unwrap_or(0);
    }
    if let Some((in_use, free)) = allocator_figures() {
        view.heap_in_use = Some(in_use);
        view.heap_free = Some(free);
    }
}

/// A `Name:   1234 kB` line of /proc/PID/status.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// Blocks at least this big get their own mapping, returned when freed.
const MMAP_THRESHOLD: libc::c_int = 128 << 10;

/// Pins glibc's mmap threshold at its default (setting it stops the
/// dynamic raising). Call once, before other threads start.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns the allocator's free pages to the kernel; what it costs is
/// logged at debug level.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let started = std::time::Instant::now();
        // SAFETY: malloc_trim takes the arenas' locks itself and only gives
        // back pages no allocation uses.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(
            released = released != 0,
            micros = started.elapsed().as_micros() as u64,
            "malloc_trim"
        );
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn allocator_figures() -> Option<(u64, u64)> {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct; glibc
    // takes each arena's lock while it reads it.
    let info = unsafe { libc::mallinfo2() };
    Some(((info.uordblks + info.hblkhd) as u64, info.fordblks as u64))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn allocator_figures() -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_lines() {
        let status = "Name:\tvswitchd\nVmHWM:\t   20904 kB\nVmRSS:\t   19200 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(19200));
        assert_eq!(status_kib(status, "VmHWM:"), Some(20904));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn releasing_free_memory_gives_freed_pages_back_and_keeps_what_is_in_use() {
        let rss = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            status_kib(&status, "VmRSS:").unwrap()
        };
        tune_allocator();
        // 8 MiB in blocks under the mmap threshold, so they live in an
        // arena; a block allocated after them keeps the arena from
        // shrinking at its top when they are freed.
        let blocks: Vec<Vec<u8>> = (0..128).map(|i| vec![i as u8 | 1; 64 << 10]).collect();
        let fence = vec![7u8; 64 << 10];
        drop(blocks);
        let before = rss();
        release_free_memory();
        let after = rss();
        assert!(after + 4096 <= before, "RSS {before} KiB before the trim, {after} KiB after");
        assert!(fence.iter().all(|b| *b == 7));
    }

    #[test]
    fn own_figures_see_a_live_allocation() {
        let mut before = MemoryView::default();
        fill_process_figures(&mut before);
        assert!(before.rss_kib > 0 && before.peak_rss_kib >= before.rss_kib);
        let Some(in_use_before) = before.heap_in_use else { return };
        let block = vec![1u8; 8 << 20];
        let mut after = MemoryView::default();
        fill_process_figures(&mut after);
        // Other test threads allocate too, but not 8 MiB less than this one.
        assert!(after.heap_in_use.unwrap() >= in_use_before + (4 << 20), "{after:?}");
        drop(block);
    }
}

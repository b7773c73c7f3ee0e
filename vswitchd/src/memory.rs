//! The process's own memory figures for `memory-show`: what the kernel
//! says is resident, and what the allocator says is in use.
//!
//! RSS alone cannot tell a leak from an allocator keeping freed memory or a
//! buffer whose pages traffic touched for the first time; the allocator's
//! in-use figure only grows with live allocations. glibc's `mallinfo2`
//! walks every arena under its locks, so this is for a person or a script
//! asking now and then, never for the packet path.

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

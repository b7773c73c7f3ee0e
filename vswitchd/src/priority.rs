//! The datapath thread's scheduling priority under load.
//!
//! The Linux bridge switches in softirq context, ahead of every task; a
//! userspace switch is a task like the hosts it serves and, at the same
//! nice level, gets a fair share of the CPU against them. Under a flood
//! that share is what limits it: the senders take their share to make
//! frames the switch then has no time to forward. Measured on 2 CPUs,
//! 64-byte UDP (`iperf3 -b 0`) between two namespaces, frames delivered
//! to the receiving application, two runs each: through veth ports 83k
//! and 79k/s at nice 0, 122k and 122k with this boost; through TAP ports
//! 74k and 75k against 110k and 121k. TCP did not move beyond the noise.
//! So while frames arrive in batches the thread raises its priority, as
//! `ovs-ctl` starts ovs-vswitchd at nice -10 (`--ovs-vswitchd-priority`).
//!
//! It does so only under load. When traffic is sparse (a ping, a
//! request/response) the thread polls for a while after each frame
//! instead of sleeping; a raised priority lets that polling keep a woken
//! host off the CPU. With the thread at nice -10 all the time, UDP
//! request/response p50 was 40 and 43 us against 38 and 33 at nice 0, and
//! ping averages rose with maxima of 2 ms; with this boost, 32 and 40 us
//! against 34 and 41. So the boost starts with the first wake that brings
//! a batch (the threshold of the coalescing pause) and ends once no wake
//! has brought one for [`BOOST_HOLD`].
//!
//! Raising a nice level needs CAP_SYS_NICE (or RLIMIT_NICE); without it
//! the thread stays at the level it started at and says so once.

use std::time::{Duration, Instant};

/// How long after the last busy wake the raised priority is kept: long
/// enough to ride out the small wakes between a stream's bursts, shorter
/// than the polling that follows traffic.
pub const BOOST_HOLD: Duration = Duration::from_millis(2);

/// Decides when the thread's nice level changes; the caller applies it.
#[derive(Debug)]
pub struct LoadPriority {
    /// The level under load; `None` when boosting is off (the level asked
    /// for is not above the base, or the system refused it).
    boosted: Option<i32>,
    base: i32,
    on: bool,
    last_busy: Option<Instant>,
}

impl LoadPriority {
    /// `base` is the thread's level now, `under_load` the one it takes
    /// while busy (nice: lower is more CPU).
    pub fn new(base: i32, under_load: i32) -> LoadPriority {
        LoadPriority { boosted: (under_load < base).then_some(under_load), base, on: false, last_busy: None }
    }

    /// After each wake: whether it brought a batch. Returns the nice level
    /// to set, when it changes.
    pub fn after_wake(&mut self, busy: bool, now: Instant) -> Option<i32> {
        let boosted = self.boosted?;
        if busy {
            self.last_busy = Some(now);
            if !self.on {
                self.on = true;
                return Some(boosted);
            }
        } else if self.on && self.last_busy.is_none_or(|t| now.duration_since(t) >= BOOST_HOLD) {
            self.on = false;
            return Some(self.base);
        }
        None
    }

    /// The system refused a level: stop trying.
    pub fn refused(&mut self) {
        self.boosted = None;
        self.on = false;
    }
}

/// The calling thread's nice level.
pub fn current_nice() -> std::io::Result<i32> {
    // getpriority can return -1 as a level: errno tells an error apart.
    // SAFETY: errno is thread-local; clearing it is always sound.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: PRIO_PROCESS with a thread id reads that thread's level.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
    match std::io::Error::last_os_error() {
        e if e.raw_os_error() != Some(0) && nice == -1 => Err(e),
        _ => Ok(nice),
    }
}

/// Sets the calling thread's nice level (on Linux, PRIO_PROCESS with a
/// thread id applies to that thread only).
pub fn set_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: plain system call on the calling thread's own id.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn boosts_on_a_batch_and_drops_back_once_quiet_for_the_hold() {
        let t0 = Instant::now();
        let mut p = LoadPriority::new(0, -10);
        assert_eq!(p.after_wake(false, t0), None, "sparse traffic keeps the base level");
        assert_eq!(p.after_wake(true, ms(t0, 1)), Some(-10));
        assert_eq!(p.after_wake(true, ms(t0, 2)), None, "already raised");
        assert_eq!(p.after_wake(false, ms(t0, 3)), None, "1 ms quiet: within the hold");
        assert_eq!(p.after_wake(false, ms(t0, 4)), Some(0));
        assert_eq!(p.after_wake(false, ms(t0, 9)), None);
        assert_eq!(p.after_wake(true, ms(t0, 10)), Some(-10));
    }

    #[test]
    fn a_level_not_above_the_base_or_refused_is_never_set() {
        let t0 = Instant::now();
        let mut same = LoadPriority::new(0, 0);
        assert_eq!(same.after_wake(true, t0), None);
        let mut lower = LoadPriority::new(-5, 0);
        assert_eq!(lower.after_wake(true, t0), None);
        let mut refused = LoadPriority::new(0, -10);
        assert_eq!(refused.after_wake(true, t0), Some(-10));
        refused.refused();
        assert_eq!(refused.after_wake(false, ms(t0, 10)), None);
        assert_eq!(refused.after_wake(true, ms(t0, 11)), None);
    }

    #[test]
    fn the_thread_level_can_be_read_and_lowered() {
        // Lowering priority needs no privilege; run on a thread of our own
        // so the test runner's threads keep theirs.
        std::thread::spawn(|| {
            let before = current_nice().expect("getpriority");
            set_nice((before + 1).min(19)).expect("a thread may lower its own priority");
            assert_eq!(current_nice().unwrap(), (before + 1).min(19));
        })
        .join()
        .unwrap();
    }
}

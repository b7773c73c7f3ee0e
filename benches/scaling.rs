//! How forwarding scales with threads, for the estimate the performance
//! issue asks for. 64-byte unicast frames in batches of 32 through NORMAL
//! with 1,000 learned hosts (the `l2_datapath` workload), on 1 to N threads
//! (N: the machine's CPUs, or `SCALING_THREADS`), each for `SCALING_SECS`
//! (default 2) seconds, in two designs:
//!
//! Every thread owns its bridge state (MAC table, caches, counters) and
//! its transmit queues, as a datapath thread per port group would, with
//! the configuration an immutable snapshot shared by reference. Nothing on
//! the per-packet path is shared: `Bridge` is not even `Send` (its caches
//! hold `Rc`s), so each thread builds its own. This is the ceiling of the
//! per-thread design on this machine.
//!
//! It prints aggregate and per-thread Mpps and the speed-up over one
//! thread. Not a criterion bench: criterion measures one thread.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use vswitch_core::dpif::batch::BATCH_SIZE;
use vswitch_core::l2::vlan::PortVlan;
use vswitch_core::Timestamp;

#[path = "common/l2.rs"]
mod l2;
use l2::*;

/// Forwards batches until `until`; returns the frames forwarded.
fn forward(start: &Barrier, length: Duration) -> u64 {
    let mut bridge = learned_bridge(|_| PortVlan::default());
    let batches: Vec<_> = unicast_batches(None).iter().map(|b| as_batch(b)).collect();
    let mut sink = Queues::default();
    let mut frames = 0u64;
    let mut round = 0usize;
    start.wait();
    let until = Instant::now() + length;
    while Instant::now() < until {
        // Checking the clock every 64 batches keeps it off the per-packet cost.
        for _ in 0..64 {
            round += 1;
            let now = Timestamp::from_millis(round as u64 / 1024);
            let batch = &batches[round % batches.len()];
            sink.lend(batch);
            bridge.receive_batch(now, 1, batch.iter(), &mut sink);
            sink.clear();
            frames += BATCH_SIZE as u64;
        }
    }
    frames
}

/// Aggregate Mpps of `threads` threads forwarding for `length`.
fn measure(threads: usize, length: Duration) -> f64 {
    let start = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || forward(&start, length))
        })
        .collect();
    let frames: u64 = workers.into_iter().map(|w| w.join().expect("a forwarding thread panicked")).sum();
    frames as f64 / length.as_secs_f64() / 1e6
}

fn main() {
    let secs: f64 = std::env::var("SCALING_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max: usize = std::env::var("SCALING_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(cpus);
    let length = Duration::from_secs_f64(secs);
    println!("scaling: 64-byte unicast through NORMAL, 1,000 hosts, batches of 32, {secs} s per point, {cpus} CPUs");
    println!("{:>7} {:>10} {:>12} {:>9}", "threads", "Mpps", "Mpps/thread", "speed-up");
    let mut one = 0.0;
    for threads in 1..=max {
        let mpps = measure(threads, length);
        if threads == 1 {
            one = mpps;
        }
        println!("{threads:>7} {mpps:>10.2} {:>12.2} {:>8.2}x", mpps / threads as f64, mpps / one);
    }
}

//! The in-memory L2 datapath: 64-byte frames in batches of 32 through one
//! bridge's NORMAL forwarding, with the per-port transmit queues the daemon
//! uses, lent the batch as the daemon lends it (a frame that leaves
//! unchanged is queued by reference; a re-tagged one is copied). Throughput is in
//! frames per second on one core.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vswitch_core::bridge::Bridge;
use vswitch_core::dpif::batch::BATCH_SIZE;
use vswitch_core::l2::vlan::PortVlan;
use vswitch_core::Timestamp;

#[path = "common/l2.rs"]
mod l2;
use l2::*;

fn run(c: &mut Criterion, name: &str, mut bridge: Bridge, batches: Vec<Vec<Vec<u8>>>) {
    let mut group = c.benchmark_group("l2_datapath");
    group.throughput(Throughput::Elements(BATCH_SIZE as u64));
    let batches: Vec<_> = batches.iter().map(|b| as_batch(b)).collect();
    let mut sink = Queues::default();
    let mut round = 0usize;
    group.bench_function(name, |b| {
        b.iter(|| {
            round += 1;
            let now = Timestamp::from_millis(round as u64);
            let batch = &batches[round % batches.len()];
            sink.lend(batch);
            bridge.receive_batch(now, 1, batch.iter(), &mut sink);
            sink.clear();
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    run(c, "unicast_1000_macs_64B", learned_bridge(|_| PortVlan::default()), unicast_batches(None));
    // Port 1 is an access port of VLAN 10 and the others trunk it: every
    // frame is learned in VLAN 10 and leaves with a tag pushed.
    let access_to_trunk =
        learned_bridge(|p| if p == 1 { PortVlan::new(Some(10), &[], None) } else { PortVlan::default() });
    run(c, "unicast_push_vlan_64B", access_to_trunk, unicast_batches(None));
    let flood: Vec<Vec<Vec<u8>>> =
        vec![(0..BATCH_SIZE).map(|k| frame([0xff; 6], host_mac(k * PORTS as usize), None)).collect()];
    run(c, "broadcast_to_3_ports_64B", learned_bridge(|_| PortVlan::default()), flood);
}

criterion_group!(benches, bench);
criterion_main!(benches);

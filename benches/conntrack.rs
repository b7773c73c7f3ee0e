//! Connection tracking and NAT on one core, 64-byte UDP frames:
//! - established: frames of 1,000 masqueraded connections through the
//!   tracker alone, and through a whole bridge whose flows masquerade
//!   (`ct(commit,nat(src=...),table=1)` then output);
//! - new connections per second: commits with masquerade, each a new tuple;
//! - memory per entry at 1,000,000 entries, counted by the allocator and
//!   printed before the benchmarks run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vswitch_core::bridge::{Bridge, Transmit};
use vswitch_core::conntrack::{Conntrack, CtRequest, Nat, NatRange};
use vswitch_core::l2::vlan::PortVlan;
use vswitch_core::offload::Offload;
use vswitch_core::ofproto::ofctl::parse_flow;
use vswitch_core::Timestamp;

/// Counts the bytes live on the heap, for the per-entry figure.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed straight to the system allocator with the
// caller's layout; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, which we forward.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const UPLINK: u32 = 0xc613_0001;

/// A UDP frame from the i-th inside endpoint to the i-th server.
fn udp_frame(i: u32) -> Vec<u8> {
    let (src, sport) = endpoint(i);
    let dst = [198, 19, (i >> 8) as u8, i as u8];
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let mut ip = [
        0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0, src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2],
        dst[3],
    ];
    let sum: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    let folded = !((sum & 0xffff) + (sum >> 16)) as u16;
    ip[10..12].copy_from_slice(&folded.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&[0, 53, 0, 26, 0, 0]);
    f.resize(60, 0);
    f
}

fn masquerade() -> CtRequest {
    let range = NatRange { addr_min: UPLINK, addr_max: UPLINK, port_min: 0, port_max: 0 };
    CtRequest { commit: true, nat: true, nat_range: Some(Nat::Src(range)), ..CtRequest::default() }
}

/// The i-th distinct inside endpoint (address, port).
fn endpoint(i: u32) -> ([u8; 4], u16) {
    ([198, 18, (i >> 16) as u8, (i >> 8) as u8], 1024 + (i & 0xff) as u16 * 16 + (i >> 24) as u16)
}

fn memory_per_entry() {
    const N: u32 = 1_000_000;
    let before = LIVE.load(Ordering::Relaxed);
    let mut ct = Conntrack::new(N as usize);
    let request = masquerade();
    let mut frame = Vec::with_capacity(64);
    let now = Timestamp::from_millis(0);
    for i in 0..N {
        frame.clear();
        frame.extend_from_slice(&udp_frame(i));
        track(&mut ct, now, &mut frame, &request);
    }
    let used = LIVE.load(Ordering::Relaxed) - before - frame.capacity();
    println!(
        "conntrack memory: {} entries, {:.1} MiB, {:.0} bytes per entry",
        ct.len(),
        used as f64 / (1 << 20) as f64,
        used as f64 / f64::from(N)
    );
    assert_eq!(ct.len(), N as usize, "every commit must have made an entry");
}

fn track(ct: &mut Conntrack, now: Timestamp, frame: &mut Vec<u8>, request: &CtRequest) {
    let mut offload = Offload::NONE;
    let result = ct.execute(now, frame, &mut offload, request);
    assert!(result.drop.is_none(), "{:?}", result.drop);
}

struct Sink(u64);

impl Transmit for Sink {
    fn transmit(&mut self, _port: u16, frame: &[u8], _offload: &Offload) {
        self.0 += frame.len() as u64;
    }
}

fn bench(c: &mut Criterion) {
    memory_per_entry();
    let mut group = c.benchmark_group("conntrack");
    const BATCH: u32 = 32;
    group.throughput(Throughput::Elements(u64::from(BATCH)));

    // 1,000 established (replied) masqueraded connections.
    let now = Timestamp::from_millis(0);
    let mut ct = Conntrack::default();
    let frames: Vec<Vec<u8>> = (0..1000).map(udp_frame).collect();
    for f in &frames {
        track(&mut ct, now, &mut f.clone(), &masquerade());
    }
    let lookup = CtRequest { nat: true, ..CtRequest::default() };
    let mut work = Vec::with_capacity(64);
    let mut next = 0usize;
    group.bench_function("established_nat_64B", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                next = (next + 1) % frames.len();
                work.clone_from(&frames[next]);
                track(&mut ct, now, &mut work, &lookup);
            }
        })
    });

    group.bench_function("new_connections_masquerade", |b| {
        b.iter_custom(|iters| {
            let mut ct = Conntrack::default();
            let request = masquerade();
            let mut elapsed = Duration::ZERO;
            let mut n = 0u32;
            for _ in 0..iters {
                let frames: Vec<Vec<u8>> = (0..BATCH).map(|k| udp_frame(n + k)).collect();
                n += BATCH;
                let start = Instant::now();
                for mut f in frames {
                    track(&mut ct, now, &mut f, &request);
                }
                elapsed += start.elapsed();
                if ct.len() >= 500_000 {
                    ct.flush();
                }
            }
            elapsed
        })
    });

    // The whole bridge: masquerade flows, frames of established connections.
    let mut br = Bridge::default();
    br.set_port(1, "inside", PortVlan::default());
    br.set_port(2, "uplink", PortVlan::default());
    let ports = |name: &str| match name {
        "inside" => Some(1),
        "uplink" => Some(2),
        _ => None,
    };
    for flow in [
        "table=0,priority=10,in_port=inside,ip,actions=ct(commit,nat(src=198.19.0.1),table=1)",
        "table=1,priority=10,in_port=inside,ct_state=+trk,actions=output:uplink",
    ] {
        br.add_flow(parse_flow(flow, &ports).unwrap(), now);
    }
    let mut sink = Sink(0);
    br.receive_batch(now, 1, frames.iter().map(Vec::as_slice), &mut sink);
    let mut round = 0usize;
    group.bench_function("bridge_masquerade_established_64B", |b| {
        b.iter(|| {
            round = (round + 1) % (frames.len() / BATCH as usize);
            let batch = &frames[round * BATCH as usize..(round + 1) * BATCH as usize];
            br.receive_batch(now, 1, batch.iter().map(Vec::as_slice), &mut sink);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

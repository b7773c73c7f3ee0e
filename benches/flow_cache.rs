//! The flow-table fast path: cached decisions (EMC or megaflow hits) with 1, 10,
//! 1,000 and 100,000 rules over up to 16 distinct masks, and the slow path
//! (translation plus install) with 1,000 rules. 64-byte frames are packed
//! keys here; throughput is decisions per second on one core.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use vswitch_core::bridge::{Bridge, Transmit};
use vswitch_core::dpif::megaflow::MegaflowCache;
use vswitch_core::l2::vlan::PortVlan;
use vswitch_core::offload::Offload;
use vswitch_core::ofproto::actions::Action;
use vswitch_core::ofproto::classifier::Tables;
use vswitch_core::ofproto::flow::{Field, Match, Words, WORDS};
use vswitch_core::ofproto::ofctl::FlowSpec;
use vswitch_core::Timestamp;

fn key(i: u64) -> Words {
    let mut w = [0; WORDS];
    Field::InPort.set(&mut w, 1 + i % 4);
    Field::DlType.set(&mut w, 0x0800);
    Field::NwProto.set(&mut w, 17);
    Field::NwSrc.set(&mut w, 0xc612_0000 | (i & 0xff));
    Field::NwDst.set(&mut w, 0xc613_0000 | ((i >> 8) & 0xff));
    Field::TpSrc.set(&mut w, 10_000 + (i % 1000));
    Field::TpDst.set(&mut w, 5201);
    w
}

/// ACL rule `i`: TCP from a 10.x prefix (/16 to /31, so 16 masks) to one
/// port. The test traffic is UDP from 198.18.x, so it never matches.
fn acl_match(i: u64) -> Match {
    let prefix = 16 + (i % 16) as u32;
    Match::default()
        .with(Field::DlType, 0x0800, u64::MAX)
        .with(Field::NwProto, 6, u64::MAX)
        .with(Field::NwSrc, 0x0a00_0000 | (i << 8), (u32::MAX << (32 - prefix)) as u64)
        .with(Field::TpDst, i % 65536, u64::MAX)
}

/// `n` 5-tuple ACL rules that never match the test traffic (they name
/// 10.x sources), spread over 16 masks, plus priority-0 NORMAL.
fn tables(n: usize) -> Tables {
    let mut t = Tables::default();
    t.add(0, 0, Match::default(), vec![Action::Normal]);
    for i in 0..n as u64 {
        t.add(0, 100, acl_match(i), vec![]);
    }
    t
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("flow_cache");
    const BATCH: u64 = 32;
    group.throughput(Throughput::Elements(BATCH));
    for n in [1usize, 10, 1_000, 100_000] {
        let t = tables(n);
        let mut cache = MegaflowCache::default();
        let keys: Vec<Words> = (0..4096).map(key).collect();
        for k in &keys {
            cache.decide(&t, k);
        }
        let mut next = 0usize;
        group.bench_function(format!("cached_{n}_rules"), |b| {
            b.iter(|| {
                let mut outputs = 0;
                for _ in 0..BATCH {
                    next = (next + 1) % keys.len();
                    outputs += cache.decide(&t, &keys[next]).actions.len();
                }
                outputs
            })
        });
    }
    let t = tables(1_000);
    let keys: Vec<Words> = (0..BATCH).map(key).collect();
    group.bench_function("slow_path_1000_rules", |b| {
        b.iter_batched_ref(
            MegaflowCache::default,
            |cache| keys.iter().map(|k| cache.decide(&t, k).actions.len()).sum::<usize>(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Counts what the bridge sends without keeping it.
struct Sink(u64);

impl Transmit for Sink {
    fn transmit(&mut self, _port: u16, frame: &[u8], _offload: &Offload) {
        self.0 += frame.len() as u64;
    }
}

fn udp_frame(dst: u8, src: u8, sport: u16) -> Vec<u8> {
    udp_frame_from(dst, src, [198, 18, 0, src], sport)
}

fn udp_frame_from(dst: u8, src: u8, src_ip: [u8; 4], sport: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, dst, 0x02, 0, 0, 0, 0, src, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src_ip);
    f.extend_from_slice(&[198, 18, 0, dst]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&[0x14, 0x51, 0, 26, 0, 0]);
    f.resize(60, 0);
    f
}

fn spec(priority: u16, matcher: Match, actions: Vec<Action>) -> FlowSpec {
    FlowSpec {
        table: 0,
        priority,
        cookie: 0,
        cookie_mask: 0,
        idle_timeout: 0,
        hard_timeout: 0,
        matcher,
        actions,
        text: String::new(),
    }
}

/// Whole-bridge forwarding of 64-byte UDP frames (parse, cache, actions,
/// queue) with `n` ACL rules that do not match the traffic, in front of
/// either NORMAL (MAC learning and lookup per frame) or a port-to-port
/// rule `in_port=1,actions=output:2` (the cache alone decides).
///
/// In the `stream` cases frames differ in ports and MACs, which the rules
/// do not look at, so consecutive frames share a megaflow, as a stream's
/// do. In the `mixed` cases each frame of a batch comes from another
/// source address, which the ACL's prefixes do look at: every frame is
/// another megaflow than the one before.
fn bridge_forwarding(c: &mut Criterion) {
    let mut group = c.benchmark_group("bridge_forwarding");
    group.throughput(Throughput::Elements(32));
    let cases = [
        (1usize, false, false),
        (1_000, false, false),
        (100_000, false, false),
        (1, true, false),
        (10, true, false),
        (1_000, true, false),
        (100_000, true, false),
        (1_000, true, true),
        (100_000, true, true),
    ];
    for (n, port_to_port, mixed) in cases {
        let mut br = Bridge::default();
        for p in 1..=4u16 {
            br.set_port(p, &format!("p{p}"), PortVlan::default());
        }
        let now = Timestamp::from_millis(0);
        for i in 0..n as u64 {
            br.add_flow(spec(100, acl_match(i), vec![]), now);
        }
        if port_to_port {
            br.add_flow(
                spec(10, Match::default().with(Field::InPort, 1, u64::MAX), vec![Action::Output(2)]),
                now,
            );
        }
        let mut sink = Sink(0);
        // Hosts 1..=4 live behind ports 1..=4; learn them.
        for h in 1..=4u8 {
            br.receive(now, u16::from(h), udp_frame(0xff, h, 1).as_slice().into(), &mut sink);
        }
        let batches: Vec<Vec<Vec<u8>>> = (0..64u16)
            .map(|b| {
                (0..32u16)
                    .map(|k| {
                        let sport = 10_000 + (b * 32 + k) % 1000;
                        let src_ip = if mixed { [198, 18, k as u8, 1] } else { [198, 18, 0, 1] };
                        udp_frame_from(2 + (k % 3) as u8, 1, src_ip, sport)
                    })
                    .collect()
            })
            .collect();
        let mut round = 0usize;
        let action = if port_to_port { "output" } else { "normal" };
        let traffic = if mixed { "mixed" } else { "stream" };
        group.bench_function(format!("cached_{n}_acl_rules_then_{action}_64B_{traffic}"), |b| {
            b.iter(|| {
                round += 1;
                let batch = &batches[round % batches.len()];
                br.receive_batch(
                    Timestamp::from_millis(round as u64 / 1000),
                    1,
                    batch.iter().map(Vec::as_slice),
                    &mut sink,
                );
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bridge_forwarding);
criterion_main!(benches);

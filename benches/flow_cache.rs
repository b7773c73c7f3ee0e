//! The flow-table fast path: cached decisions (megaflow hits) with 1,
//! 1,000 and 100,000 rules over up to 16 distinct masks, and the slow path
//! (translation plus install) with 1,000 rules. 64-byte frames are packed
//! keys here; throughput is decisions per second on one core.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use vswitchd::core::classifier::{Action, Field, Match, MegaflowCache, Tables, Words, WORDS};

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

/// `n` 5-tuple ACL rules that never match the test traffic (they name
/// 10.x sources), spread over 16 masks, plus priority-0 NORMAL.
fn tables(n: usize) -> Tables {
    let mut t = Tables::default();
    t.add(0, 0, Match::default(), vec![Action::Normal]);
    for i in 0..n as u64 {
        let prefix = 16 + (i % 16) as u32;
        let m = Match::default()
            .with(Field::DlType, 0x0800, u64::MAX)
            .with(Field::NwProto, 6, u64::MAX)
            .with(Field::NwSrc, 0x0a00_0000 | (i << 8), (u32::MAX << (32 - prefix)) as u64)
            .with(Field::TpDst, i % 65536, u64::MAX);
        t.add(0, 100, m, vec![]);
    }
    t
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("flow_cache");
    const BATCH: u64 = 32;
    group.throughput(Throughput::Elements(BATCH));
    for n in [1usize, 1_000, 100_000] {
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
                    outputs += cache.decide(&t, &keys[next]).0.len();
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
            |cache| keys.iter().map(|k| cache.decide(&t, k).0.len()).sum::<usize>(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

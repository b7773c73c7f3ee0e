//! The per-byte work of a tunnelled TCP stream, on one core (issue 19):
//! - the Internet checksum of that frame (62,976 bytes);
//! - cutting a 64 KiB TCP super-frame (partial checksum, MSS 1398, the
//!   segments a 1450-byte overlay MTU takes) into segments behind a VXLAN
//!   header, as a VXLAN port's send does;
//! - software GRO of those segments back into one frame, as a tunnel's
//!   receive does.
//!
//! Throughput is the super-frame's bytes; a host sending 10 Gbit/s moves
//! 1.25 GB/s through each of the last two.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vswitch_core::checksum::{checksum, fold, sum};
use vswitch_core::offload::{finish_into, Gso, Offload};
use vswitch_core::tunnel::gro::Gro;

const MSS: usize = 1398;
const PAYLOAD: usize = 45 * MSS;

/// A TCP/IPv4 super-frame with timestamps and a partial checksum, and the
/// offload header a veth hands over with it.
fn super_frame() -> (Vec<u8>, Offload) {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (20 + 32 + PAYLOAD) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    let ip_sum = checksum(&f[14..34], 0);
    f[24..26].copy_from_slice(&ip_sum.to_be_bytes());
    f.extend_from_slice(&[
        0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 7, 0x80, 0x10, 0x01, 0xf5, 0, 0, 0, 0,
    ]);
    f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 4]);
    f.extend((0..PAYLOAD).map(|i| (i * 7 + 3) as u8));
    let pseudo = sum(&f[26..34], 6 + (32 + PAYLOAD) as u64);
    f[50..52].copy_from_slice(&fold(pseudo).to_be_bytes());
    let offload = Offload {
        needs_csum: true,
        csum_start: 34,
        csum_offset: 16,
        gso: Gso::TcpV4,
        gso_size: MSS as u16,
        hdr_len: 66,
        ..Offload::NONE
    };
    (f, offload)
}

fn tunnel_bytes(c: &mut Criterion) {
    let (frame, offload) = super_frame();
    let vxlan = [0x08, 0, 0, 0, 0, 0, 42, 0];
    let mut group = c.benchmark_group("tunnel_bytes");
    group.throughput(Throughput::Bytes(frame.len() as u64));

    group.bench_function("checksum_of_the_frame", |b| b.iter(|| checksum(std::hint::black_box(&frame), 0)));

    let mut out = Vec::with_capacity(2 * frame.len());
    group.bench_function("segment_behind_vxlan", |b| {
        b.iter(|| {
            out.clear();
            finish_into(&frame, &offload, &vxlan, &mut out, &mut |_| {}).expect("a valid super-frame");
            out.len()
        })
    });

    let mut segments = Vec::new();
    finish_into(&frame, &offload, &[], &mut Vec::new(), &mut |piece| {
        segments.push(piece.clone());
        piece.clear();
    })
    .expect("a valid super-frame");
    assert_eq!(segments.len(), 45);
    let mut gro = Gro::default();
    group.bench_function("gro_45_segments_back_to_one", |b| {
        b.iter(|| {
            for segment in &segments {
                gro.push(0, segment);
            }
            gro.flush_all();
            let ready = gro.take_ready().expect("one merged frame");
            assert_eq!(ready.frame.len(), frame.len());
            gro.recycle(ready.frame);
        })
    });
    group.finish();
}

criterion_group!(benches, tunnel_bytes);
criterion_main!(benches);

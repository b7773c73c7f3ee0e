//! What the L2 benches share: a bridge of 4 trunk ports that has learned
//! 1,000 hosts, the per-port transmit queues the daemon uses, and batches
//! of 64-byte unicast frames between the hosts, held as the daemon holds a
//! received batch (so frames that leave unchanged are queued by reference,
//! as in the daemon: see `TxQueues::lend`).

use vswitch_core::bridge::Bridge;
pub use vswitch_core::dpif::batch::TxQueues as Queues;
use vswitch_core::dpif::batch::{PacketBatch, BATCH_SIZE};
use vswitch_core::l2::vlan::PortVlan;
use vswitch_core::offload::Offload;
use vswitch_core::Timestamp;

pub const PORTS: u16 = 4;
pub const HOSTS: usize = 1000;

pub fn host_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

pub fn host_port(i: usize) -> u16 {
    (i % usize::from(PORTS)) as u16 + 1
}

pub fn frame(dst: [u8; 6], src: [u8; 6], vid: Option<u16>) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    if let Some(vid) = vid {
        f.extend_from_slice(&[0x81, 0x00, (vid >> 8) as u8, vid as u8]);
    }
    f.extend_from_slice(&[
        0x08, 0x00, 0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
    ]);
    f.resize(60, 0);
    f
}

/// A bridge of 4 trunk ports that has learned 1,000 hosts spread over them.
pub fn learned_bridge(vlans: impl Fn(u16) -> PortVlan) -> Bridge {
    let mut bridge = Bridge::default();
    for p in 1..=PORTS {
        bridge.set_port(p, &format!("p{p}"), vlans(p));
    }
    let mut sink = Queues::default();
    for i in 0..HOSTS {
        let hello = frame([0xff; 6], host_mac(i), None);
        bridge.receive(Timestamp::from_millis(0), host_port(i), hello.as_slice().into(), &mut sink);
        sink.clear();
    }
    assert_eq!(bridge.mac_table().len(), HOSTS);
    bridge
}

/// Batches received on port 1, each frame from a host behind port 1 to a
/// host behind another port.
pub fn unicast_batches(vid: Option<u16>) -> Vec<Vec<Vec<u8>>> {
    let sources: Vec<usize> = (0..HOSTS).filter(|&i| host_port(i) == 1).collect();
    let dests: Vec<usize> = (0..HOSTS).filter(|&i| host_port(i) != 1).collect();
    (0..64)
        .map(|b| {
            (0..BATCH_SIZE)
                .map(|k| {
                    let n = b * BATCH_SIZE + k;
                    frame(host_mac(dests[n * 7 % dests.len()]), host_mac(sources[n % sources.len()]), vid)
                })
                .collect()
        })
        .collect()
}

/// Frames as one received batch.
pub fn as_batch(frames: &[Vec<u8>]) -> PacketBatch {
    let mut batch = PacketBatch::default();
    for frame in frames {
        batch.push(frame, &Offload::NONE);
    }
    batch
}

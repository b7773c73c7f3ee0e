//! `type=pcap` ports: a port whose wire is a pair of capture files.
//!
//! `options:rx_pcap=FILE` is read when the port is created and its frames are
//! received by the bridge as if they had arrived on the port, once.
//! `options:tx_pcap=FILE` is created (truncated) when the port is created and
//! every frame switched to the port is appended, flushed after each batch so
//! that a reader always sees whole records. These ports need no privilege,
//! which is what makes golden tests and replays possible anywhere.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use proto::pcap::{read_ethernet_file, PcapWriter};
use proto::RpcError;

use super::{device_error, PacketBatch, PortDevice, RxQueue};
use crate::config::Map;
use crate::core::offload;

pub struct PcapDevice {
    tx: Option<(PathBuf, PcapWriter<BufWriter<File>>)>,
    rx: RxQueue,
    error: Option<String>,
}

impl PcapDevice {
    pub fn open(port: &str, options: &Map) -> Result<PcapDevice, RpcError> {
        let mut rx = RxQueue::default();
        if let Some(path) = options.get("rx_pcap") {
            let capture = read_ethernet_file(Path::new(path))
                .map_err(|e| device_error(format!("port {port}: options:rx_pcap: {e}")))?;
            if let Some(damage) = capture.damage {
                tracing::warn!(
                    port,
                    path,
                    "rx_pcap: {damage}; using the {} records before it",
                    capture.records.len()
                );
            }
            rx.extend(capture.records.into_iter().map(|r| r.data));
        }
        let tx = match options.get("tx_pcap") {
            Some(path) => {
                let file = File::create(path).map_err(|e| {
                    device_error(format!("port {port}: cannot create options:tx_pcap {path}: {e}"))
                })?;
                // Flushed now so that a port that never sends still has a
                // readable, empty capture.
                let writer =
                    PcapWriter::new(BufWriter::new(file)).and_then(|mut w| w.flush().map(|()| w)).map_err(
                        |e| device_error(format!("port {port}: cannot write options:tx_pcap {path}: {e}")),
                    )?;
                Some((PathBuf::from(path), writer))
            }
            None => None,
        };
        Ok(PcapDevice { tx, rx, error: None })
    }
}

impl PortDevice for PcapDevice {
    fn send_batch(&mut self, frames: &PacketBatch) -> usize {
        let Some((path, writer)) = &mut self.tx else {
            // No tx file: the port is a sink, as OVS's dummy ports are.
            return frames.len();
        };
        if self.error.is_some() {
            return 0;
        }
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let mut sent = 0;
        for packet in frames.iter() {
            // A capture holds frames as a wire would: checksummed, and
            // segmented to the MSS.
            let mut written = Ok(());
            let finished = offload::finish(packet.data, &packet.offload, &mut |frame| {
                if written.is_ok() {
                    written = writer.write(now, frame);
                }
            });
            if let Err(e) = written {
                self.error = Some(format!("cannot write {}: {e}", path.display()));
                return sent;
            }
            if finished.is_ok() {
                sent += 1;
            }
        }
        if let Err(e) = writer.flush() {
            self.error = Some(format!("cannot write {}: {e}", path.display()));
            // What was buffered but not written is lost with the error.
            return 0;
        }
        sent
    }

    fn recv_batch(&mut self, batch: &mut PacketBatch) -> usize {
        self.rx.drain_into(batch)
    }

    fn error(&self) -> Option<String> {
        self.error.clone()
    }
}

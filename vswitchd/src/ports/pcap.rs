//! `type=pcap` ports: a port whose wire is a pair of capture files.
//!
//! `options:rx_pcap=FILE` is read when the port is created and its frames are
//! received by the bridge as if they had arrived on the port, once.
//! `options:tx_pcap=FILE` is created (truncated) when the port is created and
//! every frame switched to the port is appended, flushed after each batch so
//! that a reader always sees whole records. These ports need no privilege,
//! which is what makes golden tests and replays possible anywhere.

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use proto::pcap::{read_ethernet, PcapWriter};
use proto::RpcError;

use super::{device_error, Frames, PacketBatch, PortDevice, RxQueue};
use crate::config::Map;
use crate::core::offload;

pub struct PcapDevice {
    tx: Option<(PathBuf, PcapWriter<BufWriter<File>>)>,
    rx: RxQueue,
    error: Option<String>,
}

/// The largest `rx_pcap` read: the capture is held in memory whole.
pub const MAX_RX_PCAP_BYTES: u64 = 256 << 20;

/// Opens a capture file without following a final symbolic link and
/// without blocking on a FIFO, and refuses anything but a regular file: a
/// request must not make the daemon read a device or hang on a pipe, nor
/// write a capture over a disk.
fn open_regular(port: &str, option: &str, path: &str, options: &mut OpenOptions) -> Result<File, RpcError> {
    let file = options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::ELOOP) {
            " (a symbolic link: name the file itself)"
        } else {
            ""
        };
        let verb = if option == "tx_pcap" { "create" } else { "open" };
        device_error(format!("port {port}: cannot {verb} options:{option} {path}: {e}{hint}"))
    })?;
    let metadata =
        file.metadata().map_err(|e| device_error(format!("port {port}: options:{option} {path}: {e}")))?;
    if !metadata.is_file() {
        return Err(device_error(format!(
            "port {port}: options:{option} {path} is not a regular file; name a capture file"
        )));
    }
    Ok(file)
}

impl PcapDevice {
    pub fn open(port: &str, options: &Map) -> Result<PcapDevice, RpcError> {
        let mut rx = RxQueue::default();
        if let Some(path) = options.get("rx_pcap") {
            let file = open_regular(port, "rx_pcap", path, OpenOptions::new().read(true))?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            if size > MAX_RX_PCAP_BYTES {
                return Err(device_error(format!(
                    "port {port}: options:rx_pcap {path} has {size} bytes, more than the {MAX_RX_PCAP_BYTES} a pcap port reads; split it (editcap -c) or replay it with vsctl replay"
                )));
            }
            let capture = read_ethernet(file, Path::new(path))
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
                let file = open_regular(port, "tx_pcap", path, OpenOptions::new().write(true).create(true))?;
                // Truncated only once known to be a regular file.
                file.set_len(0).map_err(|e| {
                    device_error(format!("port {port}: cannot truncate options:tx_pcap {path}: {e}"))
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
    fn send_batch(&mut self, frames: Frames<'_>) -> usize {
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

    fn buffer_bytes(&self) -> usize {
        self.rx.bytes()
    }

    fn error(&self) -> Option<String> {
        self.error.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_with(option: &str, path: &Path) -> Result<PcapDevice, RpcError> {
        let options: Map = [(option.to_owned(), path.to_str().unwrap().to_owned())].into_iter().collect();
        PcapDevice::open("p1", &options)
    }

    #[test]
    fn captures_must_be_regular_files_named_directly() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.pcap");
        std::fs::write(&target, b"precious").unwrap();
        let link = dir.path().join("link.pcap");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();

        for option in ["rx_pcap", "tx_pcap"] {
            let e = open_with(option, &link).err().expect("a link is refused");
            assert!(e.message.contains("symbolic link"), "{e}");
            // Neither read nor truncated through the link.
            assert_eq!(std::fs::read(&target).unwrap(), b"precious");
            // A FIFO neither blocks the open nor is taken.
            let e = open_with(option, &fifo).err().expect("a FIFO is refused");
            assert!(e.message.contains("not a regular file") || e.message.contains("cannot "), "{e}");
            let e = open_with(option, Path::new("/dev/null")).err().expect("a device is refused");
            assert!(e.message.contains("not a regular file"), "{e}");
            let e = open_with(option, dir.path()).err().expect("a directory is refused");
            assert!(e.message.contains(option), "{e}");
        }
        let e = open_with("tx_pcap", &dir.path().join("missing/out.pcap")).err().unwrap();
        assert!(
            e.message.contains("cannot create options:tx_pcap") && e.message.contains("No such file"),
            "{e}"
        );
        assert!(open_with("tx_pcap", &dir.path().join("out.pcap")).is_ok());
    }
}

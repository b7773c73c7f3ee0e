//! The classic libpcap capture format, read laxly and written plainly.
//!
//! Why our own reader: `pcap-file` refuses records whose original length
//! exceeds the snap length, which is what every capture taken with a short
//! snaplen looks like (174 records of tcpdump's own test captures), and it
//! sizes its buffer from the record header without a bound. This reader
//! follows libpcap instead: it accepts any `orig_len`, refuses records larger
//! than [`MAX_RECORD_BYTES`] (libpcap's own maximum snaplen), and keeps every
//! record read before a damaged one, so a truncated capture still replays.
//!
//! Both byte orders and both time resolutions (micro- and nanoseconds) are
//! read. Only link type 1 (Ethernet) is accepted: the switch carries Ethernet
//! frames, and guessing at another framing would switch garbage.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

/// libpcap's MAXIMUM_SNAPLEN: no sane record is larger.
pub const MAX_RECORD_BYTES: usize = 262_144;

pub const LINKTYPE_ETHERNET: u32 = 1;

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
const PCAPNG_MAGIC: u32 = 0x0a0d_0d0a;
const GLOBAL_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;

#[derive(Debug)]
pub enum PcapError {
    Io(io::Error),
    /// Fewer than 24 bytes, or a magic number no pcap has.
    NotPcap,
    Pcapng,
    UnsupportedLinkType(u32),
    /// The file ends inside record `index` (0-based).
    TruncatedRecord {
        index: u64,
    },
    RecordTooLarge {
        index: u64,
        len: u32,
    },
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PcapError::Io(e) => write!(f, "{e}"),
            PcapError::NotPcap => f.write_str("not a pcap capture (no pcap magic number in its first bytes)"),
            PcapError::Pcapng => f.write_str(
                "this is a pcapng capture; only classic pcap is read: convert it with `editcap -F pcap IN OUT`",
            ),
            PcapError::UnsupportedLinkType(t) => write!(
                f,
                "the capture's link type is {t}, not Ethernet (1): only Ethernet frames can be switched"
            ),
            PcapError::TruncatedRecord { index } => {
                write!(f, "the capture ends inside record {} (the file is truncated)", index + 1)
            }
            PcapError::RecordTooLarge { index, len } => write!(
                f,
                "record {} claims {len} bytes, more than the {MAX_RECORD_BYTES} any capture holds (the file is damaged)",
                index + 1
            ),
        }
    }
}

impl std::error::Error for PcapError {}

impl From<io::Error> for PcapError {
    fn from(e: io::Error) -> Self {
        PcapError::Io(e)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub timestamp: Duration,
    /// The frame's length on the wire; `data` may be shorter (snaplen).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

pub struct PcapReader<R> {
    input: R,
    big_endian: bool,
    nanos: bool,
    link_type: u32,
    next_index: u64,
    done: bool,
}

impl<R: Read> PcapReader<R> {
    /// Reads the global header. Any link type is accepted here; see
    /// [`PcapReader::link_type`] and [`read_ethernet_file`].
    pub fn new(mut input: R) -> Result<Self, PcapError> {
        let mut header = [0u8; GLOBAL_HEADER_LEN];
        if read_full(&mut input, &mut header)? < GLOBAL_HEADER_LEN {
            return Err(PcapError::NotPcap);
        }
        let magic_le = u32::from_le_bytes(header[0..4].try_into().unwrap());
        let magic_be = u32::from_be_bytes(header[0..4].try_into().unwrap());
        let (big_endian, nanos) = match (magic_le, magic_be) {
            (MAGIC_MICROS, _) => (false, false),
            (MAGIC_NANOS, _) => (false, true),
            (_, MAGIC_MICROS) => (true, false),
            (_, MAGIC_NANOS) => (true, true),
            (PCAPNG_MAGIC, _) => return Err(PcapError::Pcapng),
            _ => return Err(PcapError::NotPcap),
        };
        let field = |bytes: &[u8]| {
            let b: [u8; 4] = bytes.try_into().unwrap();
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        // The upper 16 bits of the link-type field carry FCS flags.
        let link_type = field(&header[20..24]) & 0xffff;
        Ok(PcapReader { input, big_endian, nanos, link_type, next_index: 0, done: false })
    }

    pub fn link_type(&self) -> u32 {
        self.link_type
    }

    fn field(&self, bytes: &[u8]) -> u32 {
        let b: [u8; 4] = bytes.try_into().unwrap();
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// The next record, `None` at a clean end of file. After an error the
    /// reader returns `None`: a damaged record leaves no way to find the next.
    pub fn next_record(&mut self) -> Option<Result<Record, PcapError>> {
        if self.done {
            return None;
        }
        let result = self.read_record();
        if !matches!(result, Some(Ok(_))) {
            self.done = true;
        }
        result
    }

    fn read_record(&mut self) -> Option<Result<Record, PcapError>> {
        let index = self.next_index;
        let mut header = [0u8; RECORD_HEADER_LEN];
        match read_full(&mut self.input, &mut header) {
            Ok(0) => return None,
            Ok(n) if n < RECORD_HEADER_LEN => return Some(Err(PcapError::TruncatedRecord { index })),
            Ok(_) => {}
            Err(e) => return Some(Err(e.into())),
        }
        let secs = self.field(&header[0..4]);
        let frac = self.field(&header[4..8]);
        let incl_len = self.field(&header[8..12]);
        let orig_len = self.field(&header[12..16]);
        if incl_len as usize > MAX_RECORD_BYTES {
            return Some(Err(PcapError::RecordTooLarge { index, len: incl_len }));
        }
        let mut data = vec![0u8; incl_len as usize];
        match read_full(&mut self.input, &mut data) {
            Ok(n) if n < data.len() => return Some(Err(PcapError::TruncatedRecord { index })),
            Ok(_) => {}
            Err(e) => return Some(Err(e.into())),
        }
        let nanos = if self.nanos { frac } else { frac.saturating_mul(1000) };
        let timestamp = Duration::from_secs(secs.into()) + Duration::from_nanos(nanos.into());
        self.next_index += 1;
        Some(Ok(Record { timestamp, orig_len: orig_len.max(incl_len), data }))
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// An Ethernet capture read whole: its records and, if the file ends in a
/// damaged record, what was wrong there (the records before it are kept).
pub struct EthernetCapture {
    pub records: Vec<Record>,
    pub damage: Option<PcapError>,
}

/// Reads a whole capture, refusing anything that is not a pcap of Ethernet
/// frames. Errors name the file and say what to do.
pub fn read_ethernet_file(path: &Path) -> Result<EthernetCapture, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    read_ethernet(file, path)
}

/// [`read_ethernet_file`] of a file already open; `path` names it in errors.
pub fn read_ethernet(input: impl io::Read, path: &Path) -> Result<EthernetCapture, String> {
    let mut reader =
        PcapReader::new(io::BufReader::new(input)).map_err(|e| format!("{}: {e}", path.display()))?;
    if reader.link_type() != LINKTYPE_ETHERNET {
        return Err(format!("{}: {}", path.display(), PcapError::UnsupportedLinkType(reader.link_type())));
    }
    let mut records = Vec::new();
    let mut damage = None;
    while let Some(record) = reader.next_record() {
        match record {
            Ok(record) => records.push(record),
            Err(e) => damage = Some(e),
        }
    }
    Ok(EthernetCapture { records, damage })
}

/// Writes an Ethernet capture, microsecond timestamps, little-endian.
pub struct PcapWriter<W: Write> {
    output: W,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut output: W) -> io::Result<Self> {
        let mut header = [0u8; GLOBAL_HEADER_LEN];
        header[0..4].copy_from_slice(&MAGIC_MICROS.to_le_bytes());
        header[4..6].copy_from_slice(&2u16.to_le_bytes());
        header[6..8].copy_from_slice(&4u16.to_le_bytes());
        header[16..20].copy_from_slice(&(MAX_RECORD_BYTES as u32).to_le_bytes());
        header[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        output.write_all(&header)?;
        Ok(PcapWriter { output })
    }

    /// Appends to a capture this writer's format already holds (its header
    /// written before), e.g. a tx_pcap that survives a daemon restart.
    pub fn append(output: W) -> Self {
        PcapWriter { output }
    }

    pub fn write(&mut self, timestamp: Duration, frame: &[u8]) -> io::Result<()> {
        let len = frame.len().min(MAX_RECORD_BYTES);
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[0..4].copy_from_slice(&(timestamp.as_secs() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&timestamp.subsec_micros().to_le_bytes());
        header[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        header[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        self.output.write_all(&header)?;
        self.output.write_all(&frame[..len])
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.output.flush()
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.output
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(frames: &[&[u8]]) -> Vec<u8> {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        for (i, f) in frames.iter().enumerate() {
            w.write(Duration::from_micros(i as u64 * 1_500_000), f).unwrap();
        }
        w.output
    }

    fn read_all(bytes: &[u8]) -> (Vec<Record>, Option<PcapError>) {
        let mut r = PcapReader::new(bytes).unwrap();
        let mut out = Vec::new();
        while let Some(rec) = r.next_record() {
            match rec {
                Ok(rec) => out.push(rec),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[test]
    fn writes_what_it_reads() {
        let bytes = capture(&[b"first frame", b"second"]);
        let (records, damage) = read_all(&bytes);
        assert!(damage.is_none());
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].data, b"second");
        assert_eq!(records[1].timestamp, Duration::from_micros(1_500_000));
    }

    #[test]
    fn keeps_records_before_a_truncated_one() {
        let bytes = capture(&[b"whole", b"cut short"]);
        let (records, damage) = read_all(&bytes[..bytes.len() - 3]);
        assert_eq!(records.len(), 1);
        assert!(matches!(damage, Some(PcapError::TruncatedRecord { index: 1 })));
    }

    #[test]
    fn accepts_orig_len_beyond_snaplen_and_big_endian() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MAGIC_MICROS.to_be_bytes());
        bytes.extend_from_slice(&[0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 68, 0, 0, 0, 1]);
        bytes.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 5, 220]);
        bytes.extend_from_slice(b"abcd");
        let (records, damage) = read_all(&bytes);
        assert!(damage.is_none());
        assert_eq!(records[0].orig_len, 1500);
        assert_eq!(records[0].data, b"abcd");
    }

    #[test]
    fn refuses_huge_records_without_allocating_them() {
        let mut bytes = capture(&[]);
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let (_, damage) = read_all(&bytes);
        assert!(matches!(damage, Some(PcapError::RecordTooLarge { .. })));
    }

    #[test]
    fn names_what_is_not_a_pcap() {
        assert!(matches!(PcapReader::new(&b"hello world, not a capture"[..]), Err(PcapError::NotPcap)));
        assert!(matches!(PcapReader::new(&[0u8; 3][..]), Err(PcapError::NotPcap)));
        let ng = [0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(PcapReader::new(&ng[..]), Err(PcapError::Pcapng)));
    }
}

//! Capture files from anywhere: any bytes are read as a pcap (or pcapng)
//! or refused with an error; damaged records end the reading cleanly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::pcap::PcapReader;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut reader) = PcapReader::new(std::io::Cursor::new(data)) {
        let _ = reader.link_type();
        for _ in 0..10_000 {
            match reader.next_record() {
                Some(Ok(record)) => assert!(record.data.len() <= data.len()),
                Some(Err(_)) | None => break,
            }
        }
    }
});

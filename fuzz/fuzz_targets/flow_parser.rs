//! ovs-ofctl flow syntax: any text is parsed or refused, never a panic;
//! what parses is added to tables and traced, and a key built from the
//! input's bytes is translated through them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vswitch_core::bridge::Bridge;
use vswitch_core::ofproto::flow::{Words, WORDS};
use vswitch_core::ofproto::ofctl::{parse_flow, parse_match};
use vswitch_core::Timestamp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let ports = |name: &str| match name {
        "p1" => Some(1),
        "p2" => Some(2),
        _ => None,
    };
    let mut br = Bridge::default();
    let now = Timestamp::from_millis(0);
    let mut key: Words = [0; WORDS];
    for (i, chunk) in data.chunks(8).take(WORDS).enumerate() {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        key[i] = u64::from_le_bytes(word);
    }
    for line in text.lines() {
        if let Ok(spec) = parse_flow(line, &ports) {
            br.add_flow(spec, now);
        }
        if let Ok((filter, strict)) = parse_match(line, &ports) {
            let _ = br.select(Some(&(filter.clone(), strict)), strict);
            br.delete_flows(Some(&(filter, strict)), strict);
        }
    }
    let _ = br.trace(&key, now);
});

//! The control protocol without sockets: any line is answered (an error
//! for what is not a request), and the configuration commands of a
//! transaction are applied to a configuration, which either changes or
//! refuses, never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::Method;
use vswitchd::config::Config;
use vswitchd::control::{Session, Step};

fuzz_target!(|data: &[u8]| {
    let mut session = Session::default();
    // Greet first, so that what follows reaches the methods.
    let _ = session
        .handle_line(br#"{"jsonrpc":"2.0","id":0,"method":"hello","params":{"protocol":1,"client":"fuzz"}}"#);
    let mut config = Config::default();
    for line in data.split(|b| *b == b'\n') {
        if let Step::Call { method: Method::Transact(t), .. } = session.handle_line(line) {
            let mut working = config.clone();
            let applied = t.commands.iter().all(|c| working.apply(c).is_ok());
            if applied {
                config = working;
            }
        }
    }
});

//! A blocking client of the control socket. Every wait is bounded by the
//! deadline, so a daemon that is gone or stuck yields an error, never a hang.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use proto::{
    decode_result, Hello, HelloReply, Method, Request, Response, RpcError, MAX_RESPONSE_BYTES,
    PROTOCOL_VERSION,
};
use serde::de::DeserializeOwned;

pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    deadline: Option<Instant>,
    timeout: Duration,
    next_id: u64,
}

fn connect_error(path: &Path, e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    let hint = match e.kind() {
        NotFound => "is vswitchd running? start it with `vswitchd --detach`, or point --run-dir (or VSWITCH_RUN_DIR) at its run directory",
        ConnectionRefused => "vswitchd is not running (the socket is stale): start it with `vswitchd --detach`",
        PermissionDenied => "run vsctl as root or as a member of the socket's group",
        _ => "check that vswitchd is running",
    };
    format!("cannot connect to vswitchd at {}: {e}; {hint}", path.display())
}

impl Client {
    pub fn connect(run_dir: &Path, timeout: Duration) -> Result<Client, String> {
        let path = run_dir.join(proto::SOCKET_NAME);
        let stream = UnixStream::connect(&path).map_err(|e| connect_error(&path, &e))?;
        let deadline = Instant::now().checked_add(timeout);
        let writer = stream.try_clone().map_err(|e| format!("socket: {e}"))?;
        let mut client = Client { reader: BufReader::new(stream), writer, deadline, timeout, next_id: 0 };
        let reply: HelloReply = client.call(Method::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            client: format!("vsctl {}", env!("CARGO_PKG_VERSION")),
        }))?;
        if reply.protocol != PROTOCOL_VERSION {
            return Err(format!(
                "{} speaks protocol {}, this vsctl {PROTOCOL_VERSION}",
                reply.server, reply.protocol
            ));
        }
        Ok(client)
    }

    /// Gives the next calls a fresh timeout (a long replay is many calls).
    pub fn renew_deadline(&mut self) {
        self.deadline = Instant::now().checked_add(self.timeout);
    }

    fn remaining(&self) -> Result<Option<Duration>, String> {
        match self.deadline {
            None => Ok(None),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Ok(Some(left)),
                _ => Err(self.timed_out()),
            },
        }
    }

    fn timed_out(&self) -> String {
        format!(
            "vswitchd did not answer within {:.1} s; it may be overloaded or stuck (raise --timeout, or check its log)",
            self.timeout.as_secs_f64()
        )
    }

    pub fn call<T: DeserializeOwned>(&mut self, method: Method) -> Result<T, String> {
        self.next_id += 1;
        let request = Request {
            jsonrpc: "2.0".into(),
            id: self.next_id.into(),
            method: method.name().into(),
            params: method.params(),
        };
        let mut line = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let io_error = |client: &Client, e: std::io::Error| {
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
                client.timed_out()
            } else {
                format!("lost the connection to vswitchd: {e}")
            }
        };
        self.writer.set_write_timeout(self.remaining()?).map_err(|e| e.to_string())?;
        self.writer.write_all(&line).map_err(|e| io_error(self, e))?;
        let mut reply = Vec::new();
        loop {
            self.reader.get_ref().set_read_timeout(self.remaining()?).map_err(|e| e.to_string())?;
            let limit = (MAX_RESPONSE_BYTES + 1 - reply.len()) as u64;
            match (&mut self.reader).take(limit).read_until(b'\n', &mut reply) {
                Ok(0) => return Err("vswitchd closed the connection without answering (see its log)".into()),
                Ok(_) if reply.last() == Some(&b'\n') => break,
                Ok(_) if reply.len() > MAX_RESPONSE_BYTES => {
                    return Err("vswitchd's answer is too large".into())
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(self, e)),
            }
        }
        let response: Response = serde_json::from_slice(&reply)
            .map_err(|e| format!("vswitchd sent an answer this vsctl cannot read: {e}"))?;
        decode_result(response).map_err(|e: RpcError| e.message)
    }
}

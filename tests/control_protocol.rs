//! The control socket under abuse: whatever a client sends, it gets a clear
//! error or a correct answer, and the daemon keeps serving everyone else.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::*;

struct Raw {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Raw {
    fn connect(sw: &Switch) -> Raw {
        let stream = UnixStream::connect(sw.run_dir().join(proto::SOCKET_NAME)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw { writer: stream.try_clone().unwrap(), reader: BufReader::new(stream) }
    }

    fn send_line(&mut self, line: &[u8]) -> Value {
        self.writer.write_all(line).unwrap();
        self.writer.write_all(b"\n").unwrap();
        self.read()
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("an answer");
        serde_json::from_str(&line).expect("the answer is JSON")
    }

    fn call(&mut self, id: u64, method: &str, params: Value) -> Value {
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        self.send_line(line.as_bytes())
    }

    fn hello(&mut self) {
        let r = self.call(0, "hello", json!({"protocol": proto::PROTOCOL_VERSION, "client": "test"}));
        assert!(r["result"]["server"].as_str().unwrap().starts_with("vswitchd"), "{r}");
    }
}

fn error_code(response: &Value) -> i64 {
    response["error"]["code"].as_i64().unwrap_or_else(|| panic!("not an error: {response}"))
}

#[test]
fn malformed_requests_get_errors_and_the_connection_survives() {
    let sw = Switch::start();
    let mut c = Raw::connect(&sw);
    assert_eq!(error_code(&c.send_line(b"{this is not json")), -32700);
    assert_eq!(error_code(&c.send_line(b"\xff\xfe\x00binary")), -32700);
    assert_eq!(error_code(&c.send_line(b"[1, 2, 3]")), -32600);
    assert_eq!(error_code(&c.call(1, "list_br", json!({}))), -32601);
    assert_eq!(
        error_code(&c.call(2, "transact", json!({"commands": []}))),
        proto::ErrorCode::HandshakeRequired.code()
    );
    c.hello();
    let r = c.call(3, "transact", json!({"commands": [{"command": "add-br"}]}));
    assert_eq!(error_code(&r), -32602);
    assert_eq!(r["id"], 3);
    let r = c.call(4, "replay", json!({"bridge": "x", "port": "y", "frames": ["*not base64*"]}));
    assert_eq!(error_code(&r), -32602);
    // The same connection still works.
    let r = c.call(
        5,
        "transact",
        json!({"commands": [{"command": "add-br", "bridge": "br0"}, {"command": "list-br"}]}),
    );
    assert_eq!(r["result"]["results"][1]["value"], json!(["br0"]), "{r}");
}

#[test]
fn oversized_request_is_refused_and_others_are_served() {
    let sw = Switch::start();
    let mut c = Raw::connect(&sw);
    c.hello();
    let big = vec![b'x'; proto::MAX_MESSAGE_BYTES + 100];
    // The daemon may close before reading it all; a broken pipe is fine.
    let _ = c.writer.write_all(&big);
    let r = c.read();
    assert_eq!(error_code(&r), proto::ErrorCode::RequestTooLarge.code());
    assert!(r["error"]["message"].as_str().unwrap().contains("larger than"));
    sw.ok(&["add-br", "br0"]);
    assert_eq!(sw.ok(&["list-br"]), "br0\n");
}

#[test]
fn client_gone_mid_request_does_not_disturb_the_daemon() {
    let sw = Switch::start();
    {
        let mut c = Raw::connect(&sw);
        c.hello();
        c.writer.write_all(br#"{"jsonrpc":"2.0","id":9,"method":"transact","params":{"comm"#).unwrap();
    }
    {
        // And one that says nothing at all and stays connected meanwhile.
        let _idle = Raw::connect(&sw);
        sw.ok(&["add-br", "br0"]);
        assert_eq!(sw.ok(&["list-br"]), "br0\n");
    }
}

#[test]
fn fifty_concurrent_clients_all_get_answers() {
    let sw = Switch::start();
    sw.ok(&["add-br", "br0"]);
    let children: Vec<_> = (0..50)
        .map(|i| {
            let name = format!("p{i}");
            sw.vsctl_command()
                .args([
                    "--timeout",
                    "30",
                    "add-port",
                    "br0",
                    &name,
                    "--",
                    "set",
                    "port",
                    &name,
                    &format!("tag={i}"),
                    "--",
                    "list-br",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "br0\n");
    }
    let ports = sw.ok(&["list-ports", "br0"]);
    assert_eq!(ports.lines().count(), 50);
    assert_eq!(sw.ok(&["get", "port", "p37", "tag"]), "37\n");
}

#[test]
fn version_mismatch_is_explained() {
    let sw = Switch::start();
    let mut c = Raw::connect(&sw);
    let r = c.call(1, "hello", json!({"protocol": 999, "client": "future"}));
    assert_eq!(error_code(&r), proto::ErrorCode::VersionMismatch.code());
    assert!(r["error"]["message"].as_str().unwrap().contains("protocol"));
}

//! What `vswitchd` and `vsctl` agree on: the control protocol spoken over the
//! daemon's Unix socket, and the pcap capture format both of them read and
//! write.
//!
//! # The control protocol
//! One JSON object per line (newline-delimited JSON), shaped like JSON-RPC 2.0:
//! a request carries `jsonrpc`, `id`, `method` and `params`; a response carries
//! the same `id` and either `result` or `error {code, message}`. A connection
//! opens with [`Method::Hello`], which checks that both sides speak
//! [`PROTOCOL_VERSION`]; every other method is refused before it. A line longer
//! than [`MAX_MESSAGE_BYTES`] is refused with [`ErrorCode::RequestTooLarge`] and
//! the connection is closed, since the rest of that line cannot be framed.
//!
//! Configuration changes travel as one [`Method::Transact`]: a list of
//! [`Command`]s that the daemon applies all together or not at all.

pub mod pcap;
mod rpc;

pub use rpc::*;

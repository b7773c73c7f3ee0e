//! vsctl: configures and inspects vswitchd over its control socket.

mod args;
mod output;

use std::process::ExitCode;

use base64::Engine;
use proto::{
    CommandResult, Method, Replay, ReplayReply, TimeWarp, Transact, TransactReply, MAX_MESSAGE_BYTES,
};

use args::{Action, Format, Options};
use vsctl::client::Client;

/// ovs-vsctl's exit status for `br-exists` of a missing bridge.
const EXIT_NO_SUCH_BRIDGE: u8 = 2;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (options, action) = match args::parse(&argv, std::env::var(proto::RUN_DIR_ENV).ok()) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("vsctl: {message}");
            return ExitCode::FAILURE;
        }
    };
    match run(&options, action) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("vsctl: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options, action: Action) -> Result<ExitCode, String> {
    match action {
        Action::Help => {
            print!("{}", args::USAGE);
            Ok(ExitCode::SUCCESS)
        }
        Action::Version => {
            println!("vsctl {} (protocol {})", env!("CARGO_PKG_VERSION"), proto::PROTOCOL_VERSION);
            Ok(ExitCode::SUCCESS)
        }
        Action::Transact(commands) => transact(options, commands),
        Action::TimeWarp { msecs } => {
            let mut client = Client::connect(&options.run_dir, options.timeout)?;
            client.call::<serde_json::Value>(Method::TimeWarp(TimeWarp { msecs }))?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Replay { bridge, port, file } => replay(options, bridge, port, &file),
    }
}

fn transact(options: &Options, commands: Vec<proto::Command>) -> Result<ExitCode, String> {
    let mut client = Client::connect(&options.run_dir, options.timeout)?;
    let reply: TransactReply = client.call(Method::Transact(Transact { commands }))?;
    match options.format {
        Format::Table => {
            for result in &reply.results {
                print!("{}", output::text(result));
            }
        }
        Format::Json => {
            let values: Vec<serde_json::Value> = reply.results.iter().map(output::json).collect();
            let doc = if values.len() == 1 { values[0].clone() } else { values.into() };
            println!("{}", serde_json::to_string_pretty(&doc).expect("serializes"));
        }
    }
    let missing_bridge = reply.results.iter().any(|r| matches!(r, CommandResult::Exists(false)));
    Ok(if missing_bridge { ExitCode::from(EXIT_NO_SUCH_BRIDGE) } else { ExitCode::SUCCESS })
}

/// Reads the capture here, with the caller's permissions, and sends it in
/// requests that stay under the daemon's size limit. Each request returns
/// once its frames are switched, so the replay is over when this returns.
fn replay(
    options: &Options,
    bridge: String,
    port: String,
    file: &std::path::Path,
) -> Result<ExitCode, String> {
    let capture = proto::pcap::read_ethernet_file(file)?;
    let mut client = Client::connect(&options.run_dir, options.timeout)?;
    let total = capture.records.len() as u64;
    let progress = indicatif::ProgressBar::new(total);
    if total < 10_000 {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let budget = MAX_MESSAGE_BYTES / 2;
    let mut sum = ReplayReply::default();
    let mut records = capture.records.iter().peekable();
    while records.peek().is_some() {
        let mut frames = Vec::new();
        let mut size = 0;
        while let Some(record) = records.peek() {
            let encoded = record.data.len().div_ceil(3) * 4 + 4;
            if !frames.is_empty() && size + encoded > budget {
                break;
            }
            size += encoded;
            frames.push(engine.encode(&record.data));
            records.next();
        }
        client.renew_deadline();
        let reply: ReplayReply =
            client.call(Method::Replay(Replay { bridge: bridge.clone(), port: port.clone(), frames }))?;
        sum.frames += reply.frames;
        sum.forwarded += reply.forwarded;
        sum.dropped += reply.dropped;
        progress.inc(reply.frames);
    }
    progress.finish_and_clear();
    if let Some(damage) = &capture.damage {
        eprintln!("vsctl: warning: {}: {damage}; replayed the {total} frames before it", file.display());
    }
    match options.format {
        Format::Table => println!(
            "replayed {} frames into {bridge} port {port}: {} forwarded, {} dropped",
            sum.frames, sum.forwarded, sum.dropped
        ),
        Format::Json => println!("{}", serde_json::to_string(&sum).expect("serializes")),
    }
    Ok(ExitCode::SUCCESS)
}

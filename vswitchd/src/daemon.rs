//! Start-up and shutdown of the daemon process.
//!
//! Order matters: the run directory's pid file is locked first (a second
//! daemon on the same run directory stops there, before touching the
//! socket of the first), the database is read (a damaged one stops the
//! start with a message instead of being overwritten), the socket is bound,
//! and only then does `--detach` fork, so that the parent can report every
//! start-up error and exits only once the daemon is ready for clients.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use proto::{DEFAULT_RUN_DIR, RUN_DIR_ENV, SOCKET_NAME};

use crate::access::Access;
use crate::config::Database;
use crate::control::{self, Control};
use crate::datapath::DatapathHandle;

pub const DEFAULT_DB: &str = "/var/lib/vswitch/conf.db";
pub const PID_FILE: &str = "vswitchd.pid";

#[derive(Debug, Parser)]
#[command(name = "vswitchd", version, about = "A userspace virtual switch in the Open vSwitch style")]
pub struct Args {
    /// Directory for the control socket and the pid file.
    #[arg(long, env = RUN_DIR_ENV, default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,

    /// The configuration database file.
    #[arg(long, env = "VSWITCH_DB", default_value = DEFAULT_DB)]
    pub db: PathBuf,

    /// Run in the background once ready; logs go to --log-file.
    #[arg(long)]
    pub detach: bool,

    /// Where logs go when detached (default: RUN_DIR/vswitchd.log).
    #[arg(long)]
    pub log_file: Option<PathBuf>,

    /// A group (name or number) whose members may use the control socket
    /// besides root; the socket file is given to it.
    #[arg(long, env = "VSWITCH_GROUP")]
    pub group: Option<String>,

    /// A directory in which members of --group may name pcap files
    /// (rx_pcap, tx_pcap); repeat for more. Root may name any file.
    #[arg(long = "pcap-dir", value_name = "DIR")]
    pub pcap_dirs: Vec<PathBuf>,

    /// The cluster store for overlay networks: etcd://HOST:PORT[,HOST:PORT...].
    /// Saved in the database, as `vsctl set-cluster` does.
    #[arg(long, env = "VSWITCH_CLUSTER_STORE", requires = "cluster_advertise")]
    pub cluster_store: Option<String>,

    /// This host's underlay address, where other hosts' tunnels end.
    #[arg(long, env = "VSWITCH_CLUSTER_ADVERTISE", requires = "cluster_store")]
    pub cluster_advertise: Option<String>,

    /// Seconds this host's endpoints outlive it in the store (its lease).
    #[arg(long, value_name = "SECS")]
    pub cluster_ttl: Option<u64>,
}

/// Holds the run directory for as long as the daemon lives.
struct RunDirLock {
    pid_file: File,
    pid_path: PathBuf,
    socket_path: PathBuf,
}

impl RunDirLock {
    fn acquire(run_dir: &Path) -> Result<RunDirLock, String> {
        fs::create_dir_all(run_dir)
            .map_err(|e| format!("cannot create the run directory {}: {e}", run_dir.display()))?;
        let pid_path = run_dir.join(PID_FILE);
        let mut pid_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&pid_path)
            .map_err(|e| format!("cannot open {}: {e}", pid_path.display()))?;
        if let Err(e) = pid_file.try_lock() {
            let mut pid = String::new();
            let _ = pid_file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(match e {
                std::fs::TryLockError::WouldBlock => format!(
                    "another vswitchd{} is already running with run directory {}: stop it first, or pass another --run-dir",
                    if pid.is_empty() { String::new() } else { format!(" (pid {pid})") },
                    run_dir.display()
                ),
                std::fs::TryLockError::Error(e) => format!("cannot lock {}: {e}", pid_path.display()),
            });
        }
        Ok(RunDirLock { pid_file, pid_path, socket_path: run_dir.join(SOCKET_NAME) })
    }

    fn write_pid(&mut self) -> std::io::Result<()> {
        self.pid_file.set_len(0)?;
        let mut f = &self.pid_file;
        std::io::Seek::rewind(&mut f)?;
        writeln!(f, "{}", std::process::id())
    }

    fn bind(&self, group: Option<u32>) -> Result<StdUnixListener, String> {
        // The lock proves any socket file left here is stale.
        match fs::remove_file(&self.socket_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(format!("cannot remove the stale socket {}: {e}", self.socket_path.display()))
            }
        }
        let listener = StdUnixListener::bind(&self.socket_path)
            .map_err(|e| format!("cannot listen on {}: {e}", self.socket_path.display()))?;
        if let Some(gid) = group {
            std::os::unix::fs::chown(&self.socket_path, None, Some(gid))
                .map_err(|e| format!("cannot give {} to group {gid}: {e}", self.socket_path.display()))?;
        }
        fs::set_permissions(&self.socket_path, fs::Permissions::from_mode(0o660))
            .map_err(|e| format!("cannot set the mode of {}: {e}", self.socket_path.display()))?;
        listener.set_nonblocking(true).map_err(|e| format!("cannot make the socket non-blocking: {e}"))?;
        Ok(listener)
    }
}

impl Drop for RunDirLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.socket_path);
        let _ = fs::remove_file(&self.pid_path);
    }
}

/// The parent's half of `--detach`: waits for the child to say it is
/// ready, or why it failed.
fn detach() -> Result<Option<OwnedFd>, String> {
    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: no thread has been started yet (logging, tokio and the
    // datapath all start after this), so the child is a full copy of a
    // single-threaded process and may run arbitrary code.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(write_end);
            let mut status = String::new();
            let _ = File::from(read_end).read_to_string(&mut status);
            if status == "ready" {
                std::process::exit(0);
            }
            if status.is_empty() {
                status = "the daemon exited during start-up; see its log file".into();
            }
            eprintln!("vswitchd: {status}");
            std::process::exit(1);
        }
        nix::unistd::ForkResult::Child => {
            drop(read_end);
            nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
            Ok(Some(write_end))
        }
    }
}

fn report_to_parent(parent: &mut Option<OwnedFd>, status: &str) {
    if let Some(fd) = parent.take() {
        let _ = File::from(fd).write_all(status.as_bytes());
    }
}

/// Points stdin, stdout and stderr of a detached daemon at /dev/null.
fn close_stdio() {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors only replaces
            // them; `null` stays open until after the calls.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

fn init_logging(log_file: Option<&Path>) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match log_file {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
            builder.with_ansi(false).with_writer(std::sync::Mutex::new(file)).init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    let mut parent = None;
    match run(&args, &mut parent) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            report_to_parent(&mut parent, &message);
            tracing::error!("{message}");
            eprintln!("vswitchd: {message}");
            ExitCode::FAILURE
        }
    }
}

/// How often the allocator's free pages go back to the kernel.
const RELEASE_FREE_MEMORY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

fn run(args: &Args, parent: &mut Option<OwnedFd>) -> Result<(), String> {
    crate::memory::tune_allocator();
    let access = Access::new(args.group.as_deref(), &args.pcap_dirs)?;
    let mut lock = RunDirLock::acquire(&args.run_dir)?;
    let db = Database::new(&args.db);
    if let Some(dir) = args.db.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the database directory {}: {e}", dir.display()))?;
    }
    let mut config = db.load()?;
    if let (Some(store), Some(advertise)) = (&args.cluster_store, &args.cluster_advertise) {
        let cluster =
            crate::config::ClusterConfig::new(std::slice::from_ref(store), advertise, args.cluster_ttl)?;
        if config.cluster.as_ref() != Some(&cluster) {
            config.cluster = Some(cluster);
            db.save(&config).map_err(|e| format!("cannot save the cluster settings: {e}"))?;
        }
    }
    let listener = lock.bind(access.socket_group())?;
    let log_file = if args.detach {
        *parent = detach()?;
        Some(args.log_file.clone().unwrap_or_else(|| args.run_dir.join("vswitchd.log")))
    } else {
        args.log_file.clone()
    };
    init_logging(log_file.as_deref())?;
    lock.write_pid().map_err(|e| format!("cannot write the pid file: {e}"))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("control")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the control runtime: {e}"))?;
    let (datapath, datapath_thread) =
        DatapathHandle::spawn().map_err(|e| format!("cannot start the datapath thread: {e}"))?;
    runtime.block_on(async {
        let listener = tokio::net::UnixListener::from_std(listener)
            .map_err(|e| format!("cannot use the control socket: {e}"))?;
        let control = Control::start(config, db.clone(), datapath, access)
            .await
            .map_err(|e| format!("cannot apply the saved configuration: {e}"))?;
        tracing::info!(
            socket = %lock.socket_path.display(),
            db = %db.path().display(),
            "vswitchd {} ready",
            env!("CARGO_PKG_VERSION")
        );
        if parent.is_some() {
            report_to_parent(parent, "ready");
            close_stdio();
        }
        let watcher = tokio::spawn(control.clone().watch_containers());
        let trimmer = tokio::spawn(async {
            let mut every = tokio::time::interval(RELEASE_FREE_MEMORY_EVERY);
            loop {
                every.tick().await;
                crate::memory::release_free_memory();
            }
        });
        control::serve(listener, control, shutdown_signal()).await;
        watcher.abort();
        trimmer.abort();
        Ok::<(), String>(())
    })?;
    // The control plane held the last datapath handles; with the runtime
    // gone the datapath thread drains, flushes its devices and ends.
    drop(runtime);
    let _ = datapath_thread.join();
    tracing::info!("vswitchd stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

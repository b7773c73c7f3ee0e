//! The cluster store: etcd, through `etcd-client`.
//!
//! [`Cluster::run`] keeps one session at a time with the store and starts
//! a new one whenever the last one ends. A session:
//!
//! 1. grants this host a lease of the configured TTL and keeps it alive
//!    (a keep-alive every third of the TTL; no answer for a whole TTL ends
//!    the session);
//! 2. publishes the host and its endpoints under that lease, so they
//!    vanish from every other host within the TTL of this one dying;
//! 3. lists everything under [`super::PREFIX`] into a fresh view and has
//!    the control plane reconcile to it (deleting what the store no longer
//!    has), then watches from the list's revision + 1, reconciling after
//!    each batch of events. A compacted or cancelled watch ends the
//!    session, and the next one lists again.
//!
//! While the store cannot be reached nothing is reconciled: what the
//! datapath already knows keeps forwarding, `show` says the store is
//! unreachable, and commands that need the store fail saying so.
//!
//! Addresses are allocated with a transaction that creates the address's
//! key only if it does not exist (`create_revision == 0`), so two hosts
//! can never both get one; a host that loses the race tries another.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use proto::{ErrorCode, RpcError};

use super::{
    address_key, addresses_prefix, endpoint_key, endpoints_prefix, host_key, network_key, pick_address,
    vni_key, vnis_prefix, AddressRecord, ClusterView, EndpointRecord, NetworkRecord, FIRST_AUTO_VNI, MAX_VNI,
    PREFIX,
};
use crate::config::ClusterConfig;

/// How long one request to the store may take before it counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait before the next session after one failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Tries at allocating an address (or a VNI) before giving up.
const ALLOCATION_TRIES: u64 = 64;

/// What the control plane does for the store: reconcile to a view, and
/// tell which endpoints this host has.
/// (Boxed futures: the control plane's reconcile may join a cluster,
/// which spawns this very loop, and an unboxed future would contain itself.)
pub trait Reconciler: Send + Sync + 'static {
    /// Brings the configuration in line with [`Cluster::view`] as it is then.
    fn reconcile(&self) -> BoxFuture<'_, ()>;
    fn local_endpoints(&self) -> BoxFuture<'_, Vec<(String, EndpointRecord)>>;
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone)]
enum Status {
    Connecting,
    Reachable,
    Unreachable { since: std::time::SystemTime, why: String },
}

/// This host's membership of a cluster.
pub struct Cluster {
    pub settings: ClusterConfig,
    client: Client,
    status: Mutex<Status>,
    view: Mutex<ClusterView>,
    /// The current session's lease; 0 before the first.
    lease: Mutex<i64>,
}

fn unreachable_error(store: &str, why: impl std::fmt::Display) -> RpcError {
    RpcError::new(
        ErrorCode::Io,
        format!(
            "the cluster store {store} is unreachable ({why}): overlay changes need it; what is already configured keeps forwarding, try again when the store is back"
        ),
    )
}

async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {} s", REQUEST_TIMEOUT.as_secs())),
    }
}

impl Cluster {
    /// A client for the store; nothing is sent until the first request.
    pub async fn connect(settings: ClusterConfig) -> Result<Arc<Cluster>, String> {
        let endpoints: Vec<String> = settings.store.iter().map(|e| format!("http://{e}")).collect();
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| format!("cannot use the cluster store {}: {e}", settings.describe()))?;
        Ok(Arc::new(Cluster {
            settings,
            client,
            status: Mutex::new(Status::Connecting),
            view: Mutex::new(ClusterView::default()),
            lease: Mutex::new(0),
        }))
    }

    pub fn local(&self) -> Ipv4Addr {
        self.settings.advertise
    }

    /// `reachable`, `connecting`, or `unreachable since ...: why`.
    pub fn status(&self) -> String {
        match &*self.status.lock().expect("status lock") {
            Status::Connecting => "connecting".into(),
            Status::Reachable => "reachable".into(),
            Status::Unreachable { since, why } => {
                let ago = since.elapsed().map(|d| d.as_secs()).unwrap_or(0);
                format!("unreachable for {ago} s: {why}")
            }
        }
    }

    pub fn view(&self) -> ClusterView {
        self.view.lock().expect("view lock").clone()
    }

    fn set_status(&self, status: Status) {
        let mut current = self.status.lock().expect("status lock");
        // Keep the first moment of an outage.
        if let (Status::Unreachable { since, .. }, Status::Unreachable { why, .. }) = (&*current, &status) {
            *current = Status::Unreachable { since: *since, why: why.clone() };
        } else {
            *current = status;
        }
    }

    fn fail(&self, why: impl std::fmt::Display) -> RpcError {
        unreachable_error(&self.settings.describe(), why)
    }

    /// Keeps sessions with the store until the control plane goes away.
    pub async fn run<R: Reconciler>(self: Arc<Self>, control: Weak<R>) {
        loop {
            let Some(reconciler) = control.upgrade() else { return };
            let ended = self.session(&*reconciler).await;
            drop(reconciler);
            let why = ended.err().unwrap_or_else(|| "the session ended".into());
            tracing::warn!(store = %self.settings.describe(), "cluster store session ended: {why}");
            self.set_status(Status::Unreachable { since: std::time::SystemTime::now(), why });
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }

    async fn session<R: Reconciler>(&self, control: &R) -> Result<(), String> {
        let mut client = self.client.clone();
        let ttl = self.settings.ttl_secs;
        let lease = bounded("lease grant", client.lease_grant(ttl as i64, None)).await?.id();
        let (keeper, acks) = bounded("lease keep-alive", client.lease_keep_alive(lease)).await?;
        *self.lease.lock().expect("lease lock") = lease;
        let host = serde_json::json!({ "vtep": self.local(), "ttl_secs": ttl }).to_string();
        bounded(
            "publish host",
            client.put(host_key(self.local()), host, Some(PutOptions::new().with_lease(lease))),
        )
        .await?;
        for (network, endpoint) in control.local_endpoints().await {
            self.publish_under(lease, &network, &endpoint).await.map_err(|e| e.message)?;
        }

        let listed = bounded("list", client.get(PREFIX, Some(GetOptions::new().with_prefix()))).await?;
        let revision = listed.header().map_or(0, |h| h.revision());
        let mut view = ClusterView::default();
        for kv in listed.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            if let Err(ignored) = view.apply(&key, Some(kv.value())) {
                tracing::warn!(key = %ignored.key, "ignoring a cluster store key: {}", ignored.why);
            }
        }
        let mut watch = bounded(
            "watch",
            client.watch(PREFIX, Some(WatchOptions::new().with_prefix().with_start_revision(revision + 1))),
        )
        .await?;
        *self.view.lock().expect("view lock") = view;
        self.set_status(Status::Reachable);
        control.reconcile().await;

        // The lease is kept alive by a task of its own: a reconcile waiting
        // for a transaction (which may wait for the store) must not let it
        // expire.
        let mut keep_alive = tokio::spawn(keep_lease_alive(keeper, acks, ttl));
        let _stop = AbortOnDrop(keep_alive.abort_handle());
        loop {
            tokio::select! {
                ended = &mut keep_alive => {
                    return Err(ended.unwrap_or_else(|e| format!("the keep-alive task ended: {e}")));
                }
                message = watch.message() => {
                    let response = message.map_err(|e| format!("watch: {e}"))?.ok_or("the watch closed")?;
                    if response.compact_revision() > 0 {
                        return Err(format!("the watch was compacted at revision {}; listing again", response.compact_revision()));
                    }
                    if response.canceled() {
                        return Err(format!("the store cancelled the watch: {}", response.cancel_reason()));
                    }
                    let mut changed = false;
                    {
                        // Applied in place: commands add and remove what
                        // they created or deleted there too.
                        let mut view = self.view.lock().expect("view lock");
                        for event in response.events() {
                            let Some(kv) = event.kv() else { continue };
                            let key = String::from_utf8_lossy(kv.key());
                            let value = (event.event_type() == EventType::Put).then(|| kv.value());
                            match view.apply(&key, value) {
                                Ok(()) => changed = true,
                                Err(ignored) => tracing::warn!(key = %ignored.key, "ignoring a cluster store key: {}", ignored.why),
                            }
                        }
                    }
                    if changed {
                        control.reconcile().await;
                    }
                }
            }
        }
    }

    /// Runs `request` against the store, again after a transport error
    /// (a member down, a connection the client still has to make again),
    /// until it answers or [`REQUEST_TIMEOUT`] passes.
    async fn call<T, F, Fut>(&self, what: &str, mut request: F) -> Result<T, RpcError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, request(self.client.clone())).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) if is_transport(&e) && left > Duration::from_millis(200) => {
                    tracing::debug!("{what}: {e}; trying again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(e)) => return Err(self.fail(format!("{what}: {e}"))),
                Err(_) => {
                    return Err(self.fail(format!("{what}: no answer within {} s", REQUEST_TIMEOUT.as_secs())))
                }
            }
        }
    }

    async fn get(
        &self,
        key: String,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, RpcError> {
        self.call("read", |mut c| {
            let (key, options) = (key.clone(), options.clone());
            async move { c.get(key, options).await }
        })
        .await
    }

    /// The last path element of each key under `prefix`.
    async fn names_under(&self, prefix: String) -> Result<Vec<String>, RpcError> {
        let listed = self.get(prefix, Some(GetOptions::new().with_prefix().with_keys_only())).await?;
        Ok(listed
            .kvs()
            .iter()
            .filter_map(|kv| String::from_utf8_lossy(kv.key()).rsplit('/').next().map(str::to_owned))
            .collect())
    }

    async fn txn(&self, what: &str, txn: Txn) -> Result<bool, RpcError> {
        let done = self
            .call(what, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        Ok(done.succeeded())
    }

    /// Records `name` in the store. Without a VNI the lowest free one from
    /// [`FIRST_AUTO_VNI`] is taken; a VNI in use by another network, or a
    /// name in use with other settings, is refused. Returns the network and
    /// whether this call created it (`false`: `may_exist` found it).
    pub async fn create_network(
        &self,
        name: &str,
        mut network: NetworkRecord,
        may_exist: bool,
    ) -> Result<(NetworkRecord, bool), RpcError> {
        let key = network_key(name);
        let pick_vni = network.vni == 0;
        for attempt in 0..ALLOCATION_TRIES {
            let existing = self.get(key.clone(), None).await?;
            if let Some(kv) = existing.kvs().first() {
                let stored: Option<NetworkRecord> = serde_json::from_slice(kv.value()).ok();
                let same = stored.as_ref().is_some_and(|s| {
                    s.subnet == network.subnet
                        && (pick_vni || s.vni == network.vni)
                        && s.gateway == network.gateway
                        && s.mtu == network.mtu
                });
                return match stored {
                    Some(stored) if may_exist && same => Ok((stored, false)),
                    _ => Err(RpcError::new(
                        ErrorCode::AlreadyExists,
                        format!("an overlay network named {name} already exists (see `vsctl list-overlays`)"),
                    )),
                };
            }
            if pick_vni {
                let used: BTreeSet<u32> =
                    self.names_under(vnis_prefix()).await?.iter().filter_map(|v| v.parse().ok()).collect();
                network.vni = (FIRST_AUTO_VNI..=MAX_VNI).find(|v| !used.contains(v)).ok_or_else(|| {
                    RpcError::new(ErrorCode::InvalidValue, "every VNI is taken: delete a network first")
                })?;
            }
            let value = serde_json::to_vec(&network).expect("records serialize");
            let txn = Txn::new()
                .when([
                    Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                    Compare::create_revision(vni_key(network.vni), CompareOp::Equal, 0),
                ])
                .and_then([
                    TxnOp::put(key.clone(), value, None),
                    TxnOp::put(vni_key(network.vni), name, None),
                ]);
            if self.txn("create", txn).await? {
                self.view.lock().expect("view lock").networks.insert(name.to_owned(), network.clone());
                return Ok((network, true));
            }
            if !pick_vni {
                let holder = self.get(vni_key(network.vni), None).await?;
                if let Some(kv) = holder.kvs().first() {
                    return Err(RpcError::new(
                        ErrorCode::AlreadyExists,
                        format!(
                            "VNI {} is network {}'s; pick another --vni or leave it out",
                            network.vni,
                            String::from_utf8_lossy(kv.value())
                        ),
                    ));
                }
            }
            tracing::debug!(attempt, "network creation raced another host; trying again");
        }
        Err(RpcError::new(ErrorCode::Busy, format!("could not create {name}: too many concurrent changes")))
    }

    /// Removes the network and everything under it from the store.
    pub async fn delete_network(&self, name: &str, if_exists: bool) -> Result<(), RpcError> {
        let existing = self.get(network_key(name), None).await?;
        let Some(kv) = existing.kvs().first() else {
            return if if_exists {
                Ok(())
            } else {
                Err(RpcError::new(
                    ErrorCode::NotFound,
                    format!("no overlay network named {name} (see `vsctl list-overlays`)"),
                ))
            };
        };
        let vni = serde_json::from_slice::<NetworkRecord>(kv.value()).map(|n| n.vni).ok();
        let prefix = || Some(DeleteOptions::new().with_prefix());
        let mut ops = vec![
            TxnOp::delete(network_key(name), None),
            TxnOp::delete(endpoints_prefix(name), prefix()),
            TxnOp::delete(addresses_prefix(name), prefix()),
        ];
        if let Some(vni) = vni {
            ops.push(TxnOp::delete(vni_key(vni), None));
        }
        self.txn("delete", Txn::new().and_then(ops)).await?;
        let mut view = self.view.lock().expect("view lock");
        view.networks.remove(name);
        view.endpoints.remove(name);
        Ok(())
    }

    /// Takes an address on `network` for this host: `requested`, or a free one.
    pub async fn allocate(
        &self,
        name: &str,
        network: &NetworkRecord,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, RpcError> {
        let record = serde_json::to_vec(&AddressRecord { host: self.local() }).expect("records serialize");
        if let Some(ip) = requested {
            if !network.subnet.hosts().any(|h| h == ip) || Some(ip) == network.gateway {
                return Err(RpcError::new(
                    ErrorCode::InvalidValue,
                    format!("--ip {ip} is not a free host address of {name}'s subnet {}", network.subnet),
                ));
            }
        }
        let spread = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), name);
        for attempt in 0..ALLOCATION_TRIES {
            let ip = match requested {
                Some(ip) => ip,
                None => {
                    let taken: BTreeSet<Ipv4Addr> = self
                        .names_under(addresses_prefix(name))
                        .await?
                        .iter()
                        .filter_map(|a| a.parse().ok())
                        .collect();
                    pick_address(network, &taken, spread.wrapping_add(attempt)).ok_or_else(|| {
                        RpcError::new(
                            ErrorCode::InvalidValue,
                            format!("{name}'s subnet {} is full", network.subnet),
                        )
                    })?
                }
            };
            let key = address_key(name, ip);
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, record.clone(), None)]);
            if self.txn("allocate", txn).await? {
                return Ok(ip);
            }
            if requested.is_some() {
                return Err(RpcError::new(
                    ErrorCode::AlreadyExists,
                    format!("{ip} is already taken on {name}: leave --ip out to get a free address"),
                ));
            }
        }
        Err(RpcError::new(
            ErrorCode::Busy,
            format!("no address on {name} after {ALLOCATION_TRIES} tries: try again"),
        ))
    }

    /// Gives an address of this host's back and withdraws its endpoint;
    /// another host's address is left alone.
    pub async fn release(&self, name: &str, ip: Ipv4Addr) -> Result<(), RpcError> {
        let ours = serde_json::to_vec(&AddressRecord { host: self.local() }).expect("records serialize");
        let txn =
            Txn::new().when([Compare::value(address_key(name, ip), CompareOp::Equal, ours)]).and_then([
                TxnOp::delete(address_key(name, ip), None),
                TxnOp::delete(endpoint_key(name, ip), None),
            ]);
        self.txn("release", txn).await.map(drop)
    }

    /// Publishes an endpoint of this host under its lease.
    pub async fn publish(&self, name: &str, endpoint: &EndpointRecord) -> Result<(), RpcError> {
        let lease = *self.lease.lock().expect("lease lock");
        if lease == 0 {
            return Err(self.fail("no session with the store yet"));
        }
        self.publish_under(lease, name, endpoint).await
    }

    /// Publishes `endpoint` under `lease` if its address is this host's,
    /// claiming it first if nobody holds it (it was released while this
    /// host was away). Another host's address is not taken over: the
    /// endpoint stays unpublished, and the log says why.
    async fn publish_under(&self, lease: i64, name: &str, endpoint: &EndpointRecord) -> Result<(), RpcError> {
        let value = serde_json::to_vec(endpoint).expect("records serialize");
        let ours = serde_json::to_vec(&AddressRecord { host: self.local() }).expect("records serialize");
        let key = address_key(name, endpoint.ip);
        let put =
            TxnOp::put(endpoint_key(name, endpoint.ip), value, Some(PutOptions::new().with_lease(lease)));
        let if_ours = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, ours.clone())])
            .and_then([put.clone()]);
        if self.txn("publish endpoint", if_ours).await? {
            return Ok(());
        }
        let if_free = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, ours, None), put]);
        if !self.txn("claim address", if_free).await? {
            tracing::warn!(network = %name, ip = %endpoint.ip, "another host holds this container's address: its endpoint is not published");
        }
        Ok(())
    }
}

/// Renews the lease every third of its TTL until it fails: the error says why.
async fn keep_lease_alive(
    mut keeper: etcd_client::LeaseKeeper,
    mut acks: etcd_client::LeaseKeepAliveStream,
    ttl: u64,
) -> String {
    let mut tick = tokio::time::interval(Duration::from_millis(ttl * 1000 / 3));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ack = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if last_ack.elapsed() > Duration::from_secs(ttl) {
                    return format!("no keep-alive answer for {ttl} s");
                }
                if let Err(e) = bounded("keep-alive", keeper.keep_alive()).await {
                    return e;
                }
            }
            ack = acks.message() => match ack {
                Ok(Some(ack)) if ack.ttl() > 0 => last_ack = Instant::now(),
                Ok(Some(_)) => return "this host's lease expired; publishing again".into(),
                Ok(None) => return "the keep-alive stream closed".into(),
                Err(e) => return format!("keep-alive: {e}"),
            },
        }
    }
}

/// Aborts a task when dropped (the session it serves ended).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn is_transport(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        // A member killed mid-request shows as a broken pipe, which tonic
        // reports as `Unknown` ("transport error").
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
        ),
        _ => false,
    }
}

/// The store's part in a failed request, for tests.
pub fn is_unreachable(error: &RpcError) -> bool {
    error.code == ErrorCode::Io.code() && error.message.contains("is unreachable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_errors_say_what_still_works_and_what_to_do() {
        let e = unreachable_error("etcd://198.18.0.1:2379", "lease grant: connection refused");
        assert!(is_unreachable(&e));
        assert!(e.message.contains("keeps forwarding"));
        assert!(e.message.contains("try again"));
    }
}

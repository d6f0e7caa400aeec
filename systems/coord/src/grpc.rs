//! The etcd v3 gRPC services (tonic): KV, Watch, Lease, Cluster, Maintenance, Lock, Election.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use basalt_mvcc as m;
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::pb::etcdserverpb as pb;
use crate::pb::{v3electionpb as el, v3lockpb as lk};
use crate::service::Coord;
use crate::state::{Command, Reply};

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// etcd's default limit on a request (`--max-request-bytes`, 1.5 MiB).
pub const MAX_REQUEST_BYTES: usize = 3 * 512 * 1024;
/// The version `Status` reports: the etcd API level this server speaks.
pub const API_VERSION: &str = "3.5.0";
/// How many events one watch response carries at most.
const WATCH_BATCH: usize = 1000;
/// How often a watch with `progress_notify` gets a progress response when idle (etcd: 10 min).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct Svc(pub Arc<Coord>);

fn unexpected(r: Reply) -> Status {
    Status::internal(format!("unexpected reply {r:?}"))
}

fn too_large(n: usize) -> Result<(), Status> {
    if n > MAX_REQUEST_BYTES { Err(Status::invalid_argument("etcdserver: request is too large")) } else { Ok(()) }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for Svc {
    async fn range(&self, req: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let r = self.0.range(&convert::range_req(req.into_inner())).await?;
        Ok(Response::new(convert::range_resp(r, &self.0.header())))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let req = req.into_inner();
        too_large(req.key.len() + req.value.len())?;
        match self.0.propose(&Command::Put(convert::put_req(req))).await? {
            Reply::Put(r) => Ok(Response::new(convert::put_resp(r, &self.0.header()))),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        match self.0.propose(&Command::Delete(convert::delete_req(req.into_inner()))).await? {
            Reply::Delete(r) => Ok(Response::new(convert::delete_resp(r, &self.0.header()))),
            other => Err(unexpected(other)),
        }
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        use prost::Message;
        let req = req.into_inner();
        too_large(req.encoded_len())?;
        // Every transaction goes through the log (a read-only one changes nothing there).
        let r = self.0.txn(convert::txn_req(req)?).await?;
        Ok(Response::new(convert::txn_resp(r, &self.0.header())))
    }

    async fn compact(&self, req: Request<pb::CompactionRequest>) -> Result<Response<pb::CompactionResponse>, Status> {
        match self.0.propose(&Command::Compact(req.into_inner().revision)).await? {
            Reply::Compact(r) => Ok(Response::new(pb::CompactionResponse { header: self.0.header().at(r.revision) })),
            other => Err(unexpected(other)),
        }
    }
}

/// One watch's loop: historical events from its start revision, then live ones as the store
/// moves; cancelled with the compaction revision if its start was compacted.
async fn run_watch(
    coord: Arc<Coord>,
    id: i64,
    c: pb::WatchCreateRequest,
    start: i64,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    delivered: tokio::sync::watch::Sender<i64>,
) {
    use pb::watch_create_request::FilterType;
    let filter = m::EventFilter {
        no_put: c.filters.contains(&(FilterType::Noput as i32)),
        no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
    };
    let mut rx = coord.sm.subscribe();
    let mut next = start;
    let mut last_sent = tokio::time::Instant::now();
    loop {
        rx.borrow_and_update();
        let (batch, rev) = coord
            .sm
            .read(|s| (s.store.events(next, &c.key, &c.range_end, filter, true, WATCH_BATCH), s.store.revision()));
        let h = coord.header();
        match batch {
            Err(m::Error::Compacted { compact_revision }) => {
                let _ = tx
                    .send(Ok(pb::WatchResponse {
                        header: h.at(rev),
                        watch_id: id,
                        canceled: true,
                        compact_revision,
                        cancel_reason: m::Error::Compacted { compact_revision }.etcd_message().into(),
                        ..Default::default()
                    }))
                    .await;
                return;
            }
            Err(e) => {
                let _ = tx
                    .send(Ok(pb::WatchResponse {
                        header: h.at(rev),
                        watch_id: id,
                        canceled: true,
                        cancel_reason: e.etcd_message().into(),
                        ..Default::default()
                    }))
                    .await;
                return;
            }
            Ok(b) => {
                let full = b.events.len() >= WATCH_BATCH;
                next = b.next_revision.max(next);
                if !b.events.is_empty() {
                    let events = b.events.into_iter().map(|e| convert::event(e, c.prev_kv)).collect();
                    let resp = pb::WatchResponse { header: h.at(rev), watch_id: id, events, ..Default::default() };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                    last_sent = tokio::time::Instant::now();
                }
                delivered.send_replace(next - 1);
                if full {
                    continue;
                }
            }
        }
        let progress_at = last_sent + PROGRESS_INTERVAL;
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(progress_at), if c.progress_notify => {
                // What this watch has sent, not the store's revision: that may have moved on
                // since the scan (both branches can be ready at once).
                let resp = pb::WatchResponse { header: coord.header().at(next - 1), watch_id: id, ..Default::default() };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
                last_sent = tokio::time::Instant::now();
            }
        }
    }
}

#[tonic::async_trait]
impl pb::watch_server::Watch for Svc {
    type WatchStream = Out<pb::WatchResponse>;

    async fn watch(&self, req: Request<Streaming<pb::WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        use pb::watch_request::RequestUnion;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let coord = self.0.clone();
        tokio::spawn(async move {
            // Each watch's task, and the revision up to which it has put every event on the
            // stream.
            let mut watches: HashMap<i64, (tokio::task::JoinHandle<()>, tokio::sync::watch::Receiver<i64>)> =
                HashMap::new();
            let mut next_id = 0i64;
            while let Ok(Some(msg)) = inbound.message().await {
                let h = coord.header();
                let rev = coord.sm.revision();
                match msg.request_union {
                    Some(RequestUnion::CreateRequest(c)) => {
                        watches.retain(|_, (t, _)| !t.is_finished());
                        let id = if c.watch_id != 0 {
                            c.watch_id
                        } else {
                            while watches.contains_key(&next_id) {
                                next_id += 1;
                            }
                            next_id
                        };
                        if watches.contains_key(&id) {
                            let resp = pb::WatchResponse {
                                header: h.at(rev),
                                watch_id: id,
                                created: true,
                                canceled: true,
                                cancel_reason: "etcdserver: duplicate watch ID".into(),
                                ..Default::default()
                            };
                            let _ = tx.send(Ok(resp)).await;
                            continue;
                        }
                        let start = if c.start_revision > 0 { c.start_revision } else { rev + 1 };
                        let created =
                            pb::WatchResponse { header: h.at(rev), watch_id: id, created: true, ..Default::default() };
                        if tx.send(Ok(created)).await.is_err() {
                            break;
                        }
                        let (delivered, upto) = tokio::sync::watch::channel(start - 1);
                        let task = tokio::spawn(run_watch(coord.clone(), id, c, start, tx.clone(), delivered));
                        watches.insert(id, (task, upto));
                    }
                    Some(RequestUnion::CancelRequest(c)) => {
                        if let Some((t, _)) = watches.remove(&c.watch_id) {
                            t.abort();
                        }
                        let resp = pb::WatchResponse {
                            header: h.at(rev),
                            watch_id: c.watch_id,
                            canceled: true,
                            ..Default::default()
                        };
                        let _ = tx.send(Ok(resp)).await;
                    }
                    Some(RequestUnion::ProgressRequest(_)) => {
                        let _ = coord.barrier(false).await;
                        let at = coord.sm.revision();
                        // The answer promises every event up to `at` is on the stream before
                        // it: wait for each watch to have sent them (a finished one is done).
                        for (_, upto) in watches.values_mut() {
                            let _ = upto.wait_for(|&d| d >= at).await;
                        }
                        let resp = pb::WatchResponse { header: h.at(at), watch_id: -1, ..Default::default() };
                        let _ = tx.send(Ok(resp)).await;
                    }
                    None => {}
                }
            }
            for (t, _) in watches.into_values() {
                t.abort();
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl pb::lease_server::Lease for Svc {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let r = req.into_inner();
        match self.0.propose(&Command::LeaseGrant { id: r.id, ttl: r.ttl }).await? {
            Reply::LeaseGrant(g) => Ok(Response::new(pb::LeaseGrantResponse {
                header: self.0.header().at(g.revision),
                id: g.id,
                ttl: g.ttl,
                error: String::new(),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        match self.0.propose(&Command::LeaseRevoke { id: req.into_inner().id }).await? {
            Reply::LeaseRevoke(r) => {
                Ok(Response::new(pb::LeaseRevokeResponse { header: self.0.header().at(r.revision) }))
            }
            other => Err(unexpected(other)),
        }
    }

    type LeaseKeepAliveStream = Out<pb::LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let coord = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                let resp = match coord.keep_alive(msg.id).await {
                    Ok(ttl) => Ok(pb::LeaseKeepAliveResponse {
                        header: coord.header().at(coord.sm.revision()),
                        id: msg.id,
                        ttl,
                    }),
                    Err(e) => Err(e),
                };
                let failed = resp.is_err();
                if tx.send(resp).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        self.0.barrier(false).await?;
        let ttl = self.0.time_to_live(r.id).await?;
        let h = self.0.header();
        let found = self.0.sm.read(|s| s.store.lease_time_to_live(r.id, r.keys));
        Ok(Response::new(match found {
            Ok(t) => pb::LeaseTimeToLiveResponse {
                header: h.at(self.0.sm.revision()),
                id: r.id,
                ttl: if ttl < 0 { t.granted_ttl } else { ttl },
                granted_ttl: t.granted_ttl,
                keys: t.keys,
            },
            Err(_) => pb::LeaseTimeToLiveResponse {
                header: h.at(self.0.sm.revision()),
                id: r.id,
                ttl: -1,
                ..Default::default()
            },
        }))
    }

    async fn lease_leases(
        &self,
        _req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.0.barrier(false).await?;
        let (leases, rev) = self.0.sm.read(|s| (s.store.leases(), s.store.revision()));
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.0.header().at(rev),
            leases: leases.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}

impl Svc {
    /// The members as etcd lists them (ids are Basalt node ids).
    fn members(&self) -> Result<Vec<pb::Member>, Status> {
        let status = self.0.consensus.status().map_err(crate::service::unavailable)?;
        let mut urls = self.0.sm.read(|s| s.members.clone());
        // This node knows its own address before its registration is applied.
        if let Some(own) = self.0.client_url.get() {
            urls.entry(self.0.node_id).or_insert_with(|| own.clone());
        }
        let members = status
            .members
            .iter()
            .map(|mm| pb::Member {
                id: mm.node_id,
                name: format!("basalt-{}", mm.node_id),
                peer_urls: vec![format!("http://{}", mm.peer_addr)],
                client_urls: urls.get(&mm.node_id).cloned().into_iter().collect(),
                is_learner: !mm.voter,
            })
            .collect();
        Ok(members)
    }

    /// The member `id` (a voter or not), or etcd's `member not found`.
    fn member(&self, id: u64) -> Result<pb::Member, Status> {
        self.members()?
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| Status::not_found("etcdserver: member not found"))
    }

    /// A membership change through the consensus engine (forwarded to the leader).
    async fn admin(&self, op: basalt_consensus::AdminOp) -> Result<(), Status> {
        self.0.consensus.admin(op).await.map(|_| ()).map_err(|e| Status::unavailable(format!("etcdserver: {e}")))
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for Svc {
    async fn member_list(
        &self,
        _req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let members = self.members()?;
        Ok(Response::new(pb::MemberListResponse { header: self.0.header().at(self.0.sm.revision()), members }))
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let id = req.into_inner().id;
        self.member(id)?;
        self.admin(basalt_consensus::AdminOp::Remove { node_id: id }).await?;
        let members = self.members()?;
        Ok(Response::new(pb::MemberRemoveResponse { header: self.0.header().at(self.0.sm.revision()), members }))
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let id = req.into_inner().id;
        if !self.member(id)?.is_learner {
            return Err(Status::failed_precondition("etcdserver: can only promote a learner member"));
        }
        self.admin(basalt_consensus::AdminOp::Promote { node_id: id }).await?;
        let members = self.members()?;
        Ok(Response::new(pb::MemberPromoteResponse { header: self.0.header().at(self.0.sm.revision()), members }))
    }
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for Svc {
    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = req.into_inner().target_id;
        if self.member(target).map_or(true, |m| m.is_learner) {
            return Err(Status::failed_precondition("etcdserver: bad leader transferee"));
        }
        self.admin(basalt_consensus::AdminOp::Transfer { node_id: target }).await?;
        Ok(Response::new(pb::MoveLeaderResponse { header: self.0.header().at(self.0.sm.revision()) }))
    }

    async fn alarm(&self, _req: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
        Ok(Response::new(pb::AlarmResponse { header: self.0.header().at(self.0.sm.revision()), alarms: vec![] }))
    }

    async fn status(&self, _req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.0.consensus.status().map_err(crate::service::unavailable)?;
        let size = self.0.sm.read(|st| st.store.size_estimate()) as i64;
        Ok(Response::new(pb::StatusResponse {
            header: self.0.header().at(self.0.sm.revision()),
            version: API_VERSION.into(),
            db_size: size,
            leader: s.leader_id.unwrap_or(0),
            raft_index: s.last_log_index.unwrap_or(0),
            raft_term: s.term,
            raft_applied_index: s.applied_index.unwrap_or(0),
            errors: vec![],
            db_size_in_use: size,
            is_learner: s.members.iter().any(|mm| mm.node_id == self.0.node_id && !mm.voter),
        }))
    }

    async fn defragment(
        &self,
        _req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Ok(Response::new(pb::DefragmentResponse { header: self.0.header().at(self.0.sm.revision()) }))
    }

    async fn hash_kv(&self, req: Request<pb::HashKvRequest>) -> Result<Response<pb::HashKvResponse>, Status> {
        let r = self.0.sm.read(|s| s.store.hash_kv(req.into_inner().revision)).map_err(convert::status)?;
        Ok(Response::new(pb::HashKvResponse {
            header: self.0.header().at(r.revision),
            hash: (r.hash ^ (r.hash >> 32)) as u32,
            compact_revision: r.compact_revision,
            hash_revision: r.hash_revision,
        }))
    }

    type SnapshotStream = Out<pb::SnapshotResponse>;

    /// The node's replicated state (Basalt's own format, not etcd's bbolt file), in chunks.
    async fn snapshot(&self, _req: Request<pb::SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        self.0.barrier(false).await?;
        let bytes = self.0.sm.read(postcard::to_allocvec).map_err(|e| Status::internal(e.to_string()))?;
        let h = self.0.header().at(self.0.sm.revision());
        let total = bytes.len();
        let chunks: Vec<Result<pb::SnapshotResponse, Status>> = bytes
            .chunks(64 * 1024)
            .enumerate()
            .map(|(i, c)| {
                let sent = (i * 64 * 1024 + c.len()) as u64;
                Ok(pb::SnapshotResponse {
                    header: h,
                    remaining_bytes: total as u64 - sent,
                    blob: c.to_vec(),
                    version: API_VERSION.into(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

#[tonic::async_trait]
impl lk::lock_server::Lock for Svc {
    async fn lock(&self, req: Request<lk::LockRequest>) -> Result<Response<lk::LockResponse>, Status> {
        let r = req.into_inner();
        let kv = self.0.lock(&r.name, r.lease).await?;
        // Not below the lock's own revision, even where this member has not applied it yet.
        let rev = self.0.sm.revision().max(kv.mod_revision);
        Ok(Response::new(lk::LockResponse { header: self.0.header().at(rev), key: kv.key }))
    }

    async fn unlock(&self, req: Request<lk::UnlockRequest>) -> Result<Response<lk::UnlockResponse>, Status> {
        let rev = self.0.release(&req.into_inner().key, 0).await?;
        Ok(Response::new(lk::UnlockResponse { header: self.0.header().at(rev) }))
    }
}

fn leader_key(name: Vec<u8>, kv: &m::KeyValue) -> el::LeaderKey {
    el::LeaderKey { name, key: kv.key.clone(), rev: kv.create_revision, lease: kv.lease }
}

#[tonic::async_trait]
impl el::election_server::Election for Svc {
    async fn campaign(&self, req: Request<el::CampaignRequest>) -> Result<Response<el::CampaignResponse>, Status> {
        let r = req.into_inner();
        let kv = self.0.campaign(&r.name, r.lease, &r.value).await?;
        Ok(Response::new(el::CampaignResponse {
            header: self.0.header().at(self.0.sm.revision().max(kv.mod_revision)),
            leader: Some(leader_key(r.name, &kv)),
        }))
    }

    async fn proclaim(&self, req: Request<el::ProclaimRequest>) -> Result<Response<el::ProclaimResponse>, Status> {
        let r = req.into_inner();
        let l = r.leader.ok_or_else(|| Status::invalid_argument("election: no leader key given"))?;
        // The revision of the write, as etcd answers (its header is the proclaiming txn's).
        let (_, rev) = self.0.proclaim(&l.key, l.rev, &r.value).await?;
        Ok(Response::new(el::ProclaimResponse { header: self.0.header().at(rev) }))
    }

    async fn leader(&self, req: Request<el::LeaderRequest>) -> Result<Response<el::LeaderResponse>, Status> {
        self.0.barrier(false).await?;
        let (kv, rev) = self.0.owner(&req.into_inner().name);
        let kv = kv.ok_or_else(|| Status::not_found("election: no leader"))?;
        Ok(Response::new(el::LeaderResponse { header: self.0.header().at(rev), kv: Some(convert::kv(kv)) }))
    }

    type ObserveStream = Out<el::LeaderResponse>;

    async fn observe(&self, req: Request<el::LeaderRequest>) -> Result<Response<Self::ObserveStream>, Status> {
        let name = req.into_inner().name;
        let (tx, rx) = mpsc::channel(16);
        let coord = self.0.clone();
        coord.barrier(false).await?;
        tokio::spawn(async move {
            let mut rx_rev = coord.sm.subscribe();
            let mut last: Option<(Vec<u8>, i64)> = None;
            loop {
                rx_rev.borrow_and_update();
                if let (Some(kv), rev) = coord.owner(&name) {
                    let now = (kv.key.clone(), kv.mod_revision);
                    if last.as_ref() != Some(&now) {
                        last = Some(now);
                        let resp = el::LeaderResponse { header: coord.header().at(rev), kv: Some(convert::kv(kv)) };
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                }
                tokio::select! {
                    r = rx_rev.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(&self, req: Request<el::ResignRequest>) -> Result<Response<el::ResignResponse>, Status> {
        let l = req.into_inner().leader.ok_or_else(|| Status::invalid_argument("election: no leader key given"))?;
        let rev = self.0.release(&l.key, l.rev).await?;
        Ok(Response::new(el::ResignResponse { header: self.0.header().at(rev) }))
    }
}

/// Serve every service on `listener` until `stop`.
pub async fn serve(
    coord: Arc<Coord>,
    listener: tokio::net::TcpListener,
    stop: basalt_runtime::node::CancellationToken,
) {
    let svc = Svc(coord);
    let limit = MAX_REQUEST_BYTES + 512 * 1024;
    let result = tonic::transport::Server::builder()
        .add_service(pb::kv_server::KvServer::new(svc.clone()).max_decoding_message_size(limit))
        .add_service(pb::watch_server::WatchServer::new(svc.clone()).max_decoding_message_size(limit))
        .add_service(pb::lease_server::LeaseServer::new(svc.clone()))
        .add_service(pb::cluster_server::ClusterServer::new(svc.clone()))
        .add_service(pb::maintenance_server::MaintenanceServer::new(svc.clone()).max_encoding_message_size(usize::MAX))
        .add_service(lk::lock_server::LockServer::new(svc.clone()))
        .add_service(el::election_server::ElectionServer::new(svc))
        // Nagle's algorithm would hold small responses back ~40 ms behind delayed ACKs.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            stop.cancelled_owned(),
        )
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "coord: the etcd gRPC server failed");
    }
}

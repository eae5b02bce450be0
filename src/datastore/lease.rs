//! The Lease service: grants and revocations go through the writer (they are persisted);
//! keep-alives only move an expiry in memory, as etcd's lessor does on its leader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::proto::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse,
    PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
    PbLeaseService, PbLeaseStatus, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::store::{Store, WriteOp, WriteResult};

pub struct LeaseService {
    pub store: Arc<Store>,
}

/// Remaining whole seconds, rounded up as etcd reports them.
fn remaining(expiry: Instant) -> i64 {
    let left = expiry.saturating_duration_since(Instant::now());
    left.as_millis().div_ceil(1000) as i64
}

/// Revokes leases past their expiry, every half second, until the store is gone.
pub async fn expire_leases(store: Arc<Store>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let expired: Vec<i64> = store
            .leases
            .lock()
            .iter()
            .filter(|(_, l)| l.expiry <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Err(e) = store.write(WriteOp::LeaseExpire(id)).await {
                tracing::warn!(lease = id, error = %e, "cannot expire lease");
            }
        }
    }
}

#[tonic::async_trait]
impl PbLeaseService for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        let req = req.into_inner();
        match self
            .store
            .write(WriteOp::LeaseGrant {
                id: req.id,
                ttl: req.ttl,
            })
            .await?
        {
            WriteResult::LeaseGranted { header, id, ttl } => {
                Ok(Response::new(PbLeaseGrantResponse {
                    header: Some(header),
                    id,
                    ttl,
                    error: String::new(),
                }))
            }
            _ => Err(Status::internal("unexpected write result")),
        }
    }

    async fn lease_revoke(
        &self,
        req: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        match self
            .store
            .write(WriteOp::LeaseRevoke(req.into_inner().id))
            .await?
        {
            WriteResult::LeaseRevoked(h) => {
                Ok(Response::new(PbLeaseRevokeResponse { header: Some(h) }))
            }
            _ => Err(Status::internal("unexpected write result")),
        }
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<PbLeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let store = self.store.clone();
        tokio::spawn(async move {
            while let Some(msg) = inbound.next().await {
                let Ok(msg) = msg else { break };
                let ttl = {
                    let mut leases = store.leases.lock();
                    match leases.get_mut(&msg.id) {
                        // Past its expiry it is as good as revoked (the expiry task is on it).
                        Some(l) if l.expiry > Instant::now() => {
                            l.expiry = Instant::now() + Duration::from_secs(l.ttl as u64);
                            l.ttl
                        }
                        // etcd answers an unknown lease with TTL 0.
                        _ => 0,
                    }
                };
                let resp = PbLeaseKeepAliveResponse {
                    header: Some(store.header()),
                    id: msg.id,
                    ttl,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        let leases = self.store.leases.lock();
        let resp = match leases.get(&req.id) {
            Some(l) => PbLeaseTimeToLiveResponse {
                header: Some(self.store.header()),
                id: req.id,
                ttl: remaining(l.expiry),
                granted_ttl: l.ttl,
                keys: if req.keys {
                    l.keys.iter().cloned().collect()
                } else {
                    Vec::new()
                },
            },
            // etcd reports an expired or unknown lease with TTL -1, not an error.
            None => PbLeaseTimeToLiveResponse {
                header: Some(self.store.header()),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _req: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        let mut ids: Vec<i64> = self.store.leases.lock().keys().copied().collect();
        ids.sort_unstable();
        Ok(Response::new(PbLeaseLeasesResponse {
            header: Some(self.store.header()),
            leases: ids.into_iter().map(|id| PbLeaseStatus { id }).collect(),
        }))
    }
}

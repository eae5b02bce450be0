//! The Maintenance service: status, hashes, defragment, snapshot, alarms.

use std::sync::Arc;

use etcd_client::proto::{
    PbAlarmRequest, PbAlarmResponse, PbDefragmentRequest, PbDefragmentResponse, PbDowngradeRequest,
    PbDowngradeResponse, PbHashKvRequest, PbHashKvResponse, PbHashRequest, PbHashResponse,
    PbMaintenanceService, PbMoveLeaderRequest, PbMoveLeaderResponse, PbSnapshotRequest,
    PbSnapshotResponse, PbStatusRequest, PbStatusResponse,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::error::EtcdError;
use super::store::Store;

/// The etcd version we answer as: the API level kube-apiserver and etcdctl expect.
pub const ETCD_VERSION: &str = "3.5.17";
/// Snapshot chunk size, as etcd streams it.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

pub struct MaintenanceService {
    pub store: Arc<Store>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EtcdError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::from)
}

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    async fn alarm(
        &self,
        _r: Request<PbAlarmRequest>,
    ) -> Result<Response<PbAlarmResponse>, Status> {
        // No space quota and no corruption check raise alarms here: the list is empty.
        Ok(Response::new(PbAlarmResponse {
            header: Some(self.store.header()),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _r: Request<PbStatusRequest>,
    ) -> Result<Response<PbStatusResponse>, Status> {
        let store = self.store.clone();
        let in_use = blocking(move || store.db_size_in_use()).await?;
        let rev = self.store.revision() as u64;
        Ok(Response::new(PbStatusResponse {
            header: Some(self.store.header()),
            version: ETCD_VERSION.to_string(),
            db_size: self.store.db_size() as i64,
            leader: self.store.member_id,
            raft_index: rev,
            raft_term: self.store.raft_term,
            raft_applied_index: rev,
            errors: Vec::new(),
            db_size_in_use: in_use as i64,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: 0,
            downgrade_info: None,
        }))
    }

    async fn defragment(
        &self,
        _r: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        let store = self.store.clone();
        blocking(move || store.defragment()).await?;
        Ok(Response::new(PbDefragmentResponse {
            header: Some(self.store.header()),
        }))
    }

    async fn hash(&self, _r: Request<PbHashRequest>) -> Result<Response<PbHashResponse>, Status> {
        let store = self.store.clone();
        let (hash, _, _) = blocking(move || store.hash_kv(0)).await?;
        Ok(Response::new(PbHashResponse {
            header: Some(self.store.header()),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        r: Request<PbHashKvRequest>,
    ) -> Result<Response<PbHashKvResponse>, Status> {
        let rev = r.into_inner().revision;
        let store = self.store.clone();
        let (hash, compact_revision, hash_revision) = blocking(move || store.hash_kv(rev)).await?;
        Ok(Response::new(PbHashKvResponse {
            header: Some(self.store.header()),
            hash,
            compact_revision,
            hash_revision,
        }))
    }

    type SnapshotStream = ReceiverStream<Result<PbSnapshotResponse, Status>>;

    async fn snapshot(
        &self,
        _r: Request<PbSnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let store = self.store.clone();
        let mut bytes = blocking(move || store.snapshot_bytes()).await?;
        // As etcd: the stream ends with the SHA-256 of the database, which etcdctl requires
        // (it checks that the size is a multiple of 512 plus 32).
        let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
        bytes.extend_from_slice(sum.as_ref());
        let header = self.store.header();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let total = bytes.len();
            let mut sent = 0;
            for chunk in bytes.chunks(SNAPSHOT_CHUNK) {
                sent += chunk.len();
                let resp = PbSnapshotResponse {
                    header: Some(header),
                    remaining_bytes: (total - sent) as u64,
                    blob: chunk.to_vec(),
                    version: ETCD_VERSION.to_string(),
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn move_leader(
        &self,
        _r: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        Err(EtcdError::Unsupported("a single-member datastore has no other leader").into())
    }

    async fn downgrade(
        &self,
        _r: Request<PbDowngradeRequest>,
    ) -> Result<Response<PbDowngradeResponse>, Status> {
        Err(EtcdError::Unsupported("downgrade is not supported").into())
    }
}

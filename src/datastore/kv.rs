//! The KV service: a thin translation onto the store.

use std::sync::Arc;

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse, PbKvService,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbRangeStreamResponse,
    PbTxnRequest, PbTxnResponse,
};
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::error::EtcdError;
use super::store::{MAX_REQUEST_BYTES, Store, WriteOp, WriteResult};

pub struct KvService {
    pub store: Arc<Store>,
}

/// etcd refuses requests over `--max-request-bytes` with its own text.
fn check_size(m: &impl Message) -> Result<(), Status> {
    if m.encoded_len() > MAX_REQUEST_BYTES {
        return Err(EtcdError::RequestTooLarge.into());
    }
    Ok(())
}

fn unexpected() -> Status {
    EtcdError::Storage("unexpected write result".into()).into()
}

#[tonic::async_trait]
impl PbKvService for KvService {
    async fn range(
        &self,
        req: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        let req = req.into_inner();
        let store = self.store.clone();
        // Values come from disk: keep the async workers free.
        let resp = tokio::task::spawn_blocking(move || store.range(&req))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(resp))
    }

    type RangeStreamStream = ReceiverStream<Result<PbRangeStreamResponse, Status>>;

    async fn range_stream(
        &self,
        req: Request<PbRangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        let resp = self.range(req).await?.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let _ = tx
            .send(Ok(PbRangeStreamResponse {
                range_response: Some(resp),
            }))
            .await;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn put(&self, req: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        let req = req.into_inner();
        check_size(&req)?;
        match self.store.write(WriteOp::Put(req)).await? {
            WriteResult::Put(r) => Ok(Response::new(r)),
            _ => Err(unexpected()),
        }
    }

    async fn delete_range(
        &self,
        req: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        let req = req.into_inner();
        match self.store.write(WriteOp::Delete(req)).await? {
            WriteResult::Delete(r) => Ok(Response::new(r)),
            _ => Err(unexpected()),
        }
    }

    async fn txn(&self, req: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        let req = req.into_inner();
        check_size(&req)?;
        super::store::check_txn(&req)?;
        match self.store.write(WriteOp::Txn(req)).await? {
            WriteResult::Txn(r) => Ok(Response::new(r)),
            _ => Err(unexpected()),
        }
    }

    async fn compact(
        &self,
        req: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        let rev = req.into_inner().revision;
        match self.store.write(WriteOp::Compact(rev)).await? {
            WriteResult::Compacted(h) => {
                Ok(Response::new(PbCompactionResponse { header: Some(h) }))
            }
            _ => Err(unexpected()),
        }
    }
}

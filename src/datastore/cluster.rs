//! The Cluster service: one member, this one. Membership changes are refused until
//! replication exists (they would otherwise claim a cluster that is not there).

use std::sync::Arc;

use etcd_client::proto::{
    PbClusterService, PbMember, PbMemberAddRequest, PbMemberAddResponse, PbMemberListRequest,
    PbMemberListResponse, PbMemberPromoteRequest, PbMemberPromoteResponse, PbMemberRemoveRequest,
    PbMemberRemoveResponse, PbMemberUpdateRequest, PbMemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use super::error::EtcdError;
use super::store::Store;

pub struct ClusterService {
    pub store: Arc<Store>,
    pub name: String,
    pub client_urls: Vec<String>,
    pub peer_urls: Vec<String>,
}

impl ClusterService {
    pub fn member(&self) -> PbMember {
        PbMember {
            id: self.store.member_id,
            name: self.name.clone(),
            peer_ur_ls: self.peer_urls.clone(),
            client_ur_ls: self.client_urls.clone(),
            is_learner: false,
        }
    }
}

const SINGLE_MEMBER: EtcdError =
    EtcdError::Unsupported("membership changes are not supported by a single-member datastore");

#[tonic::async_trait]
impl PbClusterService for ClusterService {
    async fn member_add(
        &self,
        _r: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        Err(SINGLE_MEMBER.into())
    }

    async fn member_remove(
        &self,
        _r: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        Err(SINGLE_MEMBER.into())
    }

    async fn member_update(
        &self,
        _r: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        Err(SINGLE_MEMBER.into())
    }

    async fn member_list(
        &self,
        _r: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        Ok(Response::new(PbMemberListResponse {
            header: Some(self.store.header()),
            members: vec![self.member()],
        }))
    }

    async fn member_promote(
        &self,
        _r: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        Err(SINGLE_MEMBER.into())
    }
}

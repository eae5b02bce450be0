//! etcd's errors, with the gRPC codes and texts etcd's clients match on.

use tonic::{Code, Status};

/// Everything a datastore request can fail with.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EtcdError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExist,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: {0}")]
    Unsupported(&'static str),
    /// The storage engine failed; the datastore cannot vouch for the write.
    #[error("etcdserver: storage failure: {0}")]
    Storage(String),
}

impl EtcdError {
    fn code(&self) -> Code {
        match self {
            Self::EmptyKey
            | Self::KeyNotFound
            | Self::ValueProvided
            | Self::LeaseProvided
            | Self::TooManyOps
            | Self::DuplicateKey
            | Self::RequestTooLarge => Code::InvalidArgument,
            Self::Compacted | Self::FutureRev | Self::LeaseTtlTooLarge => Code::OutOfRange,
            Self::LeaseNotFound => Code::NotFound,
            Self::LeaseExist => Code::FailedPrecondition,
            Self::Unsupported(_) => Code::Unimplemented,
            Self::Storage(_) => Code::Unavailable,
        }
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

/// Storage engine errors all mean the same to a client.
macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for EtcdError {
            fn from(e: $t) -> Self {
                EtcdError::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    prost::DecodeError
);

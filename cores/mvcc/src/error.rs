//! The errors, with etcd's exact server messages and gRPC status codes.

use serde::{Deserialize, Serialize};

/// A request the store refused. When a write returns an error, nothing was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    /// A range, put, delete or compare with an empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value` / `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` with a non-empty value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` with a non-zero lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A transaction with more compares or operations per branch than `max_txn_ops`.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A transaction branch that puts a key twice, or puts a key it also deletes.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A read or watch below the compaction revision, or a compaction at or below it.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The store's compaction revision (what a watch's cancel response reports).
        compact_revision: i64,
    },
    /// A read, hash or compaction above the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    /// A put or revoke naming a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant of a lease id that is in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant with a TTL above [`MAX_LEASE_TTL_SECS`](crate::MAX_LEASE_TTL_SECS).
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
}

impl Error {
    /// Etcd's message for this error, byte for byte (the gRPC status message).
    pub fn etcd_message(&self) -> &'static str {
        match self {
            Error::EmptyKey => "etcdserver: key is not provided",
            Error::KeyNotFound => "etcdserver: key not found",
            Error::ValueProvided => "etcdserver: value is provided",
            Error::LeaseProvided => "etcdserver: lease is provided",
            Error::TooManyOps => "etcdserver: too many operations in txn request",
            Error::DuplicateKey => "etcdserver: duplicate key given in txn request",
            Error::Compacted { .. } => "etcdserver: mvcc: required revision has been compacted",
            Error::FutureRev => "etcdserver: mvcc: required revision is a future revision",
            Error::LeaseNotFound => "etcdserver: requested lease not found",
            Error::LeaseExists => "etcdserver: lease already exists",
            Error::LeaseTtlTooLarge => "etcdserver: too large lease TTL",
        }
    }

    /// The gRPC status code etcd answers this error with.
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            Error::EmptyKey
            | Error::KeyNotFound
            | Error::ValueProvided
            | Error::LeaseProvided
            | Error::TooManyOps
            | Error::DuplicateKey => GrpcCode::InvalidArgument,
            Error::Compacted { .. } | Error::FutureRev | Error::LeaseTtlTooLarge => GrpcCode::OutOfRange,
            Error::LeaseNotFound => GrpcCode::NotFound,
            Error::LeaseExists => GrpcCode::FailedPrecondition,
        }
    }
}

/// The gRPC status codes the store's errors map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GrpcCode {
    /// `INVALID_ARGUMENT` (3).
    InvalidArgument,
    /// `NOT_FOUND` (5).
    NotFound,
    /// `FAILED_PRECONDITION` (9).
    FailedPrecondition,
    /// `OUT_OF_RANGE` (11).
    OutOfRange,
}

impl GrpcCode {
    /// The numeric code on the wire.
    pub fn code(&self) -> i32 {
        match self {
            GrpcCode::InvalidArgument => 3,
            GrpcCode::NotFound => 5,
            GrpcCode::FailedPrecondition => 9,
            GrpcCode::OutOfRange => 11,
        }
    }
}

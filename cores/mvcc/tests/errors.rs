//! Every error's etcd message (byte for byte) and gRPC code.

use basalt_mvcc::*;

#[test]
fn messages_and_codes_match_etcd() {
    use GrpcCode::*;
    let table = [
        (Error::EmptyKey, "etcdserver: key is not provided", InvalidArgument),
        (Error::KeyNotFound, "etcdserver: key not found", InvalidArgument),
        (Error::ValueProvided, "etcdserver: value is provided", InvalidArgument),
        (Error::LeaseProvided, "etcdserver: lease is provided", InvalidArgument),
        (Error::TooManyOps, "etcdserver: too many operations in txn request", InvalidArgument),
        (Error::DuplicateKey, "etcdserver: duplicate key given in txn request", InvalidArgument),
        (
            Error::Compacted { compact_revision: 7 },
            "etcdserver: mvcc: required revision has been compacted",
            OutOfRange,
        ),
        (Error::FutureRev, "etcdserver: mvcc: required revision is a future revision", OutOfRange),
        (Error::LeaseNotFound, "etcdserver: requested lease not found", NotFound),
        (Error::LeaseExists, "etcdserver: lease already exists", FailedPrecondition),
        (Error::LeaseTtlTooLarge, "etcdserver: too large lease TTL", OutOfRange),
    ];
    for (err, message, code) in table {
        assert_eq!(err.etcd_message(), message);
        assert_eq!(err.to_string(), message);
        assert_eq!(err.grpc_code(), code, "{err:?}");
    }
    assert_eq!([InvalidArgument, NotFound, FailedPrecondition, OutOfRange].map(|c| c.code()), [3, 5, 9, 11]);
}

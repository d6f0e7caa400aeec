//! Between etcd's wire messages (`pb`) and the MVCC core's types (`basalt_mvcc`): a field-by-field
//! copy, plus the response header and errors as gRPC statuses with etcd's messages.

use basalt_mvcc as m;
use tonic::Status;

use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;

/// The header every response carries.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub cluster_id: u64,
    pub member_id: u64,
    pub raft_term: u64,
}

impl Header {
    pub fn at(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft_term,
        })
    }
}

pub fn status(e: m::Error) -> Status {
    let code = match e.grpc_code() {
        m::GrpcCode::InvalidArgument => tonic::Code::InvalidArgument,
        m::GrpcCode::NotFound => tonic::Code::NotFound,
        m::GrpcCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        m::GrpcCode::OutOfRange => tonic::Code::OutOfRange,
    };
    Status::new(code, e.etcd_message())
}

pub fn kv(k: m::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: k.key,
        create_revision: k.create_revision,
        mod_revision: k.mod_revision,
        version: k.version,
        value: k.value,
        lease: k.lease,
    }
}

pub fn event(e: m::Event, with_prev: bool) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            m::EventType::Put => mvccpb::event::EventType::Put as i32,
            m::EventType::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv(e.kv)),
        prev_kv: if with_prev { e.prev_kv.map(kv) } else { None },
    }
}

pub fn range_req(r: pb::RangeRequest) -> m::RangeRequest {
    use pb::range_request::{SortOrder, SortTarget};
    m::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order: match SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None) {
            SortOrder::None => m::SortOrder::None,
            SortOrder::Ascend => m::SortOrder::Ascend,
            SortOrder::Descend => m::SortOrder::Descend,
        },
        sort_target: match SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key) {
            SortTarget::Key => m::SortTarget::Key,
            SortTarget::Version => m::SortTarget::Version,
            SortTarget::Create => m::SortTarget::Create,
            SortTarget::Mod => m::SortTarget::Mod,
            SortTarget::Value => m::SortTarget::Value,
        },
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

pub fn range_resp(r: m::RangeResponse, h: &Header) -> pb::RangeResponse {
    pb::RangeResponse {
        header: h.at(r.revision),
        kvs: r.kvs.into_iter().map(kv).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_req(r: pb::PutRequest) -> m::PutRequest {
    m::PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn put_resp(r: m::PutResponse, h: &Header) -> pb::PutResponse {
    pb::PutResponse { header: h.at(r.revision), prev_kv: r.prev_kv.map(kv) }
}

pub fn delete_req(r: pb::DeleteRangeRequest) -> m::DeleteRangeRequest {
    m::DeleteRangeRequest { key: r.key, range_end: r.range_end, prev_kv: r.prev_kv }
}

pub fn delete_resp(r: m::DeleteRangeResponse, h: &Header) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: h.at(r.revision),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv).collect(),
    }
}

/// A compare as the core takes it; `None` for a target without its value (malformed).
fn compare(c: pb::Compare) -> Result<m::Compare, Status> {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let result = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => m::CompareResult::Equal,
        Ok(CompareResult::Greater) => m::CompareResult::Greater,
        Ok(CompareResult::Less) => m::CompareResult::Less,
        Ok(CompareResult::NotEqual) => m::CompareResult::NotEqual,
        Err(_) => return Err(Status::invalid_argument("etcdserver: unknown compare result")),
    };
    let target = CompareTarget::try_from(c.target)
        .map_err(|_| Status::invalid_argument("etcdserver: unknown compare target"))?;
    // etcd reads the union member matching `target`; a missing one compares against zero.
    let target = match (target, c.target_union) {
        (CompareTarget::Version, Some(TargetUnion::Version(v))) => m::CompareTarget::Version(v),
        (CompareTarget::Version, _) => m::CompareTarget::Version(0),
        (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => m::CompareTarget::Create(v),
        (CompareTarget::Create, _) => m::CompareTarget::Create(0),
        (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => m::CompareTarget::Mod(v),
        (CompareTarget::Mod, _) => m::CompareTarget::Mod(0),
        (CompareTarget::Value, Some(TargetUnion::Value(v))) => m::CompareTarget::Value(v),
        (CompareTarget::Value, _) => m::CompareTarget::Value(Vec::new()),
        (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => m::CompareTarget::Lease(v),
        (CompareTarget::Lease, _) => m::CompareTarget::Lease(0),
    };
    Ok(m::Compare { key: c.key, range_end: c.range_end, result, target })
}

/// Nesting deeper than this is refused (etcd bounds a txn by its op count; this also bounds the
/// recursion of decoding and conversion).
const TXN_DEPTH_MAX: usize = 16;

fn op(o: pb::RequestOp, depth: usize) -> Result<m::RequestOp, Status> {
    use pb::request_op::Request;
    Ok(match o.request {
        Some(Request::RequestRange(r)) => m::RequestOp::Range(range_req(r)),
        Some(Request::RequestPut(r)) => m::RequestOp::Put(put_req(r)),
        Some(Request::RequestDeleteRange(r)) => m::RequestOp::DeleteRange(delete_req(r)),
        Some(Request::RequestTxn(t)) => m::RequestOp::Txn(txn_req_at(t, depth + 1)?),
        None => return Err(Status::invalid_argument("etcdserver: a txn operation has no request")),
    })
}

fn txn_req_at(t: pb::TxnRequest, depth: usize) -> Result<m::TxnRequest, Status> {
    if depth > TXN_DEPTH_MAX {
        return Err(Status::invalid_argument(format!("txn nesting deeper than {TXN_DEPTH_MAX}")));
    }
    Ok(m::TxnRequest {
        compare: t.compare.into_iter().map(compare).collect::<Result<_, _>>()?,
        success: t.success.into_iter().map(|o| op(o, depth)).collect::<Result<_, _>>()?,
        failure: t.failure.into_iter().map(|o| op(o, depth)).collect::<Result<_, _>>()?,
    })
}

pub fn txn_req(t: pb::TxnRequest) -> Result<m::TxnRequest, Status> {
    txn_req_at(t, 0)
}

pub fn txn_resp(r: m::TxnResponse, h: &Header) -> pb::TxnResponse {
    use pb::response_op::Response;
    let responses = r
        .responses
        .into_iter()
        .map(|o| pb::ResponseOp {
            response: Some(match o {
                m::ResponseOp::Range(x) => Response::ResponseRange(range_resp(x, h)),
                m::ResponseOp::Put(x) => Response::ResponsePut(put_resp(x, h)),
                m::ResponseOp::DeleteRange(x) => Response::ResponseDeleteRange(delete_resp(x, h)),
                m::ResponseOp::Txn(x) => Response::ResponseTxn(txn_resp(x, h)),
            }),
        })
        .collect();
    pb::TxnResponse { header: h.at(r.revision), succeeded: r.succeeded, responses }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_txns_convert_and_deep_nesting_is_refused() {
        let mut t = pb::TxnRequest::default();
        for _ in 0..TXN_DEPTH_MAX {
            t = pb::TxnRequest {
                success: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestTxn(t)) }],
                ..Default::default()
            };
        }
        assert!(txn_req(t.clone()).is_ok());
        let deeper = pb::TxnRequest {
            success: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestTxn(t)) }],
            ..Default::default()
        };
        assert_eq!(txn_req(deeper).unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn compares_read_the_member_of_their_target() {
        let c = pb::Compare {
            result: pb::compare::CompareResult::Greater as i32,
            target: pb::compare::CompareTarget::Mod as i32,
            key: b"k".to_vec(),
            target_union: Some(pb::compare::TargetUnion::ModRevision(7)),
            range_end: vec![],
        };
        let m = compare(c).unwrap();
        assert_eq!((m.result, m.target), (m::CompareResult::Greater, m::CompareTarget::Mod(7)));
        let bad = pb::Compare { result: 9, ..Default::default() };
        assert_eq!(compare(bad).unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn errors_keep_etcds_messages_and_codes() {
        let s = status(m::Error::Compacted { compact_revision: 3 });
        assert_eq!(
            (s.code(), s.message()),
            (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted")
        );
        assert_eq!(status(m::Error::LeaseNotFound).code(), tonic::Code::NotFound);
    }
}

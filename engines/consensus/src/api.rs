//! `/v1/cluster` on the public HTTP API (what `basalt cluster …` calls):
//! - `GET /v1/cluster` — this node's view: state, term, leader, members, replication
//! - `POST /v1/cluster/members` `{"node_id","peer_addr","http_addr","voter"}` — add a learner
//!   (and promote it once caught up when `voter` is true)
//! - `POST /v1/cluster/members/{id}/promote`, `DELETE /v1/cluster/members/{id}`
//! - `POST /v1/cluster/transfer` `{"node_id"}` — hand leadership over

use axum::Router;
use axum::extract::State;
use axum::routing::{delete, get, post};
use basalt_runtime::ApiError;
use basalt_runtime::http::extract::{Json, Path};
use serde::Deserialize;

use crate::consensus::{AdminOp, ClusterStatus, Consensus};
use crate::types::{Member, NodeId};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    node_id: NodeId,
    peer_addr: String,
    http_addr: String,
    #[serde(default)]
    voter: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    node_id: NodeId,
}

type Answer = Result<axum::Json<ClusterStatus>, ApiError>;

pub fn routes(c: Consensus) -> Router {
    Router::new()
        .route("/v1/cluster", get(status))
        .route("/v1/cluster/members", post(add))
        .route("/v1/cluster/members/{id}/promote", post(promote))
        .route("/v1/cluster/members/{id}", delete(remove))
        .route("/v1/cluster/transfer", post(transfer))
        .with_state(c)
}

async fn status(State(c): State<Consensus>) -> Answer {
    Ok(axum::Json(c.status()?))
}

async fn add(State(c): State<Consensus>, Json(b): Json<AddBody>) -> Answer {
    check_addr(&b.peer_addr, "peer_addr")?;
    check_addr(&b.http_addr, "http_addr")?;
    if b.node_id == 0 {
        return Err(ApiError::bad_request("invalid_node_id", "node_id must be at least 1"));
    }
    let member = Member { peer_addr: b.peer_addr, http_addr: b.http_addr };
    Ok(axum::Json(c.admin(AdminOp::Add { node_id: b.node_id, member, voter: b.voter }).await?))
}

async fn promote(State(c): State<Consensus>, Path(id): Path<NodeId>) -> Answer {
    Ok(axum::Json(c.admin(AdminOp::Promote { node_id: id }).await?))
}

async fn remove(State(c): State<Consensus>, Path(id): Path<NodeId>) -> Answer {
    Ok(axum::Json(c.admin(AdminOp::Remove { node_id: id }).await?))
}

async fn transfer(State(c): State<Consensus>, Json(b): Json<TransferBody>) -> Answer {
    Ok(axum::Json(c.admin(AdminOp::Transfer { node_id: b.node_id }).await?))
}

fn check_addr(a: &str, field: &str) -> Result<(), ApiError> {
    a.parse::<std::net::SocketAddr>().map(|_| ()).map_err(|_| {
        ApiError::bad_request("invalid_address", format!("{field} must be HOST:PORT with an IP, not `{a}`"))
    })
}

//! redis-cell's `CL.THROTTLE key max_burst count period [quantity]`, offered to the node's RESP
//! port (the kv system's listener serves it): decided by this system's in-memory limiters —
//! one owner node per key, allowances elsewhere — instead of a stored key, so no decision
//! waits for a disk or a replica.

use std::sync::Arc;

use basalt_resp::Frame;
use basalt_runtime::services::RespCommand;

use crate::service::RateLimitService;

pub fn cl_throttle(svc: Arc<RateLimitService>) -> RespCommand {
    Arc::new(move |args| {
        let svc = svc.clone();
        Box::pin(async move {
            if !(4..=5).contains(&args.len()) {
                return Frame::err("ERR wrong number of arguments for 'cl.throttle' command");
            }
            let mut nums = [0u64, 0, 0, 1];
            for (slot, a) in nums.iter_mut().zip(&args[1..]) {
                match std::str::from_utf8(a).ok().filter(|s| !s.starts_with('+')).and_then(|s| s.parse::<u64>().ok()) {
                    Some(v) => *slot = v,
                    None => return Frame::err("ERR value is not an integer or out of range"),
                }
            }
            // Any bytes are a key: escaped, so two different keys never share a limiter.
            let key = args[0].escape_ascii().to_string();
            match svc.throttle(&key, nums[0], nums[1], nums[2], nums[3]).await {
                Ok(r) => Frame::Array(r.into_iter().map(Frame::Integer).collect()),
                Err(e) => Frame::err(e),
            }
        })
    })
}

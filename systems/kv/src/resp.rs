//! The Redis-protocol listener: one task per connection; requests are read as they arrive
//! (pipelined requests in one read are executed in order and answered in one write); a
//! protocol error is answered with Redis's text and the connection is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use basalt_resp::{Frame, Limits, encode, parse_request_split};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::commands::{Conn, Planned, answer_now, execute, plan, upper};
use crate::service::KvService;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub async fn serve(
    listener: TcpListener,
    svc: Arc<KvService>,
    limits: Limits,
    services: basalt_runtime::services::Services,
    stop: basalt_runtime::node::CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((sock, _)) => {
                let (svc, limits, stop, services) = (svc.clone(), limits, stop.clone(), services.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        r = connection(sock, svc, limits, services) => {
                            if let Err(e) = r {
                                tracing::debug!(error = %e, "kv: connection ended");
                            }
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "kv: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(
    mut sock: TcpStream,
    svc: Arc<KvService>,
    limits: Limits,
    services: basalt_runtime::services::Services,
) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let mut conn = Conn { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), services, ..Conn::default() };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    loop {
        if sock.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        // Every complete request in what has arrived (a pipeline), and a protocol error if the
        // bytes after them are bad.
        let mut batch = Vec::new();
        let mut bad = None;
        loop {
            match parse_request_split(&mut buf, &limits) {
                Ok(Some(args)) if args.is_empty() => {}
                Ok(Some(args)) => batch.push(args),
                Ok(None) => break,
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
        let mut i = 0;
        while i < batch.len() {
            // A read this node answers at once is answered in place.
            if answer_now(&svc, &batch[i], conn.proto, &mut out) {
                i += 1;
                continue;
            }
            // A run of reads has no effects to order: it runs concurrently. Everything else
            // runs one at a time, in order, as Redis does.
            let run = batch[i..].iter().take_while(|a| read_only(&a[0])).count();
            if run > 1 {
                let proto = conn.proto;
                // The requests are moved out (each runs once); a read's connection state is a
                // copy of this one's (no allocation).
                let futs = batch[i..i + run].iter_mut().map(|args| {
                    let (svc, args) = (svc.clone(), std::mem::take(args));
                    let mut c = Conn { proto, name: None, id: conn.id, quit: false, services: conn.services.clone() };
                    async move { execute(&svc, &mut c, args).await }
                });
                for reply in futures_util::future::join_all(futs).await {
                    encode(&reply, conn.proto, &mut out);
                }
                i += run;
                continue;
            }
            // A run of one-key writes goes to the store as one batch (one journal write, one
            // sync), its effects in order; each answers at its place.
            let mut plans = Vec::new();
            for args in &batch[i..] {
                match plan(&svc, &upper(&args[0]), &args[1..]) {
                    Some(p) => plans.push(p),
                    None => break,
                }
            }
            if !plans.is_empty() {
                i += plans.len();
                write_run(&svc, plans, conn.proto, &mut out).await;
                continue;
            }
            let reply = execute(&svc, &mut conn, batch[i].clone()).await;
            encode(&reply, conn.proto, &mut out);
            i += 1;
            if conn.quit {
                sock.write_all(&out).await?;
                return Ok(());
            }
        }
        if let Some(e) = bad {
            encode(&Frame::err(e.to_string()), conn.proto, &mut out);
            sock.write_all(&out).await?;
            return Ok(());
        }
        if !out.is_empty() {
            sock.write_all(&out).await?;
            out.clear();
        }
    }
}

/// Run planned writes in order and encode their replies.
async fn write_run(svc: &Arc<KvService>, plans: Vec<Planned>, proto: basalt_resp::Proto, out: &mut BytesMut) {
    if let [Planned::Write { .. }] = plans.as_slice() {
        let Some(Planned::Write { key, op, shape }) = plans.into_iter().next() else { return };
        encode(&shape.finish(svc.write(&key, op).await), proto, out);
        return;
    }
    let mut ops = Vec::new();
    let mut shapes = Vec::with_capacity(plans.len());
    for p in plans {
        match p {
            Planned::Write { key, op, shape } => {
                ops.push((key.to_vec(), op));
                shapes.push(Ok(shape));
            }
            Planned::Reply(f) => shapes.push(Err(f)),
        }
    }
    let mut results = svc.write_batch(ops).await.into_iter();
    for s in shapes {
        let frame = match s {
            Ok(shape) => shape.finish(
                results.next().unwrap_or_else(|| Err(basalt_ring_engine::RingError::Internal("no reply".into()))),
            ),
            Err(f) => f,
        };
        encode(&frame, proto, out);
    }
}

/// Commands without effects, safe to run concurrently within a pipeline.
fn read_only(cmd: &[u8]) -> bool {
    const READS: [&[u8]; 17] = [
        b"GET",
        b"MGET",
        b"EXISTS",
        b"STRLEN",
        b"TTL",
        b"PTTL",
        b"TYPE",
        b"HGET",
        b"HMGET",
        b"HGETALL",
        b"HLEN",
        b"ZSCORE",
        b"ZCARD",
        b"ZRANK",
        b"ZREVRANK",
        b"ZRANGE",
        b"ZREVRANGE",
    ];
    READS.iter().any(|r| r.eq_ignore_ascii_case(cmd))
}

//! The Redis-protocol listener: one task per connection; requests are read as they arrive
//! (pipelined requests in one read are executed in order and answered in one write); a
//! protocol error is answered with Redis's text and the connection is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use basalt_resp::{Frame, Limits, encode, parse_request_split};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::commands::{Conn, execute};
use crate::service::KvService;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub async fn serve(
    listener: TcpListener,
    svc: Arc<KvService>,
    limits: Limits,
    stop: basalt_runtime::node::CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((sock, _)) => {
                let (svc, limits, stop) = (svc.clone(), limits, stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        r = connection(sock, svc, limits) => {
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

async fn connection(mut sock: TcpStream, svc: Arc<KvService>, limits: Limits) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let mut conn = Conn { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), ..Conn::default() };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    loop {
        if sock.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        loop {
            match parse_request_split(&mut buf, &limits) {
                Ok(Some(args)) => {
                    if args.is_empty() {
                        continue;
                    }
                    let reply = execute(&svc, &mut conn, args).await;
                    encode(&reply, conn.proto, &mut out);
                    if conn.quit {
                        sock.write_all(&out).await?;
                        return Ok(());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    encode(&Frame::err(e.to_string()), conn.proto, &mut out);
                    sock.write_all(&out).await?;
                    return Ok(());
                }
            }
        }
        if !out.is_empty() {
            sock.write_all(&out).await?;
            out.clear();
        }
    }
}

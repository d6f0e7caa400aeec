//! A small Redis client for tests, workloads and benchmarks, on Basalt's own wire codec: one
//! connection, one command at a time (or a pipeline), with a deadline.

use std::time::Duration;

use basalt_resp::{Frame, encode_request, parse_reply};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Redis {
    sock: tokio::net::TcpStream,
    buf: BytesMut,
    timeout: Duration,
}

impl Redis {
    pub async fn connect(addr: &str, timeout: Duration) -> std::io::Result<Self> {
        let sock = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
        sock.set_nodelay(true)?;
        Ok(Self { sock, buf: BytesMut::new(), timeout })
    }

    /// Send one command and read its reply. An error means the outcome is unknown (or, for a
    /// refused connection, that nothing was sent).
    pub async fn cmd(&mut self, args: &[&[u8]]) -> std::io::Result<Frame> {
        let mut replies = self.pipeline(&[args]).await?;
        replies.pop().ok_or_else(|| std::io::Error::other("no reply"))
    }

    /// Send several commands in one write and read their replies, in order.
    pub async fn pipeline(&mut self, commands: &[&[&[u8]]]) -> std::io::Result<Vec<Frame>> {
        let mut out = BytesMut::new();
        for args in commands {
            encode_request(args, &mut out);
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        tokio::time::timeout_at(deadline, self.sock.write_all(&out))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timeout"))??;
        let mut replies = Vec::with_capacity(commands.len());
        while replies.len() < commands.len() {
            if let Some((f, used)) = parse_reply(&self.buf).map_err(std::io::Error::other)? {
                let _ = self.buf.split_to(used);
                replies.push(f);
                continue;
            }
            let n = tokio::time::timeout_at(deadline, self.sock.read_buf(&mut self.buf))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "reply timeout"))??;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
            }
        }
        Ok(replies)
    }
}

//! RESP2/RESP3 wire codec for Basalt's Redis-compatible front end. Pure: no IO, no clock.
//!
//! - Server side: [`parse_request`] (copies arguments out of a `&[u8]`) and
//!   [`parse_request_split`] (splits the consumed bytes off a `BytesMut`, zero copy) read one
//!   command in either the multibulk form (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or the inline form
//!   (`GET k\r\n`, with Redis's quoting rules). Errors display exactly as Redis 7's reply text,
//!   so a server can send `-{error}\r\n` verbatim and close the connection.
//! - [`encode`] writes a [`Frame`] in RESP3, or downgraded to RESP2 the way Redis does it.
//! - Client side: [`encode_request`] and [`parse_reply`], for tests and benchmarks.
//!
//! ```
//! use basalt_resp::{Frame, Limits, Proto, encode, parse_request};
//! use bytes::BytesMut;
//!
//! let (args, used) = parse_request(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", &Limits::default()).unwrap().unwrap();
//! assert_eq!((args.len(), used), (2, 20));
//! let mut out = BytesMut::new();
//! encode(&Frame::Double(1.5), Proto::Resp2, &mut out);
//! assert_eq!(&out[..], b"$3\r\n1.5\r\n");
//! ```

mod error;
mod frame;
mod reply;
mod request;

pub use error::ProtocolError;
pub use frame::{Frame, Proto, encode, encode_bulk, encode_request, format_double};
pub use reply::{MAX_REPLY_DEPTH, parse_reply};
pub use request::{Limits, parse_request, parse_request_split};

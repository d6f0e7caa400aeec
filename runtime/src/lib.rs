//! The Basalt node runtime: everything a system needs from the node and nothing particular to
//! any one system.
//!
//! - [`config`]: layered configuration (defaults ← file ← `BASALT_*` ← flags).
//! - [`storage`]: the embedded store (fjall), one namespace per system, group-commit fsync.
//! - [`clock`]: the node's one wall clock, skewable for fault tests.
//! - [`http`]: the HTTP host, the error shape, extractors.
//! - [`metrics`]: the Prometheus registry.
//! - [`system`]: the seam a system plugs in through.
//! - [`engine`]: the seam an engine (consensus, ring, log) plugs in through.
//! - [`transport`]: node-to-node RPC with a fault hook.
//! - [`services`]: what systems offer each other at run time (RESP commands, the request limiter).
//! - [`node`]: start, serve, shut down.
//! - [`bench`]: the benchmark harness behind `basalt bench`.
//! - [`process`]: start and stop real node processes (tests, benches, fault harness).

pub mod bench;
pub mod clock;
pub mod config;
pub mod engine;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod process;
pub mod redis;
pub mod services;
pub mod storage;
pub mod system;
pub mod transport;

pub use clock::Clock;
pub use http::ApiError;
pub use reqwest;
pub use storage::{Namespace, Store};
pub use system::{Plug, System, SystemContext, plug};

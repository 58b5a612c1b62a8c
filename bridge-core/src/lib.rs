//! # bridge-core
//!
//! Everything in JAMNet that thinks lives here, so it can be tested without a
//! DAW. Two kinds of code, kept apart (see `DESIGN.md`):
//!
//! * **Pure core (sans-IO):** [`protocol`] (TOAST v2 frames and messages,
//!   JELLIE), session/peer state, burst de-duplication, jitter buffer, clocks,
//!   transport scheduling, PNBTR prediction. Time is always a parameter.
//! * **Drivers:** UDP sockets, the worker thread, wgpu, mDNS. Thin.
//!
//! Every public type documents whether it is thread-safe and realtime-safe.

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod bench;
pub mod burst;
pub mod clock;
pub mod conceal;
pub mod discovery;
pub mod drift;
pub mod fine_resampler;
pub mod handle;
pub mod jellie_stream;
pub mod jitter;
pub mod net;
pub mod pnbtr;
pub mod protocol;
pub mod session;
pub mod sim;
pub mod transport;
pub mod worker;

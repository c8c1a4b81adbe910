//! The one integration-test binary: only `mod` lines. `support` starts stepgate in-process on
//! 127.0.0.1:0 with the dev issuer and the sandbox upstream; `peers` runs against the real
//! `oidc-provider` and `moto` peers that `scripts/test` starts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "test harness code"
)]
mod support;

mod audit;
mod authn;
mod cli;
mod crash;
mod dataflow;
mod differential;
mod fronting;
mod jwt_attacks;
mod listener;
mod peers;
mod pipeline;
mod refusals;
mod reload;

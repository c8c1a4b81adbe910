//! # stepgate
//!
//! An identity-aware reverse proxy for pipeline triggers. Each request passes the stages of
//! DESIGN.md §1 once, in order; each stage is one module and hands a proof value to the next:
//!
//! ```text
//! listen -> route -> authn -> authz -> validate -> audit -> forward -> audit -> respond
//!           Endpoint  Identity  Permit  ValidatedTrigger  AuditTicket  Outcome
//! ```
//!
//! - [`pipeline::handle`] is the one function that calls the stages.
//! - [`app`] is the composition root: the only place real HTTP clients, credential providers
//!   and the clock are made.
//! - [`respond`] is the only place errors become HTTP.
//! - `forward::send` takes a [`validate::ValidatedTrigger`] (made only from an
//!   [`authz::Permit`]) and an [`audit::AuditTicket`] (made only once the decision record is
//!   durable): an unauthorized or unaudited forward does not compile.

pub mod app;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod credentials;
pub mod dev;
pub mod error;
pub mod forward;
pub mod http_client;
pub mod listen;
pub mod model;
pub mod observe;
pub mod pipeline;
pub mod ratelimit;
pub mod respond;
pub mod route;
pub mod secret;
pub mod validate;

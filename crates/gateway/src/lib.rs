//! Switchyard's API gateway (north-south) and the engine of service-to-service calls
//! (east-west).
//!
//! Routes come from `[[routes]]` of switchyard.toml ([`switchyard_manifest::RouteSpec`])
//! and from the admin API ([`Gateway::admin_router`]). Every change is an event in the
//! journal topic `switchyard.gateway.routes` ([`history`]); the route table is what replaying
//! it gives, rebuilt at start and swapped whole on every change ([`table`]). A request is
//! matched on host, method and path, forwarded to the next healthy upstream of its route
//! (smooth weighted round robin, active health checks: [`upstream`]) with a request id and
//! W3C trace context ([`trace`]), and its answer streamed back ([`proxy`]).

pub mod access;
mod admin;
pub mod auth;
pub mod calls;
pub mod compose;
pub mod faults;
pub mod history;
pub mod limits;
mod pool;
pub mod problem;
pub mod proxy;
mod service;
pub mod table;
pub mod trace;
pub mod upstream;

pub use calls::{
    CALL_TOKEN_HEADER, CALLER_HEADER, CallTokens, Dependencies, dependencies_of, new_call_tokens,
    services_on_loopback,
};
pub use faults::{FaultKind, FaultSpec, Faults, Injection};
pub use history::{Change, Origin, ROUTES_TOPIC};
pub use service::{Error, Gateway, GatewayOptions, Result, bind_shared, serve_app};
pub use table::Services;

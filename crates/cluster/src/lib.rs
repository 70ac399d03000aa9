//! A local Stubs cluster: every service as its own `stubs serve` process (two replicas of the
//! busiest), each on a database of its own on one PostgreSQL server, all sharing one NATS
//! JetStream stream, behind nginx routing by path the way the production ingress does.
//!
//! `scripts/cluster` drives it from the shell; the end-to-end and fault tests drive it from Rust,
//! killing and restarting single processes, and run it on PostgreSQL and NATS servers of their
//! own ([`servers`]) so that stopping those never touches anyone else's.

mod cluster;
mod database;
mod nginx;
mod ports;
mod process;
pub mod servers;

pub use cluster::{Cluster, InstanceId, ProcessState, Settings, State};
pub use database::{create_databases, drop_database, with_database};
pub use process::{group_members, pid_alive, signal, signal_group};

/// The services a cluster runs, in the order they start, and the path prefix the ingress sends to
/// each (`None`: no public routes).
pub const SERVICES: [(&str, Option<&str>); 6] = [
    ("auth", Some("/api/users")),
    ("tickets", Some("/api/tickets")),
    ("orders", Some("/api/orders")),
    ("expiration", None),
    ("payments", Some("/api/payments")),
    ("web", Some("/")),
];

/// Whether a service keeps a database (all but the pages).
pub fn has_database(service: &str) -> bool {
    service != "web"
}

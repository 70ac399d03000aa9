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
use serde::{Deserialize, Serialize};

/// A service the cluster runs, by the name `stubs serve` knows it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Auth,
    Tickets,
    Orders,
    Expiration,
    Payments,
    Web,
}

impl Service {
    /// Every service, in the order a cluster starts them.
    pub const ALL: [Service; 6] = [
        Self::Auth,
        Self::Tickets,
        Self::Orders,
        Self::Expiration,
        Self::Payments,
        Self::Web,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Tickets => "tickets",
            Self::Orders => "orders",
            Self::Expiration => "expiration",
            Self::Payments => "payments",
            Self::Web => "web",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|service| service.name() == name)
    }

    /// The path prefixes the ingress sends to the service; none: no public routes.
    pub fn routes(self) -> &'static [&'static str] {
        match self {
            Self::Auth => &["/api/users"],
            // A user's tickets and sales are the tickets service's, under auth's prefix: the
            // longer prefix wins.
            Self::Tickets => &[
                "/api/tickets",
                "/api/events",
                "/api/users/me/tickets",
                "/api/users/me/sales",
            ],
            Self::Orders => &["/api/orders"],
            Self::Expiration => &[],
            Self::Payments => &["/api/payments"],
            Self::Web => &["/"],
        }
    }

    /// Whether the service keeps a database (all but the pages).
    pub fn has_database(self) -> bool {
        self != Self::Web
    }

    /// Two replicas of the services that take the purchase traffic, one of the others.
    pub fn default_replicas(self) -> usize {
        match self {
            Self::Tickets | Self::Orders | Self::Payments => 2,
            _ => 1,
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

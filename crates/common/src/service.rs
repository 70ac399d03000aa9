//! What a running service is given: its name, its store, the bus, the session keys, its outbox,
//! how its listeners consume, and the shutdown signal its tasks obey.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::arrivals::{ArrivalSettings, Arrivals};
use crate::bus::Bus;
use crate::events::{SessionRevoked, SessionsRevoked};
use crate::listener;
use crate::listener::ListenerSettings;
use crate::outbox::Outbox;
use crate::revocation::{self, RecordRevocation};
use crate::session::Sessions;
use crate::store::Store;

#[derive(Clone)]
pub struct ServiceContext {
    /// The service's name, which also names its consumer groups.
    pub name: &'static str,
    pub store: Store,
    pub bus: Arc<dyn Bus>,
    /// Verifies tokens, refusing the sessions this service has heard were revoked.
    pub sessions: Sessions,
    pub outbox: Outbox,
    pub listeners: ListenerSettings,
    /// Where requests wait for what the listeners bring.
    pub arrivals: Arrivals,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

impl ServiceContext {
    pub fn new(
        name: &'static str,
        store: Store,
        bus: Arc<dyn Bus>,
        sessions: Sessions,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        // Listeners and the relay record metrics from their first event on.
        crate::telemetry::metrics_handle();
        Self {
            name,
            outbox: Outbox::new(store.clone(), name),
            store,
            bus,
            sessions: sessions.with_own_revocations(),
            listeners: ListenerSettings::default(),
            arrivals: Arrivals::new(name, ArrivalSettings::default()),
            shutdown,
            tasks,
        }
    }

    /// What the idempotency middleware of this service's writes needs.
    pub fn idempotency_keys(&self) -> crate::idempotency::Keys {
        crate::idempotency::Keys::new(
            self.store.clone(),
            self.sessions.clone(),
            self.tasks.clone(),
        )
    }

    /// Starts pruning the inbox and the given tombstone tables of rows older than the
    /// retention; it stops on shutdown.
    pub fn spawn_retention(&self, tombstones: &'static [crate::retention::Dated]) {
        self.tasks
            .spawn(crate::retention::run(self.clone(), tombstones));
    }

    /// Lets requests of this replica that wait for an event hear when another replica applied
    /// it (PostgreSQL only; embedded, the one process's listeners tell them directly).
    pub fn spawn_arrival_relay(&self) {
        if let Some(url) = self.store.listen_url() {
            let arrivals = self.arrivals.clone();
            let shutdown = self.shutdown.clone();
            self.tasks
                .spawn(arrivals.relay_announcements(url.clone(), shutdown));
        }
    }

    /// Makes this service refuse revoked sessions: it records the revocations it hears of
    /// (`session:revoked`, `sessions:revoked`) and keeps its verifier in step with them.
    pub fn spawn_revocation_listeners(&self) {
        let handler = RecordRevocation {
            dialect: self.store.dialect(),
            revocations: self.sessions.revocations().clone(),
        };
        listener::spawn::<SessionRevoked, _>(self, handler.clone());
        listener::spawn::<SessionsRevoked, _>(self, handler);
        self.spawn_revocation_keeper();
    }

    /// Keeps this process's verifier in step with the revocations in the service's database
    /// (for auth, which records its own rather than hearing of them).
    pub fn spawn_revocation_keeper(&self) {
        self.tasks.spawn(revocation::keep(
            self.store.clone(),
            self.sessions.revocations().clone(),
            self.shutdown.clone(),
        ));
    }

    /// Starts the outbox relay; it stops on shutdown after a last attempt to publish.
    pub fn spawn_relay(&self) {
        let outbox = self.outbox.clone();
        let bus = self.bus.clone();
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(outbox.run_relay(bus, shutdown));
    }
}

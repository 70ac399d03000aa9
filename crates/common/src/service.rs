//! What a running service is given: its name, its store, the bus, the session keys, its outbox,
//! how its listeners consume, and the shutdown signal its tasks obey.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::listener::ListenerSettings;
use crate::outbox::Outbox;
use crate::session::Sessions;
use crate::store::Store;

#[derive(Clone)]
pub struct ServiceContext {
    /// The service's name, which also names its consumer groups.
    pub name: &'static str,
    pub store: Store,
    pub bus: Arc<dyn Bus>,
    pub sessions: Sessions,
    pub outbox: Outbox,
    pub listeners: ListenerSettings,
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
            sessions,
            listeners: ListenerSettings::default(),
            shutdown,
            tasks,
        }
    }

    /// Starts pruning the inbox and the given tombstone tables of rows older than the
    /// retention; it stops on shutdown.
    pub fn spawn_retention(&self, tombstones: &'static [crate::retention::Dated]) {
        self.tasks
            .spawn(crate::retention::run(self.clone(), tombstones));
    }

    /// Starts the outbox relay; it stops on shutdown after a last attempt to publish.
    pub fn spawn_relay(&self) {
        let outbox = self.outbox.clone();
        let bus = self.bus.clone();
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(outbox.run_relay(bus, shutdown));
    }
}

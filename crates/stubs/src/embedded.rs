//! `stubs up`: every service in one process, each on its own SQLite file under the data folder,
//! talking through the embedded bus, behind one listener that routes by path as the ingress does.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use common::Sessions;
use common::bus::Bus;
use common::bus::embedded::EmbeddedBus;
use common::http::{Dependency, platform_routes};
use common::store::Store;
use rand::RngCore;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::UpArgs;
use crate::services::{self, Service, Shared};
use crate::{Running, api_docs, checked_secret};

const SECRET_FILE: &str = "jwt-secret";

pub(crate) async fn run(args: UpArgs) -> anyhow::Result<()> {
    services::check_settings(&args.shared)?;
    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "cannot create the data folder {} (--data-dir, STUBS_DATA_DIR)",
            args.data_dir.display()
        )
    })?;
    let secret = match &args.shared.jwt_secret {
        Some(secret) => checked_secret(secret.clone())?,
        None => kept_secret(&args.data_dir)?,
    };
    let sqlite = |name: &str| format!("sqlite://{}", args.data_dir.join(name).display());
    let log = EmbeddedBus::open(&sqlite("bus.sqlite"))
        .await
        .context("cannot open the bus log")?;
    let bus: Arc<dyn Bus> = Arc::new(log.clone());
    let shared = Shared {
        sessions: Sessions::new(
            &secret,
            args.shared.session_lifetime,
            args.shared.cookie_secure.unwrap_or(false),
        ),
        bus: Some(bus.clone()),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
    };

    shared
        .tasks
        .spawn(log.run_compaction(shared.shutdown.clone()));

    let mut routes = axum::Router::new();
    let mut stores = Vec::new();
    let mut dependencies = vec![Dependency::Bus(bus)];
    for service in Service::WITH_DATABASE {
        let store = Store::connect(
            &sqlite(&format!("{}.sqlite", service.name())),
            service.migrations(),
        )
        .await
        .with_context(|| format!("cannot open the {} database", service.name()))?;
        routes = routes.merge(services::start(
            service,
            store.clone(),
            &shared,
            &args.shared,
        )?);
        dependencies.push(Dependency::Database(service.name(), store.clone()));
        stores.push(store);
    }

    // The pages call the API routes of this process directly, as a browser would over HTTP.
    // One document, built once: the API's reference and this process's own are the same.
    let document = api_docs::document();
    let pages = web::router(
        web::ApiClient::in_process(routes.clone()),
        args.shared.web_settings(),
    );

    crate::serve(
        args.listen,
        args.shared.http_settings(),
        Running {
            routes: routes
                .merge(pages)
                .merge(api_docs::reference(document.clone()))
                .merge(api_docs::own_document(document))
                .merge(platform_routes(dependencies)),
            shutdown: shared.shutdown,
            tasks: shared.tasks,
            stores,
            fallback: Some(web::fallback()),
        },
    )
    .await
}

/// The JWT secret kept in the data folder (readable by its owner only), created on first start
/// so that sessions survive restarts.
fn kept_secret(data_dir: &Path) -> anyhow::Result<SecretString> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(secret) => return checked_secret(SecretString::from(secret.trim().to_owned())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(secret.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(SecretString::from(secret))
}

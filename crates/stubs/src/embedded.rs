//! `stubs up`: every service in one process, each on its own SQLite file under the data folder,
//! talking through the embedded bus, behind one listener that routes by path as the ingress does.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use common::bus::Bus;
use common::bus::embedded::EmbeddedBus;
use common::http::{Dependency, platform_routes};
use common::store::{Migrations, Store};
use common::{ServiceContext, Sessions};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Running;
use crate::cli::UpArgs;

const SECRET_FILE: &str = "jwt-secret";

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
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
    let sessions = Sessions::new(
        &secret,
        args.shared.session_lifetime,
        args.shared.cookie_secure.unwrap_or(false),
    );

    let sqlite = |name: &str| format!("sqlite://{}", args.data_dir.join(name).display());
    let bus: Arc<dyn Bus> = Arc::new(
        EmbeddedBus::open(&sqlite("bus.sqlite"))
            .await
            .context("cannot open the bus log")?,
    );
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let open = |name: &'static str, migrations: &'static [&'static Migrations]| {
        let url = sqlite(&format!("{name}.sqlite"));
        async move {
            Store::connect(&url, migrations)
                .await
                .with_context(|| format!("cannot open the {name} database"))
        }
    };

    let auth_store = open(auth::NAME, &auth::MIGRATIONS).await?;
    let tickets_ctx = ServiceContext::new(
        tickets::NAME,
        open(tickets::NAME, &tickets::MIGRATIONS).await?,
        bus.clone(),
        sessions.clone(),
        shutdown.clone(),
        tasks.clone(),
    );

    let routes = auth::start(
        auth_store.clone(),
        sessions.clone(),
        &args.shared.auth_settings(),
    )
    .merge(tickets::start(&tickets_ctx))
    .merge(platform_routes(vec![
        Dependency::Database(auth::NAME, auth_store.clone()),
        Dependency::Database(tickets::NAME, tickets_ctx.store.clone()),
        Dependency::Bus(bus.clone()),
    ]));

    crate::serve(
        args.listen,
        Running {
            routes,
            shutdown,
            tasks,
            stores: vec![auth_store, tickets_ctx.store.clone()],
        },
    )
    .await
}

fn checked_secret(secret: SecretString) -> anyhow::Result<SecretString> {
    anyhow::ensure!(
        secret.expose_secret().len() >= 32,
        "--jwt-secret (STUBS_JWT_SECRET) must be at least 32 characters"
    );
    Ok(secret)
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

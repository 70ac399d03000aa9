//! Running the real `stubs` binary for end-to-end tests: `stubs up` in one process, or the local
//! cluster, every service as `stubs serve` in processes of its own on PostgreSQL and JetStream
//! behind nginx.

pub(crate) mod invariants;
pub(crate) mod traffic;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use cluster::Cluster;
use serde_json::Value;
use testkit::{Backend, BusKind, TestBus, TestDatabase};

pub(crate) const SECRET: &str = "end-to-end-test-secret-of-enough-length";

/// Connections each service process of a test cluster opens to PostgreSQL: its pool, and the two
/// it listens on (arrivals of events, revocations).
const POOL_PER_PROCESS: u32 = 3;
const LISTENERS_PER_PROCESS: u32 = 2;
/// Left for the tests' own connections (creating databases, reading them).
const SPARE_CONNECTIONS: u32 = 10;

/// A cluster's share of the test PostgreSQL server's connections. Clusters started at once would
/// otherwise open more than the server takes ("too many clients"), and their requests would
/// fail for want of a connection; past what the server has, a cluster waits for another to end.
async fn connection_share(settings: &cluster::Settings) -> tokio::sync::OwnedSemaphorePermit {
    use sqlx::Connection;
    static SERVER: tokio::sync::OnceCell<(std::sync::Arc<tokio::sync::Semaphore>, u32)> =
        tokio::sync::OnceCell::const_new();
    let (free, total) = SERVER
        .get_or_init(|| async {
            let url = std::env::var("STUBS_TEST_DATABASE_URL").unwrap();
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            let available: i32 = sqlx::query_scalar(
                "SELECT current_setting('max_connections')::int \
                 - current_setting('superuser_reserved_connections')::int \
                 - (SELECT count(*) FROM pg_stat_activity)::int",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            let total = u32::try_from(available)
                .unwrap_or(0)
                .saturating_sub(SPARE_CONNECTIONS)
                .max(1);
            (
                std::sync::Arc::new(tokio::sync::Semaphore::new(total as usize)),
                total,
            )
        })
        .await;
    let processes: usize = cluster::Service::ALL
        .into_iter()
        .filter(|service| service.has_database())
        .map(|service| settings.replicas_of(service))
        .sum();
    let needed = (processes as u32 * (POOL_PER_PROCESS + LISTENERS_PER_PROCESS)).min(*total);
    std::sync::Arc::clone(free)
        .acquire_many_owned(needed)
        .await
        .unwrap()
}

/// One `stubs` process, stopped when dropped.
pub(crate) struct Process {
    pub child: Child,
    pub base: String,
}

impl Process {
    /// Starts `stubs` with the arguments and waits for its "listening on" line.
    pub(crate) fn start(args: &[&str], envs: &[(&str, String)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stubs"));
        command
            .args(args)
            .env_remove("STUBS_JWT_SECRET")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped());
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("stubs {args:?} did not start: {line:?}"))
            .to_owned();
        Self { child, base }
    }

    /// Sends SIGTERM and says whether the process exited cleanly.
    pub(crate) fn stop(mut self) -> bool {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap().success()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The marketplace under test, however it is run.
pub(crate) struct Marketplace {
    // Fields drop in order: the processes go first, then their databases, stream and folders.
    cluster: Option<Cluster>,
    embedded: Option<Process>,
    /// A marketplace someone else runs.
    elsewhere: Option<String>,
    _bus: Option<TestBus>,
    _databases: Vec<TestDatabase>,
    /// Each service's database, in distributed mode.
    database_urls: BTreeMap<String, String>,
    _data: Option<tempfile::TempDir>,
    /// The cluster's share of the PostgreSQL server's connections, given back once it is gone.
    _connections: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Marketplace {
    /// `stubs up` with its data in a temporary folder.
    pub(crate) fn embedded(order_expiration: &str) -> Self {
        Self::embedded_limiting_auth(order_expiration, "0")
    }

    /// [`Marketplace::embedded`], letting each address sign in or up `per_minute` times a
    /// minute ("0": no limit, as in the other tests).
    pub(crate) fn embedded_limiting_auth(order_expiration: &str, per_minute: &str) -> Self {
        let data = tempfile::tempdir().unwrap();
        let path = data.path().to_owned();
        Self::start_embedded(&path, order_expiration, per_minute, Some(data))
    }

    fn start_embedded(
        path: &Path,
        order_expiration: &str,
        auth_attempts_per_minute: &str,
        data: Option<tempfile::TempDir>,
    ) -> Self {
        let process = Process::start(
            &[
                "up",
                "--listen",
                "127.0.0.1:0",
                "--auth-attempts-per-minute",
                auth_attempts_per_minute,
                "--order-expiration",
                order_expiration,
                "--data-dir",
                &path.display().to_string(),
            ],
            &[],
        );
        Self {
            cluster: None,
            elsewhere: None,
            embedded: Some(process),
            _bus: None,
            _databases: Vec::new(),
            database_urls: BTreeMap::new(),
            _data: data,
            _connections: None,
        }
    }

    /// The local cluster: every service as its own `stubs serve` process (two replicas of
    /// tickets, orders and payments) behind nginx, each service on a fresh PostgreSQL database,
    /// sharing a JetStream stream of the test's own.
    pub(crate) async fn distributed(order_expiration: &str) -> Self {
        let nats_url = std::env::var("STUBS_TEST_NATS_URL").unwrap();
        let bus = TestBus::create(BusKind::Nats).await;
        let mut databases = Vec::new();
        let mut database_urls = BTreeMap::new();
        for service in cluster::Service::ALL {
            if service.has_database() {
                let database = TestDatabase::create(Backend::Postgres).await;
                database_urls.insert(service.name().to_owned(), database.url.clone());
                databases.push(database);
            }
        }
        let data = tempfile::tempdir().unwrap();
        let settings = cluster::Settings {
            stubs: env!("CARGO_BIN_EXE_stubs").into(),
            nginx: nginx(),
            dir: data.path().to_owned(),
            port: 0,
            database_urls: database_urls.clone(),
            nats_url,
            nats_prefix: bus.nats_prefix.clone().unwrap(),
            jwt_secret: SECRET.to_owned(),
            replicas: BTreeMap::new(),
            env: vec![
                ("STUBS_AUTH_ATTEMPTS_PER_MINUTE".into(), "0".into()),
                ("STUBS_ORDER_EXPIRATION".into(), order_expiration.into()),
                // A charge whose request lost its answer is settled within the tests' waits.
                ("STUBS_PAYMENT_CLAIM_TIMEOUT".into(), "3s".into()),
                ("RUST_LOG".into(), "warn".into()),
                (
                    "STUBS_DATABASE_MAX_CONNECTIONS".into(),
                    POOL_PER_PROCESS.to_string(),
                ),
            ],
        };
        let connections = connection_share(&settings).await;
        let running = Cluster::start(settings).await.unwrap();
        Self {
            cluster: Some(running),
            elsewhere: None,
            embedded: None,
            _bus: Some(bus),
            _databases: databases,
            database_urls,
            _data: Some(data),
            _connections: Some(connections),
        }
    }

    /// Users of a marketplace running at `base`, started by the test itself.
    pub(crate) fn on(base: &str) -> Self {
        Self {
            cluster: None,
            embedded: None,
            elsewhere: Some(base.to_owned()),
            _bus: None,
            _databases: Vec::new(),
            database_urls: BTreeMap::new(),
            _data: None,
            _connections: None,
        }
    }

    /// The ingress's process id (and process group), when the marketplace is the local cluster.
    pub(crate) fn nginx_pid(&self) -> Option<u32> {
        self.cluster.as_ref().and_then(Cluster::nginx_pid)
    }

    /// Restarts every replica of `service` in the local cluster, one after the other.
    pub(crate) async fn restart_every_replica(&mut self, service: cluster::Service) {
        let cluster = self.cluster.as_mut().expect("the local cluster");
        for id in cluster.instances() {
            if id.service == service {
                cluster.restart(id).await.unwrap();
            }
        }
    }

    /// Kills every replica of `service` in the local cluster, as if all its pods were lost.
    pub(crate) fn kill_every_replica(&mut self, service: cluster::Service) {
        let cluster = self.cluster.as_mut().expect("the local cluster");
        for id in cluster.instances() {
            if id.service == service {
                cluster.kill(id).unwrap();
            }
        }
    }

    /// Each service's database, by service, when the marketplace is the local cluster.
    pub(crate) fn database_urls(&self) -> &BTreeMap<String, String> {
        &self.database_urls
    }

    /// Where the marketplace answers: the process itself, or the cluster's ingress.
    pub(crate) fn base(&self) -> String {
        match (&self.cluster, &self.embedded, &self.elsewhere) {
            (Some(cluster), _, _) => cluster.base_url(),
            (None, Some(process), _) => process.base.clone(),
            (None, None, Some(base)) => base.clone(),
            (None, None, None) => unreachable!("a marketplace runs somewhere"),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// Where each replica of a service answers by itself: the cluster's instances of it, or the
    /// one process that runs everything.
    pub(crate) fn replica_bases(&self, service: &str) -> Vec<String> {
        match &self.cluster {
            Some(cluster) => cluster
                .instances()
                .into_iter()
                .filter(|id| id.service.name() == service)
                .filter_map(|id| cluster.instance_url(id))
                .collect(),
            None => vec![self.base()],
        }
    }

    pub(crate) fn user(&self) -> User<'_> {
        User {
            market: self,
            http: reqwest::Client::builder()
                .cookie_store(true)
                .build()
                .unwrap(),
        }
    }

    /// Stops every process with SIGTERM; true when all exited cleanly.
    pub(crate) async fn stop(mut self) -> bool {
        let mut clean = true;
        if let Some(process) = self.embedded.take() {
            clean &= process.stop();
        }
        if let Some(cluster) = self.cluster.take() {
            for (instance, status) in cluster.stop().await.unwrap() {
                if !status.success() {
                    eprintln!("{instance} exited with {status}");
                    clean = false;
                }
            }
        }
        clean
    }
}

/// Debian's nginx, the ingress of the local cluster.
pub(crate) fn nginx() -> std::path::PathBuf {
    cluster::servers::find_program("nginx")
        .expect("the distributed tests need nginx: apt-get install nginx-light")
}

/// One person using the marketplace, with their own session.
pub(crate) struct User<'a> {
    market: &'a Marketplace,
    pub http: reqwest::Client,
}

impl User<'_> {
    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Where `path` is on this user's marketplace.
    pub(crate) fn url(&self, path: &str) -> String {
        self.market.url(path)
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(self.market.url(path))).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.post(self.market.url(path)).json(&body))
            .await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.put(self.market.url(path)).json(&body))
            .await
    }

    pub(crate) async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(self.market.url(path))).await
    }

    pub(crate) async fn sign_up(&self, email: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/users/signup",
                serde_json::json!({"email": email, "password": "correct horse"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }
}

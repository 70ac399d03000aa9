//! Running the real `stubs` binary for end-to-end tests: `stubs up` in one process, or every
//! service as `stubs serve` in a process of its own on PostgreSQL and JetStream, with the test
//! client routing by path as the ingress does.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use testkit::{Backend, BusKind, TestBus, TestDatabase};

pub const SECRET: &str = "end-to-end-test-secret-of-enough-length";

/// One `stubs` process, stopped when dropped.
pub struct Process {
    pub child: Child,
    pub base: String,
}

impl Process {
    /// Starts `stubs` with the arguments and waits for its "listening on" line.
    pub fn start(args: &[&str], envs: &[(&str, String)]) -> Self {
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
    pub fn stop(mut self) -> bool {
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
pub struct Marketplace {
    processes: Vec<(String, Process)>,
    _databases: Vec<TestDatabase>,
    _data: Option<tempfile::TempDir>,
    /// The JetStream stream the processes share, deleted after them.
    _bus: Option<TestBus>,
}

impl Marketplace {
    /// `stubs up` with its data in a temporary folder.
    pub fn embedded(order_expiration: &str) -> Self {
        let data = tempfile::tempdir().unwrap();
        let path = data.path().to_owned();
        Self::embedded_in(&path, order_expiration, Some(data))
    }

    pub fn embedded_in(
        path: &Path,
        order_expiration: &str,
        data: Option<tempfile::TempDir>,
    ) -> Self {
        let process = Process::start(
            &[
                "up",
                "--listen",
                "127.0.0.1:0",
                "--auth-attempts-per-minute",
                "0",
                "--order-expiration",
                order_expiration,
                "--data-dir",
                &path.display().to_string(),
            ],
            &[],
        );
        Self {
            processes: vec![("/".into(), process)],
            _databases: Vec::new(),
            _data: data,
            _bus: None,
        }
    }

    /// Every service as its own `stubs serve` process, each on a fresh PostgreSQL database,
    /// sharing a JetStream stream of the test's own.
    pub async fn distributed(order_expiration: &str) -> Self {
        let nats_url = std::env::var("STUBS_TEST_NATS_URL").unwrap();
        let bus = TestBus::create(BusKind::Nats).await;
        let prefix = bus.nats_prefix.clone().unwrap();
        let mut processes = Vec::new();
        let mut databases = Vec::new();
        for (service, path) in [
            ("auth", "/api/users"),
            ("tickets", "/api/tickets"),
            ("orders", "/api/orders"),
            ("expiration", "/expiration"),
            ("payments", "/api/payments"),
        ] {
            let database = TestDatabase::create(Backend::Postgres).await;
            let process = Process::start(
                &[
                    "serve",
                    service,
                    "--listen",
                    "127.0.0.1:0",
                    "--cookie-secure",
                    "false",
                    "--auth-attempts-per-minute",
                    "0",
                    "--order-expiration",
                    order_expiration,
                    "--nats-prefix",
                    &prefix,
                ],
                &[
                    ("STUBS_DATABASE_URL", database.url.clone()),
                    ("STUBS_NATS_URL", nats_url.clone()),
                    ("STUBS_JWT_SECRET", SECRET.to_owned()),
                ],
            );
            processes.push((path.to_owned(), process));
            databases.push(database);
        }
        Self {
            processes,
            _databases: databases,
            _data: None,
            _bus: Some(bus),
        }
    }

    /// The address serving a path, as the ingress would route it.
    pub fn url(&self, path: &str) -> String {
        let base = self
            .processes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, process)| process.base.as_str())
            .unwrap_or_else(|| panic!("no service serves {path}"));
        format!("{base}{path}")
    }

    /// Every process's base address (for health checks).
    pub fn bases(&self) -> Vec<String> {
        self.processes.iter().map(|(_, p)| p.base.clone()).collect()
    }

    pub fn user(&self) -> User<'_> {
        User {
            market: self,
            http: reqwest::Client::builder()
                .cookie_store(true)
                .build()
                .unwrap(),
        }
    }

    /// Stops every process with SIGTERM; true when all exited cleanly.
    pub fn stop(mut self) -> bool {
        let mut clean = true;
        for (_, process) in self.processes.drain(..) {
            clean &= process.stop();
        }
        clean
    }
}

impl Drop for Marketplace {
    fn drop(&mut self) {
        // The processes go first, then (as fields drop) their databases and stream.
        self.processes.clear();
    }
}

/// One person using the marketplace, with their own session.
pub struct User<'a> {
    market: &'a Marketplace,
    pub http: reqwest::Client,
}

impl User<'_> {
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(self.market.url(path))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.post(self.market.url(path)).json(&body))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.put(self.market.url(path)).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(self.market.url(path))).await
    }

    pub async fn sign_up(&self, email: &str) -> Value {
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

//! Starting, killing, restarting and stopping the processes of a local cluster.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::Service;
use crate::nginx::{self, Route};
use crate::ports::free_ports;
use crate::process::{
    append, group_members, log_tail, running_as_root, signal, signal_group, wait_with_timeout,
};

/// How to run a cluster.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `stubs` binary.
    pub stubs: PathBuf,
    /// The `nginx` binary.
    pub nginx: PathBuf,
    /// Where logs, the nginx configuration and the state file go.
    pub dir: PathBuf,
    /// The ingress port; 0 picks a free one.
    pub port: u16,
    /// Each service's database (every service but web).
    pub database_urls: BTreeMap<String, String>,
    pub nats_url: String,
    pub nats_prefix: String,
    pub jwt_secret: String,
    /// Replicas per service, by name; a service not named runs [`Service::default_replicas`].
    pub replicas: BTreeMap<String, usize>,
    /// Further `STUBS_*` settings for every process (order expiration, rate limits, ...).
    pub env: Vec<(String, String)>,
}

impl Settings {
    pub fn replicas_of(&self, service: Service) -> usize {
        self.replicas
            .get(service.name())
            .copied()
            .unwrap_or_else(|| service.default_replicas())
    }
}

/// One process of the cluster: a service and which of its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceId {
    pub service: Service,
    pub replica: usize,
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.service, self.replica)
    }
}

struct Instance {
    id: InstanceId,
    port: u16,
    child: Option<Child>,
}

/// What `stop` needs to find a cluster that `start` left running, kept as JSON in its folder.
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    pub base_url: String,
    /// Each service's database URL.
    pub databases: BTreeMap<String, String>,
    pub processes: Vec<ProcessState>,
    pub nginx_pid: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProcessState {
    pub name: String,
    pub pid: u32,
    pub port: u16,
}

impl State {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("cluster.json")
    }
}

/// A running cluster. Dropping it kills whatever is still running; [`Cluster::stop`] stops it
/// gracefully and [`Cluster::detach`] leaves it running.
pub struct Cluster {
    settings: Settings,
    instances: Vec<Instance>,
    nginx: Option<Child>,
    port: u16,
    http: reqwest::Client,
}

impl Cluster {
    /// Starts every replica of every service, waits until each is ready, then starts nginx.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        std::fs::create_dir_all(settings.dir.join("logs"))
            .with_context(|| format!("cannot create {}", settings.dir.display()))?;
        let ids: Vec<InstanceId> = Service::ALL
            .into_iter()
            .flat_map(|service| {
                (0..settings.replicas_of(service))
                    .map(move |replica| InstanceId { service, replica })
            })
            .collect();
        let mut ports = free_ports(ids.len() + 1)?;
        let port = match settings.port {
            0 => ports.pop().context("no port for the ingress")?,
            port => port,
        };
        let instances = ids
            .into_iter()
            .zip(ports)
            .map(|(id, port)| Instance {
                id,
                port,
                child: None,
            })
            .collect();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("cannot build an HTTP client")?;
        let mut cluster = Self {
            settings,
            instances,
            nginx: None,
            port,
            http,
        };
        for index in 0..cluster.instances.len() {
            cluster.spawn(index)?;
        }
        for index in 0..cluster.instances.len() {
            cluster.wait_ready(index).await?;
        }
        cluster.start_nginx().await?;
        Ok(cluster)
    }

    /// Where the ingress listens, e.g. `http://127.0.0.1:8080`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every process of the cluster.
    pub fn instances(&self) -> Vec<InstanceId> {
        self.instances.iter().map(|instance| instance.id).collect()
    }

    /// The process id of a running instance.
    pub fn pid(&self, id: InstanceId) -> Option<u32> {
        self.find(id)
            .ok()
            .and_then(|index| self.instances[index].child.as_ref())
            .map(Child::id)
    }

    /// The process id of the ingress, which is also its process group's.
    pub fn nginx_pid(&self) -> Option<u32> {
        self.nginx.as_ref().map(Child::id)
    }

    /// The address of one instance itself, bypassing the ingress (for `/metrics`).
    pub fn instance_url(&self, id: InstanceId) -> Option<String> {
        let index = self.find(id).ok()?;
        Some(format!("http://127.0.0.1:{}", self.instances[index].port))
    }

    /// Kills an instance with SIGKILL, as a crash or an evicted pod would end it.
    pub fn kill(&mut self, id: InstanceId) -> anyhow::Result<()> {
        let index = self.find(id)?;
        if let Some(mut child) = self.instances[index].child.take() {
            child.kill().with_context(|| format!("cannot kill {id}"))?;
            child.wait().with_context(|| format!("cannot reap {id}"))?;
        }
        Ok(())
    }

    /// Starts a stopped instance again on its port, with extra environment for this run only,
    /// and waits until it is ready.
    pub async fn restart_with(
        &mut self,
        id: InstanceId,
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let index = self.find(id)?;
        self.kill(id)?;
        self.spawn_with(index, env)?;
        self.wait_ready(index).await
    }

    pub async fn restart(&mut self, id: InstanceId) -> anyhow::Result<()> {
        self.restart_with(id, &[]).await
    }

    /// Whether the instance's process has exited, and how (without waiting).
    pub fn exited(&mut self, id: InstanceId) -> anyhow::Result<Option<ExitStatus>> {
        let index = self.find(id)?;
        match self.instances[index].child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("{id} is not running"),
        }
    }

    /// Stops every process with SIGTERM, as an orchestrator does, and returns how each exited.
    pub async fn stop(mut self) -> anyhow::Result<Vec<(InstanceId, ExitStatus)>> {
        let mut statuses = Vec::new();
        for instance in &mut self.instances {
            if let Some(child) = &mut instance.child
                && child.try_wait()?.is_none()
            {
                // It may exit between the look and the signal; its status tells either way.
                let _ = signal(child.id(), "TERM");
            }
        }
        for instance in &mut self.instances {
            if let Some(child) = instance.child.take() {
                let status = wait_with_timeout(child, Duration::from_secs(30))
                    .await
                    .with_context(|| format!("{} did not stop within 30 s", instance.id))?;
                statuses.push((instance.id, status));
            }
        }
        // The services are gone, so there is nothing left to drain: a graceful quit would only
        // wait for clients' idle keep-alive connections.
        if let Some(nginx) = self.nginx.take() {
            let group = nginx.id();
            signal(group, "TERM")?;
            wait_with_timeout(nginx, Duration::from_secs(10))
                .await
                .context("nginx did not stop")?;
            // Its workers go with it. Any that did not are ended rather than left behind, and
            // the stop fails, since something kept them.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !group_members(group).is_empty() {
                if Instant::now() > deadline {
                    let survivors = group_members(group);
                    let _ = signal_group(group, "KILL");
                    bail!("nginx's workers outlived it: {survivors:?} were still running");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(statuses)
    }

    /// Leaves every process running and returns what `stop` needs to find them, also written
    /// to the cluster's folder.
    pub fn detach(mut self) -> anyhow::Result<State> {
        let state = State {
            base_url: self.base_url(),
            databases: self.settings.database_urls.clone(),
            processes: self
                .instances
                .iter_mut()
                .filter_map(|instance| {
                    let child = instance.child.take()?;
                    Some(ProcessState {
                        name: instance.id.to_string(),
                        pid: child.id(),
                        port: instance.port,
                    })
                })
                .collect(),
            nginx_pid: self.nginx.take().map(|nginx| nginx.id()).unwrap_or(0),
        };
        let path = State::path(&self.settings.dir);
        let json = serde_json::to_string_pretty(&state)?;
        std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(state)
    }

    fn find(&self, id: InstanceId) -> anyhow::Result<usize> {
        self.instances
            .iter()
            .position(|instance| instance.id == id)
            .with_context(|| format!("no instance {id} in this cluster"))
    }

    fn log_path(&self, id: InstanceId) -> PathBuf {
        self.settings.dir.join("logs").join(format!("{id}.log"))
    }

    fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        self.spawn_with(index, &[])
    }

    fn spawn_with(&mut self, index: usize, extra_env: &[(&str, &str)]) -> anyhow::Result<()> {
        let Instance { id, port, .. } = self.instances[index];
        let log = append(&self.log_path(id))?;
        let settings = &self.settings;
        let mut command = Command::new(&settings.stubs);
        command
            .args(["serve", id.service.name()])
            .env("STUBS_LISTEN", format!("127.0.0.1:{port}"))
            .env("STUBS_JWT_SECRET", &settings.jwt_secret)
            .env("STUBS_NATS_URL", &settings.nats_url)
            .env("STUBS_NATS_PREFIX", &settings.nats_prefix)
            .env("STUBS_API_URL", self.base_url())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // A terminal's Ctrl-C reaches the foreground group: the cluster must outlive `start`.
            .process_group(0);
        // Plain HTTP on the loopback interface: a Secure cookie would never come back.
        if std::env::var_os("STUBS_COOKIE_SECURE").is_none() {
            command.env("STUBS_COOKIE_SECURE", "false");
        }
        // Eight processes with a database share one server: keep them within PostgreSQL's
        // default of 100 connections.
        if std::env::var_os("STUBS_DATABASE_MAX_CONNECTIONS").is_none() {
            command.env("STUBS_DATABASE_MAX_CONNECTIONS", "8");
        }
        if id.service.has_database() {
            let url = settings
                .database_urls
                .get(id.service.name())
                .with_context(|| format!("no database for {}", id.service))?;
            command.env("STUBS_DATABASE_URL", url);
        }
        for (name, value) in &settings.env {
            command.env(name, value);
        }
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", settings.stubs.display()))?;
        self.instances[index].child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self, index: usize) -> anyhow::Result<()> {
        let id = self.instances[index].id;
        let url = format!("http://127.0.0.1:{}/readyz", self.instances[index].port);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = self.http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            let exited = match self.instances[index].child.as_mut() {
                Some(child) => child.try_wait()?,
                None => bail!("{id} is not running"),
            };
            if let Some(status) = exited {
                bail!(
                    "{id} exited ({status}) before it was ready:\n{}",
                    log_tail(&self.log_path(id), 20)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{id} was not ready within 60 s:\n{}",
                    log_tail(&self.log_path(id), 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn start_nginx(&mut self) -> anyhow::Result<()> {
        let dir = &self.settings.dir;
        std::fs::create_dir_all(dir.join("nginx-tmp"))?;
        let routes: Vec<Route<'_>> = Service::ALL
            .into_iter()
            .map(|service| Route {
                service: service.name(),
                prefixes: service.routes(),
                ports: self
                    .instances
                    .iter()
                    .filter(|instance| instance.id.service == service)
                    .map(|instance| instance.port)
                    .collect(),
            })
            .filter(|route| !route.prefixes.is_empty() && !route.ports.is_empty())
            .collect();
        let conf_path = dir.join("nginx.conf");
        std::fs::write(
            &conf_path,
            nginx::config(dir, self.port, &routes, running_as_root()),
        )?;
        let log = append(&dir.join("logs").join("nginx.log"))?;
        let child = Command::new(&self.settings.nginx)
            .args(["-p"])
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .args(["-e", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", self.settings.nginx.display()))?;
        self.nginx = Some(child);
        let url = format!("{}/healthz", self.base_url());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = self.http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if let Some(nginx) = self.nginx.as_mut()
                && let Some(status) = nginx.try_wait()?
            {
                bail!(
                    "nginx exited ({status}):\n{}",
                    log_tail(&dir.join("logs").join("nginx.log"), 20)
                );
            }
            if Instant::now() > deadline {
                bail!("nginx did not answer on {url} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for instance in &mut self.instances {
            if let Some(mut child) = instance.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // nginx runs in a process group of its own: killing the master alone would leave its
        // workers running.
        if let Some(mut nginx) = self.nginx.take() {
            let _ = signal_group(nginx.id(), "KILL");
            let _ = nginx.wait();
        }
        // A test failed with this cluster: what went wrong inside it, before its folder goes.
        if std::thread::panicking() {
            self.print_trouble();
        }
    }
}

impl Cluster {
    /// The last warnings and errors each process logged, to standard error.
    fn print_trouble(&self) {
        for instance in &self.instances {
            let log = std::fs::read_to_string(self.log_path(instance.id)).unwrap_or_default();
            let trouble: Vec<&str> = log
                .lines()
                .filter(|line| line.contains("WARN") || line.contains("ERROR"))
                .collect();
            if !trouble.is_empty() {
                eprintln!("--- {}: its last warnings and errors", instance.id);
                for line in &trouble[trouble.len().saturating_sub(TROUBLE_LINES)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Lines of trouble shown per process when a test fails.
const TROUBLE_LINES: usize = 15;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purchase_path_runs_two_replicas() {
        assert_eq!(Service::Orders.default_replicas(), 2);
        assert_eq!(Service::Auth.default_replicas(), 1);
    }
}

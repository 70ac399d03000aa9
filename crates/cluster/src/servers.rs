//! PostgreSQL and NATS servers of a test's own, in a folder of its own on ports of its own, so
//! that stopping, killing and restarting them touches nothing else on the machine.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::ports::free_port;
use crate::process::log_tail;
use crate::process::running_as_root;

/// A PostgreSQL server made with `initdb` in `dir`, managed with `pg_ctl`.
pub struct OwnPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    running: bool,
}

impl OwnPostgres {
    /// Creates the cluster files (`initdb`, trust authentication for the `postgres` user).
    /// PostgreSQL refuses to run as root: as root the server runs as the `postgres` user.
    pub fn init(dir: &Path) -> anyhow::Result<Self> {
        let bin = postgres_bin_dir()?;
        std::fs::create_dir_all(dir)?;
        let server = Self {
            bin,
            dir: dir.to_owned(),
            port: free_port()?,
            running: false,
        };
        if running_as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir)
                .status()
                .context("cannot run chown")?;
            if !status.success() {
                bail!("cannot give {} to the postgres user", dir.display());
            }
        }
        let output = server
            .command("initdb")
            .arg("-D")
            .arg(server.data_dir())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .context("cannot run initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(server)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400",
            self.port,
            self.dir.display()
        );
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .status()
            .context("cannot run pg_ctl")?;
        if !status.success() {
            bail!(
                "PostgreSQL did not start:\n{}",
                log_tail(&self.dir.join("postgres.log"), 20)
            );
        }
        self.running = true;
        Ok(())
    }

    /// Stops the server: `fast` disconnects everyone and shuts down cleanly; `immediate` is a
    /// crash, recovered from the write-ahead log at the next start.
    pub fn stop(&mut self, mode: &str) -> anyhow::Result<()> {
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .stdout(Stdio::null())
            .status()
            .context("cannot run pg_ctl")?;
        if !status.success() {
            bail!("PostgreSQL did not stop");
        }
        self.running = false;
        Ok(())
    }

    /// A URL for one database of this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if running_as_root() {
            // setpriv replaces itself with the program, so pg_ctl's exit status is ours.
            let mut command = Command::new("setpriv");
            command
                .args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(path);
            command
        } else {
            Command::new(path)
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self.stop("immediate");
        }
    }
}

/// A NATS server with JetStream storing its streams in a folder of its own.
pub struct OwnNats {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl OwnNats {
    /// Starts `nats-server -js` and waits until it takes connections.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut server = Self {
            dir: dir.to_owned(),
            port: free_port()?,
            child: None,
        };
        server.start_again()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, no goodbye to its clients).
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and store.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        let log_path = self.dir.join("nats.log");
        let starts_before = ready_lines(&log_path);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new(nats_server()?)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("store"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start nats-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        // JetStream is ready once the server says so; the port alone opens a little earlier.
        while ready_lines(&log_path) == starts_before {
            if Instant::now() > deadline {
                bail!("nats-server did not start:\n{}", log_tail(&log_path, 20));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// How many times the server has said it is ready in its log.
fn ready_lines(log_path: &Path) -> usize {
    std::fs::read_to_string(log_path)
        .unwrap_or_default()
        .matches("Server is ready")
        .count()
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Where `initdb` and `pg_ctl` are: `pg_config` says, or Debian's versioned folders do.
fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    // The newest version first.
    debian.sort();
    debian.reverse();
    from_pg_config
        .into_iter()
        .chain(debian)
        .find(|dir| dir.join("initdb").is_file())
        .context("initdb not found: install PostgreSQL's server package")
}

fn nats_server() -> anyhow::Result<PathBuf> {
    find_program("nats-server").context("nats-server not found on PATH or in /usr/sbin")
}

/// A program on PATH, or in the system folders a root-less PATH often lacks.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

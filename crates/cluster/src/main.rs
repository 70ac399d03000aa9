//! `cluster start` runs a local Stubs cluster in the background and prints its address;
//! `cluster stop` stops it again by the process ids `start` wrote down.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use cluster::servers::find_program;
use cluster::{Cluster, Settings, State, group_members, pid_alive, signal, signal_group};
use rand::RngCore;

#[derive(Debug, Parser)]
#[command(name = "cluster", about = "A local Stubs cluster behind nginx")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the databases, start every service and nginx, print the address and return.
    /// `STUBS_*` variables in the environment reach every service.
    Start {
        /// Folder for logs, the nginx configuration and the process ids.
        #[arg(long)]
        dir: PathBuf,
        /// Port the ingress listens on (127.0.0.1); 0 picks a free one.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Any database on the PostgreSQL server; one database per service is created beside it.
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        database_url: String,
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// Prefixes the databases (`<name>_orders`) and names the JetStream stream.
        #[arg(long, default_value = "stubs")]
        name: String,
        /// Replicas per service, e.g. `--replicas orders=3 --replicas expiration=2`.
        #[arg(long, value_parser = parse_replicas)]
        replicas: Vec<(String, usize)>,
        /// The `stubs` binary; by default the one beside this program.
        #[arg(long)]
        stubs: Option<PathBuf>,
    },
    /// Stop every process of the cluster in `--dir` (SIGTERM, then SIGKILL after 30 s).
    Stop {
        #[arg(long)]
        dir: PathBuf,
        /// Also drop the cluster's databases.
        #[arg(long)]
        drop_databases: bool,
    },
}

fn parse_replicas(text: &str) -> Result<(String, usize), String> {
    let (service, count) = text
        .split_once('=')
        .ok_or_else(|| format!("expected SERVICE=COUNT, got {text:?}"))?;
    if cluster::Service::parse(service).is_none() {
        return Err(format!("no service named {service:?}"));
    }
    let count = count
        .parse()
        .map_err(|_| format!("not a number of replicas: {count:?}"))?;
    Ok((service.to_owned(), count))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cluster: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Start {
            dir,
            port,
            database_url,
            nats_url,
            name,
            replicas,
            stubs,
        } => {
            if State::path(&dir).exists() {
                bail!(
                    "{} already holds a cluster: stop it first",
                    State::path(&dir).display()
                );
            }
            let stubs = match stubs {
                Some(path) => path,
                None => std::env::current_exe()?.with_file_name("stubs"),
            };
            let nginx = find_program("nginx").context(
                "nginx not found: install Debian's nginx-light (apt-get install nginx-light)",
            )?;
            let database_urls = cluster::create_databases(&database_url, &name).await?;
            let settings = Settings {
                stubs,
                nginx,
                dir: dir.clone(),
                port,
                database_urls,
                nats_url,
                nats_prefix: name,
                jwt_secret: jwt_secret(),
                replicas: replicas.into_iter().collect::<BTreeMap<_, _>>(),
                env: Vec::new(),
            };
            let running = Cluster::start(settings).await?;
            let state = running.detach()?;
            eprintln!(
                "cluster: {} processes and nginx running; logs in {}",
                state.processes.len(),
                dir.join("logs").display()
            );
            println!("{}", state.base_url);
            Ok(())
        }
        Command::Stop {
            dir,
            drop_databases,
        } => {
            let path = State::path(&dir);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("no cluster state at {}", path.display()))?;
            let state: State = serde_json::from_str(&text)?;
            stop(&state).await;
            if drop_databases {
                for url in state.databases.values() {
                    cluster::drop_database(url).await?;
                }
            }
            std::fs::remove_file(&path)?;
            Ok(())
        }
    }
}

/// SIGTERM to every service and to nginx; SIGKILL to whatever is still there 30 seconds later,
/// nginx's workers included.
async fn stop(state: &State) {
    let mut pids: Vec<(String, u32)> = state
        .processes
        .iter()
        .map(|process| (process.name.clone(), process.pid))
        .collect();
    for (_, pid) in &pids {
        let _ = signal(*pid, "TERM");
    }
    // Stopped with the services, nginx has nothing left to drain.
    if state.nginx_pid != 0 {
        let _ = signal(state.nginx_pid, "TERM");
        pids.push(("nginx".into(), state.nginx_pid));
    }
    // nginx runs in a process group of its own, so its workers are found by the group.
    let ingress_left = || state.nginx_pid != 0 && !group_members(state.nginx_pid).is_empty();
    for _ in 0..300 {
        pids.retain(|(_, pid)| pid_alive(*pid));
        if pids.is_empty() && !ingress_left() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, pid) in pids {
        eprintln!("cluster: {name} ({pid}) ignored SIGTERM; killing it");
        let _ = signal(pid, "KILL");
    }
    if ingress_left() {
        eprintln!("cluster: nginx's workers outlived SIGTERM; killing them");
        let _ = signal_group(state.nginx_pid, "KILL");
    }
}

/// The operator's `STUBS_JWT_SECRET`, or a fresh random one shared by this cluster's processes.
fn jwt_secret() -> String {
    std::env::var("STUBS_JWT_SECRET").unwrap_or_else(|_| {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    })
}

//! Processes: signals by id through `kill(1)` and liveness from `/proc`, so that `stop` can end
//! processes an earlier `start` left running; waiting for one with a deadline; the log files they
//! append to; and whether we run as root.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Sends a signal by name (`TERM`, `KILL`, `INT`, `STOP`, `CONT`) to a process.
pub fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    kill(name, &pid.to_string())
}

/// Sends a signal by name to every process of a process group, such as nginx's master and its
/// workers, which outlive a master that is killed alone.
pub fn signal_group(pgid: u32, name: &str) -> anyhow::Result<()> {
    kill(name, &format!("-{pgid}"))
}

/// `kill -<name> -- <target>`: a process id, or a group's as `-<pgid>`.
fn kill(name: &str, target: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([&format!("-{name}"), "--", target])
        .stderr(Stdio::null())
        .status()
        .context("cannot run kill")?;
    if !status.success() {
        bail!("kill -{name} -- {target} failed: no such process?");
    }
    Ok(())
}

/// The process group of a process that runs; `None` for one that does not (a zombie, exited but
/// not yet reaped, does not count).
fn running_in_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which is in parentheses and may hold spaces: state, parent, group.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (state, group) = (*fields.first()?, fields.get(2)?);
    (state != "Z" && state != "X")
        .then(|| group.parse().ok())
        .flatten()
}

/// The processes still running in a process group.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| running_in_group(pid) == Some(pgid))
        .collect()
}

/// Whether a process runs.
pub fn pid_alive(pid: u32) -> bool {
    running_in_group(pid).is_some()
}

/// The last lines of a log file, to say why something did not start.
pub(crate) fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) fn append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// `/proc/self` belongs to the user the process runs as.
pub(crate) fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

pub(crate) async fn wait_with_timeout(
    mut child: Child,
    timeout: Duration,
) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("still running after {timeout:?}; killed");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

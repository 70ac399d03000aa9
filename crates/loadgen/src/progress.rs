//! A progress line on stderr while a phase runs: rewritten in place on a terminal, one line
//! every few seconds into a log.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A running progress line; [`Progress::finish`] prints its last state.
pub(crate) struct Progress {
    stop: Arc<Notify>,
    task: JoinHandle<()>,
}

type Line = Arc<dyn Fn() -> String + Send + Sync>;

impl Progress {
    /// Prints `[label] <elapsed> <line()>` now and then until finished.
    pub(crate) fn start(
        label: &'static str,
        line: impl Fn() -> String + Send + Sync + 'static,
    ) -> Self {
        Self::start_named(label.to_owned(), line)
    }

    /// [`Progress::start`] with a label made at run time.
    pub(crate) fn start_named(
        label: String,
        line: impl Fn() -> String + Send + Sync + 'static,
    ) -> Self {
        let line: Line = Arc::new(line);
        let stop = Arc::new(Notify::new());
        let terminal = std::io::stderr().is_terminal();
        let every = if terminal {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        };
        let started = Instant::now();
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                loop {
                    tokio::select! {
                        () = stop.notified() => break,
                        () = tokio::time::sleep(every) => print(&label, started, &line, terminal, false),
                    }
                }
                print(&label, started, &line, terminal, true);
            }
        });
        Self { stop, task }
    }

    pub(crate) async fn finish(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

fn print(label: &str, started: Instant, line: &Line, terminal: bool, last: bool) {
    let text = format!(
        "[{label}] {:>6.1}s {}",
        started.elapsed().as_secs_f64(),
        line()
    );
    let mut stderr = std::io::stderr().lock();
    let _ = if terminal {
        write!(stderr, "\r\x1b[2K{text}{}", if last { "\n" } else { "" })
    } else {
        writeln!(stderr, "{text}")
    };
    let _ = stderr.flush();
}

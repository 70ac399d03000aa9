//! Sign-ups and sign-ins for `--duration` each. Both hash or verify a password with argon2id on
//! the server, which is deliberately costly: these rates are bound by the server's CPU, not by
//! its I/O.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Context;
use crate::progress::Progress;
use crate::report::ScenarioReport;
use crate::stats::{Operation, Pacer, per_second};

struct Accounts {
    ctx: Arc<Context>,
    signup: Operation,
    signin: Operation,
    created: Mutex<Vec<String>>,
    next: AtomicUsize,
}

pub(crate) async fn run(ctx: &Arc<Context>) -> ScenarioReport {
    let accounts = Arc::new(Accounts {
        ctx: Arc::clone(ctx),
        signup: Operation::new("POST /api/users/signup", &[201]),
        signin: Operation::new("POST /api/users/signin", &[200]),
        created: Mutex::new(Vec::new()),
        next: AtomicUsize::new(0),
    });
    let half = ctx.settings.duration / 2;
    let started = Instant::now();
    let progress = Progress::start("auth", {
        let accounts = Arc::clone(&accounts);
        move || {
            format!(
                "sign-ups {}, sign-ins {}, errors {}",
                accounts.signup.count(),
                accounts.signin.count(),
                accounts.signup.errors() + accounts.signin.errors()
            )
        }
    });
    phase(&accounts, half, Phase::SignUp).await;
    let signup_time = started.elapsed();
    let emails = accounts.created.lock().map_or(0, |c| c.len());
    if emails > 0 {
        phase(&accounts, half, Phase::SignIn).await;
    }
    let signin_time = started.elapsed().saturating_sub(signup_time);
    progress.finish().await;

    let mut report = ScenarioReport::new("auth", "sign-up and sign-in");
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.operations = vec![accounts.signup.summary(), accounts.signin.summary()];
    report.figures = vec![
        (
            "signup_per_s",
            per_second(accounts.signup.count(), signup_time),
        ),
        (
            "signin_per_s",
            per_second(accounts.signin.count(), signin_time),
        ),
    ];
    report.notes.push(
        "each sign-up and sign-in runs argon2id on the server, by design costly in CPU".into(),
    );
    if emails == 0 {
        report
            .notes
            .push("no sign-up succeeded, so there was nobody to sign in".into());
    }
    report
}

#[derive(Clone, Copy)]
enum Phase {
    SignUp,
    SignIn,
}

async fn phase(accounts: &Arc<Accounts>, length: Duration, phase: Phase) {
    let until = Instant::now() + length;
    let pacer = Arc::new(Pacer::new(accounts.ctx.settings.rate));
    let workers: Vec<_> = (0..accounts.ctx.settings.concurrency)
        .map(|_| {
            let accounts = Arc::clone(accounts);
            let pacer = Arc::clone(&pacer);
            tokio::spawn(async move {
                loop {
                    let due = pacer.next_slot().await;
                    if Instant::now() >= until {
                        break;
                    }
                    let n = accounts.next.fetch_add(1, Ordering::Relaxed);
                    match phase {
                        Phase::SignUp => sign_up(&accounts, due, n).await,
                        Phase::SignIn => sign_in(&accounts, due, n).await,
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
}

async fn sign_up(accounts: &Accounts, due: Instant, n: usize) {
    let email = format!("visitor-{}-{n}@loadgen.test", accounts.ctx.run_id);
    let call = accounts.ctx.api.sign_up(&email).await;
    accounts.signup.record_since(due, &call);
    if call.status() == Some(201)
        && let Ok(mut created) = accounts.created.lock()
    {
        created.push(email);
    }
}

async fn sign_in(accounts: &Accounts, due: Instant, n: usize) {
    let email = match accounts.created.lock() {
        Ok(created) if !created.is_empty() => created[n % created.len()].clone(),
        _ => return,
    };
    let call = accounts.ctx.api.sign_in(&email).await;
    accounts.signin.record_since(due, &call);
}

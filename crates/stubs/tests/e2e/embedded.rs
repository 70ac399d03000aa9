//! `stubs up` as an operator runs it: the real binary, a data folder, a port of its own.

use std::process::Command;

use crate::support::Process;
use serde_json::{Value, json};

fn start_up(data_dir: &std::path::Path) -> Process {
    Process::start(
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data_dir.display().to_string(),
        ],
        &[],
    )
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_marketplace_runs_in_one_process_and_keeps_sessions_and_data_across_restarts() {
    let data = tempfile::tempdir().unwrap();
    let marketplace = start_up(data.path());
    let http = reqwest::Client::new();
    let base = marketplace.base.clone();

    let signup = http
        .post(format!("{base}/api/users/signup"))
        .json(&json!({"email": "seller@example.com", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    let cookie = signup
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let listing = |base: &str| {
        http.post(format!("{base}/api/tickets"))
            .header("cookie", &cookie)
            .header("idempotency-key", "list-the-concert")
            .json(&json!({"title": "Concert", "price": 19.99}))
    };
    let (status, ticket) = send(listing(&base)).await;
    assert_eq!(status, 201);
    assert_eq!(ticket["price"], json!(19.99));
    let (status, _) = send(http.get(format!("{base}/readyz"))).await;
    assert_eq!(status, 200);
    assert!(
        marketplace.stop(),
        "stubs up did not exit cleanly on SIGTERM"
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join("jwt-secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let restarted = start_up(data.path());
    let base = restarted.base.clone();
    let (_, me) = send(
        http.get(format!("{base}/api/users/currentuser"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(me["currentUser"]["email"], "seller@example.com");
    let (status, again) = send(listing(&base)).await;
    assert_eq!(
        (status, &again),
        (201, &ticket),
        "the retry is answered from before the restart"
    );
    let (_, listed) = send(http.get(format!("{base}/api/tickets"))).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], ticket["id"]);
    assert!(restarted.stop());
}

#[test]
fn serve_refuses_to_start_without_a_jwt_secret_naming_the_setting() {
    let output = Command::new(env!("CARGO_BIN_EXE_stubs"))
        .args(["serve", "tickets", "--database-url", "sqlite::memory:"])
        .env_remove("STUBS_JWT_SECRET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("STUBS_JWT_SECRET"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// What `stubs up` with these settings says as it refuses to start (asserting it does).
fn refusal_at_start(settings: &[&str]) -> String {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_stubs"))
        .args(["up", "--listen", "127.0.0.1:0"])
        .args(settings)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_short_jwt_secret_is_refused_at_start() {
    let stderr = refusal_at_start(&["--jwt-secret", "short"]);
    assert!(stderr.contains("at least 32 characters"), "{stderr}");
}

#[test]
fn an_inbox_retention_shorter_than_redeliveries_last_is_refused_at_start() {
    let stderr = refusal_at_start(&["--event-ack-wait", "2m", "--inbox-retention", "15m"]);
    assert!(stderr.contains("--inbox-retention"), "{stderr}");
    assert!(stderr.contains("at least 21m 40s"), "{stderr}");
}

//! The local cluster under faults, with purchases flowing through nginx: service processes
//! killed at random moments, the NATS server restarted, PostgreSQL stopped for a few seconds.
//! Each test runs a PostgreSQL (`initdb` into a temporary folder) and a nats-server of its own,
//! so stopping them touches nothing else, and ends by checking the marketplace's promises in
//! every service's database: no ticket sold twice, every paid order complete, every expired
//! order cancelled and its ticket released, no event lost, no charge kept without a complete
//! order.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::invariants::{assert_settled, violations};
use crate::support::traffic::{Tally, Traffic};
use cluster::servers::{OwnNats, OwnPostgres};
use cluster::{Cluster, InstanceId, Service};
use rand::Rng;
use rand::seq::IndexedRandom;
use tokio::time::sleep;

/// Short enough that orders expire while the faults happen.
const WINDOW: &str = "2s";
const BUYERS: usize = 12;

/// One rig at a time: a test that kills and restarts processes frees their ports for moments,
/// and another rig starting then could take one and receive the first rig's traffic.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cluster on servers of its own.
struct Rig {
    /// Taken when the cluster stops; the servers stay up for a last look.
    cluster: Option<Cluster>,
    databases: BTreeMap<String, String>,
    nats: OwnNats,
    postgres: OwnPostgres,
    _dirs: Vec<tempfile::TempDir>,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Rig {
    async fn start() -> Self {
        Self::with_window(WINDOW).await
    }

    async fn with_window(window: &str) -> Self {
        let turn = ONE_AT_A_TIME.lock().await;
        // PostgreSQL runs as its own user when the tests run as root: its folder stands alone.
        let postgres_dir = tempfile::Builder::new()
            .prefix("stubs-pg-")
            .tempdir()
            .unwrap();
        let mut postgres = OwnPostgres::init(postgres_dir.path()).unwrap();
        postgres.start().unwrap();
        let nats_dir = tempfile::tempdir().unwrap();
        let nats = OwnNats::start(nats_dir.path()).unwrap();
        let databases = cluster::create_databases(&postgres.url("postgres"), "stubs")
            .await
            .unwrap();
        let cluster_dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::start(cluster::Settings {
            stubs: env!("CARGO_BIN_EXE_stubs").into(),
            nginx: crate::support::nginx(),
            dir: cluster_dir.path().to_owned(),
            port: 0,
            database_urls: databases.clone(),
            nats_url: nats.url(),
            nats_prefix: "stubs".into(),
            jwt_secret: crate::support::SECRET.into(),
            replicas: BTreeMap::new(),
            env: vec![
                ("STUBS_AUTH_ATTEMPTS_PER_MINUTE".into(), "0".into()),
                ("STUBS_ORDER_EXPIRATION".into(), window.into()),
                // What a crashed consumer held comes back within seconds.
                ("STUBS_EVENT_ACK_WAIT".into(), "3s".into()),
                // A charge whose request the faults cut short is settled within seconds.
                ("STUBS_PAYMENT_CLAIM_TIMEOUT".into(), "3s".into()),
                ("RUST_LOG".into(), "warn".into()),
            ],
        })
        .await
        .unwrap();
        Self {
            cluster: Some(cluster),
            databases,
            nats,
            postgres,
            _dirs: vec![postgres_dir, nats_dir, cluster_dir],
            _turn: turn,
        }
    }

    fn cluster(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("the cluster is running")
    }

    fn base_url(&self) -> String {
        self.cluster
            .as_ref()
            .expect("the cluster is running")
            .base_url()
    }

    /// Every process's id, to tell whether any was restarted.
    fn pids(&self) -> Vec<Option<u32>> {
        let cluster = self.cluster.as_ref().expect("the cluster is running");
        cluster
            .instances()
            .into_iter()
            .map(|id| cluster.pid(id))
            .collect()
    }

    fn traffic(&self) -> Traffic {
        Traffic::start(&self.base_url(), BUYERS)
    }

    /// Lets the traffic run until it has placed `orders` more orders.
    async fn until_orders(&self, traffic: &Traffic, orders: u64) {
        let goal = traffic.orders_placed() + orders;
        for _ in 0..600 {
            if traffic.orders_placed() >= goal {
                return;
            }
            sleep(Duration::from_millis(100)).await;
        }
        panic!("the traffic did not place {orders} orders within a minute");
    }

    /// Stops the traffic, checks every promise, then stops the cluster as an orchestrator
    /// would and expects every process to exit cleanly.
    async fn finish(&mut self, traffic: Traffic) -> Tally {
        let tally = traffic.stop().await;
        eprintln!("{tally}");
        assert_settled(&self.databases, &tally.paid_orders, Duration::from_secs(60)).await;
        let cluster = self.cluster.take().expect("the cluster is running");
        for (instance, status) in cluster.stop().await.unwrap() {
            assert!(
                status.success(),
                "{instance} exited with {status} on SIGTERM"
            );
        }
        tally
    }
}

testkit::distributed_test! {
    async fn killing_service_processes_at_random_moments_loses_nothing() {
        let mut rig = Rig::start().await;
        let traffic = rig.traffic();
        rig.until_orders(&traffic, 10).await;

        let instances: Vec<InstanceId> = rig.cluster().instances();
        for _ in 0..12 {
            let (victim, before, down) = {
                let mut rng = rand::rng();
                (
                    *instances.choose(&mut rng).unwrap(),
                    rng.random_range(200..1500),
                    rng.random_range(0..1000),
                )
            };
            sleep(Duration::from_millis(before)).await;
            rig.cluster().kill(victim).unwrap();
            sleep(Duration::from_millis(down)).await;
            rig.cluster().restart(victim).await.unwrap();
        }
        rig.until_orders(&traffic, 10).await;

        let tally = rig.finish(traffic).await;
        assert!(tally.payments > 0, "no purchase completed: {tally}");
    }
}

testkit::distributed_test! {
    async fn restarting_nats_mid_flow_loses_no_event() {
        let mut rig = Rig::start().await;
        let traffic = rig.traffic();
        rig.until_orders(&traffic, 10).await;

        rig.nats.kill().unwrap();
        sleep(Duration::from_secs(3)).await;
        rig.nats.start_again().unwrap();
        // Purchases go on after the restart, through the same processes.
        rig.until_orders(&traffic, 20).await;

        let tally = rig.finish(traffic).await;
        assert!(tally.payments > 0, "no purchase completed: {tally}");
        assert_the_check_notices_a_released_paid_ticket(&rig.databases, &tally.paid_orders).await;
    }
}

/// The invariant check can fail: a paid order's ticket released behind its back (as a late
/// cancellation once did) is reported.
async fn assert_the_check_notices_a_released_paid_ticket(
    databases: &BTreeMap<String, String>,
    paid: &[String],
) {
    let tickets = sqlx::PgPool::connect(&databases["tickets"]).await.unwrap();
    let released: String = sqlx::query_scalar(
        "UPDATE tickets SET order_id = NULL \
         WHERE id = (SELECT id FROM tickets WHERE order_id = ANY($1) LIMIT 1) \
         RETURNING id",
    )
    .bind(paid)
    .fetch_one(&tickets)
    .await
    .unwrap();
    let found = violations(databases, paid).await;
    assert!(found.iter().any(|v| v.contains(&released)), "{found:?}");
}

testkit::distributed_test! {
    async fn stopping_postgres_gives_503_then_the_services_recover_by_themselves() {
        let mut rig = Rig::start().await;
        let traffic = rig.traffic();
        rig.until_orders(&traffic, 10).await;
        let pids: Vec<Option<u32>> =
            rig.pids();

        rig.postgres.stop("fast").unwrap();
        let http = reqwest::Client::new();
        let listing = http
            .get(format!("{}/api/tickets", rig.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(listing.status(), 503);
        let body: serde_json::Value = listing.json().await.unwrap();
        assert!(body["errors"][0]["message"].is_string(), "{body}");
        let orders = InstanceId { service: Service::Orders, replica: 0 };
        let ready = http
            .get(format!("{}/readyz", rig.cluster().instance_url(orders).unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 503);
        sleep(Duration::from_secs(4)).await;
        rig.postgres.start().unwrap();

        rig.until_orders(&traffic, 20).await;
        let after: Vec<Option<u32>> =
            rig.pids();
        assert_eq!(pids, after, "a service had to be restarted");
        // A charge made just before the database went away is left behind a pending claim: the
        // reconciler settles or refunds it once the claim times out.
        let tally = rig.finish(traffic).await;
        assert!(tally.unavailable_in_shape > 0, "no 503 seen during the outage: {tally}");
    }
}

testkit::distributed_test! {
    async fn a_consumer_that_crashes_after_its_effect_and_before_its_ack_applies_it_once() {
        // The order stays unpaid and must not expire while the test looks at its ticket.
        let mut rig = Rig::with_window("10m").await;
        let replicas = [0, 1].map(|replica| InstanceId { service: Service::Tickets, replica });
        for id in replicas {
            rig.cluster()
                .restart_with(id, &[("STUBS_CRASH_BEFORE_ACK", "tickets_order_created")])
                .await
                .unwrap();
        }
        let market = crate::support::Marketplace::on(&rig.base_url());
        let (seller, buyer) = (market.user(), market.user());
        seller.sign_up(&format!("{}@example.com", uuid::Uuid::new_v4())).await;
        buyer.sign_up(&format!("{}@example.com", uuid::Uuid::new_v4())).await;
        let (_, ticket) = seller
            .post("/api/tickets", serde_json::json!({"title": "Concert", "price": 20}))
            .await;
        let order = testkit::eventually("the order to be placed", || async {
            let (status, order) = buyer
                .post("/api/orders", serde_json::json!({"ticketId": ticket["id"]}))
                .await;
            (status == 201).then_some(order)
        })
        .await;

        // The replica that took order:created reserved the ticket, then died before its ack.
        let mut crashed = None;
        for _ in 0..300 {
            for id in replicas {
                if let Some(status) = rig.cluster().exited(id).unwrap() {
                    crashed = Some((id, status));
                }
            }
            if crashed.is_some() {
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }
        let crashed = crashed.expect("no tickets replica crashed before its ack");
        assert!(!crashed.1.success(), "{} exited cleanly", crashed.0);
        let tickets = sqlx::PgPool::connect(&rig.databases["tickets"]).await.unwrap();
        let held: (Option<String>, i64) =
            sqlx::query_as("SELECT order_id, version FROM tickets WHERE id = $1")
                .bind(ticket["id"].as_str().unwrap())
                .fetch_one(&tickets)
                .await
                .unwrap();
        assert_eq!(held, (Some(order["id"].as_str().unwrap().to_owned()), 1));

        // Back without the fault, the replicas get the unacknowledged event again.
        for id in replicas {
            rig.cluster().restart(id).await.unwrap();
        }
        let mut redelivered = 0.0;
        for _ in 0..300 {
            redelivered = 0.0;
            for id in replicas {
                let url = format!("{}/metrics", rig.cluster().instance_url(id).unwrap());
                let text = reqwest::get(url).await.unwrap().text().await.unwrap();
                redelivered += metric(&text, "stubs_events_redelivered_total", "order:created");
            }
            if redelivered >= 1.0 {
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }
        assert!(redelivered >= 1.0, "order:created was not delivered again");

        // Applied once: still held by that order at version 1, and the one ticket:updated it
        // announced brought the orders' replica to version 1 too.
        assert_settled(&rig.databases, &[], Duration::from_secs(30)).await;
        let after: (Option<String>, i64) =
            sqlx::query_as("SELECT order_id, version FROM tickets WHERE id = $1")
                .bind(ticket["id"].as_str().unwrap())
                .fetch_one(&tickets)
                .await
                .unwrap();
        assert_eq!(after, held);
    }
}

testkit::distributed_test! {
    async fn a_consumer_that_crashes_in_the_middle_of_a_batch_applies_each_event_once() {
        let mut rig = Rig::with_window("10m").await;
        let replicas = [0, 1].map(|replica| InstanceId { service: Service::Tickets, replica });
        let market = crate::support::Marketplace::on(&rig.base_url());
        let seller = market.user();
        seller.sign_up(&format!("{}@example.com", uuid::Uuid::new_v4())).await;
        let mut tickets = Vec::new();
        for n in 0..5 {
            let (_, ticket) = seller
                .post("/api/tickets", serde_json::json!({"title": format!("Seat {n}"), "price": 20}))
                .await;
            tickets.push(ticket["id"].as_str().unwrap().to_owned());
        }

        // Once orders knows the tickets, and with tickets down, five orders wait on the bus for
        // it, to come as one batch.
        let orders_db = sqlx::PgPool::connect(&rig.databases["orders"]).await.unwrap();
        testkit::eventually("orders to know the five tickets", || async {
            let known: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tickets")
                .fetch_one(&orders_db)
                .await
                .unwrap();
            (known == 5).then_some(())
        })
        .await;
        for id in replicas {
            rig.cluster().kill(id).unwrap();
        }
        let mut orders = BTreeMap::new();
        for ticket in &tickets {
            let buyer = market.user();
            buyer.sign_up(&format!("{}@example.com", uuid::Uuid::new_v4())).await;
            let order = testkit::eventually("the order to be placed", || async {
                let (status, order) =
                    buyer.post("/api/orders", serde_json::json!({"ticketId": ticket})).await;
                (status == 201).then_some(order)
            })
            .await;
            orders.insert(ticket.clone(), order["id"].as_str().unwrap().to_owned());
        }
        // A replica applies a batch, commits, and dies before acknowledging it. The pull stream
        // may hand over a first event alone before the rest have arrived; then the crash is tried
        // again on the redelivery, which brings the others, until a batch of several has crashed.
        let tickets_db = sqlx::PgPool::connect(&rig.databases["tickets"]).await.unwrap();
        let mut largest_batch: i64 = 0;
        for _ in 0..tickets.len() {
            for id in replicas {
                // The batch is waiting: a replica may crash before it is even seen ready.
                let _ = rig
                    .cluster()
                    .restart_with(id, &[("STUBS_CRASH_BEFORE_ACK", "tickets_order_created")])
                    .await;
            }
            let mut crashed = false;
            for _ in 0..300 {
                for id in replicas {
                    if let Some(status) = rig.cluster().exited(id).unwrap() {
                        assert!(!status.success(), "{id} exited cleanly");
                        crashed = true;
                    }
                }
                if crashed {
                    break;
                }
                sleep(Duration::from_millis(100)).await;
            }
            assert!(crashed, "no tickets replica crashed before its ack");
            // The rows of one batch's inbox statement share their time.
            largest_batch = sqlx::query_scalar(
                "SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM inbox \
                 WHERE consumer = 'tickets_order_created' GROUP BY handled_at) AS batches",
            )
            .fetch_one(&tickets_db)
            .await
            .unwrap();
            if largest_batch > 1 {
                break;
            }
        }
        assert!(largest_batch > 1, "the crash never came in the middle of a batch");

        // Back without the fault: the batch comes again whole, and each event is applied once.
        for id in replicas {
            rig.cluster().restart(id).await.unwrap();
        }
        let mut redelivered = 0.0;
        for _ in 0..300 {
            redelivered = 0.0;
            for id in replicas {
                let url = format!("{}/metrics", rig.cluster().instance_url(id).unwrap());
                let text = reqwest::get(url).await.unwrap().text().await.unwrap();
                redelivered += metric(&text, "stubs_events_redelivered_total", "order:created");
            }
            if redelivered >= largest_batch as f64 {
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }
        assert!(
            redelivered >= largest_batch as f64,
            "{redelivered} of the batch of {largest_batch} delivered again"
        );
        assert_settled(&rig.databases, &[], Duration::from_secs(30)).await;
        for (ticket, order) in &orders {
            let held: (Option<String>, i64) =
                sqlx::query_as("SELECT order_id, version FROM tickets WHERE id = $1")
                    .bind(ticket)
                    .fetch_one(&tickets_db)
                    .await
                    .unwrap();
            assert_eq!(held, (Some(order.clone()), 1), "ticket {ticket}");
        }
        let applied: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM inbox WHERE consumer = 'tickets_order_created'",
        )
        .fetch_one(&tickets_db)
        .await
        .unwrap();
        assert_eq!(applied, 5, "each order:created recorded once");
    }
}

/// The value of a counter with a `type` label in Prometheus text, 0 when absent.
fn metric(text: &str, name: &str, event_type: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(&format!("type=\"{event_type}\"")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One process's footprint.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    rss_kib: u64,
    open_files: usize,
}

fn footprint(pid: u32) -> Footprint {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap();
    let open_files = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    Footprint {
        rss_kib,
        open_files,
    }
}

impl Rig {
    /// Every process's footprint, and the connections open on PostgreSQL.
    async fn usage(&self) -> (Vec<(InstanceId, Footprint)>, i64) {
        let cluster = self.cluster.as_ref().expect("the cluster is running");
        let processes = cluster
            .instances()
            .into_iter()
            .map(|id| (id, footprint(cluster.pid(id).unwrap())))
            .collect();
        let admin = sqlx::PgPool::connect(&self.postgres.url("postgres"))
            .await
            .unwrap();
        let connections: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&admin)
        .await
        .unwrap();
        admin.close().await;
        (processes, connections)
    }
}

testkit::distributed_test! {
    /// `STUBS_TEST_SOAK_SECONDS` sets the length (30 s by default; minutes for a real soak).
    async fn mixed_traffic_leaves_memory_and_connections_flat() {
        let seconds: u64 = std::env::var("STUBS_TEST_SOAK_SECONDS")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(30);
        let mut rig = Rig::start().await;
        let traffic = Traffic::mixed(&rig.base_url(), BUYERS, 8);
        // Pools, caches and the allocator settle in the first third.
        sleep(Duration::from_secs(seconds / 3)).await;
        let (early, early_connections) = rig.usage().await;
        sleep(Duration::from_secs(seconds - seconds / 3)).await;
        let (late, late_connections) = rig.usage().await;
        let tally = rig.finish(traffic).await;

        eprintln!("process        RSS KiB (after 1/3 -> end)   open files");
        for ((id, before), (_, after)) in early.iter().zip(&late) {
            eprintln!(
                "{:<14} {:>8} -> {:<8}           {:>4} -> {}",
                id.to_string(),
                before.rss_kib,
                after.rss_kib,
                before.open_files,
                after.open_files
            );
        }
        eprintln!("PostgreSQL connections: {early_connections} -> {late_connections}");
        assert!(tally.payments > 0, "no purchase completed: {tally}");
        for ((id, before), (_, after)) in early.iter().zip(&late) {
            assert!(
                after.rss_kib <= before.rss_kib + before.rss_kib / 4 + 16 * 1024,
                "{id} grew from {} to {} KiB",
                before.rss_kib,
                after.rss_kib
            );
            assert!(
                after.open_files <= before.open_files + 16,
                "{id} went from {} to {} open files",
                before.open_files,
                after.open_files
            );
        }
        assert!(
            late_connections <= early_connections + 16,
            "PostgreSQL connections grew from {early_connections} to {late_connections}"
        );
    }
}

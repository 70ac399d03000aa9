//! Tests against PostgreSQL or NATS run only where their URL is set; elsewhere they are compiled
//! as ignored, so `cargo test` lists them as skipped with the reason.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(stubs_postgres)");
    println!("cargo::rustc-check-cfg=cfg(stubs_nats)");
    println!("cargo::rerun-if-env-changed=STUBS_TEST_DATABASE_URL");
    println!("cargo::rerun-if-env-changed=STUBS_TEST_NATS_URL");
    if std::env::var_os("STUBS_TEST_DATABASE_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=stubs_postgres");
    }
    if std::env::var_os("STUBS_TEST_NATS_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=stubs_nats");
    }
}

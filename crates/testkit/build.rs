//! Tests against PostgreSQL or NATS run only where their URL is set, and browser tests only where
//! Debian's Chromium and ChromeDriver are installed; elsewhere they are compiled as ignored, so
//! `cargo test` lists them as skipped with the reason.

use std::path::Path;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(stubs_postgres)");
    println!("cargo::rustc-check-cfg=cfg(stubs_nats)");
    println!("cargo::rustc-check-cfg=cfg(stubs_browser)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed={CHROMIUM}");
    println!("cargo::rerun-if-changed={CHROMEDRIVER}");
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        println!("cargo::rustc-cfg=stubs_browser");
    }
    println!("cargo::rerun-if-env-changed=STUBS_TEST_DATABASE_URL");
    println!("cargo::rerun-if-env-changed=STUBS_TEST_NATS_URL");
    if std::env::var_os("STUBS_TEST_DATABASE_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=stubs_postgres");
    }
    if std::env::var_os("STUBS_TEST_NATS_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=stubs_nats");
    }
}

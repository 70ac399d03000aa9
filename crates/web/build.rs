//! The browser tests run only where Debian's Chromium and ChromeDriver are installed; elsewhere
//! [`browser_test!`] compiles them as ignored, so `cargo test` lists them as skipped with the
//! reason.

use std::path::Path;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(stubs_browser)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed={CHROMIUM}");
    println!("cargo::rerun-if-changed={CHROMEDRIVER}");
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        println!("cargo::rustc-cfg=stubs_browser");
    }
}

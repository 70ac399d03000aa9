//! Tests against a Stripe-compatible server run only where `STUBS_TEST_STRIPE_API_BASE` was set
//! when they were built; elsewhere they are compiled as ignored, so `cargo test` lists them as
//! skipped with the reason.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(stubs_stripe)");
    println!("cargo::rerun-if-env-changed=STUBS_TEST_STRIPE_API_BASE");
    if std::env::var_os("STUBS_TEST_STRIPE_API_BASE").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=stubs_stripe");
    }
}

//! Marks the broker tests ignored when no test broker is configured, so that a skip shows
//! in the test summary ("N ignored", each with its reason) instead of passing as "ok"
//! having done nothing. In CI (`CI=true`) they are never ignored: there a missing broker
//! fails them loudly (`tests/it/broker.rs`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(no_test_broker)");
    println!("cargo::rerun-if-env-changed=WEATHERFLOW_TEST_BROKERS");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-changed=build.rs");
    let configured = std::env::var("WEATHERFLOW_TEST_BROKERS").is_ok_and(|b| !b.trim().is_empty());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !configured && !ci {
        println!("cargo::rustc-cfg=no_test_broker");
    }
}

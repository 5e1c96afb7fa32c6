//! The demo's steps, non-interactively (what `cargo xtask demo --once` does): the whole system
//! backs up a real OpenSearch into a real S3 server on a schedule and restores a lost index.
//!
//! Needs `cargo xtask testbed`, `cargo xtask search-testbed` and the workspace binaries
//! (`cargo xtask test` does all three).

#[tokio::test]
async fn the_demo_backs_up_on_schedule_and_restores_a_lost_index() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let demo = cairn_tests::demo::run()
        .await
        .expect("every demo step succeeds");
    assert_eq!(demo.report.len(), 4, "{:?}", demo.report);
    assert!(
        demo.report[0].contains("made snapshot"),
        "{:?}",
        demo.report
    );
    assert!(demo.report[3].contains("has all"), "{:?}", demo.report);
    let summary = demo.summary();
    assert!(summary.contains("--kubeconfig"), "{summary}");
}

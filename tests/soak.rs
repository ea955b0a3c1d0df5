//! `lakectl soak`, short: the shipped pipeline at once under random SIGKILLs for two minutes,
//! then drained and every table checked against what was produced (see the README for the
//! long run).

use e2e_tests::*;

#[test]
fn the_pipeline_under_random_sigkills_loses_nothing_and_doubles_nothing() {
    let services = Services::get();
    let (orders, members) = (unique("soak-orders"), unique("soak-members"));
    let p = Pipeline::shipped(&services, None, &orders, &members);
    p.edit("interval = \"10s\"", "interval = \"2s\"");
    let config = p.config.to_str().unwrap();
    let args = ["soak", "--config", config, "--duration", "120s", "--kill-min", "200ms", "--kill-max", "1s"];
    let r = run("lakectl", &[&args[..], &["--min-kills", "30", "--orders-per-second", "50", "--seed", "3"]].concat(), &[]);
    assert_eq!(r.code, Some(0), "the soak passed: {}\n{}", r.summary, r.stderr.lines().rev().take(20).collect::<Vec<_>>().join("\n"));
    let report = &r.summary;
    assert_eq!(report["passed"], true, "{report}");
    assert!(report["kills"].as_u64() >= Some(30), "at least 30 processes killed mid-run: {report}");
    for job in ["raw-append", "stream-join", "merge-upsert"] {
        assert!(report["runs"][job]["killed"].as_u64() > Some(0), "{job} was killed: {report}");
        assert!(report["runs"][job]["unexpected"].as_array().is_some_and(Vec::is_empty), "{report}");
    }
    let checks = report["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 6, "{report}");
    assert!(checks.iter().all(|c| c["passed"] == true), "{report}");
    assert!(report["produced"]["orders"].as_u64() >= Some(5000), "{report}");
}

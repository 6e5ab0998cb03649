//! The README's first command, `edgefleet demo`, tells its story: a healthy
//! version reaches every device in gated waves, a drifting candidate is
//! rolled back by itself, every device ends on a working model.

use std::process::Command;

use serde_json::Value;

use crate::support::*;

#[test]
fn demo_tells_its_story() {
    let dir = tempdir("demo");
    let summary = dir.join("summary.json");
    let out = Command::new(bin())
        .args(["demo", "--devices", "12", "--listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--summary")
        .arg(&summary)
        .output()
        .expect("demo runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary")).expect("json");
    assert_eq!(s["story_ok"], true, "{s:#}");
    let states: Vec<(&str, &str)> = s["rollouts"]
        .as_array()
        .expect("rollouts")
        .iter()
        .map(|r| (r["version"].as_str().unwrap_or(""), r["state"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        states,
        [("ad 1.0", "completed"), ("kws 1.0", "completed"), ("kws 2.0", "completed"), ("kws 3.0", "rolled_back")]
    );
    let devices: u64 = s["devices"].as_array().expect("devices").iter().filter_map(|d| d["devices"].as_u64()).sum();
    assert_eq!(devices, 12);
    assert!(log.contains("gate_failed") && log.contains("drift_psi"), "{log}");
    assert!(log.contains("dashboard: http://127.0.0.1:"), "{log}");
    // A second run replaces the first one's directory (and only a demo's).
    std::fs::create_dir_all(dir.join("other")).expect("dir");
    let out = Command::new(bin()).args(["demo", "--data-dir"]).arg(dir.join("other")).output().expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("was not made by `edgefleet demo`"));
}

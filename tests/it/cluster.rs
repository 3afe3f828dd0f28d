//! Worker-count independence: the same input gives byte-identical sorted output with
//! `-w 1`, `-w 2`, `-w 4` and two processes × two workers on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{arg, hostfile, run_binary, sorted_lines, spawn, wait};

fn two_processes(dir: &Path, args: &[String], name: &str) -> Vec<String> {
    let hostfile = hostfile(dir, name);
    let output = dir.join(format!("{name}-cluster-{{process}}.jsonl"));
    let children: Vec<_> = (0..2)
        .map(|p| {
            let mut a = args.to_vec();
            a.extend(
                [
                    "-n",
                    "2",
                    "-p",
                    &p.to_string(),
                    "-w",
                    "2",
                    "-h",
                    &arg(&hostfile),
                    "--output",
                    &arg(&output),
                ]
                .map(String::from),
            );
            spawn(&a)
        })
        .collect();
    for child in children {
        let out = wait(child, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "cluster process failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut lines: Vec<String> = (0..2)
        .flat_map(|p| sorted_lines(&dir.join(format!("{name}-cluster-{p}.jsonl"))))
        .collect();
    lines.sort();
    lines
}

fn check_independence(dir: &Path, args: Vec<String>, name: &str) {
    let mut reference: Option<Vec<String>> = None;
    for workers in ["1", "2", "4"] {
        let output: PathBuf = dir.join(format!("{name}-w{workers}.jsonl"));
        let mut a = args.clone();
        a.extend(["-w", workers, "--output", &arg(&output)].map(String::from));
        run_binary(&a);
        let lines = sorted_lines(&output);
        assert!(lines.len() > 100, "{name}: enough windows to compare");
        match &reference {
            None => reference = Some(lines),
            Some(r) => assert!(r == &lines, "{name}: -w {workers} differs from -w 1"),
        }
    }
    let cluster = two_processes(dir, &args, name);
    assert!(
        reference.as_ref() == Some(&cluster),
        "{name}: -n 2 -w 2 differs from -w 1"
    );
}

#[test]
fn generator_output_is_independent_of_workers_and_processes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = [
        "--source",
        "generator",
        "--stations",
        "37",
        "--events",
        "40000",
        "--speed",
        "max",
        "--seed",
        "7",
        "--start",
        "2026-11-20T00:00:00Z",
    ];
    check_independence(dir.path(), args.map(String::from).to_vec(), "generator");
}

#[test]
fn file_replay_with_late_and_duplicate_data_is_independent_of_workers_and_processes() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The generator's own output, with its duplicates, re-deliveries and bad values,
    // shuffled locally so that lines arrive out of order.
    let raw = dir.path().join("raw.jsonl");
    let mut lines = Vec::new();
    let mut state = 0x1234_5678_u64;
    for i in 0..6000u64 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let station = (state >> 33) % 23;
        let jitter = (state >> 20) % 9_000;
        let late = if (state >> 40).is_multiple_of(50) { 120_000 } else { 0 };
        let t = 1_795_132_800_000 + i * 1_500 - jitter - late;
        let temp = ((state >> 8) % 4000) as f64 / 100.0 - 10.0;
        lines.push(format!(
            r#"{{"station_id":"s{station}","timestamp":{t},"temperature":{temp:.2},"humidity":{:.1}}}"#,
            50.0 + (i % 40) as f64
        ));
        if i % 97 == 0 {
            lines.push(lines[lines.len() - 1].clone());
        }
    }
    std::fs::write(&raw, lines.join("\n") + "\n").expect("write input");
    let args = vec![
        "--source".into(),
        "file".into(),
        "--input".into(),
        arg(&raw),
        "--chunk-bytes".into(),
        "8192".into(),
    ];
    check_independence(dir.path(), args, "file");
}

//! Helpers shared by the integration tests: running the job in-process or as a binary
//! with a deadline (never a sleep), and reading its output.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;
use weatherflow::config::{Cli, Command as Sub};
use weatherflow::run::Summary;
use weatherflow::schema::WindowFeatures;

/// Runs the job in this process with command-line style arguments.
/// Without `--api` in `args` the API is turned off, so parallel tests do not compete for
/// the default port.
pub fn run_in_process(args: &[&str]) -> Summary {
    run_in_process_with(args, Arc::new(AtomicBool::new(false)))
}

/// [`run_in_process`] with a stop flag the test controls.
pub fn run_in_process_with(args: &[&str], stop: Arc<AtomicBool>) -> Summary {
    let no_api = (!args.contains(&"--api")).then_some("--no-api");
    let args = std::iter::once("weatherflow").chain(args.iter().copied()).chain(no_api);
    let cli = Cli::try_parse_from(args).expect("arguments parse");
    let run = match cli.command {
        Some(Sub::Run(run)) => run,
        Some(other) => panic!("not a run command: {other:?}"),
        None => cli.run,
    };
    let config = run.into_config().expect("valid configuration");
    weatherflow::run::run(config, stop).expect("run succeeds")
}

/// Replays `input` with the file source in this process, writing features to `output`.
pub fn replay(input: &Path, output: &Path, workers: &str, extra: &[&str]) -> Summary {
    let (input, output) = (arg(input), arg(output));
    let mut args = vec![
        "-w", workers, "--source", "file", "--input", &input, "--output", &output,
    ];
    args.extend_from_slice(extra);
    run_in_process(&args)
}

/// Starts the real binary; without `--api` in `args` its API is off (see [`run_in_process`]).
pub fn spawn(args: &[String]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weatherflow"));
    if !args.iter().any(|a| a == "--api") {
        command.env("WEATHERFLOW_NO_API", "true");
    }
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts")
}

/// Waits for a child with a deadline; kills it and fails the test when the deadline passes.
pub fn wait(child: Child, deadline: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(output) => output.expect("child output"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("weatherflow (pid {pid}) did not finish within {deadline:?}");
        }
    }
}

/// Runs the binary to completion and asserts it exits 0.
pub fn run_binary(args: &[String]) -> Output {
    let output = wait(spawn(args), Duration::from_secs(120));
    assert!(
        output.status.success(),
        "weatherflow {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The lines of a JSONL file, sorted.
pub fn sorted_lines(path: &Path) -> Vec<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .expect("output readable");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// Parses a features file.
pub fn read_features(path: &Path) -> Vec<WindowFeatures> {
    sorted_lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).expect("valid weather-features line"))
        .collect()
}

/// Writes a two-process hostfile on free localhost ports into `dir`.
pub fn hostfile(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}-hosts.txt"));
    std::fs::write(&path, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).expect("hostfile");
    path
}

/// A localhost port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Path as an owned argument.
pub fn arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `text` without ANSI colour sequences (the log colours field names).
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An SGR sequence: ESC '[' parameters 'm'.
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

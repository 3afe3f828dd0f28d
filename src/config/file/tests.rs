//! The layers of flag > environment > file > default, each winning in turn, and the
//! file's errors. The environment is a map handed to [`parse`], never the process's.

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::config::{Command as Sub, ProduceFrom, RunArgs, SourceKind, StationsArg};

/// A config file in a fresh directory.
struct File {
    dir: tempfile::TempDir,
    path: PathBuf,
}

fn file(text: &str) -> File {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wf.toml");
    std::fs::write(&path, text).unwrap();
    File { dir, path }
}

fn parse_env(args: &[&str], env: &[(&str, &str)]) -> Result<Layered, FileError> {
    let env: HashMap<OsString, OsString> = env.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    parse(args.iter().copied(), &|name| env.get(name).cloned())
}

fn with_file(f: &File, args: &[&str], env: &[(&str, &str)]) -> Result<Layered, FileError> {
    let mut all = vec!["weatherflow"];
    all.extend_from_slice(args);
    all.extend(["--config", f.path.to_str().unwrap()]);
    parse_env(&all, env)
}

fn run(layered: &Layered) -> &RunArgs {
    match &layered.cli.command {
        Some(Sub::Run(args)) => args,
        None => &layered.cli.run,
        Some(other) => panic!("not run: {other:?}"),
    }
}

fn err(result: Result<Layered, FileError>) -> String {
    match result {
        Ok(l) => panic!("expected an error, got {:?}", l.cli),
        Err(e) => e.to_string(),
    }
}

#[test]
fn each_of_the_four_layers_wins_over_the_ones_below() {
    let f = file("workers = 3\nlateness = \"20s\"\n");
    let env = [("WEATHERFLOW_WORKERS", "5")];

    let l = parse_env(&["weatherflow"], &[]).unwrap();
    assert_eq!(run(&l).workers, 1);
    assert_eq!(l.sources["workers"], Source::Default);

    let l = with_file(&f, &[], &[]).unwrap();
    assert_eq!((run(&l).workers, run(&l).lateness), (3, Duration::from_secs(20)));
    assert_eq!(l.sources["workers"], Source::File(1));
    assert_eq!(l.sources["lateness"], Source::File(2));

    let l = with_file(&f, &[], &env).unwrap();
    assert_eq!(run(&l).workers, 5);
    assert_eq!(l.sources["workers"], Source::Env("WEATHERFLOW_WORKERS".into()));
    assert_eq!(
        run(&l).lateness,
        Duration::from_secs(20),
        "other keys still come from the file"
    );

    let l = with_file(&f, &["-w", "7"], &env).unwrap();
    assert_eq!(run(&l).workers, 7);
    assert_eq!(l.sources["workers"], Source::Flag);
    // The same with the explicit `run` subcommand.
    let l = with_file(&f, &["run", "--workers", "7"], &env).unwrap();
    assert_eq!(run(&l).workers, 7);
    assert_eq!(run(&l).lateness, Duration::from_secs(20));
}

#[test]
fn booleans_take_true_or_false_at_every_layer() {
    let f = file("no-ml = true\nlinger = false\n");
    let l = with_file(&f, &[], &[]).unwrap();
    assert!(run(&l).no_ml && !run(&l).linger);
    assert_eq!(l.sources["linger"], Source::File(2));
    // The environment's false hides the file's true; so does a typed `--no-ml=false`.
    let l = with_file(&f, &[], &[("WEATHERFLOW_NO_ML", "false")]).unwrap();
    assert!(!run(&l).no_ml);
    let l = with_file(&f, &["--no-ml=false"], &[]).unwrap();
    assert!(!run(&l).no_ml);
    assert_eq!(l.sources["no-ml"], Source::Flag);
    let l = parse_env(&["weatherflow"], &[("WEATHERFLOW_NO_ML", "true")]).unwrap();
    assert!(run(&l).no_ml);
    let e = err(parse_env(&["weatherflow"], &[("WEATHERFLOW_NO_ML", "yes")]));
    assert!(e.starts_with("environment variable WEATHERFLOW_NO_ML:"), "{e}");
}

#[test]
fn repeatable_flags_take_arrays_and_the_kafka_guard_still_applies() {
    let f = file(
        "brokers = \"h:9092\"\nsource = \"file\"\ninput = [\"/data/a.jsonl\", \"/data/b.jsonl\"]\n\
         kafka-option = [\"security.protocol=SSL\", \"linger.ms=5\"]\ncors-origin = \"https://example.org\"\n",
    );
    let l = with_file(&f, &[], &[]).unwrap();
    let args = run(&l).clone();
    assert_eq!(args.input, ["/data/a.jsonl", "/data/b.jsonl"]);
    assert_eq!(args.api.cors_origins, ["https://example.org"]);
    let config = args.into_config().unwrap();
    let kafka = config.kafka.unwrap();
    assert_eq!(kafka.options.len(), 2);

    let f = file("kafka-option = [\"enable.auto.commit=true\"]\n");
    let args = run(&with_file(&f, &[], &[]).unwrap()).clone();
    let e = args.into_config().unwrap_err().to_string();
    assert!(e.contains("enable.auto.commit"), "{e}");
}

#[test]
fn unknown_keys_name_the_file_the_line_and_the_command() {
    let f = file("workers = 2\n\n# allowed lateness\nlateness_sec = 10\n");
    let e = err(with_file(&f, &[], &[]));
    assert!(e.ends_with("wf.toml:4: unknown key `lateness_sec` for `run`"), "{e}");
    // snake_case is not accepted, but the flag's spelling is suggested.
    let f = file("max_ahead = \"5m\"\n");
    let e = err(with_file(&f, &[], &[]));
    assert!(
        e.ends_with("wf.toml:1: unknown key `max_ahead` for `run` (keys are spelled like the flags: `max-ahead`)"),
        "{e}"
    );
    // A flag of another command is unknown here.
    let f = file("brokers = \"h:1\"\npartitions = 4\n");
    let e = err(with_file(&f, &["serve"], &[]));
    assert!(e.ends_with("wf.toml:2: unknown key `partitions` for `serve`"), "{e}");
    // The file cannot name another file, nor print.
    let f = file("config = \"other.toml\"\n");
    assert!(err(with_file(&f, &[], &[])).contains("unknown key `config`"));
}

#[test]
fn wrong_types_and_values_name_the_line() {
    for (text, expected) in [
        ("workers = \"many\"\n", "wf.toml:1: `workers`: invalid digit"),
        (
            "\nno-ml = \"yes\"\n",
            "wf.toml:2: `no-ml`: expected true or false, found a string",
        ),
        (
            "lateness = [\"1s\"]\n",
            "wf.toml:1: `lateness`: takes one value, found an array",
        ),
        (
            "lateness = \"ten\"\n",
            "wf.toml:1: `lateness`: \"ten\" is not a duration",
        ),
        (
            "source = \"carrier-pigeon\"\n",
            "wf.toml:1: `source`: invalid value 'carrier-pigeon' for '--source <SOURCE>' [possible values: generator, file, kafka]",
        ),
        ("[api]\nhistory = \"1h\"\n", "wf.toml:1: `api`: "),
        (
            "input = [1, [2]]\n",
            "wf.toml:1: `input`: expected an array of strings or numbers, found an array in it",
        ),
    ] {
        let f = file(text);
        let e = err(with_file(&f, &[], &[]));
        assert!(e.contains(expected), "{text:?}: {e}");
    }
    let f = file("workers = \n");
    assert!(matches!(with_file(&f, &[], &[]), Err(FileError::Syntax { .. })));
    let e = err(parse_env(&["weatherflow"], &[("WEATHERFLOW_LATENESS", "soon")]));
    assert!(e.starts_with("environment variable WEATHERFLOW_LATENESS: "), "{e}");
    let missing = PathBuf::from("/nonexistent/wf.toml");
    let e = parse_env(&["weatherflow", "--config", missing.to_str().unwrap()], &[]).unwrap_err();
    assert!(matches!(e, FileError::Read { .. }), "{e:?}");
}

#[test]
fn relative_paths_in_the_file_are_relative_to_its_directory() {
    let f = file(
        "output = \"out/features.jsonl\"\nmodels = \"/opt/models\"\ninput = [\"data/*.jsonl\"]\nstations = \"stations.toml\"\n",
    );
    let l = with_file(&f, &[], &[]).unwrap();
    let dir = std::path::absolute(f.dir.path()).unwrap();
    let args = run(&l);
    assert_eq!(args.output.as_deref(), Some(dir.join("out/features.jsonl").as_path()));
    assert_eq!(args.models.as_deref(), Some(Path::new("/opt/models")));
    assert_eq!(args.input, [dir.join("data/*.jsonl").to_string_lossy()]);
    assert_eq!(
        args.generator.stations,
        StationsArg::Catalogue(dir.join("stations.toml"))
    );
    // A count is not a path; and a typed path stays relative to the working directory.
    let f = file("stations = \"250\"\n");
    let l = with_file(&f, &["--output", "here.jsonl"], &[]).unwrap();
    assert_eq!(run(&l).generator.stations, StationsArg::Count(250));
    assert_eq!(run(&l).output.as_deref(), Some(Path::new("here.jsonl")));
}

#[test]
fn a_typed_flag_silences_the_file_keys_it_conflicts_with() {
    let f = file("from-latest = true\n");
    let l = with_file(&f, &["--from-beginning"], &[]).unwrap();
    assert!(run(&l).from_beginning && !run(&l).from_latest);
    let l = with_file(&f, &[], &[]).unwrap();
    assert!(run(&l).from_latest);
}

#[test]
fn serve_and_produce_read_files_too_and_required_flags_may_come_from_them() {
    let f = file("brokers = \"h:9092\"\napi = \"127.0.0.1:0\"\nfrom-beginning = true\n");
    let l = with_file(&f, &["serve"], &[]).unwrap();
    let Some(Sub::Serve(serve)) = &l.cli.command else {
        panic!("{:?}", l.cli)
    };
    assert_eq!(serve.kafka.brokers.as_deref(), Some("h:9092"));
    assert!(serve.from_beginning);

    // `--from` is required: the file (or the environment) may supply it.
    let f = file("from = \"generator\"\nbrokers = \"h:9092\"\nrate = 50\n");
    let l = with_file(&f, &["produce"], &[]).unwrap();
    let Some(Sub::Produce(produce)) = &l.cli.command else {
        panic!("{:?}", l.cli)
    };
    assert_eq!((produce.from, produce.rate), (ProduceFrom::Generator, 50));
    let l = parse_env(
        &["weatherflow", "produce", "--brokers", "h:1"],
        &[("WEATHERFLOW_PRODUCE_FROM", "file")],
    )
    .unwrap();
    let Some(Sub::Produce(produce)) = &l.cli.command else {
        panic!("{:?}", l.cli)
    };
    assert_eq!(produce.from, ProduceFrom::File);
    let e = parse_env(&["weatherflow", "produce", "--brokers", "h:1"], &[]).unwrap_err();
    assert!(
        matches!(&e, FileError::Cli(c) if c.kind() == clap::error::ErrorKind::MissingRequiredArgument),
        "{e:?}"
    );
}

#[test]
fn other_commands_keep_their_environment_and_have_no_config_flag() {
    let l = parse_env(
        &["weatherflow", "generate", "--events", "5", "--output", "x"],
        &[("WEATHERFLOW_SEED", "7")],
    )
    .unwrap();
    let Some(Sub::Generate(g)) = &l.cli.command else {
        panic!("{:?}", l.cli)
    };
    assert_eq!(g.generator.seed, 7);
    assert!(matches!(
        parse_env(&["weatherflow", "generate", "--config", "x.toml"], &[]),
        Err(FileError::Cli(_))
    ));
}

#[test]
fn help_still_shows_the_environment_variables() {
    let Err(FileError::Cli(e)) = parse_env(&["weatherflow", "--help"], &[]) else {
        panic!("help expected")
    };
    assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
    let text = e.render().to_string();
    assert!(
        text.contains("WEATHERFLOW_WORKERS") && text.contains("--config"),
        "{text}"
    );
}

#[test]
fn print_config_round_trips_through_a_file() {
    let f = file(
        "workers = 3\nlateness = \"20s\"\noutput = \"out.jsonl\"\nkafka-option = [\"client.id=a b\"]\nno-faults = true\n",
    );
    let first = with_file(
        &f,
        &[
            "--print-config",
            "--speed",
            "max",
            "--input",
            "/x.jsonl,/y.jsonl",
            "--hostfile",
            "hosts",
        ],
        &[("WEATHERFLOW_SEED", "9"), ("WEATHERFLOW_LINGER", "false")],
    )
    .unwrap();
    let text = first.print.clone().expect("--print-config prints");
    assert!(text.contains("workers = 3  # file, line 1"), "{text}");
    assert!(text.contains("speed = \"max\"  # flag"), "{text}");
    assert!(text.contains("seed = 9  # environment WEATHERFLOW_SEED"), "{text}");
    assert!(text.contains("source = \"generator\"  # default"), "{text}");
    assert!(text.contains("# brokers (not set)"), "{text}");
    assert!(!text.contains("print-config") && !text.contains("\nconfig"), "{text}");

    // Saved elsewhere and read back with no flags and no environment: the same run.
    let elsewhere = tempfile::tempdir().unwrap();
    let saved = elsewhere.path().join("effective.toml");
    std::fs::write(&saved, &text).unwrap();
    let second = parse_env(&["weatherflow", "--config", saved.to_str().unwrap()], &[]).unwrap();
    // A typed relative path is written out absolute, so it means the same from anywhere.
    let cwd = std::path::absolute(".").unwrap();
    assert_eq!(run(&second).hostfile.as_deref(), Some(cwd.join("hosts").as_path()));
    let normalise = |l: &Layered| {
        let mut args = run(l).clone();
        args.file = ConfigFileArgs::default();
        args.hostfile = args.hostfile.map(|h| cwd.join(h));
        format!("{args:?}")
    };
    assert_eq!(normalise(&first), normalise(&second));
    assert!(second.print.is_none());
    assert_eq!(run(&second).source, SourceKind::Generator);
}

#[test]
fn a_file_named_without_a_directory_resolves_against_the_working_directory() {
    let cwd = std::path::absolute(".").unwrap();
    assert_eq!(base_dir(Path::new("run.toml")), cwd);
    assert_eq!(base_dir(Path::new("etc/run.toml")), cwd.join("etc"));
    assert_eq!(base_dir(Path::new("/etc/wf/run.toml")), Path::new("/etc/wf"));
}

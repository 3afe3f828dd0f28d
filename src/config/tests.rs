//! Flag parsing and validation of `run` and `generate`.

use super::*;
use crate::kafka::Topics;

fn parse(args: &[&str]) -> Result<Config, String> {
    let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
    let run = match cli.command {
        Some(Command::Run(run)) => run,
        Some(_) => return Err("not a run command".into()),
        None => cli.run,
    };
    run.into_config().map_err(|e| e.to_string())
}

#[test]
fn kafka_flags() {
    let err = parse(&["weatherflow", "--source", "kafka"]).unwrap_err();
    assert!(err.contains("--brokers"), "{err}");
    let c = parse(&[
        "weatherflow",
        "--source",
        "kafka",
        "--brokers",
        "h:9092",
        "--kafka-option",
        "security.protocol=SSL",
        "--from-latest",
        "--idle-timeout",
        "2s",
    ])
    .unwrap();
    let kafka = c.kafka.unwrap();
    assert_eq!(kafka.brokers, "h:9092");
    assert_eq!(kafka.options, vec![("security.protocol".into(), "SSL".into())]);
    assert_eq!(kafka.topics, Topics::default());
    match c.source {
        SourceConfig::Kafka(k) => {
            assert_eq!(k.start, StartOffset::Latest);
            assert_eq!(k.idle_timeout, Duration::from_secs(2));
            assert_eq!(k.group, "weatherflow");
        }
        other => panic!("{other:?}"),
    }
    assert!(parse(&["weatherflow", "--from-latest", "--from-beginning"]).is_err());
    assert!(parse(&["weatherflow", "--brokers", "h:1", "--topic", "bad topic"]).is_err());
    assert!(parse(&["weatherflow", "--kafka-option", "novalue"]).is_err());
    // Delivery settings are refused before anything connects, every one named.
    let err = parse(&[
        "weatherflow",
        "--brokers",
        "h:1",
        "--kafka-option",
        "enable.auto.commit=true",
        "--kafka-option",
        "linger.ms=5",
        "--kafka-option",
        " Message.Timeout.Ms=1000",
    ])
    .unwrap_err();
    assert!(
        err.contains("--kafka-option") && err.contains("enable.auto.commit") && err.contains("Message.Timeout.Ms"),
        "{err}"
    );
    assert!(!err.contains("linger.ms"), "{err}");
    // Brokers with the generator: features go to Kafka, the source stays.
    let c = parse(&["weatherflow", "--brokers", "h:1"]).unwrap();
    assert!(c.kafka.is_some() && matches!(c.source, SourceConfig::Generator(_)));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
    assert!(parse_duration("ten").is_err());
    assert!(parse_duration("5 parsecs").is_err());
}

#[test]
fn run_is_the_default_and_timely_flags_keep_their_meaning() {
    let c = parse(&["weatherflow", "-w", "4"]).unwrap();
    assert_eq!(c.cluster.workers, 4);
    assert!(matches!(
        c.source,
        SourceConfig::Generator(GeneratorConfig {
            speed: Speed::Factor(60.0),
            stations: 100,
            ..
        })
    ));
    assert_eq!(c.lateness_ms, 10_000);
    let c = parse(&[
        "weatherflow",
        "run",
        "-w",
        "2",
        "--source",
        "file",
        "--input",
        "x.jsonl",
        "--output",
        "y.jsonl",
    ])
    .unwrap();
    assert_eq!(
        c.source,
        SourceConfig::File {
            inputs: vec!["x.jsonl".into()],
            chunk_bytes: 4 << 20
        }
    );
    let c = parse(&[
        "weatherflow",
        "-n",
        "2",
        "-p",
        "1",
        "-w",
        "2",
        "--output",
        "out-{process}.jsonl",
    ])
    .unwrap();
    assert_eq!(c.cluster.addresses, vec!["localhost:2101", "localhost:2102"]);
    assert_eq!(c.output, Some(PathBuf::from("out-1.jsonl")));
    let c = parse(&[
        "weatherflow",
        "--speed",
        "max",
        "--start",
        "2026-11-20T00:00:00Z",
        "--lateness",
        "30s",
    ])
    .unwrap();
    assert!(matches!(
        c.source,
        SourceConfig::Generator(GeneratorConfig {
            speed: Speed::Max,
            start_ms: 1_795_132_800_000,
            ..
        })
    ));
    assert_eq!(c.lateness_ms, 30_000);
}

#[test]
fn rejects_nonsense_with_the_flag_named() {
    for (args, flag) in [
        (&["weatherflow", "-w", "0"][..], "--workers"),
        (&["weatherflow", "-n", "2", "-p", "2"], "--process"),
        (&["weatherflow", "--source", "file"], "--input"),
        (&["weatherflow", "--stations", "0"], "--stations"),
        (&["weatherflow", "-n", "2", "--output", "x.jsonl"], "--output"),
        (&["weatherflow", "--start", "noon"], "--start"),
        // The watermark could never pass the next minute.
        (&["weatherflow", "--max-ahead", "60s"], "--max-ahead"),
        (
            &["weatherflow", "--lateness", "2m", "--max-ahead", "150s"],
            "--max-ahead",
        ),
        (&["weatherflow", "--stop-at-end"], "--stop-at-end"),
    ] {
        let err = parse(args).unwrap_err();
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    assert!(parse(&["weatherflow", "--speed", "fast"]).is_err());
    assert!(parse(&["weatherflow", "--speed", "-1"]).is_err());
    assert!(parse(&["weatherflow", "--bogus"]).is_err());
    assert!(parse(&["weatherflow", "--max-ahead", "70s"]).is_ok());
}

#[test]
fn generate_needs_a_bound_and_derives_events_from_duration() {
    let generate = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
        Ok(Some(Command::Generate(g))) => g.into_config().map_err(|e| e.to_string()),
        other => Err(format!("{other:?}")),
    };
    let (cfg, path) = generate(&[
        "weatherflow",
        "generate",
        "--stations",
        "1000",
        "--duration",
        "24h",
        "--output",
        "x",
    ])
    .unwrap();
    assert_eq!(
        (cfg.events, cfg.interval_ms, cfg.faults),
        (Some(8_640_000), 10_000, true)
    );
    assert_eq!(path, PathBuf::from("x"));
    assert!(
        generate(&["weatherflow", "generate", "--output", "x"])
            .unwrap_err()
            .contains("--events")
    );
    let (cfg, _) = generate(&[
        "weatherflow",
        "generate",
        "--events",
        "5",
        "--no-faults",
        "--output",
        "x",
    ])
    .unwrap();
    assert_eq!((cfg.events, cfg.faults), (Some(5), false));
}

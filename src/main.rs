//! The `weatherflow` binary: parse, set up logging and signals, run, report, exit.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use weatherflow::config::file::FileError;
use weatherflow::config::{
    BenchArgs, Command, EvaluateArgs, GenerateArgs, LogFormat, ProduceArgs, ServeArgs, TrainArgs,
};

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let layered = match weatherflow::config::file::parse(std::env::args_os(), &|name| std::env::var_os(name)) {
        Ok(layered) => layered,
        Err(FileError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            return ExitCode::from(2);
        }
    };
    if let Some(text) = layered.print {
        print!("{text}");
        return ExitCode::SUCCESS;
    }
    let cli = layered.cli;
    let result = match cli.command {
        Some(Command::Generate(args)) => {
            init_tracing(args.log_format);
            generate(args)
        }
        Some(Command::Produce(args)) => {
            init_tracing(args.log_format);
            produce(args)
        }
        Some(Command::Train(args)) => {
            init_tracing(args.log_format);
            train(args)
        }
        Some(Command::Evaluate(args)) => {
            init_tracing(args.log_format);
            evaluate(args)
        }
        Some(Command::Serve(args)) => {
            init_tracing(args.log_format);
            serve(args)
        }
        Some(Command::Bench(args)) => {
            init_tracing(args.log_format);
            bench(args)
        }
        Some(Command::Run(args)) => {
            init_tracing(args.log_format);
            run(args)
        }
        None => {
            init_tracing(cli.run.log_format);
            run(cli.run)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets the returned flag on Ctrl-C/SIGTERM; a second signal exits at once.
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C means the user does not want to wait for a clean stop.
            std::process::exit(130);
        }
        tracing::info!("stop requested; finishing (Ctrl-C again to exit at once)");
    })
    .context("cannot install the Ctrl-C/SIGTERM handler")?;
    Ok(stop)
}

fn run(args: weatherflow::config::RunArgs) -> anyhow::Result<ExitCode> {
    let report = args.bench_report.clone();
    let config = args.into_config()?;
    let stop = stop_flag()?;
    let summary = match weatherflow::run::run(config, stop) {
        Ok(summary) => summary,
        Err(e) => {
            if e.retry() == weatherflow::worker::Retry::Restart {
                tracing::info!("a restart can get past this: it resumes from the last checkpoint");
            }
            return Err(e.into());
        }
    };
    eprint!("{summary}");
    if let Some(path) = report {
        weatherflow::bench::report::ChildReport::measure(&summary).write(&path)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let config = args.into_config()?;
    let stop = stop_flag()?;
    let result = weatherflow::bench::bench(&config, &stop)?;
    Ok(if result.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.into_config()?;
    let stop = stop_flag()?;
    let summary = weatherflow::serve::serve(&config, &stop)?;
    eprintln!("{summary}");
    Ok(ExitCode::SUCCESS)
}

fn produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let config = args.into_config()?;
    let stop = stop_flag()?;
    let summary = weatherflow::produce::produce(&config, &stop)?;
    let secs = summary.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "produced {} readings to {} in {:.1} s ({:.0} msgs/s), {} acknowledged{}",
        summary.sent,
        config.kafka.topics.raw,
        secs,
        summary.sent as f64 / secs,
        summary.acked,
        if summary.interrupted { " (stopped)" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let (config, path) = args.into_config()?;
    let started = std::time::Instant::now();
    let file = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let total = config.events.unwrap_or(0);
    let lines = weatherflow::sources::generator::write_jsonl(&config, &mut out, |n| {
        tracing::info!(lines = n, of = total, "generating");
    })
    .and_then(|n| std::io::Write::flush(&mut out).map(|()| n))
    .with_context(|| format!("cannot write {}", path.display()))?;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "wrote {lines} readings ({:.1} MB) to {} in {:.1} s",
        bytes as f64 / 1e6,
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn train(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let params = weatherflow::ml::train::TrainParams {
        ridge_alpha: args.ridge_alpha,
        forest: weatherflow::ml::forest::ForestParams {
            trees: args.trees,
            sample_size: args.sample_size,
            seed: args.seed,
        },
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let outcome =
        weatherflow::ml::commands::train_command(&args.data, &args.labelled, &args.out, &params, !args.no_loso)?;
    if let Some(report) = &outcome.loso {
        print!("{report}");
    }
    let s = &outcome.stats;
    println!(
        "trained in {:.1} s: forecast samples {:?} (short {:?}), pooled train MAE {:?}, forest rows {}",
        started.elapsed().as_secs_f64(),
        s.forecast_samples_full,
        s.forecast_samples_short,
        s.forecast_train_mae,
        s.forest_rows
    );
    println!("wrote {}", outcome.forecast_dir.display());
    println!("wrote {}", outcome.anomaly_dir.display());
    Ok(ExitCode::SUCCESS)
}

fn evaluate(args: EvaluateArgs) -> anyhow::Result<ExitCode> {
    let report = weatherflow::ml::commands::evaluate_command(
        &args.data,
        &args.models,
        args.leave_one_out.then_some(args.train_data.as_slice()),
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

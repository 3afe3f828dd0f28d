//! The `weatherflow` binary: parse, set up logging and signals, run, report, exit.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use weatherflow::config::{Cli, Command, LogFormat};

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
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Run(args)) => args,
        None => cli.run,
    };
    init_tracing(args.log_format);
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: weatherflow::config::RunArgs) -> anyhow::Result<ExitCode> {
    let config = args.into_config()?;
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
    let summary = weatherflow::run::run(config, stop)?;
    eprint!("{summary}");
    Ok(ExitCode::SUCCESS)
}

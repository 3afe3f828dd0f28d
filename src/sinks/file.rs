//! The JSON-lines sinks: features (`--output FILE`) and predictions (`--predictions FILE`).
//!
//! Every worker of a process writes into one shared buffered file. A worker serialises a
//! whole batch into its own buffer first and takes the lock once per batch, so writers do
//! not contend per record. Line order across workers is not defined; each line is one
//! complete weather-features object. With several processes each writes its own file,
//! named by the `{process}` placeholder in the path.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::schema::{Prediction, WindowFeatures, format_rfc3339};
use crate::worker::{Fatal, WorkerContext};

/// Why the output file failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Creating the file failed.
    #[error("cannot create output file {path}")]
    Create {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing or flushing failed (disk full, file removed, …).
    #[error("cannot write output file {path}")]
    Write {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A JSONL file shared by the workers of one process.
#[derive(Debug)]
pub struct JsonlWriter {
    path: PathBuf,
    file: Mutex<BufWriter<File>>,
}

impl JsonlWriter {
    /// Creates (truncates) the file.
    pub fn create(path: &Path) -> Result<JsonlWriter, SinkError> {
        let file = File::create(path).map_err(|source| SinkError::Create {
            path: path.to_owned(),
            source,
        })?;
        Ok(JsonlWriter {
            path: path.to_owned(),
            file: Mutex::new(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends pre-serialised lines.
    pub fn append(&self, bytes: &[u8]) -> Result<(), SinkError> {
        // A poisoned lock only means another worker panicked mid-write; the buffer itself
        // is still a valid byte buffer, so keep writing rather than cascade the panic.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(bytes).map_err(|source| SinkError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Flushes buffered lines to the file.
    pub fn flush(&self) -> Result<(), SinkError> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.flush().map_err(|source| SinkError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// Writes every window of `windows` to `writer`, one JSON object per line.
pub fn jsonl_sink(windows: StreamVec<'_, u64, WindowFeatures>, writer: Arc<JsonlWriter>, ctx: WorkerContext) {
    let mut buffer = Vec::new();
    // Window bounds formatted once per window end, not once per station.
    let mut bounds: Option<(u64, String, String)> = None;
    windows.sink(Pipeline, "JsonlSink", move |(input, _frontier)| {
        input.for_each(|_cap, data| {
            for window in data.iter() {
                if bounds.as_ref().is_none_or(|(end, _, _)| *end != window.window_end) {
                    let formatted = (format_rfc3339(window.window_start), format_rfc3339(window.window_end));
                    bounds = Some((window.window_end, formatted.0, formatted.1));
                }
                if let Some((_, start, end)) = &bounds {
                    // Serialising plain numbers and strings into a Vec cannot fail.
                    if window.write_json(&mut buffer, start, end).is_ok() {
                        buffer.push(b'\n');
                    }
                }
            }
        });
        write_batch(&writer, &mut buffer, &ctx);
    });
}

/// Appends one activation's serialised lines; a write error ends the run (a sink that
/// silently drops output would be worse).
fn write_batch(writer: &JsonlWriter, buffer: &mut Vec<u8>, ctx: &WorkerContext) {
    if buffer.is_empty() {
        return;
    }
    if let Err(e) = writer.append(buffer) {
        ctx.fail(Fatal::Output(Arc::new(e)));
    }
    buffer.clear();
}

/// Writes every prediction to `writer`, one JSON object per line.
pub fn jsonl_predictions_sink(
    predictions: StreamVec<'_, u64, Prediction>,
    writer: Arc<JsonlWriter>,
    ctx: WorkerContext,
) {
    let mut buffer = Vec::new();
    predictions.sink(Pipeline, "JsonlPredictionsSink", move |(input, _frontier)| {
        input.for_each(|_cap, data| {
            for prediction in data.iter() {
                // Serialising plain numbers and strings into a Vec cannot fail.
                if serde_json::to_writer(&mut buffer, prediction).is_ok() {
                    buffer.push(b'\n');
                }
            }
        });
        write_batch(&writer, &mut buffer, &ctx);
    });
}

//! Replay planning: which files, in which format, cut into which chunks.
//!
//! A file is cut into fixed-size byte chunks. A chunk owns the lines that *start* inside
//! it, so boundaries need no coordination: a reader skips the partial line at its start
//! and finishes the line that crosses its end. Chunk boundaries depend only on the file and
//! `--chunk-bytes`, never on the worker count, which is what lets late-data decisions be
//! identical for any `-w` (see the module docs of [`super`]).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::csv::CsvHeader;

/// Why an input could not be planned. All of these are the user's to fix.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A glob pattern that does not parse.
    #[error("invalid input pattern {pattern:?}")]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// The parser's complaint.
        #[source]
        source: glob::PatternError,
    },
    /// Nothing matched.
    #[error("no input files match {0:?}")]
    NoMatch(String),
    /// A file that cannot be opened or read.
    #[error("cannot read input file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A CSV file without the columns a reading needs.
    #[error("CSV file {path} has no column for {column} (header: {header:?})")]
    CsvHeader {
        /// The file.
        path: PathBuf,
        /// The missing column.
        column: &'static str,
        /// The header line found.
        header: String,
    },
}

/// How a file's lines are decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// One weather-raw JSON object per line.
    Jsonl,
    /// The historical CSV layout, columns found by header name.
    Csv(CsvHeader),
}

/// One input file.
#[derive(Clone, Debug)]
pub struct InputFile {
    /// Where it is.
    pub path: PathBuf,
    /// How to decode it.
    pub format: Format,
    /// First byte of data (after a CSV header).
    pub data_start: u64,
    /// File length at planning time; bytes appended later are not replayed.
    pub len: u64,
}

/// One chunk: the lines of `file` starting in `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Index into [`Plan::files`].
    pub file: usize,
    /// Position within the file (0, 1, …).
    pub index: usize,
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// Every file and chunk of a replay, in the global processing order.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The files, sorted by path.
    pub files: Vec<InputFile>,
    /// Number of chunks of each file.
    pub chunks_per_file: Vec<usize>,
    /// All chunks, ordered by (index within file, file): every file advances together, so
    /// a multi-file replay moves through event time on all files at once.
    pub chunks: Vec<Chunk>,
}

impl Plan {
    /// Expands paths and glob patterns, reads CSV headers and cuts chunks.
    pub fn new(inputs: &[String], chunk_bytes: u64) -> Result<Plan, PlanError> {
        let mut paths = Vec::new();
        for input in inputs {
            let before = paths.len();
            if Path::new(input).exists() {
                paths.push(PathBuf::from(input));
            } else {
                let matches = glob::glob(input).map_err(|source| PlanError::Pattern {
                    pattern: input.clone(),
                    source,
                })?;
                paths.extend(matches.filter_map(Result::ok).filter(|p| p.is_file()));
            }
            if paths.len() == before {
                return Err(PlanError::NoMatch(input.clone()));
            }
        }
        paths.sort();
        paths.dedup();
        let files = paths.into_iter().map(open).collect::<Result<Vec<_>, _>>()?;
        let chunk_bytes = chunk_bytes.max(1);
        let chunks_per_file: Vec<usize> = files
            .iter()
            .map(|f| (f.len - f.data_start).div_ceil(chunk_bytes) as usize)
            .collect();
        let rounds = chunks_per_file.iter().copied().max().unwrap_or(0);
        let mut chunks = Vec::new();
        for index in 0..rounds {
            for (file, f) in files.iter().enumerate() {
                if index < chunks_per_file[file] {
                    let start = f.data_start + index as u64 * chunk_bytes;
                    chunks.push(Chunk {
                        file,
                        index,
                        start,
                        end: (start + chunk_bytes).min(f.len),
                    });
                }
            }
        }
        Ok(Plan {
            files,
            chunks_per_file,
            chunks,
        })
    }

    /// Total bytes to replay.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.len - f.data_start).sum()
    }
}

fn open(path: PathBuf) -> Result<InputFile, PlanError> {
    let io = |source| PlanError::Io {
        path: path.clone(),
        source,
    };
    let file = File::open(&path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if !is_csv {
        return Ok(InputFile {
            path,
            format: Format::Jsonl,
            data_start: 0,
            len,
        });
    }
    let mut header = String::new();
    let read = BufReader::new(file).read_line(&mut header).map_err(io)? as u64;
    let columns = CsvHeader::parse(header.trim_end()).map_err(|column| PlanError::CsvHeader {
        path: path.clone(),
        column,
        header: header.trim_end().to_owned(),
    })?;
    Ok(InputFile {
        path,
        format: Format::Csv(columns),
        data_start: read,
        len,
    })
}

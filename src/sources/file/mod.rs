//! File replay: JSONL weather-raw messages and historical CSVs, split across all workers.
//!
//! # Late data, identical for any worker count
//! A replayed file behaves like one in-order partition: a reading is late when it is older
//! than `max(event time of every earlier valid line) − lateness`. Evaluated naively that is
//! sequential. Here each file is cut into chunks ([`plan`]), chunks are dealt round-robin to
//! all workers of all processes, and each worker parses its chunks in parallel. Lateness
//! splits into two parts:
//!
//! - *against earlier lines of the same chunk*: decided while parsing;
//! - *against earlier chunks*: needs `M_k`, the largest event time in chunks `0..k` of the
//!   file. Each worker broadcasts the largest event time of every chunk it parses through a
//!   small side dataflow; a parsed chunk is sent once all earlier chunks of its file are
//!   known.
//!
//! The verdicts therefore depend only on the bytes and `--chunk-bytes`, never on `-w`,
//! `-n` or timing, and the output is identical for every cluster shape.
//!
//! # Watermark
//! A worker's capability is the smallest event time it could still send: for each of its
//! pending chunks, the largest known lower bound on `M_k − lateness` (and, once parsed,
//! the chunk's own earliest reading). When its last chunk is sent it drops the capability,
//! so the end of the input closes every window and the process exits.

pub mod csv;
pub mod plan;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::operators::Inspect;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::vec::{Broadcast, Input};
use timely::dataflow::{InputHandleVec, Scope, StreamVec};
use timely::scheduling::Activator;
use timely::worker::Worker;

use crate::metrics::SourceTally;
use crate::schema::{Invalid, InvalidReason, MAX_MESSAGE_BYTES, Reading, floor_minute, parse_json};
use crate::worker::{Fatal, WorkerContext};
use plan::{Chunk, Format, InputFile, Plan};

/// How many parsed chunks a worker holds ahead of sending.
const PREFETCH: usize = 2;

/// `(file, chunk index, largest valid event time)` as broadcast between workers.
type Summary = (u32, u32, Option<u64>);

/// What is known about the chunks of every file: `None` = not yet parsed by anyone.
#[derive(Debug)]
struct Known(Vec<Vec<Option<Option<u64>>>>);

impl Known {
    /// `M_k` exactly, once every chunk before `k` is known: `Some(None)` if they hold no
    /// valid reading.
    fn exact_prefix(&self, file: usize, k: usize) -> Option<Option<u64>> {
        self.0[file][..k]
            .iter()
            .try_fold(None, |acc: Option<u64>, c| c.map(|m| acc.max(m)))
    }
    /// A lower bound on `M_k` from whatever is known.
    fn lower_prefix(&self, file: usize, k: usize) -> Option<u64> {
        self.0[file][..k].iter().flatten().flatten().copied().max()
    }
}

/// The side channel that shares chunk summaries between all workers.
pub struct ChunkExchange {
    input: Option<InputHandleVec<u64, Summary>>,
    known: Rc<RefCell<Known>>,
    waker: Rc<RefCell<Option<Activator>>>,
}

impl ChunkExchange {
    /// Builds the side dataflow on this worker. Every worker must call it, before the
    /// main dataflow, so dataflow identifiers agree across the cluster.
    pub fn new(worker: &mut Worker, plan: &Plan) -> ChunkExchange {
        let known = Rc::new(RefCell::new(Known(
            plan.chunks_per_file.iter().map(|&n| vec![None; n]).collect(),
        )));
        let waker: Rc<RefCell<Option<Activator>>> = Rc::default();
        let (k, w) = (known.clone(), waker.clone());
        let input = worker.dataflow::<u64, _, _>(move |scope| {
            let (input, stream) = scope.new_input::<Summary>();
            stream.broadcast().inspect_batch(move |_time, batch| {
                let mut known = k.borrow_mut();
                for &(file, index, max) in batch {
                    if let Some(slot) = known.0.get_mut(file as usize).and_then(|f| f.get_mut(index as usize)) {
                        *slot = Some(max);
                    }
                }
                if let Some(a) = w.borrow().as_ref() {
                    a.activate();
                }
            });
            input
        });
        ChunkExchange {
            input: Some(input),
            known,
            waker,
        }
    }
}

/// A chunk parsed and checked against its own earlier lines, waiting for `M_k`.
struct Parsed {
    chunk: Chunk,
    readings: Vec<Reading>,
    earliest: Option<u64>,
}

/// The complete lines starting in a chunk, as read into a buffer.
struct ChunkBytes {
    /// File offset of `buf[0]`: one byte before the chunk, to see whether it starts a line.
    origin: u64,
    /// Index in `buf` of the first line that starts inside the chunk.
    begin: usize,
}

/// Reads the complete lines starting in a chunk into `buf`.
fn read_chunk(file: &File, input: &InputFile, chunk: &Chunk, buf: &mut Vec<u8>) -> io::Result<ChunkBytes> {
    let lo = if chunk.start == input.data_start {
        chunk.start
    } else {
        chunk.start - 1
    };
    buf.clear();
    buf.resize((chunk.end - lo) as usize, 0);
    file.read_exact_at(buf, lo)?;
    let begin = if chunk.start == input.data_start {
        0
    } else {
        match memchr::memchr(b'\n', buf) {
            Some(p) if p + 1 < buf.len() => p + 1,
            // No line starts inside this chunk.
            _ => {
                return Ok(ChunkBytes {
                    origin: lo,
                    begin: buf.len(),
                });
            }
        }
    };
    // Finish the line that crosses the end.
    let mut pos = chunk.end;
    while buf.last() != Some(&b'\n') && pos < input.len {
        let more = (64 * 1024).min(input.len - pos) as usize;
        let old = buf.len();
        buf.resize(old + more, 0);
        file.read_exact_at(&mut buf[old..], pos)?;
        pos += more as u64;
        if let Some(p) = memchr::memchr(b'\n', &buf[old..]) {
            buf.truncate(old + p + 1);
        }
    }
    Ok(ChunkBytes { origin: lo, begin })
}

/// Parses a chunk: validation, the future limit ([`WorkerContext::future_limit`]), and
/// lateness against earlier lines of the same chunk.
fn parse_chunk(
    input: &InputFile,
    chunk: &Chunk,
    buf: &[u8],
    bytes: ChunkBytes,
    (lateness, future_limit): (u64, u64),
    tally: &mut SourceTally,
) -> Parsed {
    let mut readings = Vec::with_capacity(buf.len() / 128);
    let mut running_max: Option<u64> = None;
    let mut earliest: Option<u64> = None;
    let ChunkBytes { origin, begin } = bytes;
    let mut at = begin;
    for end in memchr::memchr_iter(b'\n', &buf[begin..])
        .map(|p| p + begin)
        .chain(std::iter::once(buf.len()))
    {
        let mut line = &buf[at..end];
        let offset = origin + at as u64;
        at = end + 1;
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if line.is_empty() {
            continue;
        }
        let seq = ((chunk.file as u64) << 40) | offset;
        let parsed = match &input.format {
            Format::Jsonl => parse_json(line, seq),
            Format::Csv(_) if line.len() > MAX_MESSAGE_BYTES => Err(Invalid::record(InvalidReason::Oversized)),
            Format::Csv(header) => header.reading(line, seq),
        }
        .and_then(|r| {
            (r.timestamp_ms <= future_limit)
                .then_some(r)
                .ok_or(Invalid::new(InvalidReason::FutureTimestamp, "timestamp"))
        });
        match parsed {
            Err(e) => tally.reject(e.reason),
            Ok(r) => {
                let t = r.timestamp_ms;
                if running_max.is_some_and(|m| t < m.saturating_sub(lateness)) {
                    tally.late += 1;
                    continue;
                }
                running_max = running_max.max(Some(t));
                earliest = Some(earliest.map_or(t, |e: u64| e.min(t)));
                readings.push(r);
            }
        }
    }
    tally.bytes += chunk.end - chunk.start;
    Parsed {
        chunk: *chunk,
        readings,
        earliest,
    }
}

/// The replay source on the current worker.
pub fn file_source<'s>(
    scope: Scope<'s, u64>,
    plan: Arc<Plan>,
    mut exchange: ChunkExchange,
    ctx: WorkerContext,
) -> StreamVec<'s, u64, Reading> {
    let (index, peers) = (scope.index(), scope.peers());
    source(scope, "FileReplay", move |cap, info| {
        let activator = scope.activator_for(info.address.clone());
        *exchange.waker.borrow_mut() = Some(scope.activator_for(info.address));
        let mut pending: VecDeque<Chunk> = plan.chunks.iter().skip(index).step_by(peers).copied().collect();
        let mut ready: VecDeque<Parsed> = VecDeque::new();
        let mut handles: Vec<Option<File>> = plan.files.iter().map(|_| None).collect();
        let mut buf = Vec::new();
        let mut cap = Some(cap);
        let lateness = ctx.lateness_ms;
        move |output| {
            let Some(held) = cap.as_mut() else { return };
            if ctx.stopping() {
                // Stop requested: read nothing more, so the sinks can drain.
                return;
            }
            let mut tally = SourceTally::default();
            let mut progressed = false;
            // 1. Parse ahead, unless this worker is already far ahead of the cluster.
            while ready.len() < PREFETCH && ctx.may_send(*held.time()) {
                let Some(chunk) = pending.pop_front() else {
                    break;
                };
                let input = &plan.files[chunk.file];
                let file = match &mut handles[chunk.file] {
                    Some(f) => f,
                    slot => match File::open(&input.path) {
                        Ok(f) => slot.insert(f),
                        Err(e) => {
                            return ctx.fail(Fatal::Input {
                                path: input.path.clone(),
                                source: Arc::new(e),
                            });
                        }
                    },
                };
                let bytes = match read_chunk(file, input, &chunk, &mut buf) {
                    Ok(b) => b,
                    Err(e) => {
                        return ctx.fail(Fatal::Input {
                            path: input.path.clone(),
                            source: Arc::new(e),
                        });
                    }
                };
                let parsed = parse_chunk(input, &chunk, &buf, bytes, (lateness, ctx.future_limit()), &mut tally);
                let max = parsed.readings.iter().map(|r| r.timestamp_ms).max();
                if let Some(handle) = exchange.input.as_mut() {
                    handle.send((chunk.file as u32, chunk.index as u32, max));
                    handle.flush();
                }
                ready.push_back(parsed);
                progressed = true;
            }
            if pending.is_empty() {
                exchange.input = None; // all summaries sent: let the side dataflow finish
            }
            // 2. Send every parsed chunk whose M_k is known, in order.
            let mut sent = 0u64;
            while let Some(front) = ready.front() {
                let Some(prefix_max) = exchange
                    .known
                    .borrow()
                    .exact_prefix(front.chunk.file, front.chunk.index)
                else {
                    break;
                };
                let Some(mut parsed) = ready.pop_front() else {
                    break;
                };
                let watermark = prefix_max.map_or(0, |m| m.saturating_sub(lateness));
                let before = parsed.readings.len();
                parsed.readings.retain(|r| r.timestamp_ms >= watermark);
                tally.late += (before - parsed.readings.len()) as u64;
                sent += parsed.readings.len() as u64;
                let mut readings = parsed.readings.into_iter().peekable();
                while let Some(first) = readings.next() {
                    let minute = floor_minute(first.timestamp_ms);
                    debug_assert!(minute >= *held.time(), "file source watermark overtook its own data");
                    let at = held.delayed(&minute.max(*held.time()));
                    let mut session = output.session(&at);
                    session.give(first);
                    while let Some(r) = readings.next_if(|r| floor_minute(r.timestamp_ms) == minute) {
                        session.give(r);
                    }
                }
                progressed = true;
            }
            tally.accepted = sent;
            tally.flush(&ctx.metrics);
            // 3. Hold the capability at the earliest time still possible.
            let known = exchange.known.borrow();
            let bound = |chunk: &Chunk| {
                known
                    .lower_prefix(chunk.file, chunk.index)
                    .map_or(0, |m| m.saturating_sub(lateness))
            };
            let parsed_bounds = ready.iter().filter_map(|p| p.earliest.map(|e| e.max(bound(&p.chunk))));
            let lowest = pending.iter().map(bound).chain(parsed_bounds).min();
            drop(known);
            match lowest {
                Some(ms) => {
                    held.downgrade(&floor_minute(ms).max(*held.time()));
                    ctx.metrics.set_watermark(ctx.local_index, ms);
                }
                // Nothing pending and nothing left to send: the replay is over here.
                None => {
                    cap = None;
                    ctx.metrics.set_watermark(ctx.local_index, u64::MAX);
                    return;
                }
            }
            if progressed && (!pending.is_empty() || !ready.is_empty()) {
                activator.activate();
            } else if !pending.is_empty() {
                // Held back by pacing: look again shortly. Waiting for summaries needs no
                // timer, the side dataflow wakes this operator.
                activator.activate_after(Duration::from_millis(1));
            }
        }
    })
}

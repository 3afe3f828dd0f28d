//! Loading the predictor's station states of an earlier run (docs/design.md §5.6).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;

use crate::delivery::compacted;
use crate::kafka::{KafkaSettings, KafkaSetupError};
use crate::ml::snapshot::Restored;

/// How long the restore waits for a broker request or for the next record.
const TIMEOUT: Duration = Duration::from_secs(15);

/// Reads the state topic to its end (creating it, compacted, when missing) and decodes
/// the latest state of every station. Records this build cannot read are counted and
/// named once in the log; they never fail the run.
pub(super) fn restore_states(settings: &KafkaSettings, group: &str) -> Result<Arc<Restored>, KafkaSetupError> {
    let topic = &settings.topics.state;
    let started = Instant::now();
    if !settings.ensure_topics(&[topic], 1, TIMEOUT)?.is_empty() {
        tracing::info!(%topic, "created the station-state topic");
    }
    let mut latest: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    let mut foreign_keys = 0u64;
    let mut bytes = 0u64;
    let records = compacted::read_to_end(settings, topic, &format!("{group}-state-reader"), TIMEOUT, |message| {
        let Some(station) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            foreign_keys += 1;
            return;
        };
        bytes += message.payload().map_or(0, |p| p.len() as u64);
        latest.insert(station.to_owned(), message.payload().map(<[u8]>::to_vec));
    })?;
    let read_secs = started.elapsed().as_secs_f64();
    let (restored, summary) = Restored::from_latest(latest, records);
    let discarded = summary.other_version + summary.unreadable;
    if discarded > 0 || foreign_keys > 0 {
        let (station, reason) = summary.first_discarded.clone().unwrap_or_default();
        tracing::warn!(
            %topic,
            discarded,
            other_version = summary.other_version,
            unreadable = summary.unreadable,
            without_key = foreign_keys,
            first = %station,
            reason = %reason,
            "station states this build cannot read were discarded; those stations start from the models' prior"
        );
    }
    tracing::info!(
        %topic,
        stations = summary.stations,
        records,
        mb = format!("{:.1}", bytes as f64 / 1e6),
        forgotten = summary.forgotten,
        secs = format!("{:.2}", started.elapsed().as_secs_f64()),
        read_secs = format!("{read_secs:.2}"),
        "restored station states"
    );
    Ok(Arc::new(restored))
}

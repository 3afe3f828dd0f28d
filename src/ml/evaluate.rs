//! `weatherflow evaluate`: replays hourly CSVs through the production per-station step
//! ([`StationState::step`]) and scores what it published.
//!
//! Protocol (prequential, within segments):
//! - every row is pushed through the same history, detectors, online learner and
//!   forecaster as a live window, so a forecast only uses data before its origin and the
//!   learner learns only from forecasts whose target has passed;
//! - a segment boundary starts a new stretch (history and pending forecasts are dropped,
//!   what the station learned is kept);
//! - a forecast counts when its origin is at least 24 h into its segment and its target
//!   lies in the same segment;
//! - anomaly scores count for rows labelled 0 or 1 (label −1 is not evaluated).
//!
//! [`evaluate_leave_one_out`] trains on every station but the evaluated one, which is the
//! honest estimate for a station the model has never seen.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::MlError;
use super::data::StationData;
use super::forecast::{HORIZONS, Verified};
use super::history::HOUR_MS;
use super::station::{Models, StationState, Versioned};
use super::train::{TrainParams, train};

/// Forecast scores at one horizon.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HorizonMetrics {
    /// Forecasts scored.
    pub n: u64,
    /// Mean absolute error, °C.
    pub mae: f64,
    /// Root mean squared error, °C.
    pub rmse: f64,
    /// MAE of persistence (the origin's temperature), °C.
    pub persistence_mae: f64,
    /// Fraction of targets inside the 80 % interval.
    pub coverage80: f64,
}

#[derive(Clone, Debug, Default)]
struct Acc {
    n: u64,
    abs: f64,
    sq: f64,
    persistence: f64,
    covered: u64,
}

impl Acc {
    fn add(&mut self, v: &Verified) {
        let e = f64::from(v.predicted - v.actual);
        self.n += 1;
        self.abs += e.abs();
        self.sq += e * e;
        self.persistence += f64::from(v.t0 - v.actual).abs();
        self.covered += u64::from(v.covered);
    }
    fn metrics(&self) -> HorizonMetrics {
        let n = self.n.max(1) as f64;
        HorizonMetrics {
            n: self.n,
            mae: self.abs / n,
            rmse: (self.sq / n).sqrt(),
            persistence_mae: self.persistence / n,
            coverage80: self.covered as f64 / n,
        }
    }
}

/// Detection scores over one set of labelled rows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AnomalyMetrics {
    /// Rows scored (labels 0 and 1).
    pub n: usize,
    /// Faulty rows among them.
    pub positives: usize,
    /// ROC AUC; `null` without both classes.
    pub auc: Option<f64>,
    /// Precision among the k highest scores, k = the number of faulty rows.
    pub precision_at_k: Option<f64>,
    /// Precision and recall of the `is_anomaly` flag.
    pub flag_precision: Option<f64>,
    /// Recall of the `is_anomaly` flag.
    pub flag_recall: Option<f64>,
}

/// Forecast section of the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ForecastReport {
    /// By horizon ("1", "6", "24").
    pub overall: BTreeMap<String, HorizonMetrics>,
    /// By station, then horizon.
    pub stations: BTreeMap<String, BTreeMap<String, HorizonMetrics>>,
}

/// Anomaly section of the report.
#[derive(Clone, Debug, Serialize)]
pub struct AnomalyReport {
    /// Over all faults.
    pub overall: AnomalyMetrics,
    /// Per fault type: its faulty rows against all clean rows.
    pub by_fault_type: BTreeMap<String, AnomalyMetrics>,
}

/// The whole report (`--json` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// How the models were obtained: `models forecast=v1 anomaly=v1` or
    /// `leave-one-station-out`.
    pub mode: String,
    /// Forecast scores.
    pub forecast: ForecastReport,
    /// Anomaly scores; `null` when no file is labelled.
    pub anomaly: Option<AnomalyReport>,
}

/// One scored row for the anomaly metrics.
#[derive(Clone, Debug)]
struct Scored {
    score: f32,
    flagged: bool,
    faulty: bool,
    fault_type: Option<String>,
}

/// What one station's replay produced.
#[derive(Default)]
struct Collected {
    forecast: BTreeMap<String, Vec<Acc>>,
    scored: Vec<Scored>,
    labelled: bool,
}

fn replay(station: &StationData, models: &Models, out: &mut Collected) {
    let mut state = StationState::new(models);
    let mut segment: Option<&str> = None;
    let mut segment_start = 0;
    let accs = out
        .forecast
        .entry(station.station_id.clone())
        .or_insert_with(|| vec![Acc::default(); HORIZONS.len()]);
    for row in &station.rows {
        if segment != Some(row.segment.as_str()) {
            state.new_stretch();
            segment = Some(row.segment.as_str());
            segment_start = row.obs.ts_ms;
        }
        let step = state.step(row.obs, station.location, models);
        for v in &step.verified {
            if v.origin_ms >= segment_start + 24 * HOUR_MS
                && let Some(i) = HORIZONS.iter().position(|h| *h == v.hours)
            {
                accs[i].add(v);
            }
        }
        if let Some(label @ (0 | 1)) = row.label {
            out.labelled = true;
            out.scored.push(Scored {
                score: step.anomaly.score,
                flagged: step.anomaly.is_anomaly,
                faulty: label == 1,
                fault_type: row.fault_type.clone(),
            });
        }
    }
}

/// ROC AUC by the rank-sum statistic, ties sharing their average rank.
fn auc(rows: &[&Scored]) -> Option<f64> {
    let positives = rows.iter().filter(|r| r.faulty).count();
    let negatives = rows.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut sorted: Vec<&&Scored> = rows.iter().collect();
    sorted.sort_by(|a, b| a.score.total_cmp(&b.score));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].score == sorted[i].score {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += average_rank * sorted[i..=j].iter().filter(|r| r.faulty).count() as f64;
        i = j + 1;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

fn anomaly_metrics(rows: &[&Scored]) -> AnomalyMetrics {
    let positives = rows.iter().filter(|r| r.faulty).count();
    let precision_at_k = (positives > 0).then(|| {
        let mut sorted: Vec<&&Scored> = rows.iter().collect();
        // Stable: ties keep replay order, so the figure is deterministic.
        sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
        sorted.iter().take(positives).filter(|r| r.faulty).count() as f64 / positives as f64
    });
    let flagged = rows.iter().filter(|r| r.flagged).count();
    let true_flags = rows.iter().filter(|r| r.flagged && r.faulty).count();
    AnomalyMetrics {
        n: rows.len(),
        positives,
        auc: auc(rows),
        precision_at_k,
        flag_precision: (flagged > 0).then(|| true_flags as f64 / flagged as f64),
        flag_recall: (positives > 0).then(|| true_flags as f64 / positives as f64),
    }
}

fn report(mode: String, collected: Collected) -> Report {
    let mut overall = vec![Acc::default(); HORIZONS.len()];
    let mut stations = BTreeMap::new();
    for (station, accs) in &collected.forecast {
        let mut per = BTreeMap::new();
        for ((acc, total), hours) in accs.iter().zip(&mut overall).zip(HORIZONS) {
            total.n += acc.n;
            total.abs += acc.abs;
            total.sq += acc.sq;
            total.persistence += acc.persistence;
            total.covered += acc.covered;
            per.insert(hours.to_string(), acc.metrics());
        }
        stations.insert(station.clone(), per);
    }
    let forecast = ForecastReport {
        overall: HORIZONS
            .iter()
            .zip(&overall)
            .map(|(h, acc)| (h.to_string(), acc.metrics()))
            .collect(),
        stations,
    };
    let anomaly = collected.labelled.then(|| {
        let all: Vec<&Scored> = collected.scored.iter().collect();
        let mut types: Vec<String> = collected.scored.iter().filter_map(|s| s.fault_type.clone()).collect();
        types.sort();
        types.dedup();
        let by_fault_type = types
            .into_iter()
            .map(|t| {
                let rows: Vec<&Scored> = collected
                    .scored
                    .iter()
                    .filter(|s| !s.faulty || s.fault_type.as_deref() == Some(t.as_str()))
                    .collect();
                let metrics = anomaly_metrics(&rows);
                (t, metrics)
            })
            .collect();
        AnomalyReport {
            overall: anomaly_metrics(&all),
            by_fault_type,
        }
    });
    Report {
        mode,
        forecast,
        anomaly,
    }
}

/// Evaluates fixed models on every station.
pub fn evaluate(stations: &[StationData], models: &Models) -> Report {
    let mut collected = Collected::default();
    for station in stations {
        replay(station, models, &mut collected);
    }
    report(
        format!(
            "models forecast={} anomaly={}",
            models.forecast.version, models.anomaly.version
        ),
        collected,
    )
}

/// Leave-one-station-out: for each evaluated station, trains on the `pool` stations with
/// a different id and evaluates on it.
pub fn evaluate_leave_one_out(
    stations: &[StationData],
    pool: &[StationData],
    params: &TrainParams,
) -> Result<Report, MlError> {
    let mut collected = Collected::default();
    for station in stations {
        let others: Vec<StationData> = pool
            .iter()
            .filter(|s| s.station_id != station.station_id)
            .cloned()
            .collect();
        if others.is_empty() {
            return Err(MlError::Train(format!(
                "leave-one-station-out: no training station besides {}",
                station.station_id
            )));
        }
        let trained = train(&others, params)?;
        let models = Models {
            forecast: std::sync::Arc::new(Versioned {
                version: "loso".into(),
                model: trained.forecast,
            }),
            anomaly: std::sync::Arc::new(Versioned {
                version: "loso".into(),
                model: trained.anomaly,
            }),
        };
        replay(station, &models, &mut collected);
    }
    Ok(report("leave-one-station-out".into(), collected))
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "evaluation ({})", self.mode)?;
        writeln!(
            f,
            "{:<16}{:>4}{:>8}{:>8}{:>8}{:>13}{:>10}",
            "station", "h", "n", "MAE", "RMSE", "persistence", "cover80"
        )?;
        let line = |f: &mut fmt::Formatter<'_>, name: &str, h: &str, m: &HorizonMetrics| {
            writeln!(
                f,
                "{:<16}{:>4}{:>8}{:>8.3}{:>8.3}{:>13.3}{:>10.3}",
                name, h, m.n, m.mae, m.rmse, m.persistence_mae, m.coverage80
            )
        };
        for (station, per) in &self.forecast.stations {
            for h in HORIZONS {
                if let Some(m) = per.get(&h.to_string()) {
                    line(f, station, &h.to_string(), m)?;
                }
            }
        }
        for h in HORIZONS {
            if let Some(m) = self.forecast.overall.get(&h.to_string()) {
                line(f, "OVERALL", &h.to_string(), m)?;
            }
        }
        if let Some(a) = &self.anomaly {
            writeln!(f)?;
            writeln!(
                f,
                "{:<16}{:>7}{:>7}{:>8}{:>8}{:>10}{:>10}",
                "faults", "n", "pos", "AUC", "P@k", "flag P", "flag R"
            )?;
            let rows =
                std::iter::once(("overall", &a.overall)).chain(a.by_fault_type.iter().map(|(k, v)| (k.as_str(), v)));
            for (name, m) in rows {
                writeln!(
                    f,
                    "{:<16}{:>7}{:>7}{:>8}{:>8}{:>10}{:>10}",
                    name,
                    m.n,
                    m.positives,
                    opt(m.auc),
                    opt(m.precision_at_k),
                    opt(m.flag_precision),
                    opt(m.flag_recall)
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(score: f32, faulty: bool) -> Scored {
        Scored {
            score,
            flagged: score >= 0.5,
            faulty,
            fault_type: None,
        }
    }

    #[test]
    fn auc_and_precision_at_k() {
        let rows = [
            scored(0.9, true),
            scored(0.8, false),
            scored(0.7, true),
            scored(0.1, false),
        ];
        let refs: Vec<&Scored> = rows.iter().collect();
        // Pairs (pos, neg): (0.9,0.8) (0.9,0.1) (0.7,0.8)✗ (0.7,0.1) → 3/4.
        assert_eq!(auc(&refs), Some(0.75));
        let m = anomaly_metrics(&refs);
        assert_eq!(m.precision_at_k, Some(0.5));
        assert_eq!(m.flag_recall, Some(1.0));
        let ties = [scored(0.5, true), scored(0.5, false)];
        let refs: Vec<&Scored> = ties.iter().collect();
        assert_eq!(auc(&refs), Some(0.5));
    }
}

//! The model registry: versioned directories on disk and hot reload.
//!
//! ```text
//! models/
//!   forecast/LATEST            "v2"
//!   forecast/v2/model.json     ForecastModel
//!   forecast/v2/metadata.json  Metadata: trained_at, data, features, hyperparameters, metrics
//!   anomaly/LATEST, anomaly/v1/…
//! ```
//!
//! Writes are atomic where it matters: a version directory is written under a temporary
//! name and renamed into place, and `LATEST` is replaced by rename, so a running dataflow
//! polling the registry ([`super::reload`]) never sees a half-written model. A model that
//! fails to load or validate is reported and the running one kept.
//!
//! Which models a run uses ([`load_for_run`]): `--models DIR` if given (it must exist);
//! otherwise `models/` in the working directory if there is one; otherwise the versions
//! built into the binary ([`super::embedded`]), so an installed binary runs anywhere.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::MlError;
use super::anomaly::AnomalyModel;
use super::forecast::ForecastModel;
use super::station::{Models, Versioned};

/// The registry `run` uses when `--models` is not given, relative to the working directory.
pub const DEFAULT_DIR: &str = "models";
/// File holding a kind's current version.
pub const LATEST: &str = "LATEST";
/// Model file name inside a version directory.
pub const MODEL_FILE: &str = "model.json";
/// Metadata file name inside a version directory.
pub const METADATA_FILE: &str = "metadata.json";

/// The model kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Temperature forecasts.
    Forecast,
    /// Anomaly detection.
    Anomaly,
}

impl Kind {
    /// Directory name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Forecast => "forecast",
            Kind::Anomaly => "anomaly",
        }
    }
}

/// What `metadata.json` says about a version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metadata {
    /// Version name.
    pub version: String,
    /// Model kind.
    pub kind: String,
    /// When training finished (RFC 3339).
    pub trained_at: String,
    /// Training files and their row counts.
    pub data: serde_json::Value,
    /// Input feature names, in order.
    pub features: Vec<String>,
    /// Training settings.
    pub hyperparameters: serde_json::Value,
    /// Evaluation metrics (leave-one-station-out and in-sample).
    pub metrics: serde_json::Value,
}

pub(crate) fn read_latest(dir: &Path, kind: Kind) -> Result<String, MlError> {
    let path = dir.join(kind.as_str()).join(LATEST);
    let text = std::fs::read_to_string(&path).map_err(|e| MlError::Io(path.clone(), e))?;
    let version = text.trim().to_string();
    if version.is_empty() || version.contains(['/', '\\']) || version.starts_with('.') {
        return Err(MlError::Model(format!(
            "{}: not a version name: {version:?}",
            path.display()
        )));
    }
    Ok(version)
}

fn load_json<M: DeserializeOwned>(path: &Path) -> Result<M, MlError> {
    let text = std::fs::read(path).map_err(|e| MlError::Io(path.to_owned(), e))?;
    parse_json(&text, &path.display())
}

/// Parses JSON read from `origin` (a path, or a name for embedded files).
pub(crate) fn parse_json<M: DeserializeOwned>(bytes: &[u8], origin: &dyn fmt::Display) -> Result<M, MlError> {
    serde_json::from_slice(bytes).map_err(|e| MlError::Model(format!("{origin}: {e}")))
}

/// Validates a parsed model and names its version: a model that fails validation is
/// never handed to the dataflow.
pub(crate) fn versioned<M>(
    model: M,
    version: &str,
    validate: fn(&M) -> Result<(), MlError>,
) -> Result<Arc<Versioned<M>>, MlError> {
    validate(&model)?;
    Ok(Arc::new(Versioned {
        version: version.to_string(),
        model,
    }))
}

/// Loads and validates one kind at a given version.
fn load_version<M: DeserializeOwned>(
    dir: &Path,
    kind: Kind,
    version: &str,
    validate: fn(&M) -> Result<(), MlError>,
) -> Result<Arc<Versioned<M>>, MlError> {
    let model: M = load_json(&dir.join(kind.as_str()).join(version).join(MODEL_FILE))?;
    versioned(model, version, validate)
}

pub(crate) fn load_forecast(dir: &Path, version: &str) -> Result<Arc<Versioned<ForecastModel>>, MlError> {
    load_version(dir, Kind::Forecast, version, ForecastModel::validate)
}

pub(crate) fn load_anomaly(dir: &Path, version: &str) -> Result<Arc<Versioned<AnomalyModel>>, MlError> {
    load_version(dir, Kind::Anomaly, version, AnomalyModel::validate)
}

/// Loads the LATEST version of both kinds.
pub fn load_latest(dir: &Path) -> Result<Models, MlError> {
    let forecast = load_forecast(dir, &read_latest(dir, Kind::Forecast)?)?;
    let anomaly = load_anomaly(dir, &read_latest(dir, Kind::Anomaly)?)?;
    Ok(Models { forecast, anomaly })
}

/// Where a run's models came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A registry directory, which hot reload can watch.
    Registry(PathBuf),
    /// Built into the binary: nothing to watch.
    Embedded,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Registry(dir) => write!(f, "registry {}", dir.display()),
            Origin::Embedded => f.write_str("built into the binary"),
        }
    }
}

/// The models a run starts with: from `explicit` (`--models DIR`, which must exist), else
/// from `default_dir` when it is a directory, else the embedded ones.
///
/// A default directory that exists but fails to load is an error, not a reason to fall
/// back: a broken registry in the working directory is most likely the one meant.
pub fn load_for_run(explicit: Option<&Path>, default_dir: &Path) -> Result<(Models, Origin), MlError> {
    let dir = match explicit {
        Some(dir) if !dir.is_dir() => return Err(MlError::NoRegistry(dir.to_owned())),
        Some(dir) => dir,
        None if default_dir.is_dir() => default_dir,
        None => return Ok((super::embedded::load()?, Origin::Embedded)),
    };
    Ok((load_latest(dir)?, Origin::Registry(dir.to_owned())))
}

/// Reads a version's metadata.
pub fn metadata(dir: &Path, kind: Kind, version: &str) -> Result<Metadata, MlError> {
    load_json(&dir.join(kind.as_str()).join(version).join(METADATA_FILE))
}

fn version_number(name: &str) -> Option<u32> {
    name.strip_prefix('v')?.parse().ok()
}

/// The next free version name (`v1`, `v2`, …) of a kind.
pub fn next_version(dir: &Path, kind: Kind) -> Result<String, MlError> {
    let kind_dir = dir.join(kind.as_str());
    let mut highest = 0;
    match std::fs::read_dir(&kind_dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                if let Some(n) = entry.file_name().to_str().and_then(version_number) {
                    highest = highest.max(n);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(MlError::Io(kind_dir, e)),
    }
    Ok(format!("v{}", highest + 1))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), MlError> {
    std::fs::write(path, bytes).map_err(|e| MlError::Io(path.to_owned(), e))
}

/// Writes a new version of `kind` and points LATEST at it; returns the version directory.
pub fn save<M: Serialize>(dir: &Path, kind: Kind, model: &M, metadata: &Metadata) -> Result<PathBuf, MlError> {
    let kind_dir = dir.join(kind.as_str());
    std::fs::create_dir_all(&kind_dir).map_err(|e| MlError::Io(kind_dir.clone(), e))?;
    let final_dir = kind_dir.join(&metadata.version);
    if final_dir.exists() {
        return Err(MlError::Model(format!("{} already exists", final_dir.display())));
    }
    let staging = kind_dir.join(format!(".{}.partial", metadata.version));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| MlError::Io(staging.clone(), e))?;
    }
    std::fs::create_dir(&staging).map_err(|e| MlError::Io(staging.clone(), e))?;
    write_file(&staging.join(MODEL_FILE), &pretty(model)?)?;
    write_file(&staging.join(METADATA_FILE), &pretty(metadata)?)?;
    std::fs::rename(&staging, &final_dir).map_err(|e| MlError::Io(final_dir.clone(), e))?;
    let latest_tmp = kind_dir.join(format!(".{LATEST}.tmp"));
    write_file(&latest_tmp, format!("{}\n", metadata.version).as_bytes())?;
    let latest = kind_dir.join(LATEST);
    std::fs::rename(&latest_tmp, &latest).map_err(|e| MlError::Io(latest, e))?;
    Ok(final_dir)
}

fn pretty<T: Serialize>(value: &T) -> Result<Vec<u8>, MlError> {
    let mut out = serde_json::to_vec_pretty(value).map_err(|e| MlError::Model(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

//! The committed LATEST model versions, built into the binary.
//!
//! An installed `weatherflow` (`cargo install --path .`) has no `models/` directory next
//! to it, yet `run` should do its main job anywhere. `build.rs` reads
//! `models/<kind>/LATEST` at build time and includes that version's `model.json` and
//! `metadata.json` here, so the embedded versions are always the ones committed as
//! LATEST. They are parsed and validated exactly like files from a registry, and
//! predictions name the same versions (`v2`, …) as a run from the checkout would.
//!
//! [`super::registry::load_for_run`] decides when they are used.

use super::MlError;
use super::registry::{Kind, Metadata, parse_json, versioned};
use super::station::Models;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/embedded_models.rs"));
}

/// The embedded version of `kind`.
pub fn version(kind: Kind) -> &'static str {
    match kind {
        Kind::Forecast => generated::FORECAST_VERSION,
        Kind::Anomaly => generated::ANOMALY_VERSION,
    }
}

fn files(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Forecast => (generated::FORECAST_MODEL, generated::FORECAST_METADATA),
        Kind::Anomaly => (generated::ANOMALY_MODEL, generated::ANOMALY_METADATA),
    }
}

/// Where an embedded file came from, for error messages.
fn origin(kind: Kind, file: &str) -> String {
    format!("embedded {}/{}/{file}", kind.as_str(), version(kind))
}

/// Parses and validates the embedded models.
pub fn load() -> Result<Models, MlError> {
    let forecast = parse_json(
        files(Kind::Forecast).0.as_bytes(),
        &origin(Kind::Forecast, super::registry::MODEL_FILE),
    )?;
    let anomaly = parse_json(
        files(Kind::Anomaly).0.as_bytes(),
        &origin(Kind::Anomaly, super::registry::MODEL_FILE),
    )?;
    Ok(Models {
        forecast: versioned(
            forecast,
            version(Kind::Forecast),
            super::forecast::ForecastModel::validate,
        )?,
        anomaly: versioned(anomaly, version(Kind::Anomaly), super::anomaly::AnomalyModel::validate)?,
    })
}

/// The embedded metadata of `kind`.
pub fn metadata(kind: Kind) -> Result<Metadata, MlError> {
    parse_json(files(kind).1.as_bytes(), &origin(kind, super::registry::METADATA_FILE))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::ml::MlError;
    use crate::ml::registry::{Origin, load_for_run, load_latest, read_latest};

    fn checkout_models() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
    }

    #[test]
    fn embedded_models_are_the_committed_latest_versions() {
        let models = load().unwrap();
        let committed = load_latest(&checkout_models()).unwrap();
        for kind in [Kind::Forecast, Kind::Anomaly] {
            assert_eq!(version(kind), read_latest(&checkout_models(), kind).unwrap());
            let meta = metadata(kind).unwrap();
            assert_eq!(
                (meta.version.as_str(), meta.kind.as_str()),
                (version(kind), kind.as_str())
            );
        }
        assert_eq!(models.forecast.version, committed.forecast.version);
        assert_eq!(models.anomaly.version, committed.anomaly.version);
        // Same parameters, not just the same name.
        assert_eq!(
            serde_json::to_value(&models.forecast.model).unwrap(),
            serde_json::to_value(&committed.forecast.model).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&models.anomaly.model).unwrap(),
            serde_json::to_value(&committed.anomaly.model).unwrap()
        );
    }

    #[test]
    fn without_a_registry_directory_the_run_uses_the_embedded_models() {
        let empty = tempfile::tempdir().unwrap();
        let (models, origin) = load_for_run(None, &empty.path().join("models")).unwrap();
        assert_eq!(origin, Origin::Embedded);
        assert_eq!(models.forecast.version, version(Kind::Forecast));
        assert_eq!(models.anomaly.version, version(Kind::Anomaly));
    }

    #[test]
    fn an_existing_default_directory_is_used_and_an_explicit_one_must_exist() {
        let (_, origin) = load_for_run(None, &checkout_models()).unwrap();
        assert_eq!(origin, Origin::Registry(checkout_models()));
        let (_, origin) = load_for_run(Some(&checkout_models()), Path::new("/nonexistent")).unwrap();
        assert_eq!(origin, Origin::Registry(checkout_models()));
        let empty = tempfile::tempdir().unwrap();
        let missing = empty.path().join("models");
        let err = load_for_run(Some(&missing), &checkout_models()).unwrap_err();
        assert!(matches!(&err, MlError::NoRegistry(p) if p == &missing), "{err:?}");
        assert!(err.to_string().contains("--models"), "{err}");
    }

    #[test]
    fn a_broken_default_directory_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("forecast")).unwrap();
        let err = load_for_run(None, dir.path()).unwrap_err();
        assert!(matches!(err, MlError::Io(..)), "{err:?}");
    }

    #[test]
    fn an_io_error_names_its_cause_once_in_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_latest(dir.path()).unwrap_err();
        let mut chain = vec![err.to_string()];
        let mut source = std::error::Error::source(&err);
        while let Some(e) = source {
            chain.push(e.to_string());
            source = e.source();
        }
        let text = chain.join(": ");
        assert_eq!(text.matches("No such file or directory").count(), 1, "{text}");
        assert!(text.contains("forecast/LATEST"), "{text}");
    }
}

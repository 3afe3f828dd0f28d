//! Model hot reload, with every file read off the timely workers.
//!
//! A worker must never block (house rule): reading and parsing a model (the anomaly
//! forest is about 400 KB of JSON) inside the predictor operator would stall that
//! worker's windows, and with several workers every one of them would do the same work.
//! So one [`Loader`] per process checks the registry's `LATEST` files and loads a new
//! version on a background thread ([`Loader::spawn`]); the models it accepts go into a
//! shared [`Slot`] with a generation counter. Each worker holds a [`Subscriber`] whose
//! [`poll`](Subscriber::poll) is one atomic load when nothing changed, and a clone of two
//! `Arc`s when something did.
//!
//! ```text
//! reload thread: every --model-poll ─► Loader::check_now ─► read LATEST, load, validate
//!                                                            └─► Slot { generation += 1 }
//! worker i:      Predict operator ─► Subscriber::poll ─► generation changed? ─► swap Arcs
//! ```
//!
//! The semantics are those of the registry: a version that fails to load or validate is
//! reported once (per process) and the running one kept; every worker switches to an
//! accepted version at its next batch; station state is not touched by a swap, so a new
//! version starts warm. Tests drive [`Loader::check_now`] directly instead of waiting for
//! the thread.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::MlError;
use super::registry::{Kind, load_anomaly, load_forecast, read_latest};
use super::station::Models;

/// The process's current models and how many times they were replaced.
#[derive(Debug)]
pub struct Slot {
    generation: AtomicU64,
    models: Mutex<Models>,
}

impl Slot {
    fn new(models: Models) -> Slot {
        Slot {
            generation: AtomicU64::new(0),
            models: Mutex::new(models),
        }
    }

    /// Locks the models. A poisoned lock is still consistent: the only write is one
    /// assignment of a whole [`Models`], which cannot be left half done.
    fn lock(&self) -> std::sync::MutexGuard<'_, Models> {
        self.models.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, models: Models) {
        let mut current = self.lock();
        *current = models;
        // Under the lock, so a subscriber reading the generation under the lock sees the
        // models that go with it.
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// A worker's handle on the [`Slot`]: cheap to poll from inside an operator.
#[derive(Clone, Debug)]
pub struct Subscriber {
    slot: Arc<Slot>,
    seen: u64,
}

impl Subscriber {
    fn new(slot: &Arc<Slot>) -> Subscriber {
        Subscriber {
            slot: slot.clone(),
            seen: slot.generation.load(Ordering::Acquire),
        }
    }

    /// The new models when the slot changed since the last poll, else `None`. Never reads
    /// a file; takes the slot's lock only when the generation moved.
    pub fn poll(&mut self) -> Option<Models> {
        if self.slot.generation.load(Ordering::Acquire) == self.seen {
            return None;
        }
        let models = self.slot.lock();
        self.seen = self.slot.generation.load(Ordering::Acquire);
        Some(models.clone())
    }
}

/// What one registry check found.
#[derive(Debug)]
pub enum Check {
    /// LATEST still names the running versions (or cannot be read right now).
    Unchanged,
    /// New versions loaded and published to every worker.
    Loaded {
        /// The forecast version now running.
        forecast: String,
        /// The anomaly version now running.
        anomaly: String,
    },
    /// LATEST names versions that fail to load; reported, the running ones kept.
    Rejected(MlError),
    /// The same rejected versions again: already reported, nothing to do.
    StillRejected,
}

/// Checks one registry directory and publishes what loads. One per process.
#[derive(Debug)]
pub struct Loader {
    dir: PathBuf,
    current: Models,
    slot: Arc<Slot>,
    /// Versions (`forecast/anomaly`) that failed to load, so they are reported once.
    rejected: Option<String>,
}

impl Loader {
    /// Watches `dir`, starting from the running `models`.
    pub fn new(dir: PathBuf, models: Models) -> Loader {
        Loader {
            dir,
            slot: Arc::new(Slot::new(models.clone())),
            current: models,
            rejected: None,
        }
    }

    /// A handle for one worker.
    pub fn subscribe(&self) -> Subscriber {
        Subscriber::new(&self.slot)
    }

    /// Reads LATEST now and, when it names other versions, loads and publishes them.
    /// Blocks on file I/O: call it from the reload thread or a test, never a worker.
    pub fn check_now(&mut self) -> Check {
        let (Ok(forecast), Ok(anomaly)) = (
            read_latest(&self.dir, Kind::Forecast),
            read_latest(&self.dir, Kind::Anomaly),
        ) else {
            // A registry being replaced by hand; the next check sees the result.
            return Check::Unchanged;
        };
        if forecast == self.current.forecast.version && anomaly == self.current.anomaly.version {
            return Check::Unchanged;
        }
        let key = format!("{forecast}/{anomaly}");
        if self.rejected.as_deref() == Some(key.as_str()) {
            return Check::StillRejected;
        }
        match self.load(&forecast, &anomaly) {
            Ok(models) => {
                self.rejected = None;
                self.current = models.clone();
                self.slot.publish(models);
                tracing::info!(%forecast, %anomaly, registry = %self.dir.display(), "new models loaded; workers switch at their next window");
                Check::Loaded { forecast, anomaly }
            }
            Err(error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    %forecast,
                    %anomaly,
                    "new model rejected; keeping the running one"
                );
                self.rejected = Some(key);
                Check::Rejected(error)
            }
        }
    }

    /// Loads what changed; a kind whose version did not change keeps its `Arc`.
    fn load(&self, forecast: &str, anomaly: &str) -> Result<Models, MlError> {
        Ok(Models {
            forecast: if forecast == self.current.forecast.version {
                self.current.forecast.clone()
            } else {
                load_forecast(&self.dir, forecast)?
            },
            anomaly: if anomaly == self.current.anomaly.version {
                self.current.anomaly.clone()
            } else {
                load_anomaly(&self.dir, anomaly)?
            },
        })
    }

    /// Checks every `interval` on a thread of its own until the returned handle drops.
    pub fn spawn(mut self, interval: Duration) -> Result<Reloader, std::io::Error> {
        let slot = self.slot.clone();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("model-reload".into()).spawn(move || {
            // The wait doubles as the stop signal: dropping the sender ends it at once.
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                self.check_now();
            }
        })?;
        Ok(Reloader {
            slot,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// The running reload thread. Dropping it stops the thread and waits for it.
#[derive(Debug)]
pub struct Reloader {
    slot: Arc<Slot>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Reloader {
    /// A handle for one worker.
    pub fn subscribe(&self) -> Subscriber {
        Subscriber::new(&self.slot)
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A panic in the thread (a bug) has already been printed; the run's own
            // outcome is what matters now.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::ml::registry::{self, LATEST, METADATA_FILE, MODEL_FILE, load_latest};

    /// A registry in a temporary directory holding the committed v2 of both kinds.
    fn registry() -> (tempfile::TempDir, Models) {
        let dir = tempfile::tempdir().unwrap();
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        for kind in ["forecast", "anomaly"] {
            let version = std::fs::read_to_string(committed.join(kind).join(LATEST)).unwrap();
            let from = committed.join(kind).join(version.trim());
            let to = dir.path().join(kind).join(version.trim());
            std::fs::create_dir_all(&to).unwrap();
            for file in [MODEL_FILE, METADATA_FILE] {
                std::fs::copy(from.join(file), to.join(file)).unwrap();
            }
            std::fs::write(dir.path().join(kind).join(LATEST), version).unwrap();
        }
        let models = load_latest(dir.path()).unwrap();
        (dir, models)
    }

    /// Publishes a copy of the running forecast model as `version`.
    fn publish_forecast(dir: &Path, models: &Models, version: &str) {
        let meta = registry::Metadata {
            version: version.into(),
            kind: "forecast".into(),
            trained_at: "2026-01-01T00:00:00Z".into(),
            data: serde_json::Value::Null,
            features: vec![],
            hyperparameters: serde_json::Value::Null,
            metrics: serde_json::Value::Null,
        };
        registry::save(dir, Kind::Forecast, &models.forecast.model, &meta).unwrap();
    }

    #[test]
    fn a_new_version_reaches_every_worker_once() {
        let (dir, models) = registry();
        let mut loader = Loader::new(dir.path().to_owned(), models.clone());
        let mut workers = [loader.subscribe(), loader.subscribe()];
        assert!(matches!(loader.check_now(), Check::Unchanged));
        assert!(workers.iter_mut().all(|w| w.poll().is_none()));

        publish_forecast(dir.path(), &models, "v9");
        assert!(workers.iter_mut().all(|w| w.poll().is_none()), "nothing before a check");
        match loader.check_now() {
            Check::Loaded { forecast, anomaly } => assert_eq!((forecast.as_str(), anomaly.as_str()), ("v9", "v2")),
            other => panic!("{other:?}"),
        }
        for worker in &mut workers {
            let new = worker.poll().expect("every worker sees the new version");
            assert_eq!(new.forecast.version, "v9");
            // The unchanged kind keeps its loaded model rather than reading it again.
            assert!(Arc::ptr_eq(&new.anomaly, &models.anomaly));
            assert!(worker.poll().is_none(), "once");
        }
        assert!(matches!(loader.check_now(), Check::Unchanged));
    }

    #[test]
    fn a_broken_version_is_reported_once_and_the_running_one_kept() {
        let (dir, models) = registry();
        let mut loader = Loader::new(dir.path().to_owned(), models.clone());
        let mut worker = loader.subscribe();
        let broken = dir.path().join("anomaly").join("v3");
        std::fs::create_dir_all(&broken).unwrap();
        std::fs::write(broken.join(MODEL_FILE), "{\"not\": \"a model\"}").unwrap();
        std::fs::write(dir.path().join("anomaly").join(LATEST), "v3\n").unwrap();
        assert!(matches!(loader.check_now(), Check::Rejected(MlError::Model(_))));
        assert!(matches!(loader.check_now(), Check::StillRejected));
        assert!(worker.poll().is_none(), "the running models stay");

        // A good version after a bad one loads normally.
        publish_forecast(dir.path(), &models, "v5");
        std::fs::write(dir.path().join("anomaly").join(LATEST), "v2\n").unwrap();
        assert!(matches!(loader.check_now(), Check::Loaded { .. }));
        assert_eq!(worker.poll().map(|m| m.forecast.version.clone()), Some("v5".into()));
    }

    #[test]
    fn a_subscriber_that_missed_two_versions_gets_the_newest_once() {
        let (dir, models) = registry();
        let mut loader = Loader::new(dir.path().to_owned(), models.clone());
        let mut worker = loader.subscribe();
        publish_forecast(dir.path(), &models, "v7");
        assert!(matches!(loader.check_now(), Check::Loaded { .. }));
        publish_forecast(dir.path(), &models, "v8");
        assert!(matches!(loader.check_now(), Check::Loaded { .. }));
        assert_eq!(worker.poll().map(|m| m.forecast.version.clone()), Some("v8".into()));
        assert!(worker.poll().is_none());
    }

    #[test]
    fn the_thread_stops_when_its_handle_drops() {
        let (dir, models) = registry();
        let reloader = Loader::new(dir.path().to_owned(), models)
            .spawn(Duration::from_secs(3600))
            .unwrap();
        let mut worker = reloader.subscribe();
        assert!(worker.poll().is_none());
        // Returns at once: the hour-long wait ends when the sender drops.
        drop(reloader);
    }

    #[test]
    fn handles_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Subscriber>();
        send_sync::<Reloader>();
    }
}

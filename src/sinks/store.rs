//! The dataflow operators that fill the serving layer's [`Store`].
//!
//! In one process every worker writes its own stations straight into the shared store:
//! no exchange, and the store's shards keep workers apart. In a cluster the API runs in
//! process 0 only (clients should not need to know which process owns a station), so every
//! worker routes its final rows to worker 0. That is one record per station per minute —
//! a few hundred kilobytes a second at a thousand stations — small beside the readings
//! the dataflow has already exchanged by station.

use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::Operator;

use crate::schema::{Prediction, WindowFeatures};
use crate::serving::store::Store;

/// Where a cluster's rows go: global worker 0, in process 0.
const API_WORKER: u64 = 0;

/// Hands each message's records to `insert` as one batch (timely messages hold up to
/// about a thousand records), so the store takes each shard lock once per batch, and the
/// records move straight from the message into the store's compact form.
fn batch_sink<'s, T, P>(
    stream: StreamVec<'s, u64, T>,
    pact: P,
    name: &str,
    mut insert: impl FnMut(std::vec::Drain<'_, T>) + 'static,
) where
    T: Clone + 'static,
    P: ParallelizationContract<u64, Vec<T>>,
{
    stream.sink(pact, name, move |(input, _frontier)| {
        input.for_each(|_cap, data| insert(data.drain(..)));
    });
}

/// Writes every window into `store`. `routed` sends them to worker 0 first (clusters).
pub fn store_features_sink(windows: StreamVec<'_, u64, WindowFeatures>, store: Arc<Store>, routed: bool) {
    let insert = move |batch: std::vec::Drain<'_, WindowFeatures>| store.insert_features(batch);
    if routed {
        batch_sink(
            windows,
            Exchange::new(|_: &WindowFeatures| API_WORKER),
            "StoreFeatures",
            insert,
        );
    } else {
        batch_sink(windows, Pipeline, "StoreFeatures", insert);
    }
}

/// Writes every prediction into `store`. `routed` as for [`store_features_sink`].
pub fn store_predictions_sink(predictions: StreamVec<'_, u64, Prediction>, store: Arc<Store>, routed: bool) {
    let insert = move |batch: std::vec::Drain<'_, Prediction>| store.insert_predictions(batch);
    if routed {
        batch_sink(
            predictions,
            Exchange::new(|_: &Prediction| API_WORKER),
            "StorePredictions",
            insert,
        );
    } else {
        batch_sink(predictions, Pipeline, "StorePredictions", insert);
    }
}

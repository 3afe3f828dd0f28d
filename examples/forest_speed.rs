//! Quick forest scoring speed check on the committed model: `cargo run --release --example forest_speed`.
fn main() {
    let models = weatherflow::ml::registry::load_latest(std::path::Path::new("models")).expect("models");
    let forest = &models.anomaly.model.forest;
    let mut rng = weatherflow::ml::forest::SplitMix64::new(1);
    let rows: Vec<[f32; 7]> = (0..100_000)
        .map(|_| std::array::from_fn(|_| (rng.next_f64() as f32 - 0.5) * 2.0))
        .collect();
    let mut out = vec![0.0; rows.len()];
    for _ in 0..3 {
        let t = std::time::Instant::now();
        forest.score_batch(&rows, &mut out);
        let batch = t.elapsed();
        let t = std::time::Instant::now();
        let mut s = 0.0;
        for r in &rows {
            s += forest.score(r);
        }
        let single = t.elapsed();
        println!(
            "batch {:.2} M rows/s, one by one {:.2} M rows/s ({s:.1})",
            rows.len() as f64 / batch.as_secs_f64() / 1e6,
            rows.len() as f64 / single.as_secs_f64() / 1e6
        );
    }
}

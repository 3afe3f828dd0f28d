//! Isolation forest (Liu, Ting and Zhou, 2008), written here so that it is seeded,
//! deterministic, serde-persisted and fast.
//!
//! Training draws `sample_size` rows without replacement per tree and splits on a random
//! feature at a uniform random threshold until a node is alone or the height limit
//! `ceil(log2 sample_size)` is reached. An anomaly is isolated in few splits, so its
//! average path length E[h(x)] is short. The score is `2^(−E[h(x)] / c(ψ))`, where
//! `c(n) = 2 H(n − 1) − 2 (n − 1) / n` is the average unsuccessful-search path length of
//! a binary search tree with `n` points, which normalises path lengths across sample sizes;
//! a leaf holding `size > 1` points adds `c(size)` for the subtree it stands for.
//!
//! Speed: nodes are 8 bytes, stored in preorder so the left child is the next node; each
//! leaf stores its finished path length (depth + c(size)), so scoring is a loop of loads
//! and compares. [`IsolationForest::score_batch`] walks tree by tree over a batch so each
//! tree (≤ 4 KiB) stays in L1 cache while the rows pass through it.

use serde::{Deserialize, Serialize};

use super::MlError;

const LEAF: u16 = u16::MAX;
/// Rows walked through a tree together by [`IsolationForest::score_batch`].
pub const LANES: usize = 16;
/// Widest input row: scoring copies rows into fixed-size lane buffers.
pub const MAX_DIMS: usize = 16;
/// Deepest tree accepted: the perfect layout has 2^depth leaves per tree, so a
/// hand-edited file with a degenerate chain must be refused, not allocated.
pub const MAX_DEPTH: usize = 16;
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// Average path length of an unsuccessful search in a BST of `n` points.
pub fn c(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// SplitMix64: tiny, seedable, and identical on every platform.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// One node: a split (`feature`, `value` threshold, `right` child index within the
/// tree; the left child is the next node) or a leaf (`feature == LEAF`, `value` = the
/// finished path length).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Node {
    #[serde(rename = "f")]
    feature: u16,
    #[serde(rename = "r")]
    right: u16,
    #[serde(rename = "v")]
    value: f32,
}

/// Training settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForestParams {
    /// Number of trees.
    pub trees: usize,
    /// Rows per tree (ψ).
    pub sample_size: usize,
    /// Random seed.
    pub seed: u64,
}

impl Default for ForestParams {
    fn default() -> Self {
        ForestParams {
            trees: 50,
            sample_size: 256,
            seed: 42,
        }
    }
}

/// A trained forest. On the wire it is the node lists; in memory it also keeps the
/// [`Perfect`] layout scoring uses, rebuilt (and checked) on deserialisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ForestData")]
pub struct IsolationForest {
    /// The settings it was trained with.
    pub params: ForestParams,
    /// Number of input features.
    pub dims: usize,
    /// `c(sample_size)`, the normaliser.
    norm: f32,
    /// Start of each tree in `nodes`.
    starts: Vec<u32>,
    nodes: Vec<Node>,
    #[serde(skip)]
    perfect: Perfect,
}

/// The serialised fields, checked and compiled into an [`IsolationForest`] on load.
#[derive(Deserialize)]
struct ForestData {
    params: ForestParams,
    dims: usize,
    norm: f32,
    starts: Vec<u32>,
    nodes: Vec<Node>,
}

impl TryFrom<ForestData> for IsolationForest {
    type Error = String;
    fn try_from(d: ForestData) -> Result<Self, String> {
        let mut forest = IsolationForest {
            params: d.params,
            dims: d.dims,
            norm: d.norm,
            starts: d.starts,
            nodes: d.nodes,
            perfect: Perfect::default(),
        };
        forest.validate().map_err(|e| e.to_string())?;
        let depth = (0..forest.starts.len())
            .map(|t| tree_depth(forest.tree(t), 0))
            .max()
            .unwrap_or(0);
        if depth > MAX_DEPTH {
            return Err(format!(
                "isolation forest: a tree is {depth} deep, more than {MAX_DEPTH}"
            ));
        }
        forest.perfect = Perfect::build(&forest);
        Ok(forest)
    }
}

/// Every tree padded to a perfect binary tree of the height limit: internal node `i` has
/// children `2i + 1` (value below the threshold) and `2i + 2`, and a leaf reached early
/// is copied into every slot under it. Scoring is then a fixed number of branch-free
/// steps per tree, with no "is this a leaf" test.
#[derive(Clone, Debug, Default, PartialEq)]
struct Perfect {
    depth: usize,
    features: Vec<u16>,
    thresholds: Vec<f32>,
    leaves: Vec<f32>,
}

impl Perfect {
    fn build(forest: &IsolationForest) -> Perfect {
        // Training never grows deeper than ceil(log2 ψ); a hand-made file might, and is
        // then measured from its actual depth.
        let depth = (0..forest.starts.len())
            .map(|t| tree_depth(forest.tree(t), 0))
            .max()
            .unwrap_or(0);
        let internal = (1usize << depth) - 1;
        let mut p = Perfect {
            depth,
            features: Vec::with_capacity(internal * forest.starts.len()),
            thresholds: Vec::with_capacity(internal * forest.starts.len()),
            leaves: Vec::with_capacity((internal + 1) * forest.starts.len()),
        };
        for t in 0..forest.starts.len() {
            let tree = forest.tree(t);
            let mut features = vec![0u16; internal];
            let mut thresholds = vec![0.0f32; internal];
            let mut leaves = vec![0.0f32; internal + 1];
            fill(tree, 0, 0, depth, &mut features, &mut thresholds, &mut leaves);
            p.features.extend(features);
            p.thresholds.extend(thresholds);
            p.leaves.extend(leaves);
        }
        p
    }
}

fn tree_depth(tree: &[Node], i: usize) -> usize {
    let node = tree[i];
    if node.feature == LEAF {
        0
    } else {
        1 + tree_depth(tree, i + 1).max(tree_depth(tree, node.right as usize))
    }
}

/// Copies node `i` of `tree` into perfect-tree slot `pos` at `level`.
fn fill(
    tree: &[Node],
    i: usize,
    pos: usize,
    depth: usize,
    features: &mut [u16],
    thresholds: &mut [f32],
    leaves: &mut [f32],
) {
    let node = tree[i];
    if level_of(pos) == depth {
        leaves[pos + 1 - (1 << depth)] = node.value;
        return;
    }
    if node.feature == LEAF {
        // Both children lead to the same leaf value, whatever the comparison says.
        features[pos] = 0;
        thresholds[pos] = 0.0;
        fill(tree, i, 2 * pos + 1, depth, features, thresholds, leaves);
        fill(tree, i, 2 * pos + 2, depth, features, thresholds, leaves);
    } else {
        features[pos] = node.feature;
        thresholds[pos] = node.value;
        fill(tree, i + 1, 2 * pos + 1, depth, features, thresholds, leaves);
        fill(
            tree,
            node.right as usize,
            2 * pos + 2,
            depth,
            features,
            thresholds,
            leaves,
        );
    }
}

/// Level of slot `pos` in a perfect binary tree stored breadth-first.
fn level_of(pos: usize) -> usize {
    (usize::BITS - 1 - (pos + 1).leading_zeros()) as usize
}

impl IsolationForest {
    /// Trains on `rows` (each of length `dims`). Deterministic for a given seed.
    pub fn fit(rows: &[Vec<f32>], params: ForestParams) -> Result<IsolationForest, MlError> {
        let dims = rows.first().map_or(0, Vec::len);
        if rows.len() < 2 || dims == 0 || dims > MAX_DIMS {
            return Err(MlError::Train(format!(
                "isolation forest needs at least 2 rows of 1..={MAX_DIMS} features, got {} rows of {dims}",
                rows.len()
            )));
        }
        if rows.iter().any(|r| r.len() != dims || r.iter().any(|v| !v.is_finite())) {
            return Err(MlError::Train(
                "isolation forest rows must be finite and equally long".into(),
            ));
        }
        if params.trees == 0 || params.sample_size < 2 || params.sample_size > 1 << MAX_DEPTH {
            return Err(MlError::Train(format!(
                "isolation forest needs trees ≥ 1 and 2 ≤ sample_size ≤ {}",
                1 << MAX_DEPTH
            )));
        }
        let psi = params.sample_size.min(rows.len());
        let height_limit = (psi as f64).log2().ceil() as usize;
        let mut rng = SplitMix64::new(params.seed);
        let mut starts = Vec::with_capacity(params.trees);
        let mut nodes = Vec::new();
        let mut index: Vec<usize> = (0..rows.len()).collect();
        for _ in 0..params.trees {
            // Partial Fisher–Yates: the first ψ entries become a sample without replacement.
            for i in 0..psi {
                let j = i + rng.below(index.len() - i);
                index.swap(i, j);
            }
            let mut sample: Vec<usize> = index[..psi].to_vec();
            starts.push(nodes.len() as u32);
            let mut tree = Vec::new();
            grow(rows, &mut sample, 0, height_limit, &mut rng, &mut tree);
            nodes.extend(tree);
        }
        let mut forest = IsolationForest {
            params: ForestParams {
                sample_size: psi,
                ..params
            },
            dims,
            norm: c(psi) as f32,
            starts,
            nodes,
            perfect: Perfect::default(),
        };
        forest.perfect = Perfect::build(&forest);
        Ok(forest)
    }

    /// Checks internal consistency after deserialisation: every child index in range.
    pub fn validate(&self) -> Result<(), MlError> {
        let bad = |what: &str| Err(MlError::Model(format!("isolation forest: {what}")));
        if self.starts.is_empty() || self.norm.is_nan() || self.norm <= 0.0 {
            return bad("no trees");
        }
        if self.dims == 0 || self.dims > MAX_DIMS {
            return bad("input width out of range");
        }
        for (t, &start) in self.starts.iter().enumerate() {
            let end = self.starts.get(t + 1).map_or(self.nodes.len(), |&s| s as usize);
            let start = start as usize;
            if start >= end || end > self.nodes.len() {
                return bad("tree bounds out of range");
            }
            for (i, node) in self.nodes[start..end].iter().enumerate() {
                if node.feature != LEAF
                    && (node.feature as usize >= self.dims
                        || node.right as usize <= i + 1
                        || start + node.right as usize >= end)
                {
                    return bad("split node out of range");
                }
                if !node.value.is_finite() {
                    return bad("non-finite node value");
                }
            }
        }
        Ok(())
    }

    fn tree(&self, t: usize) -> &[Node] {
        let start = self.starts[t] as usize;
        let end = self.starts.get(t + 1).map_or(self.nodes.len(), |&s| s as usize);
        &self.nodes[start..end]
    }

    /// Anomaly score in (0, 1] of one row: ≈ 1 isolated, ≤ 0.5 ordinary.
    pub fn score(&self, row: &[f32]) -> f32 {
        if row.len() < self.dims {
            return 0.0;
        }
        let p = &self.perfect;
        let internal = (1usize << p.depth) - 1;
        let mut sum = 0.0;
        for t in 0..self.starts.len() {
            let base = t * internal;
            let mut i = 0;
            for _ in 0..p.depth {
                let below = row[usize::from(p.features[base + i])] < p.thresholds[base + i];
                i = 2 * i + 1 + usize::from(!below);
            }
            sum += p.leaves[t * (internal + 1) + i - internal];
        }
        (2.0f32).powf(-(sum / self.starts.len() as f32) / self.norm)
    }

    /// Scores many rows into `out` (same length), tree by tree.
    ///
    /// Rows go through each tree [`LANES`] at a time in lockstep: one row's walk is a chain
    /// of dependent loads, but independent chains overlap in the CPU. A row shorter than
    /// `dims` scores 0.
    pub fn score_batch<R: AsRef<[f32]>>(&self, rows: &[R], out: &mut [f32]) {
        let p = &self.perfect;
        let internal = (1usize << p.depth) - 1;
        for (chunk, outs) in rows.chunks(LANES).zip(out.chunks_mut(LANES)) {
            let mut lanes = [[0.0f32; MAX_DIMS]; LANES];
            let mut sums = [0.0f32; LANES];
            let n = chunk.len().min(outs.len());
            for lane in 0..n {
                let row = chunk[lane].as_ref();
                if row.len() >= self.dims && self.dims <= MAX_DIMS {
                    lanes[lane][..self.dims].copy_from_slice(&row[..self.dims]);
                } else {
                    sums[lane] = f32::NAN;
                }
            }
            for t in 0..self.starts.len() {
                let features = &p.features[t * internal..(t + 1) * internal];
                let thresholds = &p.thresholds[t * internal..(t + 1) * internal];
                let leaves = &p.leaves[t * (internal + 1)..(t + 1) * (internal + 1)];
                let mut at = [0usize; LANES];
                for _ in 0..p.depth {
                    for lane in 0..LANES {
                        let i = at[lane];
                        let below = lanes[lane][usize::from(features[i]) % MAX_DIMS] < thresholds[i];
                        let go_right = !below;
                        at[lane] = 2 * i + 1 + usize::from(go_right);
                    }
                }
                for lane in 0..LANES {
                    sums[lane] += leaves[at[lane] - internal];
                }
            }
            let trees = self.starts.len() as f32;
            for lane in 0..n {
                outs[lane] = if sums[lane].is_nan() {
                    0.0
                } else {
                    (2.0f32).powf(-(sums[lane] / trees) / self.norm)
                };
            }
        }
    }
}

/// Grows one subtree over `sample` in preorder, appending to `tree`.
fn grow(
    rows: &[Vec<f32>],
    sample: &mut [usize],
    depth: usize,
    limit: usize,
    rng: &mut SplitMix64,
    tree: &mut Vec<Node>,
) {
    let leaf = |tree: &mut Vec<Node>, size: usize| {
        tree.push(Node {
            feature: LEAF,
            right: 0,
            value: (depth as f64 + c(size)) as f32,
        })
    };
    if sample.len() <= 1 || depth >= limit {
        leaf(tree, sample.len());
        return;
    }
    let dims = rows[sample[0]].len();
    // A random feature that still varies in this node; after `dims` misses the node is
    // all duplicates and becomes a leaf.
    let mut split = None;
    for _ in 0..dims {
        let f = rng.below(dims);
        let (lo, hi) = sample.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &r| {
            (lo.min(rows[r][f]), hi.max(rows[r][f]))
        });
        if lo < hi {
            let t = lo + (hi - lo) * rng.next_f64() as f32;
            // Guard against rounding onto `lo`, which would send everything right.
            split = Some((f, if t > lo { t } else { hi }));
            break;
        }
    }
    let Some((feature, threshold)) = split else {
        leaf(tree, sample.len());
        return;
    };
    let mut left_len = 0;
    for i in 0..sample.len() {
        if rows[sample[i]][feature] < threshold {
            sample.swap(i, left_len);
            left_len += 1;
        }
    }
    let me = tree.len();
    tree.push(Node {
        feature: feature as u16,
        right: 0,
        value: threshold,
    });
    let (left, right) = sample.split_at_mut(left_len);
    grow(rows, left, depth + 1, limit, rng, tree);
    // Trees have at most 2ψ − 1 nodes; ψ is capped far below u16::MAX by the caller.
    tree[me].right = tree.len() as u16;
    grow(rows, right, depth + 1, limit, rng, tree);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud(n: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = SplitMix64::new(seed);
        (0..n)
            .map(|_| (0..3).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect())
            .collect()
    }

    #[test]
    fn c_matches_the_paper() {
        assert_eq!(c(1), 0.0);
        assert_eq!(c(2), 1.0);
        // c(256) ≈ 10.24 (Liu et al.).
        assert!((c(256) - 10.2448).abs() < 1e-3, "{}", c(256));
    }

    #[test]
    fn isolates_a_known_outlier() {
        let rows = cloud(2000, 7);
        let forest = IsolationForest::fit(&rows, ForestParams::default()).unwrap();
        forest.validate().unwrap();
        let inlier = forest.score(&[0.0, 0.1, -0.1]);
        let outlier = forest.score(&[6.0, -5.0, 4.0]);
        // A point outside the training hull follows the extreme branch of every split (no
        // threshold falls beyond the data), so it scores ≈ 0.65, not ≈ 1.
        assert!(outlier > 0.6, "outlier {outlier}");
        assert!(inlier < 0.5, "inlier {inlier}");
        // The outlier outranks every training row.
        let mut scores = vec![0.0; rows.len()];
        forest.score_batch(&rows, &mut scores);
        assert!(scores.iter().all(|s| *s < outlier));
    }

    #[test]
    fn same_seed_same_forest_and_round_trip() {
        let rows = cloud(500, 1);
        let a = IsolationForest::fit(&rows, ForestParams::default()).unwrap();
        let b = IsolationForest::fit(&rows, ForestParams::default()).unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
        let other = IsolationForest::fit(
            &rows,
            ForestParams {
                seed: 43,
                ..ForestParams::default()
            },
        )
        .unwrap();
        assert_ne!(a, other);
        let back: IsolationForest = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
        back.validate().unwrap();
        assert_eq!(back.score(&[0.3, 0.3, 0.3]), a.score(&[0.3, 0.3, 0.3]));
    }

    /// A one-tree forest whose tree is a chain of `depth` splits.
    fn chain(depth: usize) -> String {
        let mut nodes = Vec::new();
        for i in 0..depth {
            nodes.push(format!(r#"{{"f":0,"r":{},"v":0.5}}"#, 2 * i + 2));
            nodes.push(format!(r#"{{"f":{LEAF},"r":0,"v":1.0}}"#));
        }
        nodes.push(format!(r#"{{"f":{LEAF},"r":0,"v":2.0}}"#));
        format!(
            r#"{{"params":{{"trees":1,"sample_size":256,"seed":1}},"dims":1,"norm":10.0,"starts":[0],"nodes":[{}]}}"#,
            nodes.join(",")
        )
    }

    #[test]
    fn loading_checks_structure_and_depth() {
        let ok: IsolationForest = serde_json::from_str(&chain(5)).expect("a 5-deep chain loads");
        // Values ≥ every threshold walk the whole chain to the last leaf.
        assert_eq!(ok.score(&[1.0]), (2.0f32).powf(-2.0 / 10.0));
        assert_eq!(ok.score(&[0.0]), (2.0f32).powf(-1.0 / 10.0));
        let deep = serde_json::from_str::<IsolationForest>(&chain(MAX_DEPTH + 4));
        assert!(deep.unwrap_err().to_string().contains("deep"));
        let broken = chain(3).replace(r#""r":2,"#, r#""r":99,"#);
        assert!(
            serde_json::from_str::<IsolationForest>(&broken).is_err(),
            "child out of range"
        );
    }

    #[test]
    fn rejects_bad_training_input() {
        assert!(IsolationForest::fit(&[vec![1.0]], ForestParams::default()).is_err());
        assert!(IsolationForest::fit(&[vec![1.0], vec![f32::NAN]], ForestParams::default()).is_err());
    }
}

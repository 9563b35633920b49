//! A small seeded RNG whose whole state is one `u64`, so checkpoints can save
//! it and a resumed run draws the same numbers.

use serde::{Deserialize, Serialize};

/// SplitMix64 (ludus-core's) behind a seed-mixing constructor: fast, good
/// enough for sampling actions and shuffling. Its serde form (`{state}`) is
/// what checkpoints store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    pub state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng {
            state: seed ^ 0x5851_f42d_4c95_7f2d,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        ludus_core::splitmix64(&mut self.state)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        ludus_core::unit_f64(self.next_u64())
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// A seed derived from a parent seed and a path of indices.
pub fn derive(seed: u64, path: &[u64]) -> u64 {
    let mut r = Rng::new(seed);
    for &p in path {
        r = Rng::new(r.next_u64() ^ p.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
    r.next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_sane_ranges() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let n = 20_000;
        let mean: f64 = (0..n).map(|_| a.normal()).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.05, "{mean}");
        assert!((0..1000).all(|_| a.below(3) < 3));
        assert_ne!(derive(1, &[0, 1]), derive(1, &[1, 0]));
    }
}

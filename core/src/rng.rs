//! SplitMix64: the one generator behind episode seeds, WASI randomness,
//! benchmark action streams, the trainer's sampling and the suite's
//! bootstrap. Recorded digests and suite statistics depend on its exact bits,
//! so nothing here may change what a given state yields.

use serde::{Deserialize, Serialize};

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// One step of SplitMix64 on a bare state: advances `state` and returns the
/// next output.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(GOLDEN_GAMMA);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64 whose whole state is one `u64` (taken as is, not mixed), so a
/// checkpoint can save it and a resumed stream draws the same numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SplitMix64 {
    pub state: u64,
}

impl SplitMix64 {
    pub const fn new(state: u64) -> SplitMix64 {
        SplitMix64 { state }
    }

    pub fn next_u64(&mut self) -> u64 {
        splitmix64(&mut self.state)
    }

    /// Uniform in [0, 1): see [`unit_f64`].
    pub fn next_f64(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }

    /// Uniform in `0..n` by Lemire's multiply-shift (no division); `n == 0`
    /// gives 0. The suite's bootstrap draws its resamples this way.
    pub fn below_lemire(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// A generator output as a float uniform in [0, 1): its top 53 bits times
/// 2^-53. Exact, so it equals the `/ 2^53` form the trainer used and the
/// `* (1 / 2^53)` form the CartPole benchmark used, bit for bit.
pub fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Episode `index`'s seed: a function of the run seed and the index alone, so
/// results do not depend on how episodes are spread over threads.
pub fn episode_seed(run_seed: u64, index: u64) -> u64 {
    let mut s = run_seed ^ splitmix64(&mut index.wrapping_add(0x1234_5678));
    splitmix64(&mut s)
}

/// A seed for one purpose within an episode (0: env sandbox, 1: agent, ...).
pub fn derived_seed(episode_seed: u64, purpose: u64) -> u64 {
    let mut s = episode_seed.wrapping_add(purpose.wrapping_mul(0xD1B5_4A32_D192_ED03));
    splitmix64(&mut s)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values were computed with the copies this module replaced
    // (arena's run.rs, the trainer's Rng, the suite's bootstrap, the
    // benchmarks), before they were deleted.

    #[test]
    fn stream_matches_the_reference() {
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut s), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(splitmix64(&mut s), 0x06C4_5D18_8009_454F);
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn seeds_match_the_old_run_module() {
        assert_eq!(episode_seed(42, 0), 0x0EC6_214E_D59E_D697);
        assert_eq!(episode_seed(42, 7), 0xA0E7_1128_1E5F_39CD);
        assert_eq!(episode_seed(0, u64::MAX), 0x28AB_A7AD_7EA8_9F56);
        assert_eq!(derived_seed(0x1234, 0), 0x5F64_2F87_D5E2_3888);
        assert_eq!(derived_seed(0x1234, 3), 0x3525_5EAC_A055_B4E9);
    }

    #[test]
    fn floats_match_the_trainer_and_the_bench() {
        // The trainer's Rng::new(7) xors its seed with this constant.
        let mut t = SplitMix64::new(7 ^ 0x5851_f42d_4c95_7f2d);
        assert_eq!(t.next_u64(), 0xFAE3_3298_A839_9D50);
        assert_eq!(t.next_f64().to_bits(), 0x3FD8_7250_CA4F_FFCA);
        let mut b = SplitMix64::new(7);
        assert_eq!(b.next_f64().to_bits(), 0x3FD8_F2F8_7916_4C82);
        // The benchmark's form, multiplying by the reciprocal.
        let (mut x, mut y) = (SplitMix64::new(99), SplitMix64::new(99));
        for _ in 0..10_000 {
            let old = (x.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
            assert_eq!(old.to_bits(), y.next_f64().to_bits());
        }
    }

    #[test]
    fn below_lemire_matches_the_suite_bootstrap() {
        let mut r = SplitMix64::new(0x6C75_6475_7331);
        assert_eq!(r.below_lemire(10), 6);
        assert_eq!(r.below_lemire(1000), 746);
        assert_eq!(r.below_lemire(3), 1);
        assert_eq!(r.below_lemire(0), 0);
    }
}

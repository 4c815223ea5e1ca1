//! The simulator's randomness: xoshiro256** seeded through SplitMix64, so a `u64` seed fixes
//! every draw on every platform (no operating-system entropy, no floating-point library calls).

/// One step of SplitMix64 (Steele, Lea and Flood): the seeder for [`Rng`].
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small, fast, seeded pseudo-random generator (xoshiro256**, Blackman and Vigna). Not for
/// cryptography: for simulations, where the same seed must give the same run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded from `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut state = seed;
        let mut s = [0u64; 4];
        for word in &mut s {
            *word = splitmix64(&mut state);
        }
        // All-zero state is the one xoshiro cannot leave; SplitMix64 never gives four zeros,
        // but be certain.
        if s == [0; 4] {
            s[0] = 1;
        }
        Rng { s }
    }

    /// An independent generator for stream `stream` of `seed` (say, one per node), so that
    /// what one part of a simulation draws never shifts another's draws.
    pub fn stream(seed: u64, stream: u64) -> Rng {
        let mut state = seed ^ 0x6a09_e667_f3bc_c908;
        let a = splitmix64(&mut state);
        let mut mixed = a ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Rng::new(splitmix64(&mut mixed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = self.s;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s1 << 17;
        let mut n = [s0, s1, s2 ^ s0, s3 ^ s1];
        n[1] ^= n[2];
        n[0] ^= n[3];
        n[2] ^= t;
        n[3] = n[3].rotate_left(45);
        self.s = n;
        result
    }

    /// Uniform in `[0, 1)`, with 53 random bits.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)` (`lo` when the range is empty).
    pub fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        if hi > lo {
            lo + (hi - lo) * self.f64()
        } else {
            lo
        }
    }

    /// Uniform in `[0, n)` (0 when `n` is 0), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-and-reject.
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform in `lo..=hi` (`lo` when `hi < lo`).
    pub fn range_u64(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.below(span),
            None => self.next_u64(),
        }
    }

    /// `true` with probability `p` (never for `p <= 0`, always for `p >= 1`; neither draws).
    pub fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 || p.is_nan() {
            false
        } else if p >= 1.0 {
            true
        } else {
            self.f64() < p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        // SplitMix64 from 0: the reference implementation's first outputs.
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(&mut s), 0x6e78_9e6a_a1b9_65f4);
        // The same seed, the same sequence; another seed, another.
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut x = Rng::new(7);
        let mut y = Rng::new(8);
        assert_ne!(x.next_u64(), y.next_u64());
        assert_ne!(Rng::stream(1, 0), Rng::stream(1, 1));
    }

    #[test]
    fn ranges() {
        let mut r = Rng::new(42);
        for _ in 0..10_000 {
            let f = r.f64();
            assert!((0.0..1.0).contains(&f));
            assert!(r.below(7) < 7);
            let v = r.range_u64(25, 35);
            assert!((25..=35).contains(&v));
            let g = r.range_f64(0.5, 1.5);
            assert!((0.5..1.5).contains(&g));
        }
        assert_eq!(r.below(0), 0);
        assert!(!r.chance(0.0));
        assert!(r.chance(1.0));
        let hits = (0..10_000).filter(|_| r.chance(0.25)).count();
        assert!((2_200..2_800).contains(&hits), "{hits}");
    }
}

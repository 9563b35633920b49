//! Cheap timestamps for the per-call durations every frame records. Reading
//! `Instant::now` costs about 22 ns on a virtual machine (a CartPole step
//! through wasm is about 600 ns, and a frame reads the clock two to four
//! times); the x86-64 time-stamp counter costs under half that. Where the
//! counter is not invariant (or on other architectures) this falls back to
//! `Instant`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A point in time, in the stopwatch's own units; only differences mean
/// anything, through [`Stamp::ns_until`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp(u64);

struct Scale {
    /// `None`: timestamps are nanoseconds since `origin`.
    ns_per_tick: Option<f64>,
    origin: Instant,
}

fn scale() -> &'static Scale {
    static SCALE: OnceLock<Scale> = OnceLock::new();
    SCALE.get_or_init(|| Scale {
        ns_per_tick: calibrate(),
        origin: Instant::now(),
    })
}

#[cfg(target_arch = "x86_64")]
fn invariant_tsc() -> bool {
    use std::arch::x86_64::__cpuid;
    // CPUID 0x8000_0007 EDX bit 8: the counter ticks at a constant rate in
    // every power state, the same on every core.
    let max = __cpuid(0x8000_0000).eax;
    max >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0
}

#[cfg(target_arch = "x86_64")]
fn ticks() -> u64 {
    // SAFETY: RDTSC exists on every x86-64 processor.
    unsafe { std::arch::x86_64::_rdtsc() }
}

/// Nanoseconds per counter tick, measured against `Instant` over a
/// millisecond (once per process); `None` to use `Instant` itself.
fn calibrate() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !invariant_tsc() {
            return None;
        }
        let (i0, t0) = (Instant::now(), ticks());
        while i0.elapsed() < Duration::from_millis(1) {
            std::hint::spin_loop();
        }
        let (i1, t1) = (Instant::now(), ticks());
        let ns = (i1 - i0).as_nanos() as f64;
        let ticks = t1.wrapping_sub(t0) as f64;
        // A counter slower than 100 MHz or faster than 100 GHz is not one
        // to trust.
        let per = ns / ticks;
        (ticks > 0.0 && (0.01..=10.0).contains(&per)).then_some(per)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

impl Stamp {
    pub(crate) fn now() -> Stamp {
        let s = scale();
        #[cfg(target_arch = "x86_64")]
        if s.ns_per_tick.is_some() {
            return Stamp(ticks());
        }
        Stamp(s.origin.elapsed().as_nanos() as u64)
    }

    /// Nanoseconds from `self` to `later` (0 if `later` is earlier).
    pub(crate) fn ns_until(self, later: Stamp) -> u64 {
        let d = later.0.saturating_sub(self.0);
        match scale().ns_per_tick {
            Some(per) => (d as f64 * per) as u64,
            None => d,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_measure_nanoseconds() {
        let a = Stamp::now();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let b = Stamp::now();
        let took = start.elapsed().as_nanos() as f64;
        let ns = a.ns_until(b) as f64;
        // Within 10% of the real clock (and not the other way round).
        assert!((ns - took).abs() < took * 0.1, "{ns} ns vs {took} ns");
        assert_eq!(b.ns_until(a), 0);
    }
}

//! Cheap timestamps for the per-call durations every frame records. Reading
//! `Instant::now` on a virtual machine is a noticeable share of a small wasm
//! step, and a frame reads the clock two to four times; `quanta` reads the
//! x86-64 time-stamp counter where it is invariant (under half the cost),
//! calibrated against the system clock, and falls back to the system clock
//! elsewhere.

/// A point in time; only differences mean anything, through [`Stamp::ns_until`].
#[derive(Clone, Copy, Debug)]
pub struct Stamp(quanta::Instant);

impl Stamp {
    pub fn now() -> Stamp {
        Stamp(quanta::Instant::now())
    }

    /// Nanoseconds from `self` to `later` (0 if `later` is earlier).
    pub fn ns_until(self, later: Stamp) -> u64 {
        later.0.saturating_duration_since(self.0).as_nanos() as u64
    }
}

/// The CPU time the calling thread has used so far (`None` where the
/// platform does not say).
pub fn thread_cpu_time() -> Option<std::time::Duration> {
    #[cfg(unix)]
    {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid timespec for the call to fill in.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        (rc == 0).then(|| std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

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

//! Exponential backoff with optional jitter, for reconnecting to the
//! scheduler and for re-sending a result the scheduler could not store.
//!
//! The connection loop asks for the next delay and sleeps until then in one
//! `select!` branch; nothing here sleeps.

use std::time::Duration;

use rand::Rng;

/// Delays that double from `initial` up to `max`, each multiplied by a
/// random factor in `1 ± jitter`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    next: Duration,
}

impl Backoff {
    /// A backoff that starts at `initial`; `jitter` is a fraction (0.2 for
    /// ±20 %).
    pub fn new(initial: Duration, max: Duration, jitter: f64) -> Backoff {
        Backoff {
            initial,
            max,
            jitter: jitter.clamp(0.0, 1.0),
            next: initial,
        }
    }

    /// Reconnecting to the scheduler: 100 ms doubling to 10 s, ±20 %.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10), 0.2)
    }

    /// Re-sending a result: 1 s doubling to 30 s.
    pub fn resend() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(30), 0.0)
    }

    /// The next delay; the one after it is twice as long (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        if self.jitter == 0.0 {
            return base;
        }
        let factor = rand::rng().random_range(1.0 - self.jitter..=1.0 + self.jitter);
        base.mul_f64(factor)
    }

    /// Starts over from the initial delay.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// Jumps to the longest delay (after a refusal that only an operator
    /// can fix: retry, but slowly).
    pub fn exhaust(&mut self) {
        self.next = self.max;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::resend();
        let secs: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        b.exhaust();
        assert_eq!(b.next_delay(), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut b = Backoff::reconnect();
        let mut base = Duration::from_millis(100);
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(
                d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2),
                "{d:?} vs {base:?}"
            );
            base = (base * 2).min(Duration::from_secs(10));
        }
    }
}

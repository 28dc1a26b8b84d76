//! When each socket sends, and when each user of a login storm arrives.
//!
//! Real people press Enter at random moments. So by default (`Arrivals::Random`) every
//! socket sends once per period at a moment drawn uniformly at random within that period:
//! the offered rate is exact (one send per socket per period, so the deliveries/s asked for
//! are the deliveries/s offered), while the sends of different sockets collide as they do
//! in real traffic — several at once, then none. We chose this over Poisson arrivals of the
//! same mean rate because it is the schedule the anchor's figures were measured with (issue
//! 29, `../shared/anchors/node-ws/README.md`), so the two sides are compared under the same
//! load, and because one socket never sends a burst of several messages in a short instant
//! (which a Poisson socket does now and then, and the broker's per-socket frame limit would
//! refuse, measuring the limit instead of the fan-out).
//!
//! `Arrivals::Paced` (`--paced`) is the old schedule: socket i of n sends at exactly i/n of
//! every period, so the server never sees two sends at once — a best case, not real traffic.
//!
//! A schedule may change its period at given moments ([`SendTimes::then`]): `loadgen ws
//! --overload` offers far more than the server can serve for a while, then the normal
//! rate again.
//!
//! The random moments come from a seeded generator (`--seed`): one seed gives every
//! socket its own stream (derived from the seed and the socket's index), so a run can be
//! repeated exactly.

use std::time::Duration;

/// How sends (and a login storm's arrivals) are placed in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    /// Each socket at a uniformly random moment of each period, from `seed`.
    Random {
        /// The seed every socket's stream is derived from.
        seed: u64,
    },
    /// Socket i of n at exactly i/n of each period.
    Paced,
}

impl Arrivals {
    /// The schedule of `--paced` and `--seed`: a fresh seed (printed in the report, so the
    /// run can be repeated) when none is given.
    pub fn from_flags(paced: bool, seed: Option<u64>) -> Self {
        if paced {
            return Self::Paced;
        }
        let seed = seed.unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            mix(now.as_secs().wrapping_mul(1_000_000_000)
                ^ u64::from(now.subsec_nanos())
                ^ u64::from(std::process::id()))
        });
        Self::Random { seed }
    }

    /// How the report names this schedule, e.g. `random sends (seed 42)`.
    pub fn describe(self) -> String {
        match self {
            Self::Random { seed } => format!("random sends (seed {seed})"),
            Self::Paced => "paced sends".to_owned(),
        }
    }

    /// The send times of socket `index` of `count`, one per `period`, as offsets from the
    /// start of the run.
    pub fn send_times(self, index: usize, count: usize, period: Duration) -> SendTimes {
        let (rng, share) = match self {
            Self::Random { seed } => (Some(stream(seed, index)), 0.0),
            Self::Paced => (None, index as f64 / count.max(1) as f64),
        };
        SendTimes {
            period,
            base: Duration::ZERO,
            periods: 0,
            share,
            rng,
            changes: Vec::new(),
        }
    }

    /// The moment within `window` at which each of `count` users arrives: uniformly random
    /// (the same seed gives the same moments), or evenly spread with `Paced`.
    pub fn moments(self, count: usize, window: Duration) -> Vec<Duration> {
        match self {
            Self::Random { seed } => {
                // A stream of its own, apart from the sockets' send streams.
                let mut rng = stream(mix(seed ^ 0x5354_4f52_4d00_0000), 0);
                (0..count).map(|_| window.mul_f64(rng.f64())).collect()
            }
            Self::Paced => (0..count)
                .map(|index| window.mul_f64(index as f64 / count.max(1) as f64))
                .collect(),
        }
    }
}

/// One socket's send times: the next one, period after period.
#[derive(Debug, Clone)]
pub struct SendTimes {
    period: Duration,
    /// Where the current period length started (the run's start, or its last change).
    base: Duration,
    /// Periods handed out since `base`.
    periods: u32,
    /// Paced: where in each period the socket sends, as a share of the period.
    share: f64,
    /// Random: where the moments come from.
    rng: Option<fastrand::Rng>,
    /// Later changes of the period, `(from, period)`, in time order.
    changes: Vec<(Duration, Duration)>,
}

impl SendTimes {
    /// The same schedule, sending once per `period` from `from` on (an offset from the
    /// start of the run, after any earlier change): an overload phase and the return to
    /// the normal rate. A period cut short by the change keeps only the send that falls
    /// before it, so the rate changes exactly at `from`.
    #[must_use]
    pub fn then(mut self, from: Duration, period: Duration) -> Self {
        self.changes.push((from, period));
        self
    }

    /// The next send time, as an offset from the start of the run.
    pub fn next_send(&mut self) -> Duration {
        loop {
            let start = self.base + self.period * self.periods;
            let change = self.changes.first().copied();
            if let Some((from, period)) = change.filter(|(from, _)| start >= *from) {
                self.changes.remove(0);
                (self.base, self.period, self.periods) = (from, period, 0);
                continue;
            }
            self.periods += 1;
            let within = match &mut self.rng {
                Some(rng) => self.period.mul_f64(rng.f64()),
                None => self.period.mul_f64(self.share),
            };
            let at = start + within;
            if change.is_some_and(|(from, _)| at >= from) {
                continue;
            }
            return at;
        }
    }

    /// The first send time at or after `from` (earlier ones are skipped: a socket that
    /// joined late does not make up for the sends it missed in a burst).
    pub fn next_send_from(&mut self, from: Duration) -> Duration {
        loop {
            let at = self.next_send();
            if at >= from {
                return at;
            }
        }
    }
}

/// The generator of the stream `index` of `seed`.
fn stream(seed: u64, index: usize) -> fastrand::Rng {
    fastrand::Rng::with_seed(mix(seed ^ mix(index as u64)))
}

/// SplitMix64's finaliser: neighbouring inputs give unrelated outputs, so the streams of
/// sockets 0, 1, 2… do not overlap.
fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(1);

    #[test]
    fn a_paced_socket_sends_at_its_share_of_every_period() {
        let mut times = Arrivals::Paced.send_times(1, 4, PERIOD);
        let sends: Vec<Duration> = (0..3).map(|_| times.next_send()).collect();
        assert_eq!(sends, [250, 1250, 2250].map(Duration::from_millis).to_vec());
    }

    #[test]
    fn a_random_socket_sends_once_in_every_period() {
        let mut times = Arrivals::Random { seed: 7 }.send_times(3, 10, PERIOD);
        for period in 0..100 {
            let at = times.next_send();
            assert!(
                at >= PERIOD * period && at < PERIOD * (period + 1),
                "{at:?}"
            );
        }
    }

    #[test]
    fn random_sends_repeat_with_the_seed_and_differ_between_sockets() {
        let sends = |seed, index| {
            let mut times = Arrivals::Random { seed }.send_times(index, 10, PERIOD);
            (0..5).map(|_| times.next_send()).collect::<Vec<_>>()
        };
        assert_eq!(sends(42, 0), sends(42, 0));
        assert_ne!(sends(42, 0), sends(42, 1));
        assert_ne!(sends(42, 0), sends(43, 0));
    }

    #[test]
    fn random_sends_of_many_sockets_collide_where_paced_ones_never_do() {
        // 1,000 sockets, one period each, counted per millisecond: paced sends are one
        // a millisecond, random ones pile up in some milliseconds and leave others empty.
        let busiest_millisecond = |arrivals: Arrivals| {
            let mut per_ms = [0u32; 1000];
            for index in 0..1000 {
                let at = arrivals.send_times(index, 1000, PERIOD).next_send();
                per_ms[at.as_millis() as usize] += 1;
            }
            *per_ms.iter().max().expect("a second has milliseconds")
        };
        assert_eq!(busiest_millisecond(Arrivals::Paced), 1);
        assert!(busiest_millisecond(Arrivals::Random { seed: 1 }) >= 3);
    }

    #[test]
    fn a_late_socket_skips_the_sends_it_missed() {
        let mut times = Arrivals::Paced.send_times(0, 2, PERIOD);
        assert_eq!(
            times.next_send_from(Duration::from_millis(2500)),
            Duration::from_secs(3)
        );
        assert_eq!(times.next_send(), Duration::from_secs(4));
    }

    #[test]
    fn a_phase_change_switches_the_rate_exactly_where_it_says() {
        // One send a second, ten a second from 5 s to 7 s, one a second again after.
        let mut times = Arrivals::Random { seed: 3 }
            .send_times(0, 1, PERIOD)
            .then(Duration::from_secs(5), PERIOD / 10)
            .then(Duration::from_secs(7), PERIOD);
        let sends: Vec<Duration> = std::iter::from_fn(|| Some(times.next_send()))
            .take_while(|at| *at < Duration::from_secs(12))
            .collect();
        let in_range = |from: u64, to: u64| {
            sends
                .iter()
                .filter(|at| **at >= Duration::from_secs(from) && **at < Duration::from_secs(to))
                .count()
        };
        assert_eq!(in_range(0, 5), 5);
        assert_eq!(in_range(5, 7), 20);
        assert_eq!(in_range(7, 12), 5);
        assert!(sends.windows(2).all(|pair| pair[0] < pair[1]), "in order");
    }

    #[test]
    fn storm_arrivals_fall_within_the_window() {
        let window = Duration::from_secs(20);
        let random = Arrivals::Random { seed: 9 }.moments(1000, window);
        assert!(random.iter().all(|at| *at < window));
        assert_eq!(random, Arrivals::Random { seed: 9 }.moments(1000, window));
        let paced = Arrivals::Paced.moments(4, window);
        assert_eq!(paced, [0, 5, 10, 15].map(Duration::from_secs).to_vec());
    }
}

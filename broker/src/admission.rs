//! Admission control of sends: refuse at once what cannot be served in time, rather than
//! queue it.
//!
//! Past capacity, a queue in front of chat grows without bound and every send waits
//! behind all the others: the broker ends up delivering seconds-old messages to nobody's
//! benefit. So before a send joins the queue, [`Admission`] estimates how long it would
//! wait and refuses it, as `overloaded` with a hint of when to retry, when that is over
//! the target (`BROKER_SEND_QUEUE_TARGET`).
//!
//! **The rule: Little's law on what is already queued.** The wait of a new send is about
//! the sends ahead of it (queued or being stored) divided by the rate at which chat
//! finishes them: `queued / rate`. A send is admitted while `queued < rate × target`
//! (and always while fewer than a floor, one full batch, are queued: batching needs
//! company and a quiet broker must never refuse). Why this rather than CoDel's rule (drop
//! while the queueing delay of the oldest waiting send stayed over the target for an
//! interval):
//! - it acts *before* anyone waited too long. CoDel learns the delay only when sends come
//!   out of the queue, one target plus one interval late, and by then a 200,000/s surge
//!   has queued a second's worth of sends behind the target;
//! - it needs no time stamp per send and no look into the group commit's channel (a
//!   `tokio::sync::mpsc`, which cannot be peeked): a counter and a rate;
//! - it is right below capacity too. Whatever the load, queued ÷ throughput is the time a
//!   send spends in the queue (Little's law), so at moderate load the bound follows the
//!   demand and still refuses only sends that would wait longer than the target.
//!
//! **The rate** is measured over windows of [`WINDOW`] in which the queue never emptied:
//! there the sends finished per second are what chat can do, not merely what was asked
//! of it. A window in which the queue emptied leaves the estimate as it was (a quiet
//! minute must not make the next burst look like an overload). Each busy window counts
//! half of the estimate, so a chat that slows down is followed within a few windows.
//!
//! **The runtime's own lag.** A send's frame waits to be read, and its deliveries wait
//! to be written, behind every other task the broker's runtime has to run: on a
//! saturated core that queue of tasks is where the seconds go, out of sight of the send
//! queue (a frame read a second late finds a short send queue). So a probe task
//! ([`probe_lag`]) measures how late the runtime wakes it, and a send is expected to
//! take `2 × lag` (reading it, writing what it delivers) besides `queued / rate`:
//! admitted while the sum is under the target, and refused whatever the floor when the
//! lag alone is over it. The lag counted is the least of the last three probes: a
//! standing backlog, not one slow task. Refusing is cheaper than serving (one frame read and one
//! written, instead of a store and a frame to every member), so the runtime catches up.
//!
//! The clock is passed in (`now`), so the rule is tested with made-up instants.

use std::{
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// How often the completion rate is measured.
pub const WINDOW: Duration = Duration::from_millis(100);
/// Busy windows a patient gate ([`Admission::patient`]) measures before it trusts the
/// rate.
const WINDOWS_TRUSTED: u32 = 5;
/// The shortest retry hint: sooner, the queue has not moved.
const MIN_RETRY_AFTER: Duration = Duration::from_millis(50);
/// The longest retry hint: a client told to wait longer would think the service down.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// A send refused because the broker cannot serve it in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the broker is overloaded: retry after {} ms", retry_after.as_millis())]
pub struct Overloaded {
    /// When a retry has a fair chance: the time the queue needs to shrink under the
    /// target, longer the more sends are being refused.
    pub retry_after: Duration,
    /// What was over the target: `queue_delay` (the sends ahead) or `runtime_lag` (the
    /// broker's tasks themselves), for the metrics.
    pub reason: &'static str,
}

/// The gate in front of the send queue; shared by every sender of a broker.
#[derive(Debug)]
pub struct Admission {
    /// The longest expected wait admitted; zero admits everything.
    target: Duration,
    /// Whether the floor holds against the lag, and any queue is admitted until a rate
    /// was measured (see [`Admission::patient`]).
    patient: bool,
    /// Sends always admitted, whatever the estimate.
    floor: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Sends admitted and not finished yet.
    queued: usize,
    window_start: Instant,
    /// Sends finished in this window.
    finished: u64,
    /// Sends admitted and refused in this window (for the retry hint).
    admitted: u64,
    refused: u64,
    /// Whether the queue was empty at some point of this window.
    emptied: bool,
    /// Sends chat finishes per second while busy; `None` until a busy window was seen.
    rate: Option<f64>,
    /// Busy windows measured so far (a patient gate trusts the rate after
    /// [`WINDOWS_TRUSTED`]).
    busy_windows: u32,
    /// Refused ÷ admitted of the last window: how far demand is over capacity.
    pressure: f64,
    /// How late the runtime ran a task it woke, at least, over the last
    /// [`LAG_SAMPLES`] probes ([`probe_lag`]).
    lag: Duration,
    /// The last probes' lags, newest at `next_lag - 1`.
    lags: [Duration; LAG_SAMPLES],
    next_lag: usize,
}

/// Probes whose lag must all be high for the runtime to count as behind: a standing
/// backlog, not one slow task (CoDel's point about the minimum).
const LAG_SAMPLES: usize = 3;

impl Admission {
    /// A gate refusing sends expected to wait longer than `target` (zero: never), but
    /// never while fewer than `floor` are queued.
    pub fn new(target: Duration, floor: usize, now: Instant) -> Self {
        Self {
            target,
            patient: false,
            floor: floor.max(1),
            state: Mutex::new(State {
                queued: 0,
                window_start: now,
                finished: 0,
                admitted: 0,
                refused: 0,
                emptied: true,
                rate: None,
                busy_windows: 0,
                pressure: 0.0,
                lag: Duration::ZERO,
                lags: [Duration::ZERO; LAG_SAMPLES],
                next_lag: 0,
            }),
        }
    }

    /// A gate that is patient where that costs nothing, for work whose bursts are
    /// served in time though they are far above the floor (sign-ins: a page of new users
    /// at once): any queue is admitted until a rate was measured over
    /// [`WINDOWS_TRUSTED`] busy windows, and fewer than the floor are admitted whatever
    /// the lag.
    #[must_use]
    pub fn patient(mut self) -> Self {
        self.patient = true;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("no code panics while holding the admission lock")
    }

    /// Admits one send (it then counts as queued until its [`Ticket`] is dropped), or
    /// refuses it as overloaded.
    pub fn admit(&self, now: Instant) -> Result<Ticket<'_>, Overloaded> {
        let mut state = self.lock();
        state.roll(now);
        if let Some(reason) = self.full(&state) {
            state.refused += 1;
            return Err(Overloaded {
                retry_after: state.retry_after(self.target),
                reason,
            });
        }
        state.queued += 1;
        state.admitted += 1;
        Ok(Ticket {
            admission: self,
            finished: false,
        })
    }

    /// Why a new send would take longer than the target, if it would: the runtime's
    /// lag alone, or with the sends ahead of it (never while under the floor).
    fn full(&self, state: &State) -> Option<&'static str> {
        if self.target.is_zero() {
            return None;
        }
        if self.patient && state.queued < self.floor {
            return None;
        }
        let lag = state.lag * 2;
        if lag >= self.target {
            return Some("runtime_lag");
        }
        let room = (self.target - lag).as_secs_f64();
        // A patient gate waits for a few busy windows: the first ones of a burst from a
        // quiet start measure a service still warming up (seen: a burst of 300 sign-ups
        // that auth answered in a second, refused from the 61st on a rate of a few dozen).
        let rate = state
            .rate
            .filter(|_| !self.patient || state.busy_windows >= WINDOWS_TRUSTED);
        let full = state.queued >= self.floor
            && rate.map_or(!self.patient, |rate| state.queued as f64 >= rate * room);
        full.then_some("queue_delay")
    }

    /// Records how late the runtime ran a task it woke.
    pub fn record_lag(&self, lag: Duration) {
        let mut state = self.lock();
        let at = state.next_lag;
        state.lags[at] = lag;
        state.next_lag = (at + 1) % LAG_SAMPLES;
        state.lag = state.lags.iter().copied().min().unwrap_or_default();
    }

    /// Sends admitted and not finished.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.lock().queued
    }

    /// The measured rate, in sends per second (`None` before the first busy window).
    #[cfg(test)]
    fn rate(&self) -> Option<f64> {
        self.lock().rate
    }

    fn leave(&self, now: Instant, finished: bool) {
        let mut state = self.lock();
        state.queued -= 1;
        if finished {
            state.finished += 1;
        }
        if state.queued == 0 {
            state.emptied = true;
        }
        state.roll(now);
    }
}

impl State {
    /// Starts a new window once the current one is over, measuring the rate if the
    /// queue was busy all along.
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < WINDOW {
            return;
        }
        // Over a longer gap (no send came for a while) the window was not busy anyway.
        if !self.emptied && self.finished > 0 && elapsed < WINDOW * 2 {
            let measured = self.finished as f64 / elapsed.as_secs_f64();
            self.rate = Some(self.rate.map_or(measured, |rate| (rate + measured) / 2.0));
            self.busy_windows = self.busy_windows.saturating_add(1);
        }
        self.pressure = self.refused as f64 / self.admitted.max(1) as f64;
        self.window_start = now;
        self.finished = 0;
        self.admitted = 0;
        self.refused = 0;
        self.emptied = self.queued == 0;
    }

    /// How long a refused sender should wait: until the queue has shrunk to the target
    /// (the sends ahead over the rate, at least the target itself), stretched by how
    /// many senders were refused per admitted one, so that the ones retrying together
    /// do not arrive as one wave again.
    fn retry_after(&self, target: Duration) -> Duration {
        let queue = match self.rate {
            Some(rate) if rate > 0.0 => Duration::from_secs_f64(self.queued as f64 / rate),
            _ => target,
        };
        let drain = queue + self.lag * 2;
        let pressure = self
            .pressure
            .max(self.refused as f64 / self.admitted.max(1) as f64);
        drain
            .max(target)
            .mul_f64(1.0 + pressure.min(50.0))
            .clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER)
    }
}

/// How often [`probe_lag`] measures the runtime's lag.
const LAG_PROBE: Duration = Duration::from_millis(10);

/// Measures, until `shutdown`, how late the runtime wakes a task that sleeps
/// [`LAG_PROBE`]: the time a woken task waits for its turn, which every socket's frames
/// wait too. Tells each of `gates` each time.
pub async fn probe_lag(
    gates: Vec<std::sync::Arc<Admission>>,
    shutdown: platform::shutdown::Shutdown,
) {
    loop {
        let asleep = tokio::time::Instant::now();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(LAG_PROBE) => {}
        }
        // The timer's own granularity (a millisecond) is not lag.
        let late = asleep
            .elapsed()
            .saturating_sub(LAG_PROBE + Duration::from_millis(1));
        for gate in &gates {
            gate.record_lag(late);
        }
        metrics::histogram!("broker_runtime_lag_seconds").record(late.as_secs_f64());
    }
}

/// An admitted send's place in the queue, given back when dropped: a sender that gives
/// up (its deadline, a client gone) leaves the queue as surely as one that got its answer.
#[derive(Debug)]
pub struct Ticket<'a> {
    admission: &'a Admission,
    finished: bool,
}

impl Ticket<'_> {
    /// The send got its outcome from chat: it counts towards the measured rate.
    pub fn finished(mut self) {
        self.finished = true;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.admission.leave(Instant::now(), self.finished);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Duration = Duration::from_millis(100);

    /// Keeps the chat of the tests busy: `rate` sends a second finish for `windows`
    /// windows, each finished one replaced by a new one, and the queue grows towards
    /// `queued` as far as the gate lets it (from the floor, until a rate is measured).
    fn run_busy(
        admission: &Admission,
        start: Instant,
        queued: usize,
        rate: u32,
        windows: u32,
    ) -> (Vec<Ticket<'_>>, Instant) {
        let mut tickets: Vec<_> = (0..queued.min(admission.floor))
            .map(|_| admission.admit(start).expect("under the floor"))
            .collect();
        let step = Duration::from_secs(1) / rate;
        let mut now = start;
        let window_ms = u32::try_from(WINDOW.as_millis()).expect("a window is short");
        for _ in 0..(rate * windows * window_ms / 1000) {
            now += step;
            // The oldest finishes; new ones take its place while there is room.
            let done = tickets.remove(0);
            admission.leave(now, true);
            std::mem::forget(done);
            for _ in 0..2 {
                if tickets.len() < queued {
                    tickets.extend(admission.admit(now).ok());
                }
            }
        }
        assert_eq!(tickets.len(), queued, "the queue the test asked for");
        (tickets, now)
    }

    #[test]
    fn a_quiet_broker_admits_up_to_the_floor_without_any_measurement() {
        let start = Instant::now();
        let admission = Admission::new(TARGET, 128, start);
        let tickets: Vec<_> = (0..128)
            .map(|_| admission.admit(start).expect("under the floor"))
            .collect();
        assert_eq!(admission.queued(), 128);
        let refused = admission
            .admit(start)
            .expect_err("over the floor, no rate yet");
        assert!(refused.retry_after >= MIN_RETRY_AFTER);
        drop(tickets);
        assert_eq!(admission.queued(), 0);
        assert!(admission.admit(start).is_ok(), "room again");
    }

    #[test]
    fn the_bound_is_the_measured_rate_times_the_target() {
        let start = Instant::now();
        let admission = Admission::new(TARGET, 16, start);
        // 5,000 sends a second with 200 always queued: 40 ms each, under the target.
        let (mut tickets, now) = run_busy(&admission, start, 200, 5_000, 5);
        let rate = admission.rate().expect("busy windows were measured");
        assert!((4_500.0..=5_500.0).contains(&rate), "{rate}");
        // 5,000/s × 100 ms: 500 may be queued, the 501st would wait too long.
        while admission.queued() < 500 {
            tickets.push(admission.admit(now).expect("under rate × target"));
        }
        let refused = admission.admit(now).expect_err("over rate × target");
        // The queue drains to the target in 100 ms; one refused per 300 admitted in
        // this window barely stretches that.
        assert!(
            refused.retry_after >= TARGET && refused.retry_after < TARGET * 2,
            "{refused:?}"
        );
    }

    #[test]
    fn a_slower_chat_lowers_the_bound_within_a_few_windows() {
        let start = Instant::now();
        let admission = Admission::new(TARGET, 16, start);
        let (tickets, now) = run_busy(&admission, start, 200, 5_000, 5);
        drop(tickets);
        let (_tickets, _) = run_busy(&admission, now, 50, 500, 5);
        let rate = admission.rate().expect("measured");
        assert!(rate < 1_000.0, "followed the slower chat: {rate}");
    }

    #[test]
    fn a_quiet_spell_does_not_lower_the_rate() {
        let start = Instant::now();
        let admission = Admission::new(TARGET, 16, start);
        let (tickets, now) = run_busy(&admission, start, 200, 5_000, 5);
        drop(tickets);
        let before = admission.rate();
        // One send now and then: the queue empties in every window.
        let mut now = now;
        for _ in 0..20 {
            now += Duration::from_millis(150);
            let ticket = admission.admit(now).expect("a quiet broker admits");
            admission.leave(now + Duration::from_millis(1), true);
            std::mem::forget(ticket);
        }
        assert_eq!(admission.rate(), before);
    }

    #[test]
    fn many_refusals_stretch_the_retry_hint_up_to_its_cap() {
        let start = Instant::now();
        let admission = Admission::new(TARGET, 16, start);
        let (_tickets, now) = run_busy(&admission, start, 500, 5_000, 5);
        let first = admission.admit(now).expect_err("full").retry_after;
        for _ in 0..2_000 {
            let _ = admission.admit(now);
        }
        let later = admission.admit(now).expect_err("still full").retry_after;
        assert!(later > first, "{first:?} then {later:?}");
        assert!(later <= MAX_RETRY_AFTER);
    }

    #[test]
    fn a_runtime_behind_its_tasks_refuses_even_under_the_floor_and_shortens_the_room() {
        let start = Instant::now();
        let admission = Admission::new(TARGET, 128, start);
        admission.record_lag(Duration::from_millis(200));
        assert!(
            admission.admit(start).is_ok(),
            "one slow probe is not a backlog"
        );
        for _ in 0..LAG_SAMPLES {
            admission.record_lag(Duration::from_millis(60));
        }
        let refused = admission
            .admit(start)
            .expect_err("2 × 60 ms is over 100 ms");
        assert_eq!(refused.reason, "runtime_lag");
        assert!(
            refused.retry_after >= Duration::from_millis(120),
            "{refused:?}"
        );
        for _ in 0..LAG_SAMPLES {
            admission.record_lag(Duration::ZERO);
        }
        let (mut tickets, now) = run_busy(&admission, start, 200, 5_000, 5);
        // 20 ms of lag leaves 60 ms for the queue: 300 sends at 5,000/s.
        for _ in 0..LAG_SAMPLES {
            admission.record_lag(Duration::from_millis(20));
        }
        while admission.queued() < 300 {
            tickets.push(admission.admit(now).expect("under rate × what is left"));
        }
        let refused = admission.admit(now).expect_err("over rate × what is left");
        assert_eq!(refused.reason, "queue_delay");
    }

    /// The sign-in gate: a target of a second, 8 always admitted, patient.
    fn sign_in_gate(start: Instant) -> Admission {
        Admission::new(Duration::from_secs(1), 8, start).patient()
    }

    #[test]
    fn a_patient_gate_keeps_its_floor_whatever_the_lag() {
        let start = Instant::now();
        let admission = sign_in_gate(start);
        for _ in 0..LAG_SAMPLES {
            admission.record_lag(Duration::from_millis(600));
        }
        let floor: Vec<_> = (0..8)
            .map(|_| admission.admit(start).expect("the floor holds, lag or not"))
            .collect();
        let refused = admission
            .admit(start)
            .expect_err("past the floor, 2 × 600 ms of lag is over the target");
        assert_eq!(refused.reason, "runtime_lag");
        assert!(
            refused.retry_after >= Duration::from_secs(1),
            "a refused sign-in comes back no sooner than its target: {refused:?}"
        );
        drop(floor);
    }

    #[test]
    fn a_patient_gate_takes_a_burst_until_measured_then_bounds_the_queue() {
        let start = Instant::now();
        let admission = sign_in_gate(start);
        let burst: Vec<_> = (0..500)
            .map(|_| {
                admission
                    .admit(start)
                    .expect("nothing measured: a burst is admitted")
            })
            .collect();
        drop(burst);
        // 200 a second with 50 always queued: a quarter of a second each.
        let (mut tickets, now) = run_busy(&admission, start, 50, 200, 10);
        let rate = admission.rate().expect("measured");
        assert!((150.0..=250.0).contains(&rate), "{rate}");
        while admission.queued() < 150 {
            tickets.push(admission.admit(now).expect("under rate × target"));
        }
        while admission
            .admit(now)
            .map(|ticket| tickets.push(ticket))
            .is_ok()
        {}
        assert!(
            admission.queued() <= 260,
            "about rate × target are queued: {}",
            admission.queued()
        );
    }

    #[test]
    fn a_zero_target_admits_everything() {
        let start = Instant::now();
        let admission = Admission::new(Duration::ZERO, 1, start);
        let tickets: Vec<_> = (0..10_000)
            .map(|_| admission.admit(start).expect("no admission control"))
            .collect();
        assert_eq!(tickets.len(), 10_000);
    }
}

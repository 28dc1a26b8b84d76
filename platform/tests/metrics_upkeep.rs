//! The metrics recorder's upkeep keeps a process that nobody scrapes from growing.
//!
//! Issue 29: without upkeep every histogram sample stays in memory until `/metrics` is
//! rendered. This test binary counts the bytes it holds (its own global allocator) while
//! recording many latency samples, with `keep_metrics` running on paused time: the clock
//! jumps to each upkeep, so nothing here waits and nothing depends on the machine's speed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size().cast_signed(), Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size().cast_signed(), Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Samples recorded between two upkeeps.
const SAMPLES_PER_ROUND: u32 = 100_000;

/// Records a round of latency samples, as a busy service does between two upkeeps.
fn record_a_round() {
    let histogram = metrics::histogram!("upkeep_test_latency_seconds");
    for sample in 0..SAMPLES_PER_ROUND {
        histogram.record(f64::from(sample % 1000) / 1e6);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn histogram_samples_do_not_pile_up_without_a_scrape() {
    platform::telemetry::prometheus();
    let shutdown = platform::shutdown::Shutdown::new();
    let upkeep = tokio::spawn(platform::telemetry::keep_metrics(shutdown.clone()));
    // Let the upkeep task start its first pause.
    tokio::task::yield_now().await;

    let before = HELD.load(Ordering::Relaxed);
    record_a_round();
    let one_round = HELD.load(Ordering::Relaxed) - before;
    assert!(
        one_round > 8 * isize::try_from(SAMPLES_PER_ROUND).expect("a small constant") / 2,
        "a round of samples is held until the upkeep: {one_round} bytes"
    );
    for _ in 0..20 {
        // The paused clock jumps to the next upkeep, which drains the samples.
        tokio::time::sleep(platform::telemetry::METRICS_UPKEEP_PERIOD).await;
        record_a_round();
    }
    let after_many = HELD.load(Ordering::Relaxed) - before;
    // Without the upkeep, 21 rounds would hold 21 times a round's samples; with it, at most
    // the round since the last upkeep and the one whose blocks are still being reclaimed.
    assert!(
        after_many < 3 * one_round,
        "21 rounds hold {after_many} bytes, one round {one_round}: samples pile up"
    );

    shutdown.cancel();
    upkeep
        .await
        .expect("the upkeep task does not panic")
        .expect("the upkeep stops cleanly at shutdown");
}

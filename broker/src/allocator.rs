//! How the broker's memory allocator gives freed memory back to the system.
//!
//! mimalloc (v3) returns freed pages to the system ("purges" them) a second after they
//! were freed — but only when the thread that freed them next allocates. A broker holding
//! tens of thousands of idle sockets has idle threads, so what a burst freed stayed
//! resident: after 19,000 sockets opened (each upgrade's HTTP buffers freed), 5.7 KiB per
//! idle socket instead of 3.5 (docs/PERFORMANCE.md). Purging at once cost nothing
//! measurable at 40,000 deliveries a second here.

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (its `include/mimalloc.h`);
/// libmimalloc-sys 0.1 names no constant for it. The test below checks the index.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc return freed pages to the system at once, unless `MIMALLOC_PURGE_DELAY`
/// in the environment says otherwise. Call first thing in `main`.
pub fn return_freed_memory_promptly() {
    // SAFETY: sets a default in mimalloc's option table, which has no preconditions;
    // an option read from the environment keeps its value.
    unsafe { libmimalloc_sys::mi_option_set_default(PURGE_DELAY, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_15_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the environment's value, not the default, is what mimalloc reports
        }
        // SAFETY: reads mimalloc's option table.
        let delay = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        // mimalloc v3's default purge delay; its neighbours default to 0 and 1.
        assert_eq!(
            delay, 1000,
            "option {PURGE_DELAY} is not mimalloc's purge delay"
        );
    }
}

//! Graceful shutdown: one `CancellationToken` threads through every task of a process;
//! Ctrl-C or SIGTERM cancels it, and every server and background loop stops on it.

pub use tokio_util::sync::CancellationToken as Shutdown;

/// Waits for Ctrl-C or (on Unix) SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Waits `period`, or less if shutdown begins: true when the full period passed, false
/// when the caller should stop.
pub async fn pause(shutdown: &Shutdown, period: std::time::Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(period) => true,
    }
}

/// A token that is cancelled when the process receives Ctrl-C or SIGTERM.
pub fn on_signal() -> Shutdown {
    let shutdown = Shutdown::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = signal() => {
                tracing::info!("shutdown signal received");
                trigger.cancel();
            }
            () = trigger.cancelled() => {}
        }
    });
    shutdown
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_pause_ends_early_when_shutdown_begins() {
        let shutdown = Shutdown::new();
        assert!(pause(&shutdown, Duration::from_millis(1)).await);
        shutdown.cancel();
        assert!(!pause(&shutdown, Duration::from_secs(3600)).await);
    }
}

//! RabbitMQ for tests: a unique exchange and queue names per test (so tests run in
//! parallel on the machine's one server), deleted afterwards, and a TCP proxy in front of
//! it that a test can cut and restore.

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use platform::testing::in_ci;
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::{net::TcpListener, sync::watch};

/// The machine's RabbitMQ (`TEST_AMQP_URL` to override).
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// One test's exchange and listener queue.
pub struct TestRabbit {
    pub url: String,
    pub exchange: String,
    /// The fanout exchange chat instances share live events through.
    pub live_exchange: String,
    pub queue: String,
    max_attempts: u32,
    retry_base: Duration,
    /// The retry queues the listener declares with those settings (deleted after).
    retry_queues: Vec<String>,
}

impl TestRabbit {
    /// Names for one test; `None` (skip, saying so) when RabbitMQ is not reachable outside
    /// CI. In CI a missing RabbitMQ fails the test.
    pub async fn create(max_attempts: u32, retry_base: Duration) -> Option<Self> {
        let url = amqp_url();
        if let Err(error) = platform::events::rabbit::connect(&url, "test probe").await {
            assert!(
                !in_ci(),
                "RabbitMQ at {url} must be reachable in CI: {error}"
            );
            eprintln!(
                "SKIPPED: RabbitMQ at {url} is not reachable ({error}); CI=true makes this fail"
            );
            return None;
        }
        let id = uuid::Uuid::new_v4().simple();
        let queue = format!("test.listener.{id}");
        let retry_queues = (1..max_attempts)
            .map(|attempt| {
                let delay = retry_base
                    .checked_mul(2_u32.saturating_pow(attempt - 1))
                    .unwrap_or(Duration::from_secs(300))
                    .min(Duration::from_secs(300));
                format!("{queue}.retry.{}ms", delay.as_millis())
            })
            .collect();
        Some(Self {
            url,
            exchange: format!("test.events.{id}"),
            live_exchange: format!("test.live.{id}"),
            queue,
            max_attempts,
            retry_base,
            retry_queues,
        })
    }

    /// The settings that point every service at this test's names (and the listener's
    /// retry settings, which name its retry queues).
    pub fn args(&self, amqp_url: &str) -> Vec<String> {
        vec![
            format!("--amqp-url={amqp_url}"),
            format!("--events-exchange={}", self.exchange),
            format!("--listener-queue={}", self.queue),
            format!("--listener-max-attempts={}", self.max_attempts),
            format!("--listener-retry-base={}ms", self.retry_base.as_millis()),
        ]
    }
}

impl Drop for TestRabbit {
    fn drop(&mut self) {
        let url = self.url.clone();
        let exchanges = [
            self.exchange.clone(),
            format!("{}.unrouted", self.exchange),
            self.live_exchange.clone(),
        ];
        let mut queues = vec![
            self.queue.clone(),
            format!("{}.parked", self.queue),
            format!("{}.unrouted", self.exchange),
        ];
        queues.extend(self.retry_queues.iter().cloned());
        // Drop cannot await: clean up on a thread with its own runtime.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            runtime.block_on(async move {
                let Ok(connection) = platform::events::rabbit::connect(&url, "test cleanup").await
                else {
                    return;
                };
                let Ok(channel) = connection.create_channel().await else {
                    return;
                };
                for queue in queues {
                    let _ = channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
                for exchange in exchanges {
                    let _ = channel
                        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                        .await;
                }
                let _ = connection.close(200, "cleaned up".into()).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// A TCP proxy to one upstream address that a test can cut (every open connection is
/// closed and new ones are refused) and restore.
pub struct TcpProxy {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
}

impl TcpProxy {
    /// Listens on a free loopback port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port is free");
        let addr = listener.local_addr().expect("bound");
        let open = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0_u64);
        let accepting = Arc::clone(&open);
        let cuts = generation.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            open,
            generation,
        }
    }

    /// Closes every proxied connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

//! `cargo run`: microchat, all in one process.

use clap::Parser;

// Allocation-heavy paths (gRPC, JSON frames, fan-out) spent a quarter of a core in glibc's
// malloc under load; mimalloc is much faster there (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = microchat::Config::parse();
    platform::telemetry::init_tracing();
    let shutdown = platform::shutdown::on_signal();
    let running = microchat::start(config, shutdown).await?;
    let api = format!("http://{}", running.broker);
    println!();
    println!("  microchat is running (all services in one process; Ctrl-C stops it)");
    println!("    API        {api}/api   (OpenAPI: {api}/api/openapi.json)");
    println!("    health     {api}/healthz  {api}/readyz  {api}/metrics");
    println!("    WebSocket  ws://{}/ws", running.broker);
    println!(
        "    gRPC       auth {}  chat {}",
        running.auth, running.chat
    );
    println!();
    running.wait().await
}

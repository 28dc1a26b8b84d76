//! `cargo run`: microchat, all in one process.

use clap::Parser;

// Allocation-heavy paths (gRPC, JSON frames, fan-out) spent a quarter of a core in glibc's
// malloc under load; mimalloc is much faster there (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = microchat::Config::parse();
    let mail_dir = config
        .mail
        .smtp_url
        .clone()
        .map_or_else(|| config.data_dir.join("mail"), std::path::PathBuf::from);
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
        "    gRPC       auth {}  chat {}  mail {}",
        running.auth, running.chat, running.mail
    );
    println!(
        "    listener   http://{}/metrics  (parked events: http://{}/admin/parked)",
        running.listener, running.listener
    );
    println!(
        "    mail       written as .eml files under {}",
        mail_dir.display()
    );
    println!();
    running.wait().await
}

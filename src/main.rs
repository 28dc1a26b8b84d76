//! `cargo run`: microchat, all in one process.

use clap::Parser;

// Allocation-heavy paths (gRPC, JSON frames, fan-out) spent a quarter of a core in glibc's
// malloc under load; mimalloc is much faster there (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    broker::allocator::return_freed_memory_promptly();
    let config = microchat::Config::parse();
    if let Some(microchat::Command::Admin(command)) = &config.command {
        let done = microchat::admin::run(&config, &config.data_dir, command).await?;
        println!("{done}");
        return Ok(());
    }
    let mail = match config.mail.destination(&config.data_dir) {
        mail::Destination::Files(dir) => format!("written as .eml files under {}", dir.display()),
        mail::Destination::Smtp(_) => "sent to the SMTP server of MAIL_SMTP_URL".to_owned(),
    };
    let events = if config.events.amqp_url.is_some() {
        "through RabbitMQ (AMQP_URL)".to_owned()
    } else {
        let file = config.data_dir.join(microchat::EVENTS_DATABASE);
        format!("on the embedded durable bus ({})", file.display())
    };
    platform::telemetry::init_tracing("microchat");
    let shutdown = platform::shutdown::on_signal();
    let running = microchat::start(config, shutdown).await?;
    let api = format!("http://{}", running.broker);
    println!();
    println!("  microchat is running (all services in one process; Ctrl-C stops it)");
    println!("    pages      http://{}/", running.frontend);
    println!("    API        {api}/api   (OpenAPI: {api}/api/openapi.json)");
    println!("    health     {api}/healthz  {api}/readyz");
    println!(
        "    metrics    http://{}/metrics  (operator port, MICROCHAT_METRICS_LISTEN)",
        running.metrics
    );
    println!("    WebSocket  ws://{}/ws", running.broker);
    println!(
        "    gRPC       auth {}  chat {}  logger {}  mail {}",
        running.auth, running.chat, running.logger, running.mail
    );
    println!(
        "    logs       {api}/api/logs  (administrators; `microchat admin grant USER` names them)"
    );
    println!(
        "    listener   http://{}/metrics  (parked events: http://{}/admin/parked)",
        running.listener, running.listener_admin
    );
    println!("    mail       {mail}");
    println!("    events     {events}");
    println!();
    running.wait().await
}

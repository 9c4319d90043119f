//! The `switchboard` command: `serve` (the default) runs the server, on its embedded defaults or
//! a TOML config; `check-config` validates a config file and names the bad key and line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use switchboard::app::App;
use switchboard::config::{LogFormat, Overrides};

/// Static (musl) builds allocate with mimalloc: musl's allocator serialises threads.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "A real-time server that speaks Socket.IO"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default command).
    Serve(ServeArgs),
    /// Check a config file; exits non-zero naming the bad key and line.
    CheckConfig { file: PathBuf },
    /// Write a TypeScript declaration of the config's events (for typed socket.io-client use).
    Types {
        #[arg(long)]
        config: PathBuf,
        /// Where to write it; standard output when left out.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Ask a running server's /health (a container's health check): exit 0 when it answers
    /// 200, 1 otherwise.
    Health {
        /// The health URL (https for a server serving TLS).
        #[arg(
            long,
            default_value = "http://127.0.0.1:4000/health",
            env = "SWITCHBOARD_HEALTH_URL"
        )]
        url: String,
        /// Accept a certificate that does not verify (a self-signed one on localhost).
        #[arg(long)]
        insecure: bool,
        #[arg(long, default_value = "3s")]
        timeout: String,
    },
    /// Mint a JWT for development: `switchboard token --secret S --claim userId=1`.
    Token {
        /// HMAC secret (or JWT_SECRET).
        #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
        secret: String,
        /// HS256, HS384 or HS512.
        #[arg(long, default_value = "HS256")]
        alg: String,
        /// A claim `key=value`; the value is read as JSON when it parses (numbers, lists).
        #[arg(long = "claim", value_name = "KEY=VALUE")]
        claims: Vec<String>,
        /// Lifetime, e.g. 1h, 30m (the `exp` claim).
        #[arg(long, default_value = "1h")]
        expires_in: String,
    },
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// TOML config file (default: the embedded defaults).
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (server.host).
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on (server.port; PORT also overrides it).
    #[arg(long)]
    port: Option<u16>,
    /// Socket.IO path (server.path).
    #[arg(long)]
    path: Option<String>,
    /// Log format: pretty or json (server.log_format).
    #[arg(long, value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "pretty" => Ok(LogFormat::Pretty),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("{other:?}: use pretty or json")),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Connections the kernel queues for `accept` (capped by `net.core.somaxconn`). The standard
/// library's 128 overflows when hundreds of clients connect at once (a deploy, a network blip):
/// the kernel then drops their SYNs and they retry only a second later.
const LISTEN_BACKLOG: u32 = 4096;

async fn listen(address: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(address).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    }))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        host: args.host,
        port: args.port,
        path: args.path,
        log_format: args.log_format,
    };
    let config = match switchboard::app::load_config(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("switchboard: {error}");
            std::process::exit(2);
        }
    };
    init_logging(config.server.log_format);
    let address = format!("{}:{}", config.server.host, config.server.port);
    let listener = listen(&address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
    tracing::info!(
        address = %address,
        path = %config.server.path,
        config = %args.config.as_ref().map_or("<embedded defaults>".into(), |p| p.display().to_string()),
        "switchboard listening"
    );
    let app = App::build(config);
    hand_back_freed_memory(app.shutdown_signal());
    app.run(listener, shutdown_signal()).await?;
    Ok(())
}

/// glibc's malloc keeps the memory a burst freed: after a mass disconnect in a chat whose every
/// departure is announced to everyone (millions of frames queued for a moment), the process
/// would stay at its high-water mark for good, hundreds of MB. Every 10 s, what is
/// free goes back to the system (`malloc_trim`, on a blocking thread: it walks the heap). Measured
/// at 19k connections: 0.05-1.4 ms a call; 18-41 ms right after such a burst, which it takes
/// from 330-450 MB back to 20-26 MB (threads allocating from the arena being trimmed wait for
/// it meanwhile). Ends on the shutdown signal.
fn hand_back_freed_memory(shutdown: tokio_util::sync::CancellationToken) {
    // Other allocators (musl's build uses mimalloc) give memory back by themselves.
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    drop(shutdown);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let trimmed = tokio::task::spawn_blocking(|| {
                let started = std::time::Instant::now();
                // SAFETY: malloc_trim only releases free memory of the allocator's own heaps.
                unsafe { libc::malloc_trim(0) };
                started.elapsed()
            })
            .await;
            if let Ok(took) = trimmed {
                tracing::debug!(
                    took_us = took.as_micros() as u64,
                    "freed memory handed back"
                );
            }
        }
    });
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Health {
            url,
            insecure,
            timeout,
        }) => {
            let timeout = switchboard::config::parse_duration(&timeout)
                .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let status = runtime.block_on(async {
                let client = reqwest::Client::builder()
                    .timeout(timeout)
                    .danger_accept_invalid_certs(insecure)
                    .build()?;
                client.get(&url).send().await.map(|r| r.status())
            });
            match status {
                Ok(status) if status.is_success() => {
                    println!("{url}: {status}");
                    Ok(())
                }
                Ok(status) => {
                    eprintln!("{url}: {status}");
                    std::process::exit(1);
                }
                Err(error) => {
                    eprintln!("{url}: {error}");
                    std::process::exit(1);
                }
            }
        }
        Some(Command::Token {
            secret,
            alg,
            claims,
            expires_in,
        }) => {
            let mut map = serde_json::Map::new();
            for claim in claims {
                let Some((key, value)) = claim.split_once('=') else {
                    eprintln!("--claim {claim:?}: write key=value");
                    std::process::exit(2);
                };
                let value = serde_json::from_str(value)
                    .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
                map.insert(key.to_owned(), value);
            }
            let lifetime = switchboard::config::parse_duration(&expires_in)
                .map_err(|e| anyhow::anyhow!("--expires-in: {e}"))?;
            match switchboard::auth::mint(&secret, &alg, &map, Some(lifetime)) {
                Ok(token) => {
                    println!("{token}");
                    Ok(())
                }
                Err(error) => {
                    eprintln!("switchboard token: {error}");
                    std::process::exit(2);
                }
            }
        }
        Some(Command::Types { config, out }) => {
            let loaded = match switchboard::app::load_config(Some(&config), &Overrides::default()) {
                Ok(loaded) => loaded,
                Err(error) => {
                    eprintln!("{error}");
                    std::process::exit(2);
                }
            };
            let text = match switchboard::rules::types::typescript(&loaded) {
                Ok(text) => text,
                Err(error) => {
                    eprintln!(
                        "{}: key `{}`: {}",
                        config.display(),
                        error.key,
                        error.message
                    );
                    std::process::exit(2);
                }
            };
            match out {
                Some(path) => std::fs::write(&path, text)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display())),
                None => {
                    print!("{text}");
                    Ok(())
                }
            }
        }
        Some(Command::CheckConfig { file }) => {
            match switchboard::app::load_config(Some(&file), &Overrides::default()) {
                Ok(config) => {
                    println!(
                        "{}: ok ({} namespace(s), listening on {}:{}{})",
                        file.display(),
                        config.namespace_names().len(),
                        config.server.host,
                        config.server.port,
                        config.server.path
                    );
                    Ok(())
                }
                Err(error) => {
                    eprintln!("{error}");
                    std::process::exit(1);
                }
            }
        }
        command => {
            let args = match command {
                Some(Command::Serve(args)) => args,
                _ => cli.serve,
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                // Small broadcasts are written when a worker runs out of work.
                .on_thread_park(switchboard::engine::write_deferred)
                .build()?
                .block_on(serve(args))
        }
    }
}

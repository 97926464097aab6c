//! `project-ingress-proxy` binary: parses configuration and calls [`project_ingress_proxy::serve`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use std::sync::Arc;

use project_ingress_proxy::buffered_log::{BufferedAccessLog, LineFormat};
use project_ingress_proxy::{Limits, ProxyConfig, Secret};
use tokio::net::TcpListener;

/// A proxy allocates and frees small buffers on every request; mimalloc does that markedly
/// cheaper than glibc malloc (see README "Benchmarks").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Machine ingress proxy: routes requests carrying `X-Iterate-Proxy-Target-Host` to an app on
/// this machine's localhost.
///
/// Accepted target header forms: `<port>__<hostname>`, `localhost:<port>`, `127.0.0.1:<port>`, or a
/// bare hostname (port 3000). `GET /health` answers `200 OK`. Log level comes from `RUST_LOG`
/// (default `info`).
#[derive(Debug, Parser)]
#[command(name = "project-ingress-proxy", version = env!("PROXY_VERSION"), about, long_about)]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "PROJECT_INGRESS_PROXY_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    listen: SocketAddr,

    /// File holding the shared secret (whitespace trimmed). Takes precedence over
    /// PROJECT_INGRESS_PROXY_SECRET. When a secret is set, every non-health request must carry it
    /// in `X-Iterate-Project-Ingress-Secret` or gets 401.
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,

    /// How long in-flight requests and WebSockets may run after SIGTERM/SIGINT (e.g. 30s, 500ms).
    #[arg(long, env = "PROJECT_INGRESS_PROXY_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,

    /// Time a client has to send a complete request head.
    #[arg(long, env = "PROJECT_INGRESS_PROXY_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    header_read_timeout: Duration,

    /// Time allowed to connect to the app on localhost.
    #[arg(long, env = "PROJECT_INGRESS_PROXY_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,

    /// Idle pooled upstream connections are closed after this long (keep it below the apps'
    /// keep-alive timeout; Node's is 5s).
    #[arg(long, env = "PROJECT_INGRESS_PROXY_POOL_IDLE_TIMEOUT", default_value = "4s", value_parser = parse_duration)]
    pool_idle_timeout: Duration,

    /// Largest request head accepted, in bytes, from the request line through the blank line
    /// (larger: 431 and the connection is closed).
    #[arg(long, env = "PROJECT_INGRESS_PROXY_MAX_REQUEST_HEAD_BYTES", default_value_t = 32 * 1024)]
    max_request_head_bytes: usize,

    /// Most header fields accepted in a request (more: 431).
    #[arg(
        long,
        env = "PROJECT_INGRESS_PROXY_MAX_REQUEST_HEADERS",
        default_value_t = 100
    )]
    max_request_headers: usize,

    /// Largest response head accepted from an app, in bytes (larger: 502).
    #[arg(long, env = "PROJECT_INGRESS_PROXY_MAX_RESPONSE_HEAD_BYTES", default_value_t = 64 * 1024)]
    max_response_head_bytes: usize,

    /// Time the app has to send its response head (past it: 504 upstream_timeout). Streams are not
    /// subject to it once the head is out.
    #[arg(long, env = "PROJECT_INGRESS_PROXY_UPSTREAM_HEAD_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    upstream_head_timeout: Duration,

    /// With `Expect: 100-continue`, how long to wait for the app's 100 before sending the body anyway.
    #[arg(long, env = "PROJECT_INGRESS_PROXY_EXPECT_CONTINUE_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    expect_continue_timeout: Duration,

    /// Header a request id is read from for the access log.
    #[arg(
        long,
        env = "PROJECT_INGRESS_PROXY_REQUEST_ID_HEADER",
        default_value = "x-request-id"
    )]
    request_id_header: http::HeaderName,

    /// Worker threads. 1 (the default) runs everything on one thread, which costs the least CPU
    /// per request (a machine's apps need the rest); 0 means one per core; N > 1 uses N threads.
    #[arg(
        long,
        env = "PROJECT_INGRESS_PROXY_WORKER_THREADS",
        default_value_t = 1
    )]
    worker_threads: usize,

    /// Access-log bytes gathered before one write to stderr (nginx's `access_log … buffer=`); 0
    /// writes each line at once. Lines are written by a thread of their own: a request never waits
    /// for the log, and when the log cannot keep up, lines are dropped and the count is logged.
    #[arg(long, env = "PROJECT_INGRESS_PROXY_ACCESS_LOG_BUFFER", default_value_t = 64 * 1024)]
    access_log_buffer: usize,

    /// The longest an access-log line waits in the buffer (nginx's `flush=`). SIGTERM/SIGINT write
    /// out what is left before the process exits.
    #[arg(long, env = "PROJECT_INGRESS_PROXY_ACCESS_LOG_FLUSH", default_value = "1s", value_parser = parse_flush)]
    access_log_flush: Duration,

    /// Log format.
    #[arg(
        long,
        env = "PROJECT_INGRESS_PROXY_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

/// Parses `30s`, `500ms`, `2m` or a plain number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30s, 500ms, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// A flush interval: a duration above zero (`--access-log-buffer 0` writes each line at once).
fn parse_flush(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(
            "must be above 0 (to write each line at once, use --access-log-buffer 0)".into(),
        );
    }
    Ok(d)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn load_secret(args: &Args) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = &args.secret_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --secret-file {}", path.display()))?;
        return match Secret::new(&text) {
            Some(s) => Ok(Some(s)),
            None => bail!("--secret-file {} is empty", path.display()),
        };
    }
    match std::env::var("PROJECT_INGRESS_PROXY_SECRET") {
        Ok(v) => match Secret::new(&v) {
            Some(s) => Ok(Some(s)),
            None => bail!("PROJECT_INGRESS_PROXY_SECRET is set but empty"),
        },
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => bail!("PROJECT_INGRESS_PROXY_SECRET: {e}"),
    }
}

/// Installs the SIGTERM/SIGINT handlers now (before the proxy says it is listening, so a signal
/// sent right after that is never lost) and returns the future that resolves on either.
///
/// SIGHUP is caught and ignored (logged): the proxy has no configuration to reload, and a hang-up
/// (a closed terminal or session, a supervisor's reload signal) must not cut requests in flight.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = term.recv() => return tracing::info!("SIGTERM received"),
                _ = int.recv() => return tracing::info!("SIGINT received"),
                _ = hup.recv() => tracing::info!("SIGHUP received: ignored (nothing to reload)"),
            }
        }
    })
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // In the chosen log format (a JSON line with `--log-format json`), unless logging is
            // filtered off, when it goes to stderr as text.
            let error = format!("{e:#}");
            if tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!(error = %error, "fatal");
            } else {
                eprintln!("project-ingress-proxy: {error}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let secret = load_secret(&args)?;
    let config = ProxyConfig {
        secret,
        drain_timeout: args.drain_timeout,
        limits: Limits {
            header_read_timeout: args.header_read_timeout,
            connect_timeout: args.connect_timeout,
            pool_idle_timeout: args.pool_idle_timeout,
            max_request_head_bytes: args.max_request_head_bytes,
            max_request_headers: args.max_request_headers,
            max_response_head_bytes: args.max_response_head_bytes,
            upstream_head_timeout: args.upstream_head_timeout,
            expect_continue_timeout: args.expect_continue_timeout,
            ..Limits::default()
        },
        request_id_header: args.request_id_header.clone(),
        ..ProxyConfig::default()
    };
    let access_log = Arc::new(
        BufferedAccessLog::new(
            Box::new(std::io::stderr()),
            match args.log_format {
                LogFormat::Text => LineFormat::Text,
                LogFormat::Json => LineFormat::Json,
            },
            args.access_log_buffer,
            args.access_log_flush,
        )
        .context("starting the access-log writer")?,
    );
    let config = ProxyConfig {
        access_log: access_log.clone(),
        ..config
    };
    tracing::info!(secret = config.secret.is_some(), "configuration loaded");
    let runtime = match args.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        project_ingress_proxy::serve(listener, config, shutdown)
            .await
            .context("serving")
    })?;
    // `serve` flushed the log when it had drained; this stops the writer.
    access_log.close();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_flush("0").is_err());
        assert!(parse_flush("0ms").is_err());
        assert_eq!(parse_flush("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}

//! `edgefleet server`: the fleet server in one process (SQLite, embedded MQTT
//! broker, HTTP API and dashboard) or one replica of a scaled-out fleet
//! (PostgreSQL, external broker).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use edgefleet_fleet_server::config::{Mqtt, ServerConfig};

/// Arguments of `edgefleet server`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory for the SQLite database, the admin API token and the default key files.
    #[arg(long, env = "EDGEFLEET_DATA_DIR", default_value = "edgefleet-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Database URL: sqlite://FILE or postgres://user:password@host/db [default: sqlite://DIR/fleet.db].
    #[arg(long, env = "EDGEFLEET_DATABASE", value_name = "URL")]
    pub database: Option<String>,
    /// HTTP address of the API and dashboard.
    #[arg(long, env = "EDGEFLEET_LISTEN", default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Address of the embedded MQTT broker devices connect to.
    #[arg(
        long,
        env = "EDGEFLEET_MQTT_LISTEN",
        default_value = "0.0.0.0:1883",
        value_name = "ADDR",
        conflicts_with = "mqtt_url"
    )]
    pub mqtt_listen: SocketAddr,
    /// Use an external broker instead: mqtt://[user:password@]host[:port] (Mosquitto, EMQX).
    #[arg(long, env = "EDGEFLEET_MQTT_URL", value_name = "URL")]
    pub mqtt_url: Option<String>,
    /// Online release key that signs manifests [default: DIR/release.key if present].
    #[arg(long, env = "EDGEFLEET_RELEASE_KEY", value_name = "FILE")]
    pub release_key: Option<PathBuf>,
    /// Signed root of trust [default: DIR/root.signed if present].
    #[arg(long, env = "EDGEFLEET_ROOT", value_name = "FILE")]
    pub root: Option<PathBuf>,
    /// An API token to accept (besides the admin token created on first start).
    #[arg(long, env = "EDGEFLEET_API_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Largest package upload, bytes.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    pub max_upload: usize,
    /// How often rollouts are evaluated.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub tick: Duration,
    /// How long manifests signed by the server stay valid.
    #[arg(long, default_value = "30days", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub manifest_ttl: Duration,
    /// Retraining webhook (http://...): POSTed when a version's fleet drift stays high.
    #[arg(long, env = "EDGEFLEET_WEBHOOK", value_name = "URL")]
    pub webhook: Option<String>,
    /// Fleet drift (PSI) above which a version counts as drifting.
    #[arg(long, default_value_t = 0.25, value_name = "PSI")]
    pub drift_threshold: f64,
    /// How long drift must last before the webhook fires.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub drift_for: Duration,
    /// Telemetry window for fleet drift and dashboard figures.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub window: Duration,
    /// This replica's name in rollout leases [default: random].
    #[arg(long, env = "EDGEFLEET_REPLICA", value_name = "NAME")]
    pub replica: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

impl Args {
    /// The server configuration these flags describe.
    pub fn config(self) -> ServerConfig {
        ServerConfig {
            data_dir: self.data_dir,
            database: self.database,
            http_listen: self.listen,
            mqtt: match self.mqtt_url {
                Some(url) => Mqtt::External { url },
                None => Mqtt::Embedded { listen: self.mqtt_listen },
            },
            release_key: self.release_key,
            root: self.root,
            api_token: self.api_token,
            max_upload_bytes: self.max_upload,
            tick: self.tick,
            manifest_ttl: self.manifest_ttl,
            replica: self.replica.unwrap_or_default(),
            webhook: self.webhook,
            drift_threshold: self.drift_threshold,
            drift_for: self.drift_for,
            window: self.window,
        }
    }
}

/// Runs the server until SIGINT/SIGTERM.
pub fn run(a: Args) -> Result<()> {
    init_logging(a.log_json);
    let cfg = a.config();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")?;
    rt.block_on(async {
        let running = edgefleet_fleet_server::server::start(cfg).await?;
        let http = running.http;
        eprintln!("edgefleet server: dashboard and API on http://{http}/ (OpenAPI: /openapi.json, metrics: /metrics)");
        eprintln!("devices connect to MQTT at {}", running.mqtt);
        if let Some(p) = &running.new_admin_token {
            eprintln!("API token: {} (edgefleet publish/rollout read it from there)", p.display());
        }
        running.serve_until(shutdown_signal()).await;
        Ok(())
    })
}

fn init_logging(json: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if json { b.json().try_init() } else { b.try_init() };
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

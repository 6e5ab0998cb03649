//! The edgefleet device daemon. It keeps one model live (and optionally a
//! shadow candidate), serves inference to the device's apps over a local
//! HTTP API, measures every inference, and takes model updates over MQTT:
//! signed manifests verified against a rotating root of trust, packages
//! downloaded in resumable, verified chunks, written to the inactive slot of
//! A/B storage, swapped atomically, health-checked, then committed or rolled
//! back. Telemetry (latency, drift, predictions, shadow agreement, accuracy)
//! goes out on an interval, signed, sequence-numbered and spooled on disk
//! while offline. Raw inputs never leave the device.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let cfg = edgefleet_agent::Config::load(Some("agent.toml".as_ref()))?;
//! edgefleet_agent::run(cfg, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! Modules: [`config`] (defaults, file, `EDGEFLEET_*` env), [`update`] (the
//! sans-I/O update state machine), [`store`] (crash-safe on-disk state),
//! [`engine`] (models, health check), [`monitor`] (telemetry statistics),
//! [`api`] (local HTTP API), and the daemon wiring them together.
#![warn(missing_docs)]

mod agent;
pub mod api;
pub mod config;
pub mod engine;
pub mod monitor;
pub mod store;
#[cfg(feature = "tls")]
mod tls;
pub mod update;

pub use agent::{Handle, install_local, rss_bytes, run, run_embedded};
pub use config::Config;

/// Logging setup shared by the binaries.
pub mod logging {
    /// Structured logs to stderr; `RUST_LOG` filters (default `info`).
    pub fn init(json: bool) {
        init_with(json, "info");
    }

    /// As [`init`] with another default filter (when `RUST_LOG` is unset).
    pub fn init_with(json: bool, default: &str) {
        use tracing_subscriber::EnvFilter;
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
        use std::io::IsTerminal;
        let b = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal());
        let _ = if json { b.json().try_init() } else { b.try_init() };
    }
}

/// Runs the agent on a tokio runtime until SIGINT or SIGTERM.
///
/// # Errors
/// As [`run`].
pub fn block_on_until_signal(cfg: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(cfg, async {
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
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
    }))
}

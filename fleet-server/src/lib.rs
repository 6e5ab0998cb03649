//! The edgefleet fleet server: model registry, device inventory and
//! enrollment, staged rollouts gated on model health, telemetry ingestion,
//! a REST API with an OpenAPI document, Prometheus metrics and a web
//! dashboard.
//!
//! One process by default: a SQLite file, an embedded MQTT broker
//! (`edgefleet-broker`) and the HTTP API, all under one data directory
//! ([`config::ServerConfig`]'s defaults). Scale-out: PostgreSQL
//! (`postgres://…`) and an external MQTT broker (`mqtt://…`); several
//! replicas share the database, and a rollout is driven by whichever replica
//! holds its lease row (see [`rollout::tick`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let cfg = edgefleet_fleet_server::config::ServerConfig { data_dir: "fleet-data".into(), ..Default::default() };
//! let running = edgefleet_fleet_server::server::start(cfg).await?;
//! println!("API on http://{}", running.http);
//! running.serve_until(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```
//!
//! Parts: [`store`] (the database, both dialects), [`registry`] (package
//! inspection and manifest signing), [`mqtt`] (broker, the server's session,
//! chunk serving), [`ingest`] (uplinks: verify, deduplicate, apply,
//! acknowledge), [`rollout`] (waves, gates, decisions), [`api`] (HTTP),
//! [`metrics`], [`webhook`] (the retraining trigger), [`server`] (wiring).

pub mod api;
pub mod config;
pub mod ingest;
pub mod metrics;
pub mod mqtt;
pub mod registry;
pub mod rollout;
pub mod server;
pub mod store;
pub mod util;
pub mod webhook;

/// The dashboard page, served at `/`.
pub const DASHBOARD_HTML: &str = include_str!("../dashboard/index.html");

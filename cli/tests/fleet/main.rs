//! The fleet server and agents as real processes: `edgefleet server` on
//! its embedded defaults (SQLite, the embedded broker) or PostgreSQL, `edgefleet agent`
//! per device, enrolled through the REST API, over real MQTT and loopback
//! HTTP, with real signatures and real KWS packages.

mod api;
mod demo;
mod drift;
mod identity;
mod postgres;
mod rollouts;
mod scale;
mod support;

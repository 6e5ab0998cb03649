//! The agent as a real process against a real MQTT broker (the fleet server's embedded broker,
//! or Debian's mosquitto), real signatures, real packages compiled from the
//! MLPerf Tiny models, real files and fsync. One test binary.

mod crash;
mod drift;
mod support;
#[cfg(feature = "tls")]
mod tls;
mod updates;

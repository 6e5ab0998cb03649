//! Server configuration: what `edgefleet server` flags and `EDGEFLEET_*`
//! variables set. Every field has a default that runs on one machine with
//! no setup: a SQLite file and an embedded MQTT broker in `data_dir`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where devices connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mqtt {
    /// Run the embedded MQTT broker inside the server, listening here (port 0: any free port).
    Embedded {
        /// Listen address.
        listen: SocketAddr,
    },
    /// Use an external broker (Mosquitto, EMQX): `mqtt://[user:password@]host[:port]`.
    External {
        /// Broker URL.
        url: String,
    },
}

/// Server configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Directory for the SQLite file, the admin token and keys found by default.
    pub data_dir: PathBuf,
    /// `sqlite://FILE` or `postgres://...`; `None`: `sqlite://{data_dir}/fleet.db`.
    pub database: Option<String>,
    /// HTTP listen address (port 0: any free port).
    pub http_listen: SocketAddr,
    /// MQTT broker.
    pub mqtt: Mqtt,
    /// The online release key (signs manifests on publish and for rollouts);
    /// `None`: `{data_dir}/release.key` if it exists, else only packages
    /// signed offline can be rolled out.
    pub release_key: Option<PathBuf>,
    /// Signed root metadata, published retained to devices and used to check
    /// offline-signed manifests; `None`: `{data_dir}/root.signed` if it exists.
    pub root: Option<PathBuf>,
    /// An API token to accept (besides those in the database).
    pub api_token: Option<String>,
    /// Largest package upload, bytes.
    pub max_upload_bytes: usize,
    /// How often rollouts are evaluated.
    pub tick: Duration,
    /// How long signed manifests stay valid.
    pub manifest_ttl: Duration,
    /// This replica's name (leases are taken in its name).
    pub replica: String,
    /// Retraining webhook (plain `http://`), fired when a version's fleet
    /// drift stays above `drift_threshold` for `drift_for`.
    pub webhook: Option<String>,
    /// Fleet PSI above which a version counts as drifting.
    pub drift_threshold: f64,
    /// How long drift must last before the webhook fires.
    pub drift_for: Duration,
    /// Telemetry window fleet drift and dashboard figures are computed over.
    pub window: Duration,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            data_dir: PathBuf::from("edgefleet-data"),
            database: None,
            http_listen: ([127, 0, 0, 1], 8080).into(),
            mqtt: Mqtt::Embedded { listen: ([0, 0, 0, 0], 1883).into() },
            release_key: None,
            root: None,
            api_token: None,
            max_upload_bytes: 64 << 20,
            tick: Duration::from_secs(2),
            manifest_ttl: Duration::from_secs(30 * 86_400),
            replica: String::new(),
            webhook: None,
            drift_threshold: 0.25,
            drift_for: Duration::from_secs(600),
            window: Duration::from_secs(300),
        }
    }
}

impl ServerConfig {
    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("fleet.db").display()))
    }
}

/// MQTT user name and password.
pub type Credentials = (String, String);

/// Parses `mqtt://[user:password@]host[:port]` into `(host, port, credentials)`.
///
/// # Errors
/// Anything else, with what was expected.
pub fn parse_mqtt_url(url: &str) -> Result<(String, u16, Option<Credentials>), String> {
    let rest =
        url.strip_prefix("mqtt://").ok_or_else(|| format!("{url:?}: expected mqtt://[user:password@]host[:port]"))?;
    let (creds, hostport) = match rest.rsplit_once('@') {
        Some((c, h)) => {
            let (u, p) = c.split_once(':').ok_or_else(|| format!("{url:?}: credentials must be user:password"))?;
            (Some((u.to_string(), p.to_string())), h)
        }
        None => (None, rest),
    };
    let hostport = hostport.trim_end_matches('/');
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("{url:?}: bad port {p:?}"))?),
        None => (hostport, 1883),
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok((host.to_string(), port, creds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls() {
        assert_eq!(parse_mqtt_url("mqtt://broker").unwrap(), ("broker".into(), 1883, None));
        assert_eq!(
            parse_mqtt_url("mqtt://srv:s3:cret@10.0.0.2:8883/").unwrap(),
            ("10.0.0.2".into(), 8883, Some(("srv".into(), "s3:cret".into())))
        );
        assert!(parse_mqtt_url("http://x").unwrap_err().contains("expected mqtt://"));
        assert!(parse_mqtt_url("mqtt://h:99999").unwrap_err().contains("bad port"));
        assert!(parse_mqtt_url("mqtt://:1883").unwrap_err().contains("no host"));
    }
}

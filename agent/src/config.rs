//! Agent configuration: built-in defaults, then a TOML file, then
//! `EDGEFLEET_*` environment variables (each documented on its field and in
//! `agent.sample.toml`). Secrets are redacted from `Debug`.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use edgefleet_protocol::Platform;
use serde::{Deserialize, Serialize};

/// A secret string whose `Debug` does not show it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"<redacted>\"" })
    }
}

/// MQTT connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host (`EDGEFLEET_MQTT_HOST`).
    pub host: String,
    /// Broker port (`EDGEFLEET_MQTT_PORT`).
    pub port: u16,
    /// Per-device user name (`EDGEFLEET_MQTT_USERNAME`); defaults to the device id.
    pub username: Option<String>,
    /// Per-device password (`EDGEFLEET_MQTT_PASSWORD`).
    pub password: Option<Secret>,
    /// Connect with TLS (`EDGEFLEET_MQTT_TLS`; needs the `tls` feature).
    pub tls: bool,
    /// CA certificate (PEM) for TLS; the system roots otherwise.
    pub ca_file: Option<PathBuf>,
    /// Keep-alive, seconds.
    pub keep_alive_s: u64,
    /// Largest MQTT packet accepted, bytes.
    pub max_packet_bytes: usize,
    /// The device's downlink key (64 hex digits, issued at enrollment;
    /// `EDGEFLEET_DOWNLINK_KEY`): when set, everything the server sends this
    /// device must be sealed with it (the broker may not keep other devices
    /// from reading this device's topics).
    pub downlink_key: Option<Secret>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            username: None,
            password: None,
            tls: false,
            ca_file: None,
            keep_alive_s: 30,
            max_packet_bytes: 256 * 1024,
            downlink_key: None,
        }
    }
}

/// The local inference API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address (`EDGEFLEET_API_LISTEN`); port 0 picks one, written to `<state_dir>/api.addr`.
    pub listen: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { listen: "127.0.0.1:7311".into() }
    }
}

/// Telemetry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Report interval, milliseconds (`EDGEFLEET_TELEMETRY_INTERVAL_MS`).
    pub interval_ms: u64,
    /// PSI above which a window raises a drift event.
    pub drift_threshold: f32,
    /// Fewest inferences in a window before drift is scored.
    pub min_drift_inferences: u64,
    /// Most uplinks kept on disk until the server acknowledges them (oldest dropped first).
    pub spool_limit: usize,
    /// Send an unacknowledged uplink again after this many milliseconds.
    pub resend_after_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            interval_ms: 10_000,
            drift_threshold: 0.25,
            min_drift_inferences: 20,
            spool_limit: 10_000,
            resend_after_ms: 30_000,
        }
    }
}

/// Updates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateConfig {
    /// Download chunk size, bytes (within the broker's maximum payload).
    pub chunk_size: u32,
    /// Re-request a chunk after this many milliseconds without an answer.
    pub chunk_timeout_ms: u64,
    /// Health check: the self-test inference must take at most this long.
    pub latency_budget_ms: u64,
    /// A package whose health check was interrupted this many times (the
    /// agent died during it: a crash loop, or power cuts) is given up.
    pub max_interrupted_health_checks: u32,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            chunk_size: edgefleet_protocol::chunks::DEFAULT_CHUNK_SIZE,
            chunk_timeout_ms: 5_000,
            latency_budget_ms: 1_000,
            max_interrupted_health_checks: 3,
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Device id (`EDGEFLEET_DEVICE_ID`), `[A-Za-z0-9._-]{1,64}`.
    pub device_id: String,
    /// Hardware id that manifests must name (`EDGEFLEET_HARDWARE_ID`).
    pub hardware_id: String,
    /// `android`, `ios`, `linux-arm`, `linux` or `mcu` (`EDGEFLEET_PLATFORM`).
    pub platform: String,
    /// Static groups (`EDGEFLEET_GROUPS`, comma-separated).
    pub groups: Vec<String>,
    /// Where slots, download state, keys and the telemetry spool live (`EDGEFLEET_STATE_DIR`).
    pub state_dir: PathBuf,
    /// The pinned root of trust (signed root file), used until a newer root arrives (`EDGEFLEET_ROOT_OF_TRUST`).
    pub root_of_trust: PathBuf,
    /// MQTT.
    pub mqtt: MqttConfig,
    /// Local API.
    pub api: ApiConfig,
    /// Telemetry.
    pub telemetry: TelemetryConfig,
    /// Updates.
    pub update: UpdateConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            device_id: String::new(),
            hardware_id: String::new(),
            platform: "linux".into(),
            groups: Vec::new(),
            state_dir: PathBuf::from("/var/lib/edgefleet"),
            root_of_trust: PathBuf::from("/etc/edgefleet/root.signed"),
            mqtt: MqttConfig::default(),
            api: ApiConfig::default(),
            telemetry: TelemetryConfig::default(),
            update: UpdateConfig::default(),
        }
    }
}

fn env_parse<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    match std::env::var(name) {
        Ok(v) => v.parse().map(Some).map_err(|_| anyhow::anyhow!("{name}={v:?} is not valid")),
        Err(_) => Ok(None),
    }
}

impl Config {
    /// Defaults, then `file` (if given), then the environment; validated.
    ///
    /// # Errors
    /// Unreadable or invalid file, bad environment values, invalid settings.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let mut c = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
            }
            None => Config::default(),
        };
        c.apply_env()?;
        c.validate()?;
        Ok(c)
    }

    fn apply_env(&mut self) -> Result<()> {
        let s = |name: &str| std::env::var(name).ok();
        if let Some(v) = s("EDGEFLEET_DEVICE_ID") {
            self.device_id = v;
        }
        if let Some(v) = s("EDGEFLEET_HARDWARE_ID") {
            self.hardware_id = v;
        }
        if let Some(v) = s("EDGEFLEET_PLATFORM") {
            self.platform = v;
        }
        if let Some(v) = s("EDGEFLEET_GROUPS") {
            self.groups = v.split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect();
        }
        if let Some(v) = s("EDGEFLEET_STATE_DIR") {
            self.state_dir = v.into();
        }
        if let Some(v) = s("EDGEFLEET_ROOT_OF_TRUST") {
            self.root_of_trust = v.into();
        }
        if let Some(v) = s("EDGEFLEET_MQTT_HOST") {
            self.mqtt.host = v;
        }
        if let Some(v) = env_parse("EDGEFLEET_MQTT_PORT")? {
            self.mqtt.port = v;
        }
        if let Some(v) = s("EDGEFLEET_MQTT_USERNAME") {
            self.mqtt.username = Some(v);
        }
        if let Some(v) = s("EDGEFLEET_MQTT_PASSWORD") {
            self.mqtt.password = Some(Secret(v));
        }
        if let Some(v) = s("EDGEFLEET_DOWNLINK_KEY") {
            self.mqtt.downlink_key = Some(Secret(v));
        }
        if let Some(v) = env_parse("EDGEFLEET_MQTT_TLS")? {
            self.mqtt.tls = v;
        }
        if let Some(v) = s("EDGEFLEET_API_LISTEN") {
            self.api.listen = v;
        }
        if let Some(v) = env_parse("EDGEFLEET_TELEMETRY_INTERVAL_MS")? {
            self.telemetry.interval_ms = v;
        }
        Ok(())
    }

    /// Checks the settings make sense.
    ///
    /// # Errors
    /// The first invalid setting, named.
    pub fn validate(&self) -> Result<()> {
        if !edgefleet_protocol::topics::valid_id(&self.device_id) {
            bail!(
                "device_id {:?} must be 1-64 characters of [A-Za-z0-9._-] (set it in the file or EDGEFLEET_DEVICE_ID)",
                self.device_id
            );
        }
        if self.hardware_id.is_empty() {
            bail!("hardware_id is empty (set it in the file or EDGEFLEET_HARDWARE_ID)");
        }
        for g in &self.groups {
            if !edgefleet_protocol::topics::valid_id(g) {
                bail!("group {g:?} must be 1-64 characters of [A-Za-z0-9._-]");
            }
        }
        self.platform()?;
        let c = self.update.chunk_size;
        if c == 0 || c > edgefleet_protocol::chunks::MAX_CHUNK_SIZE {
            bail!("update.chunk_size {c} must be within 1..={}", edgefleet_protocol::chunks::MAX_CHUNK_SIZE);
        }
        if self.telemetry.interval_ms < 10 {
            bail!("telemetry.interval_ms must be at least 10");
        }
        if let Some(k) = &self.mqtt.downlink_key
            && edgefleet_protocol::parse_hex32(&k.0).is_none()
        {
            bail!("mqtt.downlink_key must be 64 hex digits");
        }
        if self.mqtt.tls && !cfg!(feature = "tls") {
            bail!("mqtt.tls is set but this agent was built without the `tls` feature");
        }
        Ok(())
    }

    /// The downlink key, parsed.
    pub fn downlink_key(&self) -> Option<[u8; 32]> {
        self.mqtt.downlink_key.as_ref().and_then(|k| edgefleet_protocol::parse_hex32(&k.0))
    }

    /// The platform as the protocol names it.
    ///
    /// # Errors
    /// An unknown platform name.
    pub fn platform(&self) -> Result<Platform> {
        Ok(match self.platform.as_str() {
            "android" => Platform::Android,
            "ios" => Platform::Ios,
            "linux-arm" => Platform::LinuxArm,
            "linux" => Platform::Linux,
            "mcu" => Platform::Mcu,
            other => bail!("platform {other:?} is not one of android, ios, linux-arm, linux, mcu"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env_override_defaults() {
        let dir = std::env::temp_dir().join(format!("edgefleet-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("agent.toml");
        std::fs::write(
            &f,
            "device_id = \"dev-1\"\nhardware_id = \"rpi4\"\n[mqtt]\nport = 1884\npassword = \"hunter2\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&f)).unwrap();
        assert_eq!((c.device_id.as_str(), c.mqtt.port, c.mqtt.host.as_str()), ("dev-1", 1884, "127.0.0.1"));
        assert!(!format!("{c:?}").contains("hunter2"), "password leaked into Debug");
        std::fs::write(&f, "device_id = \"a b\"\nhardware_id = \"x\"\n").unwrap();
        assert!(Config::load(Some(&f)).is_err());
        std::fs::write(&f, "device_id = \"d\"\nhardware_id = \"x\"\nunknown = 1\n").unwrap();
        assert!(Config::load(Some(&f)).is_err(), "unknown keys are refused");
    }
}

//! MQTT over TLS with rustls: the given CA, or the platform's roots.

use std::path::Path;

use anyhow::{Context, Result};
use rumqttc::{TlsConfiguration, Transport};

/// The TLS transport.
///
/// # Errors
/// The CA file cannot be read.
pub fn transport(ca_file: Option<&Path>) -> Result<Transport> {
    Ok(match ca_file {
        Some(p) => {
            let ca = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            Transport::Tls(TlsConfiguration::Simple { ca, alpn: None, client_auth: None })
        }
        None => Transport::tls_with_default_config(),
    })
}

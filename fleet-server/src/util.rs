//! Small shared helpers: clock, randomness, hex.

use edgefleet_protocol::hex32;

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `n` random bytes from the OS, hex-encoded.
///
/// # Errors
/// No OS randomness.
pub fn random_hex(n: usize) -> Result<String, getrandom::Error> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// SHA-256, hex.
pub fn sha_hex(bytes: &[u8]) -> String {
    hex32(&edgefleet_protocol::sha256(bytes))
}

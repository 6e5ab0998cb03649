//! Key files, as `edgefleet keys generate` writes them and the fleet server
//! reads its online release key: text, `edgefleet-secret-key v1` or
//! `edgefleet-public-key v1` on the first line, 64 hex digits on the second.
//! Secret key files are created with mode 0600 and never overwritten.

use std::format;
use std::path::Path;
use std::string::String;

use crate::keys::{PublicKey, SecretKey, hex32, parse_hex32};

/// First line of a secret key file.
pub const SECRET_HEADER: &str = "edgefleet-secret-key v1";
/// First line of a public key file.
pub const PUBLIC_HEADER: &str = "edgefleet-public-key v1";

/// The text of a secret key file.
pub fn secret_text(key: &SecretKey) -> String {
    format!("{SECRET_HEADER}\n{}\n", hex32(&key.to_bytes()))
}

/// The text of a public key file.
pub fn public_text(key: &PublicKey) -> String {
    format!("{PUBLIC_HEADER}\n{}\n", hex32(&key.0))
}

/// Reads a secret key file.
///
/// # Errors
/// Unreadable file or not a secret key file (the message names the file).
pub fn read_secret(p: &Path) -> Result<SecretKey, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
    let mut lines = text.lines();
    if lines.next() != Some(SECRET_HEADER) {
        return Err(format!("{} is not an edgefleet secret key file", p.display()));
    }
    let seed = lines.next().and_then(parse_hex32).ok_or_else(|| format!("{}: malformed key", p.display()))?;
    Ok(SecretKey::from_bytes(&seed))
}

/// Reads a public key file, or the public half of a secret key file.
///
/// # Errors
/// Unreadable file or not a key file.
pub fn read_public(p: &Path) -> Result<PublicKey, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
    match text.lines().next() {
        Some(PUBLIC_HEADER) => {
            let k =
                text.lines().nth(1).and_then(parse_hex32).ok_or_else(|| format!("{}: malformed key", p.display()))?;
            Ok(PublicKey(k))
        }
        Some(SECRET_HEADER) => Ok(read_secret(p)?.public()),
        _ => Err(format!("{} is not an edgefleet key file", p.display())),
    }
}

/// Writes a new file (refusing to overwrite), mode 0600 if `private`, synced.
///
/// # Errors
/// The file exists or cannot be written.
pub fn write_new(p: &Path, text: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let _ = private;
    let mut f = o.open(p).map_err(|e| format!("creating {} (refusing to overwrite a key): {e}", p.display()))?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| format!("writing {}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_to_overwrite() {
        let dir = std::env::temp_dir().join(format!("ef-keyfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let k = SecretKey::from_bytes(&[9; 32]);
        let (sk, pk) = (dir.join("a.key"), dir.join("a.pub"));
        write_new(&sk, &secret_text(&k), true).unwrap();
        write_new(&pk, &public_text(&k.public()), false).unwrap();
        assert_eq!(read_secret(&sk).unwrap().to_bytes(), k.to_bytes());
        assert_eq!(read_public(&pk).unwrap(), k.public());
        assert_eq!(read_public(&sk).unwrap(), k.public());
        assert!(write_new(&sk, "x", true).is_err(), "overwrote a key");
        assert!(read_secret(&pk).unwrap_err().contains("not an edgefleet secret key"));
        std::fs::write(dir.join("b.key"), "edgefleet-secret-key v1\nzz\n").unwrap();
        assert!(read_secret(&dir.join("b.key")).unwrap_err().contains("malformed"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

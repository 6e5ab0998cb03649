//! Confidential downlinks. The broker may not enforce topic ACLs (an
//! external one may have none), so what the server sends one device — its manifests, package
//! chunks, acknowledgements — is sealed with that device's 32-byte downlink
//! key (issued at enrollment, known to the server and the device only):
//! XChaCha20-Poly1305 with a random 24-byte nonce and the topic as
//! associated data, so a sealed payload cannot be replayed on another topic.
//! Wire format: `nonce (24 bytes) || ciphertext || tag (16 bytes)`.

use alloc::vec::Vec;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Bytes a sealed payload adds.
pub const OVERHEAD: usize = 24 + 16;

/// Why a sealed payload was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealError {
    /// Shorter than a nonce and a tag.
    Truncated,
    /// Wrong key, wrong topic, or tampered bytes.
    Forged,
}

impl core::fmt::Display for SealError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            SealError::Truncated => "sealed payload truncated",
            SealError::Forged => "sealed payload does not open with this device's key (wrong key, topic or tampered)",
        })
    }
}

impl core::error::Error for SealError {}

/// Seals `plaintext` for `topic` with a caller-chosen unique `nonce`.
pub fn seal_with_nonce(key: &[u8; 32], nonce: [u8; 24], topic: &str, plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
    out.extend_from_slice(&nonce);
    // Encryption into a Vec cannot fail for these sizes.
    let sealed =
        cipher.encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: topic.as_bytes() }).unwrap_or_default();
    out.extend_from_slice(&sealed);
    out
}

/// Seals with a random nonce from the operating system.
///
/// # Errors
/// No OS randomness.
#[cfg(feature = "std")]
pub fn seal(key: &[u8; 32], topic: &str, plaintext: &[u8]) -> Result<Vec<u8>, getrandom::Error> {
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce)?;
    Ok(seal_with_nonce(key, nonce, topic, plaintext))
}

/// Opens a payload sealed for `topic` with `key`.
///
/// # Errors
/// [`SealError`].
pub fn open(key: &[u8; 32], topic: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    if sealed.len() < OVERHEAD {
        return Err(SealError::Truncated);
    }
    let (nonce, body) = sealed.split_at(24);
    let nonce = XNonce::try_from(nonce).map_err(|_| SealError::Truncated)?;
    XChaCha20Poly1305::new(key.into())
        .decrypt(&nonce, Payload { msg: body, aad: topic.as_bytes() })
        .map_err(|_| SealError::Forged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_with_the_key_and_topic() {
        let k = [7u8; 32];
        let s = seal_with_nonce(&k, [1; 24], "ef/v1/d/a/manifest", b"hello");
        assert_eq!(open(&k, "ef/v1/d/a/manifest", &s).unwrap(), b"hello");
        assert_eq!(open(&[8; 32], "ef/v1/d/a/manifest", &s), Err(SealError::Forged));
        assert_eq!(open(&k, "ef/v1/d/b/manifest", &s), Err(SealError::Forged));
        let mut t = s.clone();
        t[30] ^= 1;
        assert_eq!(open(&k, "ef/v1/d/a/manifest", &t), Err(SealError::Forged));
        assert_eq!(open(&k, "x", &s[..10]), Err(SealError::Truncated));
    }
}

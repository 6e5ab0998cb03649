//! Signed documents: the body's bytes plus detached signatures, verified
//! before the body is parsed ("verify, then parse").
//!
//! Signatures cover `"edgefleet/v1/" || kind || body`, so a signature made
//! for one kind of document can never be replayed as another.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::error::VerifyError;
use crate::keys::{KeyId, KeySignature, PublicKey, SecretKey};

/// What a signed document holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Root of trust metadata ([`crate::Root`]).
    Root,
    /// Update manifest ([`crate::Manifest`]).
    Manifest,
    /// A device's uplink message ([`crate::Uplink`]).
    Uplink,
}

/// A signed document: postcard-encoded body and signatures over it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// The kind, bound into every signature.
    pub kind: Kind,
    /// The body's bytes (postcard).
    pub body: Vec<u8>,
    /// Signatures.
    pub signatures: Vec<KeySignature>,
}

/// Signatures found valid (and invalid) against a set of trusted keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Valid signatures by distinct trusted, unrevoked keys.
    pub valid: u32,
    /// A trusted key whose signature failed.
    pub bad: Option<KeyId>,
    /// A key not among the trusted ones.
    pub unknown: Option<KeyId>,
    /// A revoked key.
    pub revoked: Option<KeyId>,
}

impl Tally {
    /// `Ok` if `valid >= threshold`, else the most specific reason.
    pub fn check(&self, threshold: u32) -> Result<(), VerifyError> {
        if threshold == 0 {
            return Err(VerifyError::Invalid("signature threshold of 0"));
        }
        if self.valid >= threshold {
            return Ok(());
        }
        if let Some(key_id) = self.bad {
            return Err(VerifyError::BadSignature { key_id });
        }
        if let Some(key_id) = self.revoked {
            return Err(VerifyError::RevokedKey { key_id });
        }
        if self.valid == 0
            && let Some(key_id) = self.unknown
        {
            return Err(VerifyError::UnknownKey { key_id });
        }
        Err(VerifyError::BelowThreshold { valid: self.valid, needed: threshold })
    }
}

const DOMAIN: &[u8] = b"edgefleet/v1/";

fn message(kind: Kind, body: &[u8]) -> Vec<u8> {
    let tag: &[u8] = match kind {
        Kind::Root => b"root/",
        Kind::Manifest => b"manifest/",
        Kind::Uplink => b"uplink/",
    };
    let mut m = Vec::with_capacity(DOMAIN.len() + tag.len() + body.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(tag);
    m.extend_from_slice(body);
    m
}

impl Signed {
    /// Encodes `body` and signs it with every key in `keys`.
    ///
    /// # Errors
    /// The body cannot be encoded.
    pub fn sign<T: Serialize>(kind: Kind, body: &T, keys: &[&SecretKey]) -> Result<Signed, postcard::Error> {
        let body = postcard::to_allocvec(body)?;
        let msg = message(kind, &body);
        let signatures = keys.iter().map(|k| k.sign(&msg)).collect();
        Ok(Signed { kind, body, signatures })
    }

    /// Adds a signature by `key` (for thresholds gathered from several holders).
    pub fn add_signature(&mut self, key: &SecretKey) {
        let sig = key.sign(&message(self.kind, &self.body));
        self.signatures.retain(|s| s.key_id != sig.key_id);
        self.signatures.push(sig);
    }

    /// The wire bytes.
    ///
    /// # Errors
    /// Never in practice (postcard into a `Vec`).
    pub fn to_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }

    /// Parses wire bytes (the body is not parsed, nor trusted, yet).
    ///
    /// # Errors
    /// [`VerifyError::Encoding`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Signed, VerifyError> {
        postcard::from_bytes(bytes).map_err(|_| VerifyError::Encoding)
    }

    /// Checks every signature against `trusted` keys (those allowed for the
    /// role), ignoring `revoked` ones; counts distinct valid signers.
    pub fn tally(&self, trusted: &[PublicKey], role: &[KeyId], revoked: &[KeyId]) -> Tally {
        let msg = message(self.kind, &self.body);
        let mut t = Tally::default();
        let mut counted: Vec<KeyId> = Vec::new();
        for s in &self.signatures {
            if revoked.contains(&s.key_id) {
                t.revoked = Some(s.key_id);
                continue;
            }
            let key = role.contains(&s.key_id).then(|| trusted.iter().find(|k| k.id() == s.key_id)).flatten();
            match key {
                None => t.unknown = Some(s.key_id),
                Some(k) if k.verify(&msg, &s.sig) => {
                    if !counted.contains(&s.key_id) {
                        counted.push(s.key_id);
                        t.valid += 1;
                    }
                }
                Some(_) => t.bad = Some(s.key_id),
            }
        }
        t
    }

    /// Decodes the body after the caller has checked the signatures.
    ///
    /// # Errors
    /// [`VerifyError::WrongKind`] or [`VerifyError::Encoding`].
    pub fn decode<'a, T: Deserialize<'a>>(&'a self, kind: Kind) -> Result<T, VerifyError> {
        if self.kind != kind {
            return Err(VerifyError::WrongKind);
        }
        postcard::from_bytes(&self.body).map_err(|_| VerifyError::Encoding)
    }
}

//! The update manifest (modelled on TUF targets metadata and Uptane) and the
//! streaming check of the package it describes.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::VerifyError;

/// How a device uses the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Replace the live model.
    Live,
    /// Run beside the live model on the same inputs and report agreement;
    /// the live model keeps answering.
    Shadow,
}

/// An update manifest: what to install, for whom, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Model identity (e.g. `kws`).
    pub model_id: String,
    /// Human version (e.g. `2.0.1`).
    pub version: String,
    /// Strictly increasing per device across releases: rollback protection.
    pub release_counter: u64,
    /// Exact package length in bytes.
    pub package_len: u64,
    /// SHA-256 of the package.
    pub package_sha256: [u8; 32],
    /// Hardware ids allowed to install it.
    pub hardware_ids: Vec<String>,
    /// Expiry (unix seconds): freeze protection.
    pub expires: u64,
    /// The rollout this release belongs to (empty if none).
    pub rollout_id: String,
    /// SHA-256 of the package's reference data profile (zeros if none).
    pub reference_profile_sha256: [u8; 32],
    /// Live or shadow.
    pub mode: Mode,
}

/// Largest package a manifest may declare (64 MiB): a bound on what a device
/// will ever download for one manifest.
pub const MAX_PACKAGE_LEN: u64 = 64 << 20;

impl Manifest {
    /// Field checks that need no context.
    ///
    /// # Errors
    /// [`VerifyError::Invalid`].
    pub fn check(&self) -> Result<(), VerifyError> {
        if self.package_len == 0 || self.package_len > MAX_PACKAGE_LEN {
            return Err(VerifyError::Invalid("package length is 0 or above 64 MiB"));
        }
        if self.hardware_ids.is_empty() {
            return Err(VerifyError::Invalid("no hardware ids"));
        }
        if self.model_id.is_empty() || self.model_id.len() > 64 || self.version.len() > 64 {
            return Err(VerifyError::Invalid("model id or version empty or too long"));
        }
        Ok(())
    }
}

/// Checks a package as it streams in: never more than the declared length,
/// and the SHA-256 at the end.
#[derive(Clone, Debug)]
pub struct PackageVerifier {
    declared: u64,
    expected: [u8; 32],
    received: u64,
    hasher: Sha256,
}

impl PackageVerifier {
    /// For the package `m` describes.
    pub fn new(m: &Manifest) -> PackageVerifier {
        PackageVerifier { declared: m.package_len, expected: m.package_sha256, received: 0, hasher: Sha256::new() }
    }

    /// Feeds the next bytes.
    ///
    /// # Errors
    /// [`VerifyError::TooLong`] as soon as the bytes would exceed the
    /// declared length (they are not hashed).
    pub fn update(&mut self, bytes: &[u8]) -> Result<(), VerifyError> {
        let total =
            self.received.checked_add(bytes.len() as u64).ok_or(VerifyError::TooLong { declared: self.declared })?;
        if total > self.declared {
            return Err(VerifyError::TooLong { declared: self.declared });
        }
        self.hasher.update(bytes);
        self.received = total;
        Ok(())
    }

    /// Bytes accepted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Final checks: exact length and hash.
    ///
    /// # Errors
    /// [`VerifyError::TooShort`] or [`VerifyError::HashMismatch`].
    pub fn finish(self) -> Result<(), VerifyError> {
        if self.received != self.declared {
            return Err(VerifyError::TooShort { declared: self.declared, received: self.received });
        }
        let got: [u8; 32] = self.hasher.finalize().into();
        if got != self.expected {
            return Err(VerifyError::HashMismatch);
        }
        Ok(())
    }
}

/// SHA-256 of some bytes.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

//! The root of trust, modelled on TUF: root metadata lists the trusted keys,
//! which of them may sign root metadata and which may sign update manifests
//! ("targets"), each role with a threshold, and a revocation list. A device
//! is provisioned with a pinned root; a new root is accepted only when
//! signed by a threshold of the current root keys *and* of its own root keys
//! (so key rotation is possible and a stolen online key cannot rotate the
//! root). The root key never needs to live on the fleet server.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::error::VerifyError;
use crate::keys::{KeyId, PublicKey};
use crate::manifest::Manifest;
use crate::signed::{Kind, Signed};

/// Keys allowed to sign for a role, and how many must.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleKeys {
    /// Key ids (all present in [`Root::keys`]).
    pub keys: Vec<KeyId>,
    /// Signatures needed, at least 1.
    pub threshold: u32,
}

/// Root metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    /// Monotonic version, starting at 1.
    pub version: u32,
    /// Expiry (unix seconds).
    pub expires: u64,
    /// Every key any role uses.
    pub keys: Vec<PublicKey>,
    /// Who signs root metadata.
    pub root: RoleKeys,
    /// Who signs update manifests.
    pub targets: RoleKeys,
    /// Keys that must no longer be trusted, whatever role lists them.
    pub revoked: Vec<KeyId>,
}

impl Root {
    fn check_consistent(&self) -> Result<(), VerifyError> {
        for role in [&self.root, &self.targets] {
            if role.threshold == 0 {
                return Err(VerifyError::Invalid("a role has threshold 0"));
            }
            if role.threshold as usize > role.keys.len() {
                return Err(VerifyError::Invalid("a role's threshold exceeds its key count"));
            }
            if !role.keys.iter().all(|id| self.keys.iter().any(|k| k.id() == *id)) {
                return Err(VerifyError::Invalid("a role names a key the root does not list"));
            }
        }
        if self.version == 0 {
            return Err(VerifyError::Invalid("root version 0"));
        }
        Ok(())
    }

    fn verify_role(&self, doc: &Signed, role: &RoleKeys) -> Result<(), VerifyError> {
        doc.tally(&self.keys, &role.keys, &self.revoked).check(role.threshold)
    }
}

/// What the device knows about itself when it checks a manifest.
#[derive(Clone, Copy, Debug)]
pub struct DeviceContext<'a> {
    /// The device's hardware id.
    pub hardware_id: &'a str,
    /// Release counter of the installed model (0 if none).
    pub installed_counter: u64,
    /// Now, unix seconds.
    pub now: u64,
}

/// The trusted root and the checks made against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustStore {
    root: Root,
    signed: Signed,
}

impl TrustStore {
    /// Trusts a pinned root (installed at provisioning): it must be
    /// consistent and signed by its own root threshold. Its expiry is not
    /// checked here, so an old device can still be given a new root.
    ///
    /// # Errors
    /// Malformed, inconsistent or insufficiently signed root metadata.
    pub fn from_pinned(signed: Signed) -> Result<TrustStore, VerifyError> {
        let root: Root = signed.decode(Kind::Root)?;
        root.check_consistent()?;
        root.verify_role(&signed, &root.root)?;
        Ok(TrustStore { root, signed })
    }

    /// The trusted root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The trusted root as signed (to persist it).
    pub fn signed(&self) -> &Signed {
        &self.signed
    }

    /// Rotates to `new`: version above the current one, signed by a threshold
    /// of the current root keys and of the new root keys, not expired.
    /// Returns `Ok(false)` if `new` is the root already trusted.
    ///
    /// # Errors
    /// Why `new` is not trusted; the current root stays.
    pub fn update_root(&mut self, new: Signed, now: u64) -> Result<bool, VerifyError> {
        if new == self.signed {
            return Ok(false);
        }
        let root: Root = new.decode(Kind::Root)?;
        root.check_consistent()?;
        if root.version <= self.root.version {
            return Err(VerifyError::RootVersion { current: self.root.version, offered: root.version });
        }
        self.root.verify_role(&new, &self.root.root)?;
        root.verify_role(&new, &root.root)?;
        if root.expires <= now {
            return Err(VerifyError::RootExpired { expires: root.expires });
        }
        self.root = root;
        self.signed = new;
        Ok(true)
    }

    /// Verifies an update manifest: signatures (targets role, threshold,
    /// revocations), root and manifest expiry, release counter, hardware.
    ///
    /// # Errors
    /// The first reason to reject it.
    pub fn verify_manifest(&self, doc: &Signed, device: &DeviceContext<'_>) -> Result<Manifest, VerifyError> {
        if doc.kind != Kind::Manifest {
            return Err(VerifyError::WrongKind);
        }
        self.root.verify_role(doc, &self.root.targets)?;
        let m: Manifest = doc.decode(Kind::Manifest)?;
        if self.root.expires <= device.now {
            return Err(VerifyError::RootExpired { expires: self.root.expires });
        }
        if m.expires <= device.now {
            return Err(VerifyError::Expired { expires: m.expires, now: device.now });
        }
        if m.release_counter <= device.installed_counter {
            return Err(VerifyError::Rollback { offered: m.release_counter, installed: device.installed_counter });
        }
        if !m.hardware_ids.iter().any(|h| h == device.hardware_id) {
            return Err(VerifyError::HardwareMismatch);
        }
        m.check()?;
        Ok(m)
    }
}

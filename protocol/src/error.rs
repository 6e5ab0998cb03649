//! Why an update was rejected: one variant per attack or malformation, each
//! with a message a log reader can act on.

use core::fmt;

use crate::keys::KeyId;

/// A verification failure. The device keeps its current model and reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The bytes are not a well-formed signed document.
    Encoding,
    /// A root where a manifest was expected, or the reverse.
    WrongKind,
    /// A signature by a trusted key does not verify.
    BadSignature {
        /// The key.
        key_id: KeyId,
    },
    /// Signed only by keys the root of trust does not know for this role.
    UnknownKey {
        /// One of the unknown keys.
        key_id: KeyId,
    },
    /// Signed by a revoked key.
    RevokedKey {
        /// The key.
        key_id: KeyId,
    },
    /// Fewer valid signatures than the role's threshold.
    BelowThreshold {
        /// Valid signatures by distinct trusted keys.
        valid: u32,
        /// Needed.
        needed: u32,
    },
    /// A new root must have a higher version than the trusted one.
    RootVersion {
        /// Trusted version.
        current: u32,
        /// Offered version.
        offered: u32,
    },
    /// The root of trust has expired: no update is accepted until a new root arrives.
    RootExpired {
        /// Expiry (unix seconds).
        expires: u64,
    },
    /// The manifest has expired (a freeze attack replays old, valid metadata).
    Expired {
        /// Expiry (unix seconds).
        expires: u64,
        /// Now (unix seconds).
        now: u64,
    },
    /// The release counter is not above the installed one (rollback attack).
    Rollback {
        /// Counter in the manifest.
        offered: u64,
        /// Counter installed.
        installed: u64,
    },
    /// The manifest is not for this hardware (mix-and-match attack).
    HardwareMismatch,
    /// More bytes arrived than the manifest declares (endless-data attack).
    TooLong {
        /// Declared length.
        declared: u64,
    },
    /// The package ended before its declared length.
    TooShort {
        /// Declared length.
        declared: u64,
        /// Received.
        received: u64,
    },
    /// The package's SHA-256 differs from the manifest's.
    HashMismatch,
    /// Metadata that is well-formed but invalid (a threshold of 0, a role key missing from the key list...).
    Invalid(&'static str),
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Encoding => f.write_str("malformed signed metadata"),
            VerifyError::WrongKind => f.write_str("signed document of the wrong kind"),
            VerifyError::BadSignature { key_id } => write!(f, "bad signature by key {key_id}"),
            VerifyError::UnknownKey { key_id } => {
                write!(f, "signed by key {key_id}, which the root of trust does not authorize")
            }
            VerifyError::RevokedKey { key_id } => write!(f, "signed by revoked key {key_id}"),
            VerifyError::BelowThreshold { valid, needed } => {
                write!(f, "{valid} valid signature(s), the threshold is {needed}")
            }
            VerifyError::RootVersion { current, offered } => {
                write!(f, "root version {offered} is not newer than the trusted version {current}")
            }
            VerifyError::RootExpired { expires } => write!(f, "the root of trust expired at {expires}"),
            VerifyError::Expired { expires, now } => {
                write!(f, "manifest expired at {expires} (now {now}): possible freeze attack")
            }
            VerifyError::Rollback { offered, installed } => {
                write!(f, "release counter {offered} is not above the installed {installed}: possible rollback attack")
            }
            VerifyError::HardwareMismatch => f.write_str("manifest is not for this hardware (mix-and-match)"),
            VerifyError::TooLong { declared } => {
                write!(f, "package exceeds its declared {declared} bytes (endless data)")
            }
            VerifyError::TooShort { declared, received } => {
                write!(f, "package ended at {received} of {declared} bytes")
            }
            VerifyError::HashMismatch => f.write_str("package SHA-256 differs from the manifest"),
            VerifyError::Invalid(why) => write!(f, "invalid metadata: {why}"),
        }
    }
}

impl core::error::Error for VerifyError {}

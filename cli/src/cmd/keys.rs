//! `edgefleet keys`: signing keys and root-of-trust metadata.
//!
//! Key files are text: `edgefleet-secret-key v1` or `edgefleet-public-key v1`
//! on the first line, 64 hex digits on the second. Secret key files are
//! created with mode 0600 and never overwritten.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgefleet_protocol::{KeyId, Kind, PublicKey, RoleKeys, Root, SecretKey, Signed, parse_hex32};

/// `edgefleet keys ...`.
#[derive(clap::Subcommand, Debug)]
pub enum Keys {
    /// Create a key pair: NAME.key (secret, mode 0600) and NAME.pub.
    Generate {
        /// File name stem.
        name: String,
        /// Directory to write to.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Create signed root metadata: which keys may sign root metadata and which
    /// may sign update manifests, with thresholds and revocations. To rotate, sign
    /// the new root with the current root's keys too (--sign-with) and give it a
    /// higher --version.
    ///
    /// Example: edgefleet keys root --root-key root.key --release-key release.pub -o root.signed
    #[command(verbatim_doc_comment)]
    Root {
        /// Secret root keys (they sign this metadata).
        #[arg(long = "root-key", value_name = "KEY", required = true)]
        root_keys: Vec<PathBuf>,
        /// Root signatures needed for the next rotation.
        #[arg(long, default_value_t = 1)]
        root_threshold: u32,
        /// Public (or secret) keys allowed to sign update manifests.
        #[arg(long = "release-key", value_name = "KEY", required = true)]
        release_keys: Vec<PathBuf>,
        /// Manifest signatures needed.
        #[arg(long, default_value_t = 1)]
        release_threshold: u32,
        /// Key ids (hex) no longer trusted.
        #[arg(long = "revoke", value_name = "KEY_ID")]
        revoked: Vec<String>,
        /// Root version (the first is 1; each rotation increases it).
        #[arg(long, default_value_t = 1)]
        version: u32,
        /// Days until the root expires.
        #[arg(long, default_value_t = 365)]
        expires_days: u64,
        /// Additional secret keys to sign with (the current root's, when rotating).
        #[arg(long = "sign-with", value_name = "KEY")]
        sign_with: Vec<PathBuf>,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
    },
}

use edgefleet_protocol::keyfile;

/// Reads a secret key file.
pub fn read_secret(p: &Path) -> Result<SecretKey> {
    keyfile::read_secret(p).map_err(anyhow::Error::msg)
}

/// Reads a public key file, or the public half of a secret key file.
pub fn read_public(p: &Path) -> Result<PublicKey> {
    keyfile::read_public(p).map_err(anyhow::Error::msg)
}

/// Runs `edgefleet keys`.
pub fn run(k: Keys) -> Result<()> {
    match k {
        Keys::Generate { name, dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let key = SecretKey::generate().map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
            let (sk, pk) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
            keyfile::write_new(&sk, &keyfile::secret_text(&key), true).map_err(anyhow::Error::msg)?;
            keyfile::write_new(&pk, &keyfile::public_text(&key.public()), false).map_err(anyhow::Error::msg)?;
            outln!("key {} -> {} (secret), {}", key.public().id().to_hex(), sk.display(), pk.display());
        }
        Keys::Root {
            root_keys,
            root_threshold,
            release_keys,
            release_threshold,
            revoked,
            version,
            expires_days,
            sign_with,
            output,
        } => {
            let roots: Vec<SecretKey> = root_keys.iter().map(|p| read_secret(p)).collect::<Result<_>>()?;
            let releases: Vec<PublicKey> = release_keys.iter().map(|p| read_public(p)).collect::<Result<_>>()?;
            let extra: Vec<SecretKey> = sign_with.iter().map(|p| read_secret(p)).collect::<Result<_>>()?;
            let revoked: Vec<KeyId> = revoked
                .iter()
                .map(|h| parse_hex32(h).map(KeyId).with_context(|| format!("--revoke {h}: not a 64-hex-digit key id")))
                .collect::<Result<_>>()?;
            let mut keys: Vec<PublicKey> =
                roots.iter().map(SecretKey::public).chain(releases.iter().copied()).collect();
            keys.dedup();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
            let root = Root {
                version,
                expires: now + expires_days * 86_400,
                keys,
                root: RoleKeys { keys: roots.iter().map(|k| k.public().id()).collect(), threshold: root_threshold },
                targets: RoleKeys { keys: releases.iter().map(PublicKey::id).collect(), threshold: release_threshold },
                revoked,
            };
            let signers: Vec<&SecretKey> = roots.iter().chain(&extra).collect();
            let signed = Signed::sign(Kind::Root, &root, &signers)?;
            // Refuse to write metadata a device would refuse.
            edgefleet_protocol::TrustStore::from_pinned(signed.clone())
                .map_err(|e| anyhow::anyhow!("the root would be invalid: {e}"))?;
            super::write_atomic(&output, &signed.to_bytes()?)?;
            outln!(
                "root v{version}: {} root key(s) (threshold {root_threshold}), {} release key(s) (threshold {release_threshold}) -> {}",
                roots.len(),
                releases.len(),
                output.display()
            );
        }
    }
    Ok(())
}

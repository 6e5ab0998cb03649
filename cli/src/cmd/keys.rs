//! `edgefleet keys`: signing keys and root-of-trust metadata.
//!
//! Key files are text: `edgefleet-secret-key v1` or `edgefleet-public-key v1`
//! on the first line, 64 hex digits on the second. Secret key files are
//! created with mode 0600 and never overwritten.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use edgefleet_protocol::{KeyId, Kind, PublicKey, RoleKeys, Root, SecretKey, Signed, hex32, parse_hex32};

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

const SECRET_HEADER: &str = "edgefleet-secret-key v1";
const PUBLIC_HEADER: &str = "edgefleet-public-key v1";

/// Reads a secret key file.
pub fn read_secret(p: &Path) -> Result<SecretKey> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let mut lines = text.lines();
    if lines.next() != Some(SECRET_HEADER) {
        bail!("{} is not an edgefleet secret key file", p.display());
    }
    let seed = lines.next().and_then(parse_hex32).with_context(|| format!("{}: malformed key", p.display()))?;
    Ok(SecretKey::from_bytes(&seed))
}

/// Reads a public key file, or the public half of a secret key file.
pub fn read_public(p: &Path) -> Result<PublicKey> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    match text.lines().next() {
        Some(PUBLIC_HEADER) => {
            let k =
                text.lines().nth(1).and_then(parse_hex32).with_context(|| format!("{}: malformed key", p.display()))?;
            Ok(PublicKey(k))
        }
        Some(SECRET_HEADER) => Ok(read_secret(p)?.public()),
        _ => bail!("{} is not an edgefleet key file", p.display()),
    }
}

fn write_new(p: &Path, text: &str, private: bool) -> Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let _ = private;
    let mut f = o.open(p).with_context(|| format!("creating {} (refusing to overwrite a key)", p.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Runs `edgefleet keys`.
pub fn run(k: Keys) -> Result<()> {
    match k {
        Keys::Generate { name, dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let key = SecretKey::generate().map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
            let (sk, pk) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
            write_new(&sk, &format!("{SECRET_HEADER}\n{}\n", hex32(&key.to_bytes())), true)?;
            write_new(&pk, &format!("{PUBLIC_HEADER}\n{}\n", hex32(&key.public().0)), false)?;
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

//! `edgefleet sign` and `edgefleet verify`: update manifests for packages.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use edgefleet_protocol::{DeviceContext, Kind, Manifest, Mode, Signed, TrustStore, hex32, sha256};
use edgefleet_runtime::SectionKind;
use serde_json::json;

use super::keys::read_secret;

/// Manifest mode.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    /// Replace the live model.
    Live,
    /// Run beside the live model and report agreement.
    Shadow,
}

/// Arguments of `edgefleet sign`.
#[derive(clap::Args, Debug)]
pub struct SignArgs {
    /// The package (.efm) the manifest describes.
    pub package: PathBuf,
    /// Secret release key(s) to sign with (as many as the root's threshold).
    #[arg(long = "key", required = true, value_name = "KEY")]
    pub keys: Vec<PathBuf>,
    /// Hardware id(s) allowed to install it.
    #[arg(long = "hardware", required = true, value_name = "ID")]
    pub hardware: Vec<String>,
    /// Release counter: must exceed what devices have installed (rollback protection).
    #[arg(long)]
    pub counter: u64,
    /// Model id [default: the package file stem].
    #[arg(long)]
    pub model_id: Option<String>,
    /// Version string [default: the counter].
    #[arg(long)]
    pub version: Option<String>,
    /// Days until the manifest expires (freeze protection).
    #[arg(long, default_value_t = 30)]
    pub expires_days: u64,
    /// Rollout id.
    #[arg(long, default_value = "")]
    pub rollout: String,
    /// Live or shadow.
    #[arg(long, value_enum, default_value = "live")]
    pub mode: ModeArg,
    /// Output [default: the package path with extension .manifest].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// Arguments of `edgefleet verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The signed manifest.
    pub manifest: PathBuf,
    /// The root of trust (signed root file).
    #[arg(long)]
    pub root: PathBuf,
    /// Check this package against the manifest's length and SHA-256.
    #[arg(long)]
    pub package: Option<PathBuf>,
    /// Verify as a device with this hardware id [default: the manifest's first].
    #[arg(long)]
    pub hardware: Option<String>,
    /// Verify as a device with this release counter installed.
    #[arg(long, default_value_t = 0)]
    pub installed_counter: u64,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `edgefleet sign`.
pub fn sign(a: SignArgs) -> Result<()> {
    let pkg = std::fs::read(&a.package).with_context(|| format!("reading {}", a.package.display()))?;
    let aligned = edgefleet_runtime::AlignedBytes::from_slice(&pkg);
    let model = edgefleet_runtime::Model::load(&aligned)
        .map_err(|e| anyhow::anyhow!("{}: invalid package: {e}", a.package.display()))?;
    let profile_sha = model.section(SectionKind::ReferenceProfile as u16).map(sha256).unwrap_or([0; 32]);
    let keys = a.keys.iter().map(|k| read_secret(k)).collect::<Result<Vec<_>>>()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let stem = a.package.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let m = Manifest {
        model_id: a.model_id.unwrap_or(stem),
        version: a.version.unwrap_or_else(|| a.counter.to_string()),
        release_counter: a.counter,
        package_len: pkg.len() as u64,
        package_sha256: sha256(&pkg),
        hardware_ids: a.hardware,
        expires: now + a.expires_days * 86_400,
        rollout_id: a.rollout,
        reference_profile_sha256: profile_sha,
        mode: if a.mode == ModeArg::Shadow { Mode::Shadow } else { Mode::Live },
    };
    m.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    let refs: Vec<_> = keys.iter().collect();
    let signed = Signed::sign(Kind::Manifest, &m, &refs)?;
    let out = a.output.unwrap_or_else(|| a.package.with_extension("manifest"));
    super::write_atomic(&out, &signed.to_bytes()?)?;
    outln!(
        "signed {} {} (counter {}, {} bytes, sha256 {}) with {} key(s) -> {}",
        m.model_id,
        m.version,
        m.release_counter,
        m.package_len,
        &hex32(&m.package_sha256)[..16],
        keys.len(),
        out.display()
    );
    Ok(())
}

/// Runs `edgefleet verify`; fails with the reason a device would give.
pub fn verify(a: VerifyArgs) -> Result<()> {
    let root = std::fs::read(&a.root).with_context(|| format!("reading {}", a.root.display()))?;
    let trust =
        TrustStore::from_pinned(Signed::from_bytes(&root).map_err(|e| anyhow::anyhow!("{}: {e}", a.root.display()))?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", a.root.display()))?;
    let bytes = std::fs::read(&a.manifest).with_context(|| format!("reading {}", a.manifest.display()))?;
    let signed = Signed::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", a.manifest.display()))?;
    let peek: Manifest = signed.decode(Kind::Manifest).map_err(|e| anyhow::anyhow!("{}: {e}", a.manifest.display()))?;
    let hardware = a.hardware.clone().or_else(|| peek.hardware_ids.first().cloned()).unwrap_or_default();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let device = DeviceContext { hardware_id: &hardware, installed_counter: a.installed_counter, now };
    let verdict = trust.verify_manifest(&signed, &device);
    let package = match &a.package {
        Some(p) => {
            let pkg = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let mut v = edgefleet_protocol::PackageVerifier::new(&peek);
            Some(v.update(&pkg).and_then(|_| v.finish()))
        }
        None => None,
    };
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "model_id": peek.model_id, "version": peek.version, "release_counter": peek.release_counter,
                "package_len": peek.package_len, "package_sha256": hex32(&peek.package_sha256),
                "hardware_ids": peek.hardware_ids, "expires": peek.expires, "rollout_id": peek.rollout_id,
                "mode": format!("{:?}", peek.mode).to_lowercase(),
                "signatures": signed.signatures.iter().map(|s| s.key_id.to_hex()).collect::<Vec<_>>(),
                "verified": verdict.is_ok(), "reason": verdict.as_ref().err().map(ToString::to_string),
                "package_ok": package.map(|p| p.is_ok()),
            }))?
        );
    } else {
        outln!(
            "{} {} counter {} for {:?}, {} bytes",
            peek.model_id,
            peek.version,
            peek.release_counter,
            peek.hardware_ids,
            peek.package_len
        );
        match &verdict {
            Ok(_) => {
                outln!("manifest: valid (root v{}, {} signature(s))", trust.root().version, signed.signatures.len())
            }
            Err(e) => outln!("manifest: REJECTED: {e}"),
        }
        if let Some(p) = &package {
            match p {
                Ok(()) => outln!("package: matches length and SHA-256"),
                Err(e) => outln!("package: REJECTED: {e}"),
            }
        }
    }
    if let Err(e) = verdict {
        bail!("manifest rejected: {e}");
    }
    if let Some(Err(e)) = package {
        bail!("package rejected: {e}");
    }
    Ok(())
}

//! The model registry's rules: what makes an uploaded package acceptable,
//! and the manifests the server signs with its online release key (or takes,
//! signed offline, exactly as they are: the root key never has to live on
//! the server, and neither does a release key if every version is signed
//! offline).

use edgefleet_protocol::{
    DeviceContext, Kind, Manifest, Mode, SecretKey, Signed, TrustStore, hex32, profile::ReferenceProfile, sha256,
};
use edgefleet_runtime::OwnedModel;
use edgefleet_runtime::format::SectionKind;
use thiserror::Error;

/// Why a package or manifest was refused (all map to 4xx).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RegistryError {
    /// Not a valid `.efm` package.
    #[error("not a valid model package: {0}")]
    BadPackage(String),
    /// The offline-signed manifest does not fit.
    #[error("offline-signed manifest refused: {0}")]
    BadManifest(String),
    /// No online key, so nothing can be signed here.
    #[error(
        "this server has no online release key (--release-key): upload versions with a manifest signed offline, \
         and roll back by rolling out an older offline-signed version"
    )]
    NoSigningKey,
}

/// What the registry keeps about an uploaded package.
#[derive(Clone, Debug, PartialEq)]
pub struct PackageInfo {
    /// SHA-256.
    pub sha256: [u8; 32],
    /// Length, bytes.
    pub len: u64,
    /// Arena the model needs, bytes.
    pub arena_bytes: u64,
    /// Model card (JSON text; `{}` if the package has none).
    pub model_card: String,
    /// SHA-256 of the reference profile section (zeros if none).
    pub profile_sha256: [u8; 32],
}

/// Validates a package the way a device's runtime will (every offset,
/// shape and bound) and reads what the registry shows.
///
/// # Errors
/// [`RegistryError::BadPackage`] with the loader's reason.
pub fn inspect(bytes: &[u8]) -> Result<PackageInfo, RegistryError> {
    if bytes.is_empty() {
        return Err(RegistryError::BadPackage("the upload is empty".into()));
    }
    let owned = OwnedModel::load(bytes).map_err(|e| RegistryError::BadPackage(e.to_string()))?;
    let model = owned.model();
    let model_card = match model.section(SectionKind::ModelCard as u16) {
        None => "{}".to_string(),
        Some(b) => {
            let text =
                std::str::from_utf8(b).map_err(|_| RegistryError::BadPackage("model card is not UTF-8".into()))?;
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| RegistryError::BadPackage(format!("model card is not JSON: {e}")))?;
            text.to_string()
        }
    };
    let profile = model.section(SectionKind::ReferenceProfile as u16);
    if let Some(p) = profile {
        ReferenceProfile::from_bytes(p)
            .map_err(|e| RegistryError::BadPackage(format!("reference profile does not parse: {e}")))?;
    }
    Ok(PackageInfo {
        sha256: sha256(bytes),
        len: bytes.len() as u64,
        arena_bytes: model.arena_size() as u64,
        model_card,
        profile_sha256: profile.map(sha256).unwrap_or([0; 32]),
    })
}

/// The reference profile of a package, if it has one.
pub fn profile(bytes: &[u8]) -> Option<ReferenceProfile> {
    let owned = OwnedModel::load(bytes).ok()?;
    ReferenceProfile::from_bytes(owned.model().section(SectionKind::ReferenceProfile as u16)?).ok()
}

/// Signs manifests with the online key and checks offline-signed ones
/// against the root of trust.
#[derive(Default)]
pub struct Signer {
    key: Option<SecretKey>,
    trust: Option<TrustStore>,
}

/// What a manifest is for.
#[derive(Clone, Debug)]
pub struct Release<'a> {
    /// Model id.
    pub model_id: &'a str,
    /// Version.
    pub version: &'a str,
    /// The package.
    pub package: &'a PackageInfo,
    /// Strictly increasing release counter.
    pub counter: u64,
    /// Hardware ids allowed.
    pub hardware_ids: Vec<String>,
    /// Rollout id (empty: none).
    pub rollout_id: &'a str,
    /// Live or shadow.
    pub mode: Mode,
    /// Unix seconds it expires.
    pub expires: u64,
}

impl Signer {
    /// A signer with an optional online key and root.
    ///
    /// # Errors
    /// The key is not one the root lets sign manifests.
    pub fn new(key: Option<SecretKey>, trust: Option<TrustStore>) -> Result<Signer, String> {
        if let (Some(k), Some(t)) = (&key, &trust) {
            let id = k.public().id();
            if !t.root().targets.keys.contains(&id) || t.root().revoked.contains(&id) {
                return Err(format!(
                    "the release key {} is not a manifest signer of root v{} (devices would refuse everything it signs)",
                    id.to_hex(),
                    t.root().version
                ));
            }
        }
        Ok(Signer { key, trust })
    }

    /// Whether this server can sign.
    pub fn can_sign(&self) -> bool {
        self.key.is_some()
    }

    /// The root document (to publish to devices).
    pub fn root(&self) -> Option<&Signed> {
        self.trust.as_ref().map(TrustStore::signed)
    }

    /// Signs a release.
    ///
    /// # Errors
    /// No online key.
    pub fn sign(&self, r: &Release<'_>) -> Result<Vec<u8>, RegistryError> {
        let key = self.key.as_ref().ok_or(RegistryError::NoSigningKey)?;
        let m = Manifest {
            model_id: r.model_id.into(),
            version: r.version.into(),
            release_counter: r.counter,
            package_len: r.package.len,
            package_sha256: r.package.sha256,
            hardware_ids: r.hardware_ids.clone(),
            expires: r.expires,
            rollout_id: r.rollout_id.into(),
            reference_profile_sha256: r.package.profile_sha256,
            mode: r.mode,
        };
        m.check().map_err(|e| RegistryError::BadManifest(e.to_string()))?;
        let signed = Signed::sign(Kind::Manifest, &m, &[key]).map_err(|e| RegistryError::BadManifest(e.to_string()))?;
        signed.to_bytes().map_err(|e| RegistryError::BadManifest(e.to_string()))
    }

    /// Checks a manifest signed offline for `package`: it must verify
    /// against the root as a device would and describe exactly this package.
    ///
    /// # Errors
    /// [`RegistryError::BadManifest`] saying why.
    pub fn check_offline(&self, bytes: &[u8], package: &PackageInfo, now: u64) -> Result<Manifest, RegistryError> {
        let trust = self.trust.as_ref().ok_or_else(|| {
            RegistryError::BadManifest(
                "the server has no root of trust (--root) to check offline signatures with".into(),
            )
        })?;
        let signed = Signed::from_bytes(bytes).map_err(|e| RegistryError::BadManifest(e.to_string()))?;
        let peek: Manifest = signed.decode(Kind::Manifest).map_err(|e| RegistryError::BadManifest(e.to_string()))?;
        let hw = peek.hardware_ids.first().cloned().unwrap_or_default();
        let m = trust
            .verify_manifest(&signed, &DeviceContext { hardware_id: &hw, installed_counter: 0, now })
            .map_err(|e| RegistryError::BadManifest(e.to_string()))?;
        if m.package_sha256 != package.sha256 || m.package_len != package.len {
            return Err(RegistryError::BadManifest(format!(
                "it describes package {} ({} bytes), the upload is {} ({} bytes)",
                hex32(&m.package_sha256),
                m.package_len,
                hex32(&package.sha256),
                package.len
            )));
        }
        Ok(m)
    }
}

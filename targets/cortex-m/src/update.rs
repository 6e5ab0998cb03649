//! [`verify_update`]: the checks a package must pass before the firmware runs
//! it, with `edgefleet-protocol`'s `no_std` verification path: the pinned
//! root of trust, the signed manifest against it (signatures, expiry,
//! rollback, hardware), then the package's length and SHA-256 against the
//! manifest. It allocates (postcard decodes into `Vec`s and `String`s), so
//! the board needs a global allocator; nothing stays allocated once the
//! returned value is dropped.

use core::fmt;

use edgefleet_protocol::{DeviceContext, Manifest, PackageVerifier, Signed, TrustStore, VerifyError};

/// The checks, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// The pinned root of trust: well-formed, consistent, signed by its own root keys.
    Root,
    /// The manifest against the root and the device.
    Manifest,
    /// The package against the manifest: exact length and SHA-256.
    Package,
}

impl Check {
    /// Every check, in order.
    pub const ALL: [Check; 3] = [Check::Root, Check::Manifest, Check::Package];

    /// `root`, `manifest` or `package`.
    pub fn name(self) -> &'static str {
        match self {
            Check::Root => "root",
            Check::Manifest => "manifest",
            Check::Package => "package",
        }
    }
}

/// Why an update is refused: the first check that failed and its reason.
/// Checks after it did not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The check that failed.
    pub check: Check,
    /// Its reason.
    pub error: VerifyError,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rejected: {}", self.check.name(), self.error)
    }
}

impl core::error::Error for Rejected {}

/// The name of `e`'s variant (`UnknownKey`, `HashMismatch`...): a stable
/// token for logs and tests, without pulling `Debug` formatting (and its
/// string escaping tables) into flash.
pub fn error_name(e: &VerifyError) -> &'static str {
    match e {
        VerifyError::Encoding => "Encoding",
        VerifyError::WrongKind => "WrongKind",
        VerifyError::BadSignature { .. } => "BadSignature",
        VerifyError::UnknownKey { .. } => "UnknownKey",
        VerifyError::RevokedKey { .. } => "RevokedKey",
        VerifyError::BelowThreshold { .. } => "BelowThreshold",
        VerifyError::RootVersion { .. } => "RootVersion",
        VerifyError::RootExpired { .. } => "RootExpired",
        VerifyError::Expired { .. } => "Expired",
        VerifyError::Rollback { .. } => "Rollback",
        VerifyError::HardwareMismatch => "HardwareMismatch",
        VerifyError::TooLong { .. } => "TooLong",
        VerifyError::TooShort { .. } => "TooShort",
        VerifyError::HashMismatch => "HashMismatch",
        VerifyError::Invalid(_) => "Invalid",
        _ => "VerifyError",
    }
}

/// An update that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Version of the pinned root it was checked against.
    pub root_version: u32,
    /// The verified manifest.
    pub manifest: Manifest,
}

/// Verifies `package` against the signed `manifest` and the pinned `root`
/// (both as `edgefleet keys root` and `edgefleet sign` write them) for
/// `device`.
///
/// # Errors
/// The first check that fails, with the protocol's reason.
pub fn verify_update(
    root: &[u8],
    manifest: &[u8],
    package: &[u8],
    device: &DeviceContext<'_>,
) -> Result<Verified, Rejected> {
    let rejected = |check| move |error| Rejected { check, error };
    let trust = Signed::from_bytes(root).and_then(TrustStore::from_pinned).map_err(rejected(Check::Root))?;
    let signed = Signed::from_bytes(manifest).map_err(rejected(Check::Manifest))?;
    let manifest = trust.verify_manifest(&signed, device).map_err(rejected(Check::Manifest))?;
    let mut check = PackageVerifier::new(&manifest);
    check.update(package).and_then(|()| check.finish()).map_err(rejected(Check::Package))?;
    Ok(Verified { root_version: trust.root().version, manifest })
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_protocol::{Kind, Mode, RoleKeys, Root, SecretKey, sha256};

    const PACKAGE: &[u8] = b"the package's bytes";
    const NOW: u64 = 1_800_000_000;
    const DEVICE: DeviceContext<'static> = DeviceContext { hardware_id: "mps2-an386", installed_counter: 0, now: NOW };

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_bytes(&[seed; 32])
    }

    /// Root (key 1) trusting release key 2.
    fn root() -> Vec<u8> {
        let root = Root {
            version: 1,
            expires: NOW + 1000,
            keys: vec![key(1).public(), key(2).public()],
            root: RoleKeys { keys: vec![key(1).public().id()], threshold: 1 },
            targets: RoleKeys { keys: vec![key(2).public().id()], threshold: 1 },
            revoked: vec![],
        };
        Signed::sign(Kind::Root, &root, &[&key(1)]).and_then(|s| s.to_bytes()).expect("encodes")
    }

    fn manifest_for(package: &[u8]) -> Manifest {
        Manifest {
            model_id: "kws".into(),
            version: "1.0".into(),
            release_counter: 1,
            package_len: package.len() as u64,
            package_sha256: sha256(package),
            hardware_ids: vec!["mps2-an386".into()],
            expires: NOW + 100,
            rollout_id: String::new(),
            reference_profile_sha256: [0; 32],
            mode: Mode::Live,
        }
    }

    fn sign(m: &Manifest, with: &SecretKey) -> Vec<u8> {
        Signed::sign(Kind::Manifest, m, &[with]).and_then(|s| s.to_bytes()).expect("encodes")
    }

    fn rejection(manifest: &[u8], package: &[u8], device: &DeviceContext<'_>) -> (Check, VerifyError) {
        let r = verify_update(&root(), manifest, package, device).expect_err("must be rejected");
        (r.check, r.error)
    }

    #[test]
    fn a_signed_update_for_this_board_verifies() {
        let m = manifest_for(PACKAGE);
        let v = verify_update(&root(), &sign(&m, &key(2)), PACKAGE, &DEVICE).expect("verifies");
        assert_eq!(v, Verified { root_version: 1, manifest: m });
    }

    #[test]
    fn each_attack_is_rejected_at_its_check() {
        let m = manifest_for(PACKAGE);
        let good = sign(&m, &key(2));
        let release = key(2).public().id();

        // One byte of the signed body changed: the signature no longer verifies.
        let mut tampered = good.clone();
        let at = tampered.windows(3).position(|w| w == b"kws").expect("the model id is in the body");
        tampered[at] ^= 1;
        assert_eq!(
            rejection(&tampered, PACKAGE, &DEVICE),
            (Check::Manifest, VerifyError::BadSignature { key_id: release })
        );

        let rogue = key(3);
        let e = (Check::Manifest, VerifyError::UnknownKey { key_id: rogue.public().id() });
        assert_eq!(rejection(&sign(&m, &rogue), PACKAGE, &DEVICE), e);
        // The root key may sign roots, not manifests.
        let e = (Check::Manifest, VerifyError::UnknownKey { key_id: key(1).public().id() });
        assert_eq!(rejection(&sign(&m, &key(1)), PACKAGE, &DEVICE), e);

        let other = DeviceContext { hardware_id: "another-board", ..DEVICE };
        assert_eq!(rejection(&good, PACKAGE, &other), (Check::Manifest, VerifyError::HardwareMismatch));
        let later = DeviceContext { now: NOW + 100, ..DEVICE };
        let e = (Check::Manifest, VerifyError::Expired { expires: NOW + 100, now: NOW + 100 });
        assert_eq!(rejection(&good, PACKAGE, &later), e);
        let installed = DeviceContext { installed_counter: 1, ..DEVICE };
        let e = (Check::Manifest, VerifyError::Rollback { offered: 1, installed: 1 });
        assert_eq!(rejection(&good, PACKAGE, &installed), e);
        assert_eq!(rejection(&good[..good.len() - 1], PACKAGE, &DEVICE), (Check::Manifest, VerifyError::Encoding));

        // The package: same length, other bytes; shorter; longer.
        let mut other = PACKAGE.to_vec();
        other[0] ^= 1;
        assert_eq!(rejection(&good, &other, &DEVICE), (Check::Package, VerifyError::HashMismatch));
        let e = (Check::Package, VerifyError::TooShort { declared: 19, received: 18 });
        assert_eq!(rejection(&good, &PACKAGE[1..], &DEVICE), e);
        let e = (Check::Package, VerifyError::TooLong { declared: 19 });
        assert_eq!(rejection(&good, &[PACKAGE, b"!"].concat(), &DEVICE), e);
    }

    #[test]
    fn error_names_are_the_variant_names() {
        let k = key(1).public().id();
        let errors = [
            VerifyError::Encoding,
            VerifyError::WrongKind,
            VerifyError::BadSignature { key_id: k },
            VerifyError::UnknownKey { key_id: k },
            VerifyError::RevokedKey { key_id: k },
            VerifyError::BelowThreshold { valid: 0, needed: 1 },
            VerifyError::RootVersion { current: 1, offered: 1 },
            VerifyError::RootExpired { expires: 0 },
            VerifyError::Expired { expires: 0, now: 0 },
            VerifyError::Rollback { offered: 0, installed: 0 },
            VerifyError::HardwareMismatch,
            VerifyError::TooLong { declared: 0 },
            VerifyError::TooShort { declared: 0, received: 0 },
            VerifyError::HashMismatch,
            VerifyError::Invalid("why"),
        ];
        for e in errors {
            let debug = format!("{e:?}");
            let end = debug.find([' ', '(']).unwrap_or(debug.len());
            assert_eq!(error_name(&e), &debug[..end]);
        }
    }

    #[test]
    fn a_bad_root_rejects_everything() {
        let m = sign(&manifest_for(PACKAGE), &key(2));
        let r = verify_update(&m, &m, PACKAGE, &DEVICE).expect_err("a manifest is no root");
        assert_eq!((r.check, r.error), (Check::Root, VerifyError::WrongKind));
        let r = verify_update(b"", &m, PACKAGE, &DEVICE).expect_err("empty");
        assert_eq!((r.check, r.error), (Check::Root, VerifyError::Encoding));
        assert_eq!(r.to_string(), "root rejected: malformed signed metadata");
    }
}

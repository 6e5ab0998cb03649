//! Everything that crosses the wire between edgefleet devices and the fleet
//! server, in one crate both import: a renamed field breaks the build, not
//! the fleet. `no_std` (with `alloc`), so a microcontroller can verify
//! updates with the same code.
//!
//! - [`topics`]: the MQTT topic layout.
//! - Update security, modelled on TUF/Uptane: [`Root`] metadata with
//!   thresholds, rotation and revocation ([`TrustStore`]); the signed update
//!   [`Manifest`]; [`PackageVerifier`] for streamed packages.
//! - [`ChunkRequest`]/[`ChunkResponse`]: resumable downloads over MQTT.
//! - [`Uplink`]: device hello, telemetry and events, signed by the device.
//! - [`profile`] and [`drift`]: the package's reference data profile and
//!   the mergeable sketches devices report against it.
//!
//! ```
//! use edgefleet_protocol::{DeviceContext, Kind, Manifest, Mode, RoleKeys, Root, SecretKey, Signed, TrustStore};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let root_key = SecretKey::from_bytes(&[1; 32]);
//! let release_key = SecretKey::from_bytes(&[2; 32]);
//! let root = Root {
//!     version: 1,
//!     expires: 2_000_000_000,
//!     keys: vec![root_key.public(), release_key.public()],
//!     root: RoleKeys { keys: vec![root_key.public().id()], threshold: 1 },
//!     targets: RoleKeys { keys: vec![release_key.public().id()], threshold: 1 },
//!     revoked: vec![],
//! };
//! let trust = TrustStore::from_pinned(Signed::sign(Kind::Root, &root, &[&root_key])?)?;
//! let package = b"...the .efm bytes...";
//! let manifest = Manifest {
//!     model_id: "kws".into(), version: "2.0".into(), release_counter: 2,
//!     package_len: package.len() as u64, package_sha256: edgefleet_protocol::sha256(package),
//!     hardware_ids: vec!["rpi4".into()], expires: 1_900_000_000, rollout_id: String::new(),
//!     reference_profile_sha256: [0; 32], mode: Mode::Live,
//! };
//! let signed = Signed::sign(Kind::Manifest, &manifest, &[&release_key])?;
//! let device = DeviceContext { hardware_id: "rpi4", installed_counter: 1, now: 1_800_000_000 };
//! assert_eq!(trust.verify_manifest(&signed, &device)?, manifest);
//! # Ok(()) }
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod chunks;
pub mod drift;
mod error;
#[cfg(feature = "std")]
pub mod keyfile;
mod keys;
mod manifest;
pub mod profile;
mod root;
pub mod seal;
mod signed;
pub mod topics;
mod uplink;

pub use chunks::{ChunkRequest, ChunkResponse, ChunkStatus};
pub use error::VerifyError;
#[cfg(feature = "std")]
pub use keys::hex32;
pub use keys::{KeyId, KeySignature, PublicKey, SecretKey, SignatureBytes, parse_hex32};
pub use manifest::{MAX_PACKAGE_LEN, Manifest, Mode, PackageVerifier, sha256};
pub use root::{DeviceContext, RoleKeys, Root, TrustStore};
pub use signed::{Kind, Signed, Tally};
pub use uplink::{
    AccuracyStats, DeviceInfo, Event, Health, LatencyStats, ModelRef, Payload, Platform, ShadowStats, Telemetry,
    Uplink, UplinkAck, latency_bucket, latency_bucket_upper,
};

//! Keyword-spotting firmware logic for Cortex-M, independent of the board:
//! [`verify_update`] checks the package against its signed manifest and the
//! pinned root of trust; a [`Spotter`] reads feature frames from a
//! [`FeatureSensor`], waits through an `embedded_hal::delay::DelayNs` timer
//! when none is ready, runs the package with the edgefleet runtime in a
//! static arena, and reports the scores in `heapless` buffers. `main.rs`
//! wires it to QEMU's MPS2-AN386 board; the unit tests run it on the host.
//!
//! ```no_run
//! use edgefleet_firmware::{ReplaySensor, Spotter, kws};
//! use edgefleet_runtime::Model;
//! # struct NoDelay;
//! # impl embedded_hal::delay::DelayNs for NoDelay { fn delay_ns(&mut self, _: u32) {} }
//! # fn main() -> Result<(), edgefleet_firmware::SpotError<edgefleet_firmware::sensor::ReplayError>> {
//! let model = Model::load(kws::PACKAGE)?;
//! let mut arena = [0u8; kws::ARENA_SIZE];
//! let mut spotter = Spotter::new(&model, &mut arena)?;
//! let mut sensor = ReplaySensor::new(&kws::REFERENCE_INPUT);
//! let detection = spotter.next(&mut sensor, &mut NoDelay)?;
//! assert_eq!(detection.scores.as_slice(), &kws::EXPECTED_OUTPUT[..]);
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

pub mod sensor;
pub mod spotter;
pub mod update;

pub use sensor::{FeatureSensor, ReplaySensor};
pub use spotter::{Detection, MAX_CLASSES, SpotError, Spotter};
pub use update::{Check, Rejected, Verified, error_name, verify_update};

/// The package and reference data embedded at build time (see `build.rs`).
pub mod kws {
    include!(concat!(env!("OUT_DIR"), "/model.rs"));

    /// The package, in flash, 16-byte aligned.
    pub static PACKAGE: &[u8] = edgefleet_runtime::include_package!(concat!(env!("OUT_DIR"), "/model.efm"));

    /// The pinned root of trust (signed root metadata), as provisioned.
    pub static ROOT_OF_TRUST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/root.signed"));

    /// The package's signed update manifest.
    pub static MANIFEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kws.manifest"));
}

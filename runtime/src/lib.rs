//! Loads `.efm` model packages from untrusted bytes and runs them with int8
//! kernels in a caller-provided arena. `no_std`, no allocator: the same code
//! runs on a Cortex-M0+ and on a phone.
//!
//! ```no_run
//! use edgefleet_runtime::{AlignedBytes, Interpreter, Model};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bytes = AlignedBytes::from(std::fs::read("kws.efm")?);
//! let model = Model::load(&bytes)?;             // validates everything once
//! let mut arena = vec![0u8; model.arena_size()]; // exact size of the memory plan
//! let mut interp = Interpreter::new(&model, &mut arena)?;
//! interp.set_input_f32(0, &[0.0; 490])?;         // quantized with the input's scale
//! interp.invoke()?;
//! let scores = interp.output(0)?;                // int8, see `Model::output(0)` for scale
//! # let _ = scores; Ok(()) }
//! ```
//!
//! On a microcontroller, embed the package with [`include_package!`] (which
//! aligns it) and give the interpreter a `static mut` or stack arena.
//!
//! The package layout is in [`format`] and `docs/package-format.md`. The
//! kernels are `edgefleet-kernels`' fast paths (AVX2 / AVX-512 VNNI on x86-64
//! hosts, probed once; set `EDGEFLEET_KERNELS=reference` to force the
//! portable ones), bit-identical to its reference kernels. Hosts should load
//! through [`OwnedModel`] and call [`Interpreter::with_packed`], which gives
//! the GEMM kernels their pre-packed weights.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod error;
pub mod format;
mod interp;
pub mod model;
pub mod op;
#[cfg(feature = "alloc")]
pub mod packed;
pub mod parallel;
#[cfg(feature = "alloc")]
pub mod writer;

pub use edgefleet_kernels::fast::Isa;
pub use error::{LoadError, RunError};
pub use format::{DType, OpCode, SectionKind, Storage};
pub use interp::Interpreter;
pub use model::{IoInfo, Model, Quantization, Shape, TensorInfo};
pub use op::Op;
#[cfg(feature = "alloc")]
pub use packed::PackedWeights;
pub use parallel::Parallel;
#[cfg(feature = "threads")]
pub use parallel::ThreadPool;

/// Embeds a package in the binary, 16-byte aligned, as a `&'static [u8]`.
///
/// ```ignore
/// static KWS: &[u8] = edgefleet_runtime::include_package!("../models/kws.efm");
/// ```
#[macro_export]
macro_rules! include_package {
    ($path:expr) => {{
        #[repr(C, align(16))]
        struct Aligned<T: ?Sized>(T);
        static ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!($path));
        &ALIGNED.0
    }};
}

/// A package validated once and owned: for hosts (agents, apps, FFI) that
/// keep a model loaded and run it many times. [`OwnedModel::model`] returns
/// the validated view again without re-validating, since nothing can change
/// the bytes it owns.
#[cfg(feature = "alloc")]
#[derive(Clone)]
pub struct OwnedModel {
    bytes: AlignedBytes,
    layout: model::Layout,
    packed: PackedWeights,
}

#[cfg(feature = "alloc")]
impl OwnedModel {
    /// Copies `bytes` into an aligned buffer, validates them and packs the
    /// weights for the fast kernels ([`PackedWeights`]).
    ///
    /// # Errors
    /// As [`Model::load`].
    pub fn load(bytes: &[u8]) -> Result<OwnedModel, LoadError> {
        let bytes = AlignedBytes::from_slice(bytes);
        let model = Model::load(&bytes)?;
        let layout = model.layout();
        let packed = PackedWeights::for_model(&model);
        Ok(OwnedModel { bytes, layout, packed })
    }

    /// The weights packed for the fast kernels, for
    /// [`Interpreter::with_packed`]; an interpreter of this model takes them
    /// with [`Interpreter::with_owned`], which skips checking that the decoded
    /// records are the model's.
    ///
    /// ```no_run
    /// # use edgefleet_runtime::{Interpreter, OwnedModel};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let owned = OwnedModel::load(&std::fs::read("kws.efm")?)?;
    /// let model = owned.model();
    /// let mut arena = vec![0u8; model.arena_size()];
    /// let mut it = Interpreter::new(&model, &mut arena)?.with_owned(&owned);
    /// it.invoke()?;
    /// # Ok(()) }
    /// ```
    pub fn packed(&self) -> &PackedWeights {
        &self.packed
    }

    /// The validated model.
    pub fn model(&self) -> Model<'_> {
        Model::from_layout(&self.bytes, &self.layout)
    }

    /// The package bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(feature = "alloc")]
impl core::fmt::Debug for OwnedModel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "OwnedModel({} bytes, arena {})", self.bytes.len(), self.model().arena_size())
    }
}

/// An owned, 16-byte-aligned copy of a package, for hosts that read packages
/// from files or the network.
#[cfg(feature = "alloc")]
#[derive(Clone)]
pub struct AlignedBytes {
    words: alloc::vec::Vec<u128>,
    len: usize,
}

#[cfg(feature = "alloc")]
impl AlignedBytes {
    /// Copies `bytes` into an aligned buffer.
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut words = alloc::vec![0u128; bytes.len().div_ceil(16)];
        bytemuck::cast_slice_mut::<u128, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        AlignedBytes { words, len: bytes.len() }
    }
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &bytemuck::cast_slice::<u128, u8>(&self.words)[..self.len]
    }
}

#[cfg(feature = "alloc")]
impl From<alloc::vec::Vec<u8>> for AlignedBytes {
    fn from(v: alloc::vec::Vec<u8>) -> Self {
        Self::from_slice(&v)
    }
}

#[cfg(feature = "alloc")]
impl core::ops::Deref for AlignedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

#[cfg(feature = "alloc")]
impl core::fmt::Debug for AlignedBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "AlignedBytes({} bytes)", self.len)
    }
}

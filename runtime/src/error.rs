//! Errors of loading and running a package: small `Copy` enums that say what
//! is wrong and where (section kind, tensor or op index), usable without an
//! allocator and printable with `Display`.

use core::fmt;

use edgefleet_kernels::KernelError;

/// Why a package was rejected by [`crate::Model::load`]. Nothing is run before
/// the whole package has been validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LoadError {
    /// Shorter than the fixed header.
    Truncated {
        /// Bytes given.
        len: usize,
    },
    /// Not an `.efm` package.
    BadMagic,
    /// A major version this runtime cannot read.
    UnsupportedVersion {
        /// Major version in the package.
        major: u16,
        /// Minor version in the package.
        minor: u16,
    },
    /// The declared file size differs from the bytes given (truncated or padded).
    SizeMismatch {
        /// Size in the header.
        declared: u32,
        /// Bytes given.
        actual: usize,
    },
    /// The CRC-32 does not match: the bytes were corrupted.
    ChecksumMismatch {
        /// Stored CRC.
        stored: u32,
        /// CRC of the bytes given.
        computed: u32,
    },
    /// The package buffer is not 4-byte aligned (biases and requantization
    /// tables are read in place as `i32`). Use [`crate::AlignedBytes`] or
    /// [`crate::include_package!`].
    Misaligned,
    /// A header field is invalid (header size, flags or reserved bytes).
    BadHeader {
        /// What is wrong.
        problem: &'static str,
    },
    /// A section table entry is invalid.
    BadSection {
        /// Raw section kind.
        kind: u16,
        /// What is wrong.
        problem: &'static str,
    },
    /// A required section is missing.
    MissingSection {
        /// Raw section kind.
        kind: u16,
    },
    /// The package needs a section kind this runtime does not know.
    UnknownRequiredSection {
        /// Raw section kind.
        kind: u16,
    },
    /// A tensor record is invalid.
    BadTensor {
        /// Tensor index.
        index: u32,
        /// What is wrong.
        problem: &'static str,
    },
    /// An op record is invalid.
    BadOp {
        /// Op index.
        index: u32,
        /// What is wrong.
        problem: &'static str,
    },
    /// An opcode this runtime does not know.
    UnsupportedOp {
        /// Op index.
        index: u32,
        /// Raw opcode.
        opcode: u16,
    },
    /// The input/output table or labels are invalid.
    BadIo {
        /// What is wrong.
        problem: &'static str,
    },
    /// The memory plan is wrong: op `op` reads tensor `tensor` after another
    /// tensor overwrote part of its arena bytes, or before anything wrote it.
    BadPlan {
        /// Op index (the op count means "after the last op", for outputs).
        op: u32,
        /// Tensor index.
        tensor: u32,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Truncated { len } => {
                write!(f, "package truncated: {len} bytes is shorter than the 64-byte header")
            }
            LoadError::BadMagic => f.write_str("not an edgefleet model package (bad magic)"),
            LoadError::UnsupportedVersion { major, minor } => write!(
                f,
                "package format {major}.{minor} is not supported by this runtime (reads {}.x)",
                crate::format::VERSION_MAJOR
            ),
            LoadError::SizeMismatch { declared, actual } => {
                write!(f, "package size mismatch: header says {declared} bytes, got {actual} (truncated or padded)")
            }
            LoadError::ChecksumMismatch { stored, computed } => {
                write!(f, "package corrupted: CRC-32 is {computed:#010x}, header says {stored:#010x}")
            }
            LoadError::Misaligned => f.write_str("package buffer must be 4-byte aligned to be read in place"),
            LoadError::BadHeader { problem } => write!(f, "bad package header: {problem}"),
            LoadError::BadSection { kind, problem } => write!(f, "bad section {kind}: {problem}"),
            LoadError::MissingSection { kind } => write!(f, "required section {kind} is missing"),
            LoadError::UnknownRequiredSection { kind } => {
                write!(f, "package needs section kind {kind}, unknown to this runtime (upgrade the runtime)")
            }
            LoadError::BadTensor { index, problem } => write!(f, "tensor {index}: {problem}"),
            LoadError::BadOp { index, problem } => write!(f, "op {index}: {problem}"),
            LoadError::UnsupportedOp { index, opcode } => {
                write!(f, "op {index}: opcode {opcode} is unknown to this runtime (upgrade the runtime)")
            }
            LoadError::BadIo { problem } => write!(f, "bad input/output table: {problem}"),
            LoadError::BadPlan { op, tensor } => {
                write!(f, "bad memory plan: op {op} reads tensor {tensor} whose arena bytes are not its own")
            }
        }
    }
}

impl core::error::Error for LoadError {}

/// Why an inference call failed. On a validated model only caller mistakes
/// (wrong index, wrong length, too small an arena) can cause these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RunError {
    /// The arena is smaller than the model's plan.
    ArenaTooSmall {
        /// Bytes the plan needs.
        needed: usize,
        /// Bytes given.
        given: usize,
    },
    /// No input or output with this index.
    NoSuchTensor {
        /// The index asked for.
        index: usize,
    },
    /// A buffer's length differs from the tensor's element count.
    LengthMismatch {
        /// Elements the tensor has.
        expected: usize,
        /// Elements given.
        given: usize,
    },
    /// A kernel refused its arguments (a runtime bug if it ever happens on a loaded model).
    Kernel {
        /// Op index.
        op: u32,
        /// The kernel's error.
        error: KernelError,
    },
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::ArenaTooSmall { needed, given } => {
                write!(f, "arena too small: the model needs {needed} bytes, got {given}")
            }
            RunError::NoSuchTensor { index } => write!(f, "no input/output with index {index}"),
            RunError::LengthMismatch { expected, given } => {
                write!(f, "buffer has {given} elements, the tensor has {expected}")
            }
            RunError::Kernel { op, error } => write!(f, "op {op}: {error}"),
        }
    }
}

impl core::error::Error for RunError {}

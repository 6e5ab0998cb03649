//! AArch64 fast paths: Advanced SIMD, and `sdot` where the CPU has the dot
//! product extension.
//!
//! Not written yet: every entry point runs the portable equivalent, so
//! `Isa::Neon` / `Isa::NeonDot` are correct (and proven so by the battery)
//! but not faster than the reference GEMM.

use super::{DwGeom, Epilogue, Isa, PackedFilter};

/// Every AArch64 CPU has Advanced SIMD.
pub(super) fn has_neon() -> bool {
    true
}

/// The dot product extension (`sdot`/`udot`).
pub(super) fn has_dotprod() -> bool {
    #[cfg(feature = "std")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(target_feature = "dotprod")
    }
}

/// `out = requant(patches · Wᵀ + corr)` for `mr` rows (see `super::gemm_rows`).
pub(super) fn gemm(
    _isa: Isa,
    patches: &[u8],
    kp: usize,
    mr: usize,
    packed: &PackedFilter<'_>,
    e: &Epilogue,
    out: &mut [i8],
) {
    super::gemm_portable(patches, kp, mr, packed, e, out)
}

/// Depthwise convolution with depth multiplier 1.
pub(super) fn depthwise(_isa: Isa, g: &DwGeom, input: &[i8], filter: &[i8], e: &Epilogue, output: &mut [i8]) {
    super::depthwise_rows(Isa::Reference, g, input, filter, e, output)
}

//! AArch64 micro-kernels: Advanced SIMD (`smull` + `sadalp`, 8 MACs per
//! multiply) and, where the CPU has the dot product extension, `sdot` (16
//! MACs per instruction), plus the vectorised TFLite output stage and the
//! depthwise convolution with channels in lanes.
//!
//! Both GEMM kernels multiply signed by signed: the patch bytes (`x + 128`
//! as `u8`, see `super::gather_patch`) are turned back into `x` with an XOR
//! in the register, and `128 · colsum[c]` is added to the correction, so the
//! total is `bias + input_offset · colsum + Σ w·x`, the reference's sum
//! modulo 2^32.
//!
//! The output stage is TFLite's NEON `MultiplyByQuantizedMultiplier`
//! (`sqrdmulh`, then `srshl` with the round-half-away-from-zero fixup), 16
//! channels at a time. Depthwise keeps 16 channels in lanes, a block's
//! weights widened once; windows inside the image (up to 3x3) run from a
//! table of tap offsets, the others over the taps `DwGeom::taps` lists.
//!
//! The dot product intrinsics (`vdotq_laneq_s32`) are still unstable in
//! Rust 1.95 (`stdarch_neon_dotprod`), so `sdot` is emitted with `asm!`
//! (`sdot_lane`).
//!
//! NEON is a target feature of every hard-float AArch64 target; the kernels
//! (module `neon`) are compiled only where it is, and the `*-softfloat`
//! targets get the portable kernels. Every `unsafe` block here is a call to
//! a `#[target_feature]` function (NEON: present by the module's cfg;
//! dotprod: only after [`has_dotprod`] said the CPU has it), an unaligned
//! load/store whose bounds the safe wrapper checked before entering, or the
//! `sdot` instruction itself.
#![allow(unsafe_code)]

use super::{DwGeom, Epilogue, Isa, PackedFilter};

/// Advanced SIMD is available: it is a target feature of every hard-float
/// AArch64 target (Linux, macOS, Android, `aarch64-unknown-none`), and the
/// kernels are compiled only there (on the `*-softfloat` targets enabling
/// NEON would change the ABI, so those builds use the portable kernels).
pub(super) fn has_neon() -> bool {
    cfg!(target_feature = "neon")
}

/// The dot product extension (`sdot`/`udot`).
pub(super) fn has_dotprod() -> bool {
    #[cfg(feature = "std")]
    {
        has_neon() && std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(all(target_feature = "neon", target_feature = "dotprod"))
    }
}

/// `out = requant(patches · Wᵀ + corr)` for `mr` rows (see `super::gemm_rows`).
pub(super) fn gemm(
    isa: Isa,
    patches: &[u8],
    kp: usize,
    mr: usize,
    packed: &PackedFilter<'_>,
    e: &Epilogue<'_>,
    out: &mut [i8],
) {
    #[cfg(target_feature = "neon")]
    neon::gemm(isa, patches, kp, mr, packed, e, out);
    #[cfg(not(target_feature = "neon"))]
    {
        let _ = isa;
        super::gemm_portable(patches, kp, mr, packed, e, out);
    }
}

/// Depthwise convolution with depth multiplier 1 (the same kernel for both
/// ISAs).
pub(super) fn depthwise(isa: Isa, g: &DwGeom, input: &[i8], filter: &[i8], e: &Epilogue<'_>, output: &mut [i8]) {
    let _ = isa;
    #[cfg(target_feature = "neon")]
    neon::depthwise(g, input, filter, e, output);
    #[cfg(not(target_feature = "neon"))]
    super::depthwise_rows(Isa::Reference, g, input, filter, e, output);
}

/// The NEON kernels, compiled where NEON is a target feature of the build.
#[cfg(target_feature = "neon")]
mod neon {
    use super::super::{DwGeom, Epilogue, Isa, MAX_K, MAX_N, MR, PACK_K, PACK_N, PackedFilter};
    use core::arch::aarch64::*;
    use core::arch::asm;

    /// The arguments the GEMM micro-kernels rely on, checked once per call
    /// (the epilogue covers whole 16-channel blocks).
    fn gemm_args_ok(
        patches: &[u8],
        kp: usize,
        mr: usize,
        packed: &PackedFilter<'_>,
        e: &Epilogue<'_>,
        out: &[i8],
    ) -> bool {
        let n = packed.n;
        let k4 = kp / PACK_K;
        let nb = n.div_ceil(PACK_N);
        kp.is_multiple_of(PACK_K)
            && kp == packed.k.div_ceil(PACK_K) * PACK_K
            && kp <= MAX_K
            && (1..=MR).contains(&mr)
            && patches.len() >= mr * kp
            && n <= MAX_N
            && packed.data.len() == nb * k4 * PACK_N * PACK_K
            && packed.colsum.len() >= nb * PACK_N
            && e.len() >= nb * PACK_N
            && out.len() == mr * n
    }

    /// `out = requant(patches · Wᵀ + corr)` for `mr` rows.
    pub(super) fn gemm(
        isa: Isa,
        patches: &[u8],
        kp: usize,
        mr: usize,
        packed: &PackedFilter<'_>,
        e: &Epilogue<'_>,
        out: &mut [i8],
    ) {
        if !gemm_args_ok(patches, kp, mr, packed, e, out) {
            return crate::fast::gemm_portable(patches, kp, mr, packed, e, out);
        }
        if isa == Isa::NeonDot && super::has_dotprod() {
            // SAFETY: NEON is a target feature of this build (the module's cfg),
            // the CPU has dotprod (checked above), and the slice lengths are
            // those `gemm_dot` indexes up to (checked above).
            unsafe {
                match mr {
                    4 => gemm_dot::<4>(patches, kp, packed, e, out),
                    3 => gemm_dot::<3>(patches, kp, packed, e, out),
                    2 => gemm_dot::<2>(patches, kp, packed, e, out),
                    _ => gemm_dot::<1>(patches, kp, packed, e, out),
                }
            }
        } else {
            // SAFETY: NEON is a target feature of this build; lengths checked
            // above.
            unsafe {
                match mr {
                    4 => gemm_mull::<4>(patches, kp, packed, e, out),
                    3 => gemm_mull::<3>(patches, kp, packed, e, out),
                    2 => gemm_mull::<2>(patches, kp, packed, e, out),
                    _ => gemm_mull::<1>(patches, kp, packed, e, out),
                }
            }
        }
    }

    // ---------------------------------------------------------------------------
    // Shared pieces
    // ---------------------------------------------------------------------------

    /// Per-channel constants of 4 channels for [`requant`]: the correction,
    /// the multiplier, the left shift and the negated right shift.
    #[derive(Clone, Copy)]
    struct Quad {
        corr: int32x4_t,
        m: int32x4_t,
        ls: int32x4_t,
        nrs: int32x4_t,
    }

    /// The epilogue constants of channels `c0..c0 + 4`, with `128 · colsum`
    /// added to the correction when `colsum` is given (the GEMM kernels, whose
    /// products use `x` rather than `x + 128`).
    ///
    /// # Safety
    /// NEON is available; `c0 + 4 ≤ e.len()` and, if given, `c0 + 4 ≤
    /// colsum.len()`.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn quad(e: &Epilogue<'_>, colsum: Option<&[i32]>, c0: usize) -> Quad {
        // SAFETY: the caller guarantees c0 + 4 ≤ e.len() (the length of all
        // four epilogue slices) and ≤ colsum.len().
        unsafe {
            let mut corr = vld1q_s32(e.corr.as_ptr().add(c0));
            if let Some(colsum) = colsum {
                corr = vaddq_s32(corr, vshlq_n_s32::<7>(vld1q_s32(colsum.as_ptr().add(c0))));
            }
            Quad {
                corr,
                m: vld1q_s32(e.multiplier.as_ptr().add(c0)),
                ls: vld1q_s32(e.left_shift.as_ptr().add(c0)),
                nrs: vnegq_s32(vld1q_s32(e.right_shift.as_ptr().add(c0))),
            }
        }
    }

    /// [`quad`] for channels `c0..c0 + 16` (without a closure, which the
    /// compiler does not always inline).
    ///
    /// # Safety
    /// As [`quad`], for `c0 + 16`.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn quads(e: &Epilogue<'_>, colsum: Option<&[i32]>, c0: usize) -> [Quad; 4] {
        // SAFETY: the caller's guarantee for c0 + 16 covers each quad.
        unsafe { [quad(e, colsum, c0), quad(e, colsum, c0 + 4), quad(e, colsum, c0 + 8), quad(e, colsum, c0 + 12)] }
    }

    /// TFLite `MultiplyByQuantizedMultiplier` (double rounding) on 4 lanes:
    /// `RoundingDivideByPOT(SRDHM(x << ls, m), rs)` plus the output offset.
    ///
    /// `sqrdmulh` is gemmlowp's SRDHM exactly (ties up, `MIN·MIN` saturating);
    /// `srshl` by `-rs` rounds ties up, so negative values are first moved down
    /// by one (TFLite's NEON `RoundingDivideByPOT` fixup: `x & -rs` has the sign
    /// bit of `x` when `rs > 0`, and is 0 when `rs = 0`) to round ties away from
    /// zero. The left shift (`sshl`, `ls` in 0..=30) wraps like the reference's.
    #[target_feature(enable = "neon")]
    #[inline]
    fn requant(acc: int32x4_t, q: &Quad, zp: int32x4_t) -> int32x4_t {
        let x = vshlq_s32(vaddq_s32(acc, q.corr), q.ls);
        let h = vqrdmulhq_s32(x, q.m);
        let fixup = vshrq_n_s32::<31>(vandq_s32(h, q.nrs));
        vaddq_s32(vrshlq_s32(vqaddq_s32(h, fixup), q.nrs), zp)
    }

    /// 16 lanes of `requant` output as bytes, clamped. Saturating to int8 and
    /// then clamping to `[min, max]` (int8 bounds) equals clamping the int32.
    #[target_feature(enable = "neon")]
    #[inline]
    fn narrow_clamp(v: [int32x4_t; 4], lo: int8x16_t, hi: int8x16_t) -> int8x16_t {
        let a = vqmovn_high_s32(vqmovn_s32(v[0]), v[1]);
        let b = vqmovn_high_s32(vqmovn_s32(v[2]), v[3]);
        let bytes = vqmovn_high_s16(vqmovn_s16(a), b);
        vminq_s8(vmaxq_s8(bytes, lo), hi)
    }

    /// Stores the first `dst.len() ≤ 16` bytes of `v`.
    #[target_feature(enable = "neon")]
    #[inline]
    fn store_bytes(v: int8x16_t, dst: &mut [i8]) {
        if dst.len() == 16 {
            // SAFETY: dst has 16 bytes.
            unsafe { vst1q_s8(dst.as_mut_ptr(), v) };
        } else {
            let mut buf = [0i8; 16];
            // SAFETY: buf has 16 bytes.
            unsafe { vst1q_s8(buf.as_mut_ptr(), v) };
            let len = dst.len().min(16);
            dst[..len].copy_from_slice(&buf[..len]);
        }
    }

    /// Loads `src.len()` bytes (16 or fewer; the rest of the lanes are 0).
    #[target_feature(enable = "neon")]
    #[inline]
    fn load_bytes(src: &[i8]) -> int8x16_t {
        if src.len() >= 16 {
            // SAFETY: src has at least 16 bytes.
            unsafe { vld1q_s8(src.as_ptr()) }
        } else {
            let mut buf = [0i8; 16];
            buf[..src.len()].copy_from_slice(src);
            // SAFETY: buf has 16 bytes.
            unsafe { vld1q_s8(buf.as_ptr()) }
        }
    }

    /// The 16 bytes at `p` (`x + 128` values) as `x`.
    ///
    /// # Safety
    /// NEON is available; `p..p + 16` is readable.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn load_patch16(p: *const u8) -> int8x16_t {
        // SAFETY: the caller guarantees 16 readable bytes.
        let v = unsafe { vld1q_u8(p) };
        vreinterpretq_s8_u8(veorq_u8(v, vdupq_n_u8(0x80)))
    }

    /// The 4 bytes at `p` (`x + 128` values) as `x`, repeated in all 4 words.
    ///
    /// # Safety
    /// NEON is available; `p..p + 4` is readable.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn load_patch4(p: *const u8) -> int8x16_t {
        // SAFETY: the caller guarantees 4 readable bytes.
        let word = unsafe { core::ptr::read_unaligned(p.cast::<u32>()) } ^ 0x8080_8080;
        vreinterpretq_s8_u32(vdupq_n_u32(word))
    }

    // ---------------------------------------------------------------------------
    // NEON with the dot product extension
    // ---------------------------------------------------------------------------

    /// `sdot acc.4s, w.16b, x.4b[L]`: `acc[i] += Σ_t w[4i + t] · x[4L + t]`.
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    fn sdot_lane<const L: i32>(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
        let mut acc = acc;
        // SAFETY: `sdot` (by element) only reads the two vector registers and
        // writes the accumulator register; no memory, stack or flags. This
        // function only runs where the CPU has the dot product extension (its
        // target feature, which also lets the assembler accept `sdot`); `L` is a
        // constant 0..=3 (each caller passes a literal).
        unsafe {
            asm!(
                "sdot {acc:v}.4s, {w:v}.16b, {x:v}.4b[{l}]",
                acc = inout(vreg) acc,
                w = in(vreg) w,
                x = in(vreg) x,
                l = const L,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        acc
    }

    /// One depth group (4 values) of a 16-channel block for `R` rows: the 4
    /// weight registers of the group against lane `L` of each row's patch.
    macro_rules! dot_group {
        ($acc:ident, $wg:expr, $xs:ident, $lane:literal) => {{
            // Used inside the caller's `unsafe` block, whose SAFETY comment
            // covers these loads: the block pointer has 64 readable bytes.
            let w = [vld1q_s8($wg), vld1q_s8($wg.add(16)), vld1q_s8($wg.add(32)), vld1q_s8($wg.add(48))];
            for (acc, x) in $acc.iter_mut().zip(&$xs) {
                for (a, w) in acc.iter_mut().zip(&w) {
                    *a = sdot_lane::<$lane>(*a, *w, *x);
                }
            }
        }};
    }

    /// The GEMM with `sdot`: per 16-channel block, 4 accumulators (4 channels
    /// each) per row; each 16-byte weight load is 4 channels × 4 depth values,
    /// exactly `sdot`'s layout.
    ///
    /// # Safety
    /// NEON and dotprod are available; the arguments passed `gemm_args_ok` with
    /// `mr = R`.
    #[target_feature(enable = "neon,dotprod")]
    unsafe fn gemm_dot<const R: usize>(
        patches: &[u8],
        kp: usize,
        packed: &PackedFilter<'_>,
        e: &Epilogue<'_>,
        out: &mut [i8],
    ) {
        let n = packed.n;
        let k4 = kp / PACK_K;
        let nb = n.div_ceil(PACK_N);
        let w = packed.data.as_ptr();
        let x = patches.as_ptr();
        let zp = vdupq_n_s32(e.output_offset);
        let lo = vdupq_n_s8(e.clamp.min);
        let hi = vdupq_n_s8(e.clamp.max);
        for b in 0..nb {
            let mut acc = [[vdupq_n_s32(0); 4]; R];
            // SAFETY (loads): block b spans data[b·k4·64 .. (b+1)·k4·64], inside
            // `packed.data` (its length is nb·k4·64); patch row r spans
            // [r·kp, r·kp + kp) with R = mr rows checked against `patches`; the
            // 16-byte patch loads start at q·4 with q + 4 ≤ k4, so end ≤ kp.
            unsafe {
                let wb = w.add(b * k4 * 64);
                let mut q = 0;
                while q + 4 <= k4 {
                    let mut xs = [vdupq_n_s8(0); R];
                    for (r, xv) in xs.iter_mut().enumerate() {
                        *xv = load_patch16(x.add(r * kp + q * 4));
                    }
                    let wg = wb.add(q * 64);
                    dot_group!(acc, wg, xs, 0);
                    dot_group!(acc, wg.add(64), xs, 1);
                    dot_group!(acc, wg.add(128), xs, 2);
                    dot_group!(acc, wg.add(192), xs, 3);
                    q += 4;
                }
                while q < k4 {
                    let mut xs = [vdupq_n_s8(0); R];
                    for (r, xv) in xs.iter_mut().enumerate() {
                        *xv = load_patch4(x.add(r * kp + q * 4));
                    }
                    dot_group!(acc, wb.add(q * 64), xs, 0);
                    q += 1;
                }
            }
            let c0 = b * PACK_N;
            let lanes = (n - c0).min(PACK_N);
            // SAFETY: c0 + 16 ≤ nb·16 ≤ e.len() and ≤ colsum.len() (checked by
            // `gemm_args_ok`).
            let quads = unsafe { quads(e, Some(packed.colsum), c0) };
            for (r, acc) in acc.iter().enumerate() {
                let v = [0, 1, 2, 3].map(|j| requant(acc[j], &quads[j], zp));
                store_bytes(narrow_clamp(v, lo, hi), &mut out[r * n + c0..r * n + c0 + lanes]);
            }
        }
    }

    // ---------------------------------------------------------------------------
    // NEON without the dot product extension
    // ---------------------------------------------------------------------------

    /// One depth group of an 8-channel half block for `R` rows: `smull` of the
    /// weights (2 channels × 4 depth values per half register) by the row's
    /// 4 values repeated, `sadalp` of the int16 products into int32 (two
    /// products never share an int16: `(-128)·(-128)` twice would overflow).
    macro_rules! mull_group {
        ($acc:ident, $wg:expr, $xs:ident, $lane:literal) => {{
            // Used inside the caller's `unsafe` block, whose SAFETY comment
            // covers these loads: the half-block pointer has 32 readable bytes.
            let (w0, w1) = (vld1q_s8($wg), vld1q_s8($wg.add(16)));
            for (acc, x) in $acc.iter_mut().zip(&$xs) {
                let xb = vreinterpretq_s8_s32(vdupq_laneq_s32::<$lane>(vreinterpretq_s32_s8(*x)));
                let xl = vget_low_s8(xb);
                acc[0] = vpadalq_s16(acc[0], vmull_s8(vget_low_s8(w0), xl));
                acc[1] = vpadalq_s16(acc[1], vmull_high_s8(w0, xb));
                acc[2] = vpadalq_s16(acc[2], vmull_s8(vget_low_s8(w1), xl));
                acc[3] = vpadalq_s16(acc[3], vmull_high_s8(w1, xb));
            }
        }};
    }

    /// The GEMM with `smull`/`sadalp`: per 8-channel half block, 4 accumulators
    /// per row, each holding 2 channels × 2 partial sums (reduced by `addp` at
    /// the end).
    ///
    /// # Safety
    /// NEON is available; the arguments passed `gemm_args_ok` with `mr = R`.
    #[target_feature(enable = "neon")]
    unsafe fn gemm_mull<const R: usize>(
        patches: &[u8],
        kp: usize,
        packed: &PackedFilter<'_>,
        e: &Epilogue<'_>,
        out: &mut [i8],
    ) {
        let n = packed.n;
        let k4 = kp / PACK_K;
        let nb = n.div_ceil(PACK_N);
        let w = packed.data.as_ptr();
        let x = patches.as_ptr();
        let zp = vdupq_n_s32(e.output_offset);
        let lo = vdupq_n_s8(e.clamp.min);
        let hi = vdupq_n_s8(e.clamp.max);
        for b in 0..nb {
            let c0 = b * PACK_N;
            let lanes = (n - c0).min(PACK_N);
            let mut sums = [[vdupq_n_s32(0); 4]; R];
            for half in 0..2 {
                if c0 + half * 8 >= n {
                    break;
                }
                let mut acc = [[vdupq_n_s32(0); 4]; R];
                // SAFETY (loads): as in `gemm_dot`; the half block's 32 bytes of
                // each 64-byte group start at half·32.
                unsafe {
                    let wb = w.add(b * k4 * 64 + half * 32);
                    let mut q = 0;
                    while q + 4 <= k4 {
                        let mut xs = [vdupq_n_s8(0); R];
                        for (r, xv) in xs.iter_mut().enumerate() {
                            *xv = load_patch16(x.add(r * kp + q * 4));
                        }
                        let wg = wb.add(q * 64);
                        mull_group!(acc, wg, xs, 0);
                        mull_group!(acc, wg.add(64), xs, 1);
                        mull_group!(acc, wg.add(128), xs, 2);
                        mull_group!(acc, wg.add(192), xs, 3);
                        q += 4;
                    }
                    while q < k4 {
                        let mut xs = [vdupq_n_s8(0); R];
                        for (r, xv) in xs.iter_mut().enumerate() {
                            *xv = load_patch4(x.add(r * kp + q * 4));
                        }
                        mull_group!(acc, wb.add(q * 64), xs, 0);
                        q += 1;
                    }
                }
                for (s, a) in sums.iter_mut().zip(&acc) {
                    // [c0 d01, c0 d23, c1 d01, c1 d23] + [c2 .., c3 ..] → c0..c3.
                    s[half * 2] = vpaddq_s32(a[0], a[1]);
                    s[half * 2 + 1] = vpaddq_s32(a[2], a[3]);
                }
            }
            // SAFETY: as in `gemm_dot`.
            let quads = unsafe { quads(e, Some(packed.colsum), c0) };
            for (r, s) in sums.iter().enumerate() {
                let v = [0, 1, 2, 3].map(|j| requant(s[j], &quads[j], zp));
                store_bytes(narrow_clamp(v, lo, hi), &mut out[r * n + c0..r * n + c0 + lanes]);
            }
        }
    }

    // ---------------------------------------------------------------------------
    // Depthwise
    // ---------------------------------------------------------------------------

    /// Depthwise convolution with depth multiplier 1.
    pub(super) fn depthwise(g: &DwGeom, input: &[i8], filter: &[i8], e: &Epilogue<'_>, output: &mut [i8]) {
        let d = (&g.input_dims, &g.filter_dims, &g.output_dims);
        let ok = d.0.c == d.1.c
            && d.0.c == d.2.c
            && d.0.c <= MAX_N
            && d.1.n == 1
            && d.0.n == d.2.n
            && e.len() >= d.0.c.div_ceil(16) * 16
            && (-255..=255).contains(&g.p.input_offset)
            && Some(input.len()) == d.0.elements()
            && Some(filter.len()) == d.1.elements()
            && Some(output.len()) == d.2.elements();
        if !ok {
            return crate::fast::depthwise_rows(Isa::Reference, g, input, filter, e, output);
        }
        // SAFETY: NEON is a target feature of this build; slice lengths match
        // the shapes (checked above), and every tap `taps()` yields lies inside
        // the input.
        unsafe { depthwise_neon(g, input, filter, e, output) }
    }

    /// The weights of tap `t`, channels `c0..c0 + lanes`, widened to int16.
    #[target_feature(enable = "neon")]
    #[inline]
    fn tap_weights(filter: &[i8], t: usize, c: usize, c0: usize, lanes: usize) -> [int16x8_t; 2] {
        let start = t * c + c0;
        let w = load_bytes(filter.get(start..start + lanes).unwrap_or(&[]));
        [vmovl_s8(vget_low_s8(w)), vmovl_high_s8(w)]
    }

    /// Channel blocks of 16 outside, pixels inside (a block's weights widened
    /// once, its epilogue constants loaded once).
    ///
    /// # Safety
    /// NEON is available; the shapes are consistent and the slices have their
    /// lengths (checked by `depthwise`).
    #[target_feature(enable = "neon")]
    unsafe fn depthwise_neon(g: &DwGeom, input: &[i8], filter: &[i8], e: &Epilogue<'_>, output: &mut [i8]) {
        let c = g.input_dims.c;
        let mut c0 = 0;
        while c0 < c {
            // SAFETY: the caller's guarantees, and c0 < c.
            unsafe {
                if c - c0 >= 16 {
                    depthwise_block::<true>(g, input, filter, e, output, c0);
                } else {
                    depthwise_block::<false>(g, input, filter, e, output, c0);
                }
            }
            c0 += 16;
        }
    }

    /// `acc += w · (x + off)` on 16 channels: `x + off` in int16 (`saddw`),
    /// `smlal` of the int16 weights into 4 int32 accumulators (`|w·(x + off)| ≤
    /// 128·255`).
    #[target_feature(enable = "neon")]
    #[inline]
    fn depthwise_mac(acc: &mut [int32x4_t; 4], xv: int8x16_t, w: &[int16x8_t; 2], off: int16x8_t) {
        let xl = vaddw_s8(off, vget_low_s8(xv));
        let xh = vaddw_high_s8(off, xv);
        acc[0] = vmlal_s16(acc[0], vget_low_s16(w[0]), vget_low_s16(xl));
        acc[1] = vmlal_high_s16(acc[1], w[0], xl);
        acc[2] = vmlal_s16(acc[2], vget_low_s16(w[1]), vget_low_s16(xh));
        acc[3] = vmlal_high_s16(acc[3], w[1], xh);
    }

    /// Taps whose widened weights are kept (3x3 and smaller).
    const HELD: usize = 9;

    /// `acc += Σ_t w[t] · x[t]` over the first `T` (≤ [`HELD`]) taps of a
    /// window inside the image, 16 channels from `p` (the window's first pixel,
    /// channel c0): `smull` of the int8 values (`|w·x| ≤ 2^14`, one product per
    /// int16) and `saddw` into the int32 accumulators. The caller adds
    /// `input_offset · Σ_t w[t]`.
    ///
    /// # Safety
    /// NEON is available; `p + toff[t] .. + 16` is readable for `t < T`.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn depthwise_window<const T: usize>(
        acc: &mut [int32x4_t; 4],
        p: *const i8,
        toff: &[usize; HELD],
        w8: &[int8x16_t; HELD],
    ) {
        for t in 0..T.min(HELD) {
            // SAFETY: the caller guarantees 16 readable bytes at p + toff[t].
            let xv = unsafe { vld1q_s8(p.add(toff[t])) };
            let lo = vmull_s8(vget_low_s8(w8[t]), vget_low_s8(xv));
            let hi = vmull_high_s8(w8[t], xv);
            acc[0] = vaddw_s16(acc[0], vget_low_s16(lo));
            acc[1] = vaddw_high_s16(acc[1], lo);
            acc[2] = vaddw_s16(acc[2], vget_low_s16(hi));
            acc[3] = vaddw_high_s16(acc[3], hi);
        }
    }

    /// Channels `c0..c0 + 16` (`FULL`), or the last `c - c0 < 16` channels
    /// (through 16-byte buffers), of every output pixel. Windows inside the
    /// image (3x3 or smaller, full blocks) run from a table of tap offsets;
    /// the others take the in-image taps `DwGeom::taps` lists.
    ///
    /// # Safety
    /// As [`depthwise_neon`]; `c0` is a multiple of 16 below `c`, and `c - c0 ≥
    /// 16` if `FULL`.
    #[target_feature(enable = "neon")]
    unsafe fn depthwise_block<const FULL: bool>(
        g: &DwGeom,
        input: &[i8],
        filter: &[i8],
        e: &Epilogue<'_>,
        output: &mut [i8],
        c0: usize,
    ) {
        let c = g.input_dims.c;
        let lanes = (c - c0).min(16);
        let (fh, fw) = (g.filter_dims.h, g.filter_dims.w);
        let ntaps = fh * fw;
        let held = ntaps <= HELD;
        // input_offset is in -255..=255 (checked by `depthwise`).
        let off = vdupq_n_s16(g.p.input_offset as i16);
        let zp = vdupq_n_s32(e.output_offset);
        let lo = vdupq_n_s8(e.clamp.min);
        let hi = vdupq_n_s8(e.clamp.max);
        let (oh, ow) = (g.output_dims.h, g.output_dims.w);
        let (sy, dy, py, ih) = (g.p.stride.0, g.p.dilation.0, g.p.padding.0, g.input_dims.h);
        let (sx, dx, px, iw) = (g.p.stride.1, g.p.dilation.1, g.p.padding.1, g.input_dims.w);
        let (span_y, span_x) = ((fh.max(1) - 1) * dy, (fw.max(1) - 1) * dx);
        let mut wv = [[vdupq_n_s16(0); 2]; HELD];
        let mut w8 = [vdupq_n_s8(0); HELD];
        // Offsets of the taps from the window's first pixel.
        let mut toff = [0usize; HELD];
        // input_offset · Σ_t w[t] per channel: what whole windows add to Σ w·x.
        let mut offsum = [0i32; 16];
        if held {
            for t in 0..ntaps {
                let start = t * c + c0;
                let w = filter.get(start..start + lanes).unwrap_or(&[]);
                for (s, &v) in offsum.iter_mut().zip(w) {
                    *s += i32::from(v);
                }
                w8[t] = load_bytes(w);
                wv[t] = [vmovl_s8(vget_low_s8(w8[t])), vmovl_high_s8(w8[t])];
                toff[t] = ((t / fw) * dy * iw + (t % fw) * dx) * c;
            }
        }
        // |Σ w| ≤ 9·128 and |input_offset| ≤ 255: no overflow.
        let offsum = offsum.map(|s| s * g.p.input_offset);
        // SAFETY: offsum has 16 entries.
        let offsum = unsafe { [0, 4, 8, 12].map(|j| vld1q_s32(offsum.as_ptr().add(j))) };
        // SAFETY: c0 < c is a multiple of 16, so c0 + 16 ≤ round_up(c, 16) ≤
        // e.len() (checked by `depthwise`).
        let quads = unsafe { quads(e, None, c0) };
        for b in 0..g.output_dims.n {
            for oy in 0..oh {
                // The row's taps do not depend on ox.
                let ys = g.taps(oy, 0).0;
                let y_in = oy * sy >= py && oy * sy + span_y < py + ih;
                for ox in 0..ow {
                    // Whole window row inside the image: every kx (what `taps`
                    // returns then, without its divisions).
                    let x_in = ox * sx >= px && ox * sx + span_x < px + iw;
                    let mut acc = [vdupq_n_s32(0); 4];
                    if FULL && held && y_in && x_in {
                        let first = ((b * ih + oy * sy - py) * iw + ox * sx - px) * c + c0;
                        // SAFETY: the whole window is inside the image, so every
                        // tap's pixel starts at first - c0 + toff[t] inside the
                        // input, and a pixel has c ≥ c0 + 16 values.
                        unsafe {
                            let p = input.as_ptr().add(first);
                            match ntaps {
                                9 => {
                                    acc = offsum;
                                    depthwise_window::<9>(&mut acc, p, &toff, &w8);
                                }
                                _ => {
                                    for t in 0..ntaps.min(HELD) {
                                        depthwise_mac(&mut acc, vld1q_s8(p.add(toff[t])), &wv[t], off);
                                    }
                                }
                            }
                        }
                    } else {
                        let xs = if x_in { 0..fw } else { g.taps(oy, ox).1 };
                        if !xs.is_empty() {
                            for ky in ys.clone() {
                                // Taps (ky, xs) are in the image: consecutive
                                // ones are `dilation.1` pixels apart.
                                let mut at = g.input_at(b, oy, ox, ky, xs.start) + c0;
                                for kx in xs.clone() {
                                    let t = ky * fw + kx;
                                    let xv = if FULL {
                                        // SAFETY: the tap is inside the input
                                        // (see `taps()`), and a pixel has c ≥
                                        // c0 + 16 values.
                                        unsafe { vld1q_s8(input.as_ptr().add(at)) }
                                    } else {
                                        load_bytes(input.get(at..at + lanes).unwrap_or(&[]))
                                    };
                                    let w = match wv.get(t) {
                                        Some(w) if held => *w,
                                        _ => tap_weights(filter, t, c, c0, lanes),
                                    };
                                    depthwise_mac(&mut acc, xv, &w, off);
                                    at += dx * c;
                                }
                            }
                        }
                    }
                    let v = [0, 1, 2, 3].map(|j| requant(acc[j], &quads[j], zp));
                    let o = ((b * oh + oy) * ow + ox) * c + c0;
                    store_bytes(narrow_clamp(v, lo, hi), &mut output[o..o + lanes]);
                }
            }
        }
    }
}

/// Fixed layers the random battery reaches rarely: KWS shapes (whole 3x3
/// windows over 64 channels, the 1x1 GEMM), channel tails, dilation,
/// windows wider than 9 taps, deep GEMMs, and the edge multipliers, shifts
/// and biases on every channel.
#[cfg(test)]
mod tests {
    use super::super::{
        PackedFilter, conv2d_i8_with, depthwise_conv2d_i8_with, fully_connected_i8_with, pack_filter, packed_len,
        supported,
    };
    use super::Isa;
    use crate::reference::{self, ConvParams, DepthwiseParams, FullyConnectedParams};
    use crate::{Clamp, Dims4, Requant};
    use std::vec;
    use std::vec::Vec;

    /// Pseudo-random int8 values, with runs of -128 and 127.
    fn data(len: usize, seed: u32) -> Vec<i8> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|i| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                match (s >> 8) % 16 {
                    0 if i % 3 == 0 => -128,
                    1 => 127,
                    _ => (s >> 24) as i8,
                }
            })
            .collect()
    }

    /// Per-channel requantization and bias: `edge` cycles through the edge
    /// multipliers, shifts and biases; otherwise typical values.
    fn params(n: usize, edge: bool) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
        let mult = [0, 1 << 30, i32::MAX, 1_518_500_250, 1_900_000_123];
        let shift = [-31, -30, -14, -1, 0, 1, 7, 30];
        let bias = [0, i32::MAX, i32::MIN, -1, 123_456, -654_321, 1 << 30];
        if edge {
            (
                (0..n).map(|c| mult[c % mult.len()]).collect(),
                (0..n).map(|c| shift[(c / 2) % shift.len()]).collect(),
                (0..n).map(|c| bias[(c / 3) % bias.len()]).collect(),
            )
        } else {
            (
                (0..n).map(|c| 1_300_000_000 + (c % 64) as i32 * 9_000_001).collect(),
                (0..n).map(|c| -6 - (c as i32 % 4)).collect(),
                (0..n).map(|c| (c % 256) as i32 * 97 - 3000).collect(),
            )
        }
    }

    fn isas() -> Vec<Isa> {
        [Isa::Neon, Isa::NeonDot].into_iter().filter(|&isa| supported(isa)).collect()
    }

    /// Output extent with `pad` on both sides.
    fn extent(i: usize, k: usize, s: usize, d: usize, pad: usize) -> usize {
        (i + 2 * pad - (d * (k - 1) + 1)) / s + 1
    }

    #[test]
    fn depthwise_layers_match_the_reference() {
        // (h, w, c, kh, kw, stride, dilation, pad)
        let layers = [
            (25, 5, 64, 3, 3, 1, 1, 1),
            (9, 9, 40, 3, 3, 2, 1, 1),
            (10, 10, 33, 3, 3, 1, 2, 2),
            (7, 7, 48, 5, 5, 1, 1, 2),
            (6, 6, 16, 1, 3, 1, 1, 0),
            (5, 8, 17, 3, 1, 2, 1, 1),
        ];
        for (i, &(h, w, c, kh, kw, s, d, pad)) in layers.iter().enumerate() {
            for edge in [false, true] {
                let id = Dims4::new(2, h, w, c);
                let fd = Dims4::new(1, kh, kw, c);
                let od = Dims4::new(2, extent(h, kh, s, d, pad), extent(w, kw, s, d, pad), c);
                let x = data(id.elements().unwrap(), i as u32);
                let f = data(fd.elements().unwrap(), 100 + i as u32);
                let (m, sh, bias) = params(c, edge);
                let rq = Requant { multiplier: &m, shift: &sh };
                let p = DepthwiseParams {
                    conv: ConvParams {
                        stride: (s, s),
                        dilation: (d, d),
                        padding: (pad, pad),
                        input_offset: [128, -127, 5][i % 3],
                        output_offset: [-128, 127, -3][i % 3],
                        clamp: if edge { Clamp { min: -100, max: 90 } } else { Clamp::NONE },
                    },
                    depth_multiplier: 1,
                };
                let n = od.elements().unwrap();
                let mut want = vec![0i8; n];
                reference::depthwise_conv2d_i8(&p, id, &x, fd, &f, Some(&bias), rq, od, &mut want).unwrap();
                for isa in isas() {
                    let mut got = vec![0x55i8; n];
                    depthwise_conv2d_i8_with(isa, &p, id, &x, fd, &f, Some(&bias), rq, od, &mut got).unwrap();
                    assert_eq!(got, want, "{isa}, layer {i}, edge {edge}");
                }
            }
        }
    }

    #[test]
    fn gemm_layers_match_the_reference() {
        // Convolutions: (h, w, in_c, out_c, k, stride, pad); depths 64, 90
        // (a 16-value tail of 8 groups plus 2), 4, 1152.
        let layers =
            [(25, 5, 64, 64, 1, 1, 0), (6, 7, 10, 24, 3, 1, 1), (5, 5, 1, 17, 2, 2, 1), (4, 3, 128, 33, 3, 1, 1)];
        for (i, &(h, w, ic, oc, k, s, pad)) in layers.iter().enumerate() {
            for edge in [false, true] {
                let id = Dims4::new(1, h, w, ic);
                let fd = Dims4::new(oc, k, k, ic);
                let od = Dims4::new(1, extent(h, k, s, 1, pad), extent(w, k, s, 1, pad), oc);
                let x = data(id.elements().unwrap(), 7 + i as u32);
                let f = data(fd.elements().unwrap(), 70 + i as u32);
                let (m, sh, bias) = params(oc, edge);
                let rq = Requant { multiplier: &m, shift: &sh };
                let p = ConvParams {
                    stride: (s, s),
                    dilation: (1, 1),
                    padding: (pad, pad),
                    input_offset: [128, -127, 5, 0][i],
                    output_offset: [-128, 127, -3, 0][i],
                    clamp: if edge { Clamp { min: -1, max: 1 } } else { Clamp::NONE },
                };
                let kk = k * k * ic;
                let (dl, cl) = packed_len(oc, kk).unwrap();
                let (mut data_p, mut colsum) = (vec![0i8; dl], vec![0i32; cl]);
                pack_filter(oc, kk, &f, &mut data_p, &mut colsum).unwrap();
                let pf = PackedFilter { n: oc, k: kk, data: &data_p, colsum: &colsum };
                let n = od.elements().unwrap();
                let mut want = vec![0i8; n];
                reference::conv2d_i8(&p, id, &x, fd, &f, Some(&bias), rq, od, &mut want).unwrap();
                for isa in isas() {
                    let mut got = vec![0x55i8; n];
                    conv2d_i8_with(isa, &p, id, &x, fd, &f, Some(&pf), Some(&bias), rq, od, &mut got).unwrap();
                    assert_eq!(got, want, "{isa}, conv {i}, edge {edge}");
                }
            }
        }
        // Fully connected, 1..=5 rows (every micro-kernel height).
        for (batches, din, dout) in [(5, 37, 70), (1, 4096, 16), (3, 1, 1), (4, 250, 1024)] {
            let x = data(batches * din, din as u32);
            let f = data(dout * din, dout as u32);
            let (m, sh, bias) = params(dout, din % 2 == 1);
            let rq = Requant { multiplier: &m, shift: &sh };
            let p = FullyConnectedParams { input_offset: 128, output_offset: -128, clamp: Clamp::NONE };
            let (dl, cl) = packed_len(dout, din).unwrap();
            let (mut data_p, mut colsum) = (vec![0i8; dl], vec![0i32; cl]);
            pack_filter(dout, din, &f, &mut data_p, &mut colsum).unwrap();
            let pf = PackedFilter { n: dout, k: din, data: &data_p, colsum: &colsum };
            let mut want = vec![0i8; batches * dout];
            reference::fully_connected_i8(&p, batches, &x, (dout, din), &f, Some(&bias), rq, &mut want).unwrap();
            for isa in isas() {
                let mut got = vec![0x55i8; batches * dout];
                fully_connected_i8_with(isa, &p, batches, &x, (dout, din), &f, Some(&pf), Some(&bias), rq, &mut got)
                    .unwrap();
                assert_eq!(got, want, "{isa}, fully connected {batches}x{din}→{dout}");
            }
        }
    }
}

//! x86-64 micro-kernels: AVX-512 VNNI (`vpdpbusd`, 64 MACs per instruction)
//! and AVX2 (`vpmaddwd` on sign-extended weights), plus the vectorised
//! TFLite output stage and the depthwise tap.
//!
//! Every `unsafe` block here is either a call to a `#[target_feature]`
//! function, made only after [`has_avx2`] / [`has_avx512vnni`] said the CPU
//! has the feature, or an unaligned load/store whose bounds the safe wrapper
//! checked before entering.
#![allow(unsafe_code)]

use super::{DwGeom, Epilogue, MAX_K, MAX_N, MR, PACK_K, PACK_N, PackedFilter};
use crate::Dims4;
use core::arch::x86_64::*;

/// AVX2 is available (probed at run time with `std`, else the build's
/// target features).
pub(super) fn has_avx2() -> bool {
    #[cfg(feature = "std")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(target_feature = "avx2")
    }
}

/// AVX-512 F/BW/VL and VNNI are available.
pub(super) fn has_avx512vnni() -> bool {
    #[cfg(feature = "std")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni")
            && has_avx2()
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(all(
            target_feature = "avx512f",
            target_feature = "avx512bw",
            target_feature = "avx512vl",
            target_feature = "avx512vnni",
            target_feature = "avx2"
        ))
    }
}

/// [`has_avx512vnni`] and AVX-512 VBMI (byte permutes: the add's table
/// lookups).
pub(super) fn has_avx512vbmi() -> bool {
    #[cfg(feature = "std")]
    {
        has_avx512vnni() && std::is_x86_feature_detected!("avx512vbmi")
    }
    #[cfg(not(feature = "std"))]
    {
        has_avx512vnni() && cfg!(target_feature = "avx512vbmi")
    }
}

/// The arguments the GEMM micro-kernels rely on, checked once per call.
fn gemm_args_ok(patches: &[u8], kp: usize, mr: usize, packed: &PackedFilter<'_>, e: &Epilogue, out: &[i8]) -> bool {
    let n = packed.n;
    let k4 = kp / PACK_K;
    kp.is_multiple_of(PACK_K)
        && kp == packed.k.div_ceil(PACK_K) * PACK_K
        && kp <= MAX_K
        && (1..=MR).contains(&mr)
        && patches.len() >= mr * kp
        && n <= MAX_N
        && packed.data.len() == n.div_ceil(PACK_N) * k4 * PACK_N * PACK_K
        && out.len() == mr * n
        && e.len() >= n.div_ceil(PACK_N) * PACK_N
}

// ---------------------------------------------------------------------------
// AVX-512 VNNI
// ---------------------------------------------------------------------------

/// `out = requant(patches · Wᵀ + corr)` for `mr` rows with `vpdpbusd`.
pub(super) fn gemm_avx512vnni(
    patches: &[u8],
    kp: usize,
    mr: usize,
    packed: &PackedFilter<'_>,
    e: &Epilogue,
    out: &mut [i8],
) {
    if !has_avx512vnni() || !gemm_args_ok(patches, kp, mr, packed, e, out) {
        return super::gemm_portable(patches, kp, mr, packed, e, out);
    }
    // SAFETY: the CPU has the features (checked above, cached by std), and
    // the slice lengths are those `gemm_vnni` indexes up to (checked above).
    unsafe {
        match mr {
            4 => gemm_vnni::<4>(patches, kp, packed, e, out),
            3 => gemm_vnni::<3>(patches, kp, packed, e, out),
            2 => gemm_vnni::<2>(patches, kp, packed, e, out),
            _ => gemm_vnni::<1>(patches, kp, packed, e, out),
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
fn gemm_vnni<const R: usize>(patches: &[u8], kp: usize, packed: &PackedFilter<'_>, e: &Epilogue, out: &mut [i8]) {
    let nb = packed.n.div_ceil(PACK_N);
    let mut b = 0;
    // Two 16-channel blocks per pass: each broadcast patch value feeds two
    // `vpdpbusd`, R × 2 accumulators stay in registers.
    while b + 1 < nb {
        block_vnni::<R, 2>(patches, kp, packed, e, out, b);
        b += 2;
    }
    if b < nb {
        block_vnni::<R, 1>(patches, kp, packed, e, out, b);
    }
}

/// Blocks `b0 .. b0 + B` of `R` rows: the K loop, then the output stage.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
#[inline]
fn block_vnni<const R: usize, const B: usize>(
    patches: &[u8],
    kp: usize,
    packed: &PackedFilter<'_>,
    e: &Epilogue,
    out: &mut [i8],
    b0: usize,
) {
    let n = packed.n;
    let k4 = kp / PACK_K;
    let w = packed.data.as_ptr();
    let x = patches.as_ptr();
    let mut acc = [[_mm512_setzero_si512(); B]; R];
    // SAFETY (loads): block b spans data[b·k4·64 .. (b+1)·k4·64], inside
    // `packed.data` (its length is nb·k4·64, and b0 + B ≤ nb); patch row r
    // spans [r·kp, r·kp + kp) with R ≤ mr rows checked against `patches`.
    unsafe {
        for q in 0..k4 {
            let mut wv = [_mm512_setzero_si512(); B];
            for (j, wv) in wv.iter_mut().enumerate() {
                *wv = _mm512_loadu_si512(w.add(((b0 + j) * k4 + q) * 64).cast());
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_epi32(core::ptr::read_unaligned(x.add(r * kp + q * 4).cast::<i32>()));
                for (acc, wv) in acc.iter_mut().zip(&wv) {
                    *acc = _mm512_dpbusd_epi32(*acc, a, *wv);
                }
            }
        }
    }
    let lo = _mm512_set1_epi32(i32::from(e.clamp.min));
    let hi = _mm512_set1_epi32(i32::from(e.clamp.max));
    let zp = _mm512_set1_epi32(e.output_offset);
    for j in 0..B {
        let c0 = (b0 + j) * PACK_N;
        let lanes = (n - c0).min(PACK_N);
        // SAFETY: the epilogue slices have ≥ nb·16 entries (checked on entry).
        let (corr, m, ls, rs) = unsafe {
            (
                _mm512_loadu_si512(e.corr.as_ptr().add(c0).cast()),
                _mm512_loadu_si512(e.multiplier.as_ptr().add(c0).cast()),
                _mm512_loadu_si512(e.left_shift.as_ptr().add(c0).cast()),
                _mm512_loadu_si512(e.right_shift.as_ptr().add(c0).cast()),
            )
        };
        let mask: __mmask16 = if lanes == PACK_N { 0xFFFF } else { (1u16 << lanes) - 1 };
        for (r, acc) in acc.iter().enumerate() {
            let v = requant512_for(e.shifts_left, _mm512_add_epi32(acc[j], corr), m, ls, rs);
            let v = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(v, zp), lo), hi);
            let bytes = _mm512_cvtepi32_epi8(v);
            // SAFETY: out has R·n bytes; row r, channels c0..c0+lanes.
            unsafe { _mm_mask_storeu_epi8(out.as_mut_ptr().add(r * n + c0).cast(), mask, bytes) };
        }
    }
}

/// The indirect GEMM of one layer: row `r`'s depth group `q` is the 4
/// bytes at `base[offs[r] + qoff[q]]`: `x + 128` as `u8` if `flipped`, else
/// int8 (flipped in registers).
/// What does not change between row groups (the CPU, the shapes, the group
/// offsets increasing, the last one in `base` at offset 0) is checked once,
/// by [`IndirectGemm::new`]; [`IndirectGemm::run`] then checks only its
/// rows' offsets (checking every group offset per row group cost a tenth of
/// a model's run time).
pub(super) struct IndirectGemm<'a> {
    base: &'a [i8],
    flipped: bool,
    qoff: &'a [usize],
    packed: &'a PackedFilter<'a>,
    e: &'a Epilogue<'a>,
    /// `base.len() − (qoff.last() + 4)`: the largest row offset allowed.
    max_off: usize,
}

impl<'a> IndirectGemm<'a> {
    /// `None` if the CPU lacks VNNI or the shapes disagree.
    pub(super) fn new(
        base: &'a [i8],
        flipped: bool,
        qoff: &'a [usize],
        packed: &'a PackedFilter<'a>,
        e: &'a Epilogue<'a>,
    ) -> Option<IndirectGemm<'a>> {
        let n = packed.n;
        let k4 = qoff.len();
        let ok = has_avx512vnni()
            && k4 * PACK_K == packed.k
            && n <= MAX_N
            && packed.data.len() == n.div_ceil(PACK_N) * k4 * PACK_N * PACK_K
            && e.len() >= n.div_ceil(PACK_N) * PACK_N
            && qoff.windows(2).all(|w| w[0] <= w[1]);
        let span = qoff.last().copied().unwrap_or(0).checked_add(PACK_K)?;
        let max_off = base.len().checked_sub(span)?;
        ok.then_some(IndirectGemm { base, flipped, qoff, packed, e, max_off })
    }

    /// `out = requant(patches · Wᵀ + corr)` for the rows whose windows start
    /// at `offs` (1 ..= 8 of them). Returns false, writing nothing, if an
    /// offset would leave `base` or `out` has the wrong length.
    pub(super) fn run(&self, offs: &[usize], out: &mut [i8]) -> bool {
        let n = self.packed.n;
        let ok = (1..=super::MR_INDIRECT).contains(&offs.len())
            && out.len() == offs.len() * n
            && offs.iter().all(|&o| o <= self.max_off);
        if !ok {
            return false;
        }
        if n == PACK_N / 2 && self.flipped {
            // SAFETY: as below (the same reads and lengths).
            unsafe {
                match offs.len().div_ceil(2) {
                    4 => block_pairs::<4>(self, offs, out),
                    3 => block_pairs::<3>(self, offs, out),
                    2 => block_pairs::<2>(self, offs, out),
                    _ => block_pairs::<1>(self, offs, out),
                }
            }
            return true;
        }
        let nb = n.div_ceil(PACK_N);
        // SAFETY: features checked in `new`; every read
        // base[offs[r] + qoff[q] .. +4] is in bounds (qoff is increasing, so
        // offs[r] + qoff[q] + 4 ≤ max_off + qoff.last() + 4 = base.len());
        // packed/epilogue lengths checked in `new`, out's above.
        unsafe {
            let mut b = 0;
            macro_rules! rows {
                ($r:literal, $flip:literal) => {{
                    while b + 1 < nb {
                        block_indirect::<$r, 2, $flip>(self, offs, out, b);
                        b += 2;
                    }
                    if b < nb {
                        block_indirect::<$r, 1, $flip>(self, offs, out, b);
                    }
                }};
                ($r:literal) => {{ if self.flipped { rows!($r, false) } else { rows!($r, true) } }};
            }
            match offs.len() {
                8 => rows!(8),
                7 => rows!(7),
                6 => rows!(6),
                5 => rows!(5),
                4 => rows!(4),
                3 => rows!(3),
                2 => rows!(2),
                _ => rows!(1),
            }
        }
        true
    }
}

/// [`block_vnni`] reading patches through offsets (flipping int8 to `u8`
/// in registers if `FLIP`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
#[inline]
fn block_indirect<const R: usize, const B: usize, const FLIP: bool>(
    g: &IndirectGemm<'_>,
    offs: &[usize],
    out: &mut [i8],
    b0: usize,
) {
    let (base, qoff, packed, e) = (g.base, g.qoff, g.packed, g.e);
    let n = packed.n;
    let k4 = qoff.len();
    let w = packed.data.as_ptr();
    let flip = _mm512_set1_epi32(0x8080_8080u32 as i32);
    let mut rows = [base.as_ptr(); R];
    for (p, &o) in rows.iter_mut().zip(offs) {
        // SAFETY: o + last qoff + 4 ≤ base.len() (checked by the caller).
        *p = unsafe { base.as_ptr().add(o) };
    }
    let mut acc = [[_mm512_setzero_si512(); B]; R];
    // SAFETY: weight blocks as in `block_vnni`; patch reads checked by the
    // caller (`IndirectGemm::run`).
    unsafe {
        for (q, &qo) in qoff.iter().enumerate() {
            let mut wv = [_mm512_setzero_si512(); B];
            for (j, wv) in wv.iter_mut().enumerate() {
                *wv = _mm512_loadu_si512(w.add(((b0 + j) * k4 + q) * 64).cast());
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let v = _mm512_set1_epi32(core::ptr::read_unaligned(rows[r].add(qo).cast::<i32>()));
                let a = if FLIP { _mm512_xor_si512(v, flip) } else { v };
                for (acc, wv) in acc.iter_mut().zip(&wv) {
                    *acc = _mm512_dpbusd_epi32(*acc, a, *wv);
                }
            }
        }
    }
    store_blocks::<R, B>(&acc, n, e, out, b0);
}

/// [`block_indirect`] for a layer of 8 output channels (VWW's first
/// convolution), whose one 16-lane block would leave half of every
/// `vpdpbusd` and output stage idle: two pixels per register instead,
/// lanes 0–7 the first one's channels and 8–15 the second's (the weights
/// and output-stage constants duplicated into both halves), and their 16
/// output bytes are contiguous. `offs` holds `2P − 1` or `2P` rows (an odd
/// count computes the last row twice and stores it once); `base` holds
/// flipped (`u8`) values. Reads and lengths checked by the caller.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
fn block_pairs<const P: usize>(g: &IndirectGemm<'_>, offs: &[usize], out: &mut [i8]) {
    let (base, qoff, packed, e) = (g.base, g.qoff, g.packed, g.e);
    let rows = offs.len();
    let w = packed.data.as_ptr();
    // Lanes 0–7 of a 16-lane vector copied into lanes 8–15.
    let dup = |v: __m512i| _mm512_shuffle_i64x2::<0b01_00_01_00>(v, v);
    let mut pix = [[base.as_ptr(); 2]; P];
    for (p, pair) in pix.iter_mut().enumerate() {
        for (h, ptr) in pair.iter_mut().enumerate() {
            // SAFETY: offs[r] + last qoff + 4 ≤ base.len() (checked by the caller).
            *ptr = unsafe { base.as_ptr().add(offs[(2 * p + h).min(rows - 1)]) };
        }
    }
    let mut acc = [_mm512_setzero_si512(); P];
    // SAFETY: the one weight block spans data[0 .. k4·64] (the caller
    // checked its length); patch reads as in `block_indirect`.
    unsafe {
        for (q, &qo) in qoff.iter().enumerate() {
            let wv = dup(_mm512_loadu_si512(w.add(q * 64).cast()));
            for (acc, pair) in acc.iter_mut().zip(&pix) {
                let lo = _mm256_set1_epi32(core::ptr::read_unaligned(pair[0].add(qo).cast::<i32>()));
                let hi = _mm256_set1_epi32(core::ptr::read_unaligned(pair[1].add(qo).cast::<i32>()));
                let a = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                *acc = _mm512_dpbusd_epi32(*acc, a, wv);
            }
        }
    }
    // SAFETY: the epilogue slices have ≥ 16 entries (checked by the caller).
    let (corr, m, ls, rs) = unsafe {
        (
            dup(_mm512_loadu_si512(e.corr.as_ptr().cast())),
            dup(_mm512_loadu_si512(e.multiplier.as_ptr().cast())),
            dup(_mm512_loadu_si512(e.left_shift.as_ptr().cast())),
            dup(_mm512_loadu_si512(e.right_shift.as_ptr().cast())),
        )
    };
    let lo = _mm512_set1_epi32(i32::from(e.clamp.min));
    let hi = _mm512_set1_epi32(i32::from(e.clamp.max));
    let zp = _mm512_set1_epi32(e.output_offset);
    for (p, acc) in acc.iter().enumerate() {
        let v = requant512_for(e.shifts_left, _mm512_add_epi32(*acc, corr), m, ls, rs);
        let v = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(v, zp), lo), hi);
        let mask: __mmask16 = if 2 * p + 1 < rows { 0xFFFF } else { 0x00FF };
        // SAFETY: out has rows·8 bytes; pair p writes bytes 16p .. 16p + 8
        // and, if its second row exists (2p + 1 < rows), 8 more.
        unsafe { _mm_mask_storeu_epi8(out.as_mut_ptr().add(16 * p).cast(), mask, _mm512_cvtepi32_epi8(v)) };
    }
}

/// The geometry of [`conv_pixels8`]: a flipped (`x + 128`), padded frame
/// of 4-byte pixels (`rows × cols` per image), a `fh × fw` window with
/// strides `sy`, `sx` (1 or 2), dilation 1, `oh × ow` outputs per image.
#[derive(Clone, Copy)]
pub(super) struct PixelFrame {
    pub(super) batches: usize,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) fh: usize,
    pub(super) fw: usize,
    pub(super) sy: usize,
    pub(super) sx: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
}

/// A convolution of 4-byte pixels (3 image channels widened to 4, or 4)
/// into 8 output channels, pixel-major: a register holds one channel of 16
/// neighbouring output pixels, each window tap's 16 input words are one
/// load (stride 1) or two loads and a `vpermt2d` (stride 2), and every
/// `vpdpbusd` takes its channel's 4 weights broadcast from memory. The 8
/// channels' outputs (16 bytes each) are interleaved into pixel order with
/// two `vpermt2b` (VBMI). [`block_pairs`], which this replaces for such
/// layers (VWW's first), spent most of its time assembling each pair of
/// pixels' input words, not in `vpdpbusd`.
///
/// Exactness: the same products, sums (mod 2^32), `corr`, output stage,
/// zero point and clamp as [`block_pairs`], per channel instead of per lane.
///
/// Returns false (nothing written) if the CPU lacks VBMI or the shapes do
/// not fit.
pub(super) fn conv_pixels8(
    base: &[i8],
    f: PixelFrame,
    packed: &PackedFilter<'_>,
    e: &Epilogue,
    out: &mut [i8],
) -> bool {
    let taps = f.fh * f.fw;
    let ok = has_avx512vbmi()
        && packed.n == 8
        && packed.k == taps * PACK_K
        && packed.data.len() >= taps * PACK_N * PACK_K
        && e.len() >= PACK_N
        && (f.sx == 1 || f.sx == 2)
        && f.oh > 0
        && f.ow > 0
        && f.fh > 0
        && f.fw > 0
        && (f.oh - 1) * f.sy + f.fh <= f.rows
        && (f.ow - 1) * f.sx + f.fw <= f.cols
        && f.batches.checked_mul(f.rows * f.cols * PACK_K).is_some_and(|len| len <= base.len())
        && f.batches.checked_mul(f.oh * f.ow * 8).is_some_and(|len| len == out.len());
    if !ok {
        return false;
    }
    // SAFETY: the CPU has AVX-512 VNNI and VBMI (checked above); reads and
    // lengths checked above.
    unsafe { pixels8(base, f, packed, e, out) };
    true
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2")]
fn pixels8(base: &[i8], f: PixelFrame, packed: &PackedFilter<'_>, e: &Epilogue, out: &mut [i8]) {
    let w = packed.data.as_ptr().cast::<i32>();
    let lo = _mm512_set1_epi32(i32::from(e.clamp.min));
    let hi = _mm512_set1_epi32(i32::from(e.clamp.max));
    let zp = _mm512_set1_epi32(e.output_offset);
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    // Output byte 8p + c (pixel p < 8 of the half, channel c) from byte
    // 16c + p of [ch 0..4 | ch 4..8] (the second half: pixels 8 + p).
    let mut idx = [[0u8; 64]; 2];
    for (h, idx) in idx.iter_mut().enumerate() {
        for (i, d) in idx.iter_mut().enumerate() {
            let (px, c) = (8 * h + i / 8, i % 8);
            *d = (if c < 4 { 16 * c + px } else { 64 + 16 * (c - 4) + px }) as u8;
        }
    }
    // SAFETY: 64 bytes read from each 64-byte array.
    let order = unsafe { [_mm512_loadu_si512(idx[0].as_ptr().cast()), _mm512_loadu_si512(idx[1].as_ptr().cast())] };
    let words = base.as_ptr().cast::<i32>();
    for b in 0..f.batches {
        for oy in 0..f.oh {
            let mut ox0 = 0;
            while ox0 < f.ow {
                let lanes = (f.ow - ox0).min(16);
                let mut acc = [_mm512_setzero_si512(); 8];
                for ky in 0..f.fh {
                    let row = (b * f.rows + oy * f.sy + ky) * f.cols + ox0 * f.sx;
                    for kx in 0..f.fw {
                        let at = row + kx;
                        // Words at + sx·j for j < lanes: inside the frame row
                        // ((ow − 1)·sx + fw ≤ cols); masked loads read no more.
                        // SAFETY: as just said, within base (checked by the caller).
                        let a = unsafe {
                            if f.sx == 1 {
                                _mm512_maskz_loadu_epi32(mask16(lanes), words.add(at).cast())
                            } else {
                                let need = 2 * (lanes - 1) + 1;
                                let l = _mm512_maskz_loadu_epi32(mask16(need.min(16)), words.add(at).cast());
                                let h = _mm512_maskz_loadu_epi32(
                                    mask16(need.saturating_sub(16)),
                                    words.add(at + 16).cast(),
                                );
                                _mm512_permutex2var_epi32(l, evens, h)
                            }
                        };
                        let q = ky * f.fw + kx;
                        for (c, acc) in acc.iter_mut().enumerate() {
                            // SAFETY: word q·16 + c of the packed weights
                            // (q < taps, c < 8; length checked by the caller).
                            let wc = _mm512_set1_epi32(unsafe { core::ptr::read_unaligned(w.add(q * 16 + c)) });
                            *acc = _mm512_dpbusd_epi32(*acc, a, wc);
                        }
                    }
                }
                // (Plain loops, no closures: a closure does not inherit this
                // function's target features, so the output stage would not
                // inline, and `acc` would live in memory, stored after every
                // `vpdpbusd`.)
                let mut bytes = [_mm_setzero_si128(); 8];
                for c in 0..8 {
                    let v = requant512_for(
                        e.shifts_left,
                        _mm512_add_epi32(acc[c], _mm512_set1_epi32(e.corr[c])),
                        _mm512_set1_epi32(e.multiplier[c]),
                        _mm512_set1_epi32(e.left_shift[c]),
                        _mm512_set1_epi32(e.right_shift[c]),
                    );
                    let v = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(v, zp), lo), hi);
                    bytes[c] = _mm512_cvtepi32_epi8(v);
                }
                let mut c03 = _mm512_castsi128_si512(bytes[0]);
                c03 = _mm512_inserti32x4::<1>(c03, bytes[1]);
                c03 = _mm512_inserti32x4::<2>(c03, bytes[2]);
                c03 = _mm512_inserti32x4::<3>(c03, bytes[3]);
                let mut c47 = _mm512_castsi128_si512(bytes[4]);
                c47 = _mm512_inserti32x4::<1>(c47, bytes[5]);
                c47 = _mm512_inserti32x4::<2>(c47, bytes[6]);
                c47 = _mm512_inserti32x4::<3>(c47, bytes[7]);
                let first = ((b * f.oh + oy) * f.ow + ox0) * 8;
                for (h, order) in order.iter().enumerate() {
                    if 8 * h >= lanes {
                        break;
                    }
                    let px = (lanes - 8 * h).min(8);
                    let mask: __mmask64 = if px == 8 { !0 } else { (1u64 << (8 * px)) - 1 };
                    let v = _mm512_permutex2var_epi8(c03, *order, c47);
                    // SAFETY: pixels ox0 + 8h .. + px of this row, 8 bytes
                    // each: inside `out` (length checked by the caller).
                    unsafe { _mm512_mask_storeu_epi8(out.as_mut_ptr().add(first + 64 * h).cast(), mask, v) };
                }
                ox0 += 16;
            }
        }
    }
}

/// The low `n ≤ 16` lanes.
#[inline]
fn mask16(n: usize) -> __mmask16 {
    if n >= 16 { 0xFFFF } else { ((1u32 << n) - 1) as __mmask16 }
}

/// The output stage of blocks `b0 .. b0 + B` for `R` rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
#[inline]
fn store_blocks<const R: usize, const B: usize>(
    acc: &[[__m512i; B]; R],
    n: usize,
    e: &Epilogue,
    out: &mut [i8],
    b0: usize,
) {
    let lo = _mm512_set1_epi32(i32::from(e.clamp.min));
    let hi = _mm512_set1_epi32(i32::from(e.clamp.max));
    let zp = _mm512_set1_epi32(e.output_offset);
    for j in 0..B {
        let c0 = (b0 + j) * PACK_N;
        if c0 >= n {
            break;
        }
        let lanes = (n - c0).min(PACK_N);
        // SAFETY: the epilogue slices have ≥ nb·16 entries (checked on entry).
        let (corr, m, ls, rs) = unsafe {
            (
                _mm512_loadu_si512(e.corr.as_ptr().add(c0).cast()),
                _mm512_loadu_si512(e.multiplier.as_ptr().add(c0).cast()),
                _mm512_loadu_si512(e.left_shift.as_ptr().add(c0).cast()),
                _mm512_loadu_si512(e.right_shift.as_ptr().add(c0).cast()),
            )
        };
        let mask: __mmask16 = if lanes == PACK_N { 0xFFFF } else { (1u16 << lanes) - 1 };
        for (r, acc) in acc.iter().enumerate() {
            if (r + 1) * n > out.len() {
                break;
            }
            let v = requant512_for(e.shifts_left, _mm512_add_epi32(acc[j], corr), m, ls, rs);
            let v = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(v, zp), lo), hi);
            let bytes = _mm512_cvtepi32_epi8(v);
            // SAFETY: (r + 1)·n ≤ out.len(); channels c0..c0+lanes ≤ n.
            unsafe { _mm_mask_storeu_epi8(out.as_mut_ptr().add(r * n + c0).cast(), mask, bytes) };
        }
    }
}

/// TFLite `MultiplyByQuantizedMultiplier` (double rounding) on 16 lanes:
/// `RoundingDivideByPOT(SRDHM(x << ls, m), rs)`. SRDHM is `(x·m + 2^30) >> 31`
/// (equal to gemmlowp's nudge-and-truncate for every `m ≥ 0`), taken from
/// the 64-bit products straight into the low (even lanes) or high (odd
/// lanes) half. RoundingDivideByPOT rounds half away from zero:
/// `sign(h) · ((|h| + half) >> rs)`, with `|h| + half < 2^32` shifted as
/// unsigned (no overflow, `|i32::MIN|` included).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
#[inline]
fn requant512(x: __m512i, m: __m512i, ls: __m512i, rs: __m512i) -> __m512i {
    requant512_ls::<true>(x, m, ls, rs)
}

/// [`requant512`] for an output stage that has left shifts (`left`, see
/// [`Epilogue::shifts_left`]) or not: most layers have none, and the
/// variable shift is among the costliest instructions of the output stage.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
#[inline]
fn requant512_for(left: bool, x: __m512i, m: __m512i, ls: __m512i, rs: __m512i) -> __m512i {
    if left { requant512_ls::<true>(x, m, ls, rs) } else { requant512_ls::<false>(x, m, ls, rs) }
}

/// [`requant512`], the left shift done only if `LS` (with `LS = false`,
/// `ls` must be zero in every lane).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
#[inline]
fn requant512_ls<const LS: bool>(x: __m512i, m: __m512i, ls: __m512i, rs: __m512i) -> __m512i {
    let x = if LS { _mm512_sllv_epi32(x, ls) } else { x };
    let nudge = _mm512_set1_epi64(1 << 30);
    let even = _mm512_srli_epi64::<31>(_mm512_add_epi64(_mm512_mul_epi32(x, m), nudge));
    let odd = _mm512_mul_epi32(_mm512_srli_epi64::<32>(x), _mm512_srli_epi64::<32>(m));
    let odd = _mm512_slli_epi64::<1>(_mm512_add_epi64(odd, nudge));
    let h = _mm512_mask_blend_epi32(0xAAAA, even, odd);
    let zero = _mm512_setzero_si512();
    let half = _mm512_srli_epi32::<1>(_mm512_sllv_epi32(_mm512_set1_epi32(1), rs));
    let mag = _mm512_srlv_epi32(_mm512_add_epi32(_mm512_abs_epi32(h), half), rs);
    _mm512_mask_sub_epi32(mag, _mm512_cmplt_epi32_mask(h, zero), zero, mag)
}

// ---------------------------------------------------------------------------
// AVX2
// ---------------------------------------------------------------------------

/// `out = requant(patches · Wᵀ + corr)` for `mr` rows with `vpmaddwd`.
pub(super) fn gemm_avx2(patches: &[u8], kp: usize, mr: usize, packed: &PackedFilter<'_>, e: &Epilogue, out: &mut [i8]) {
    if !has_avx2() || !gemm_args_ok(patches, kp, mr, packed, e, out) {
        return super::gemm_portable(patches, kp, mr, packed, e, out);
    }
    // Patch rows widened to i16 once, so each 4-value group is one 8-byte
    // broadcast.
    let mut buf = super::Scratch::<i16, { MR * MAX_K }>::new();
    let wide = buf.init(mr * kp, |i| i16::from(patches[i]));
    // SAFETY: the CPU has AVX2 (checked above); lengths checked above.
    unsafe {
        match mr {
            4 => gemm_madd::<4>(wide, kp, packed, e, out),
            3 => gemm_madd::<3>(wide, kp, packed, e, out),
            2 => gemm_madd::<2>(wide, kp, packed, e, out),
            _ => gemm_madd::<1>(wide, kp, packed, e, out),
        }
    }
}

#[target_feature(enable = "avx2")]
fn gemm_madd<const R: usize>(wide: &[i16], kp: usize, packed: &PackedFilter<'_>, e: &Epilogue, out: &mut [i8]) {
    let n = packed.n;
    let k4 = kp / PACK_K;
    let nb = n.div_ceil(PACK_N);
    let w = packed.data.as_ptr();
    let x = wide.as_ptr();
    for b in 0..nb {
        // Two halves of 8 channels: 4 rows × 2 accumulators + 2 weight
        // registers + 1 broadcast stay in the 16 ymm registers.
        for half in 0..2 {
            let c0 = b * PACK_N + half * 8;
            if c0 >= n {
                break;
            }
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            // SAFETY: as in `gemm_vnni`; `wide` holds R·kp values.
            unsafe {
                let wb = w.add(b * k4 * 64 + half * 32);
                for q in 0..k4 {
                    let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wb.add(q * 64).cast()));
                    let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wb.add(q * 64 + 16).cast()));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let a = _mm256_set1_epi64x(core::ptr::read_unaligned(x.add(r * kp + q * 4).cast::<i64>()));
                        acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(w0, a));
                        acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(w1, a));
                    }
                }
            }
            let lanes = (n - c0).min(8);
            // SAFETY: epilogue slices have ≥ nb·16 entries (checked on entry).
            let (corr, m, ls, rs) = unsafe {
                (
                    _mm256_loadu_si256(e.corr.as_ptr().add(c0).cast()),
                    _mm256_loadu_si256(e.multiplier.as_ptr().add(c0).cast()),
                    _mm256_loadu_si256(e.left_shift.as_ptr().add(c0).cast()),
                    _mm256_loadu_si256(e.right_shift.as_ptr().add(c0).cast()),
                )
            };
            for (r, acc) in acc.iter().enumerate() {
                // [c0 c1 c4 c5 | c2 c3 c6 c7] → channel order.
                let sum = _mm256_permute4x64_epi64::<0xD8>(_mm256_hadd_epi32(acc[0], acc[1]));
                let v = requant256(_mm256_add_epi32(sum, corr), m, ls, rs);
                let bytes = clamp_pack256(v, e);
                let dst = &mut out[r * n + c0..r * n + c0 + lanes];
                store_low(bytes, dst);
            }
        }
    }
}

/// [`requant512`] on 8 lanes.
#[target_feature(enable = "avx2")]
#[inline]
fn requant256(x: __m256i, m: __m256i, ls: __m256i, rs: __m256i) -> __m256i {
    let x = _mm256_sllv_epi32(x, ls);
    let nudge = _mm256_set1_epi64x(1 << 30);
    let even = _mm256_srli_epi64::<31>(_mm256_add_epi64(_mm256_mul_epi32(x, m), nudge));
    let odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64::<32>(x), _mm256_srli_epi64::<32>(m)), nudge);
    let odd = _mm256_slli_epi64::<32>(_mm256_srli_epi64::<31>(odd));
    let h = _mm256_blend_epi32::<0xAA>(even, odd);
    let one = _mm256_set1_epi32(1);
    let mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, rs), one);
    let rem = _mm256_and_si256(h, mask);
    let thr = _mm256_add_epi32(_mm256_srli_epi32::<1>(mask), _mm256_srli_epi32::<31>(h));
    let q = _mm256_srav_epi32(h, rs);
    // cmpgt is -1 where the remainder rounds up.
    _mm256_sub_epi32(q, _mm256_cmpgt_epi32(rem, thr))
}

/// `+ output_offset`, clamp, and the 8 lanes as bytes in the low half.
#[target_feature(enable = "avx2")]
#[inline]
fn clamp_pack256(v: __m256i, e: &Epilogue) -> __m128i {
    let v = _mm256_add_epi32(v, _mm256_set1_epi32(e.output_offset));
    let v = _mm256_max_epi32(v, _mm256_set1_epi32(i32::from(e.clamp.min)));
    let v = _mm256_min_epi32(v, _mm256_set1_epi32(i32::from(e.clamp.max)));
    // Values are in [-128, 127]: the saturating packs are exact.
    let w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    _mm_packs_epi16(w, w)
}

/// Stores the first `dst.len() ≤ 8` bytes of `v`.
#[target_feature(enable = "avx2")]
#[inline]
fn store_low(v: __m128i, dst: &mut [i8]) {
    let word = _mm_cvtsi128_si64(v).to_le_bytes();
    for (d, &s) in dst.iter_mut().zip(&word) {
        *d = s as i8;
    }
}

/// Average pooling (arguments validated by the caller) with 64 channels a
/// step: the window's int8 rows summed in four 16-lane accumulators, the
/// mean rounded half away from zero (`(acc ± n/2) / n`, truncating) by an
/// `f64` division, which is exact here (`|acc ± n/2| / n ≤ 128.5`, so the
/// quotient's rounding error, ≤ 2^-45, never crosses an integer: a
/// non-integer quotient is at least `1/n ≥ 2^-23` from one). Returns false
/// (nothing written) without AVX-512 or on a length mismatch.
pub(super) fn average_pool_avx512(
    p: &crate::reference::PoolParams,
    id: Dims4,
    input: &[i8],
    od: Dims4,
    output: &mut [i8],
) -> bool {
    let ok = has_avx512vnni()
        && id.c == od.c
        && id.n == od.n
        && Some(input.len()) == id.elements()
        && Some(output.len()) == od.elements()
        && p.filter.0.saturating_mul(p.filter.1) <= crate::reference::MAX_AVERAGE_POOL_WINDOW;
    if ok {
        // SAFETY: the CPU has the features; lengths match the shapes.
        unsafe { avg_pool512(p, id, input, od, output) };
    }
    ok
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
fn avg_pool512(p: &crate::reference::PoolParams, id: Dims4, input: &[i8], od: Dims4, output: &mut [i8]) {
    let window = crate::reference::common::pool_window;
    let c = id.c;
    let lo = _mm512_set1_epi32(i32::from(p.clamp.min));
    let hi = _mm512_set1_epi32(i32::from(p.clamp.max));
    let zero = _mm512_setzero_si512();
    for b in 0..od.n {
        for oy in 0..od.h {
            let (y0, y1) = window(oy, p.stride.0, p.padding.0, p.filter.0, id.h);
            for ox in 0..od.w {
                let (x0, x1) = window(ox, p.stride.1, p.padding.1, p.filter.1, id.w);
                let n = ((y1 - y0) * (x1 - x0)) as i32;
                let (nd, half) = (_mm512_set1_pd(f64::from(n)), _mm512_set1_epi32(n / 2));
                let o = ((b * od.h + oy) * od.w + ox) * c;
                let mut c0 = 0;
                while c0 < c {
                    let lanes = (c - c0).min(64);
                    let mask: __mmask64 = if lanes == 64 { !0 } else { (1u64 << lanes) - 1 };
                    let mut acc = [zero; 4];
                    for fy in y0..y1 {
                        let iy = oy * p.stride.0 + fy - p.padding.0;
                        for fx in x0..x1 {
                            let ix = ox * p.stride.1 + fx - p.padding.1;
                            let at = ((b * id.h + iy) * id.w + ix) * c + c0;
                            // SAFETY: lanes < c − c0 of pixel (iy, ix), a
                            // pixel of the image (the window is clipped).
                            let v = unsafe { _mm512_maskz_loadu_epi8(mask, input.as_ptr().add(at).cast()) };
                            let parts = [
                                _mm512_castsi512_si128(v),
                                _mm512_extracti32x4_epi32::<1>(v),
                                _mm512_extracti32x4_epi32::<2>(v),
                                _mm512_extracti32x4_epi32::<3>(v),
                            ];
                            for (a, part) in acc.iter_mut().zip(parts) {
                                *a = _mm512_add_epi32(*a, _mm512_cvtepi8_epi32(part));
                            }
                        }
                    }
                    for (k, a) in acc.iter().enumerate() {
                        // a > 0 ? a + n/2 : a − n/2, then truncating division.
                        let positive = _mm512_cmpgt_epi32_mask(*a, zero);
                        let x = _mm512_mask_add_epi32(_mm512_sub_epi32(*a, half), positive, *a, half);
                        let q_lo =
                            _mm512_cvttpd_epi32(_mm512_div_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(x)), nd));
                        let q_hi = _mm512_cvttpd_epi32(_mm512_div_pd(
                            _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64::<1>(x)),
                            nd,
                        ));
                        let q = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q_lo), q_hi);
                        let q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
                        let m = (mask >> (16 * k)) as __mmask16;
                        // SAFETY: lanes < c − c0 − 16k of output pixel o.
                        unsafe {
                            _mm_mask_storeu_epi8(
                                output.as_mut_ptr().add(o + c0 + 16 * k).cast(),
                                m,
                                _mm512_cvtepi32_epi8(q),
                            )
                        };
                    }
                    c0 += 64;
                }
            }
        }
    }
}

/// `acc[c] += x[c]` (a pooling window's sum), 8 channels a step.
pub(super) fn accumulate_avx2(acc: &mut [i32], x: &[i8]) {
    if !has_avx2() {
        for (a, &x) in acc.iter_mut().zip(x) {
            *a += i32::from(x);
        }
        return;
    }
    // SAFETY: AVX2 checked above.
    unsafe { accumulate(acc, x) }
}

#[target_feature(enable = "avx2")]
fn accumulate(acc: &mut [i32], x: &[i8]) {
    // The compiler's own vectorisation, with AVX2's sign extension.
    for (a, &x) in acc.iter_mut().zip(x) {
        *a += i32::from(x);
    }
}

/// `acc[c] += w[c] · (x[c] + input_offset)` (wrapping), 8 channels a step.
pub(super) fn depthwise_tap_avx2(acc: &mut [i32], x: &[i8], w: &[i8], input_offset: i32) {
    if !has_avx2() {
        for ((a, &x), &w) in acc.iter_mut().zip(x).zip(w) {
            *a = a.wrapping_add(i32::from(w) * (i32::from(x) + input_offset));
        }
        return;
    }
    // SAFETY: AVX2 checked above.
    unsafe { depthwise_tap(acc, x, w, input_offset) }
}

#[target_feature(enable = "avx2")]
fn depthwise_tap(acc: &mut [i32], x: &[i8], w: &[i8], input_offset: i32) {
    let c = acc.len().min(x.len()).min(w.len());
    let off = _mm256_set1_epi32(input_offset);
    let mut i = 0;
    while i + 8 <= c {
        // SAFETY: i + 8 ≤ the length of all three slices.
        unsafe {
            let xv = _mm256_cvtepi8_epi32(_mm_loadl_epi64(x.as_ptr().add(i).cast()));
            let wv = _mm256_cvtepi8_epi32(_mm_loadl_epi64(w.as_ptr().add(i).cast()));
            let a = _mm256_loadu_si256(acc.as_ptr().add(i).cast());
            let a = _mm256_add_epi32(a, _mm256_mullo_epi32(wv, _mm256_add_epi32(xv, off)));
            _mm256_storeu_si256(acc.as_mut_ptr().add(i).cast(), a);
        }
        i += 8;
    }
    for j in i..c {
        acc[j] = acc[j].wrapping_add(i32::from(w[j]) * (i32::from(x[j]) + input_offset));
    }
}

/// `out[c] = clamp(requant(acc[c]) + output_offset)`, 8 channels a step.
pub(super) fn requant_row_avx2(acc: &[i32], e: &Epilogue, out: &mut [i8]) {
    if !has_avx2() || acc.len() > e.len() {
        for (c, (o, &a)) in out.iter_mut().zip(acc).enumerate() {
            *o = super::output_stage(a, e, c);
        }
        return;
    }
    // SAFETY: AVX2 checked above; acc.len() ≤ e.len().
    unsafe { requant_row(acc, e, out) }
}

#[target_feature(enable = "avx2")]
fn requant_row(acc: &[i32], e: &Epilogue, out: &mut [i8]) {
    let c = acc.len().min(out.len());
    let mut i = 0;
    while i + 8 <= c {
        // SAFETY: i + 8 ≤ c ≤ e.len() (checked on entry).
        let (v, m, ls, rs) = unsafe {
            (
                _mm256_loadu_si256(acc.as_ptr().add(i).cast()),
                _mm256_loadu_si256(e.multiplier.as_ptr().add(i).cast()),
                _mm256_loadu_si256(e.left_shift.as_ptr().add(i).cast()),
                _mm256_loadu_si256(e.right_shift.as_ptr().add(i).cast()),
            )
        };
        let bytes = clamp_pack256(requant256(v, m, ls, rs), e);
        store_low(bytes, &mut out[i..i + 8]);
        i += 8;
    }
    for j in i..c {
        out[j] = super::output_stage(acc[j], e, j);
    }
}

/// Depthwise convolution (multiplier 1) with AVX-512: 16 channels per
/// register, the accumulator kept in a register across the taps.
pub(super) fn depthwise_avx512(g: &DwGeom, input: &[i8], filter: &[i8], e: &Epilogue, output: &mut [i8]) {
    let d = (&g.input_dims, &g.filter_dims, &g.output_dims);
    let ok = d.0.c == d.1.c
        && d.0.c == d.2.c
        && d.0.c <= MAX_N
        && e.len() >= d.0.c.div_ceil(16) * 16
        && Some(input.len()) == d.0.elements()
        && Some(filter.len()) == d.1.elements()
        && Some(output.len()) == d.2.elements();
    if !has_avx512vnni() || !ok {
        return super::depthwise_rows(super::Isa::Reference, g, input, filter, e, output);
    }
    // SAFETY: the CPU has the features; slice lengths match the shapes, and
    // every tap `taps()` yields lies inside the input.
    unsafe {
        let dot = if e.shifts_left { depthwise512_dot::<true> } else { depthwise512_dot::<false> };
        if !dot(g, input, filter, e, output) && !depthwise512_padded(g, input, filter, e, output) {
            depthwise512(g, input, filter, e, output)
        }
    }
}

/// Taps [`depthwise512_dot`] takes (three groups of four).
const DOT_TAPS: usize = 12;

/// Depthwise convolution with `vpdpbusd`: four taps of a channel per
/// 32-bit lane, 64 outputs per step. The four taps' 64-byte loads are
/// interleaved byte-wise (`vpunpck{l,h}bw`, then `{l,h}wd`), which leaves
/// each 128-bit lane's 16 channels spread over four accumulators in groups
/// of four; the weights and output-stage constants are laid out in that
/// order once per block, and the saturating packs at the end
/// (`vpackssdw`, `vpacksswb`) put the bytes back in channel order.
///
/// Inputs are copied, as `x + 128` (unsigned, for `vpdpbusd`), into
/// zero-point-padded rows per output row, so every window is inside the
/// buffer; `(input_offset − 128) · Σ w` is added back with the bias. A
/// 64-byte vector holds 64 channels of a pixel or, for a stride-1 layer
/// with `c` dividing 64, `64 / c` neighbouring pixels (the flattened row is
/// contiguous), the channel pattern repeated.
///
/// Exactness: the products and sums are those of the reference (mod 2^32);
/// the output stage is [`requant512`], then `+ zp` wrapping in 32 bits (as
/// the reference), and `sat8(sat16(v))` then the clamp equals `clamp(v)`
/// because the clamp lies inside int8.
///
/// Returns false (nothing written) for layers it does not take: more than
/// 12 taps, other channel counts, rows wider than [`DW_ROWS`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
fn depthwise512_dot<const LS: bool>(g: &DwGeom, input: &[i8], filter: &[i8], e: &Epilogue, output: &mut [i8]) -> bool {
    let (id, od) = (&g.input_dims, &g.output_dims);
    let c = id.c;
    let (fh, fw) = (g.filter_dims.h, g.filter_dims.w);
    let (sy, sx) = g.p.stride;
    let (dh, dw) = g.p.dilation;
    let (pt, pl) = g.p.padding;
    let taps = fh * fw;
    let flat = sx == 1 && c < 64 && 64 % c == 0;
    if taps == 0 || taps > DOT_TAPS || c == 0 || !(flat || c.is_multiple_of(64)) || od.elements() == Some(0) {
        return false;
    }
    let wp = (pl + id.w).max((od.w - 1) * sx + (fw - 1) * dw + 1);
    let row = wp * c;
    if fh * row > DW_ROWS {
        return false;
    }
    // One image whose padded copy fits is copied once (`whole`), not the
    // `fh` rows of each output row for each 64-channel block (4 × 3 copies
    // of every input row on a 256-channel layer).
    let hp = (pt + id.h).max((od.h - 1) * sy + (fh - 1) * dh + 1);
    let whole = od.n == 1 && hp * row <= DW_ROWS;
    let row_step = if whole { dh * row } else { row };
    // Tap offsets from a window's first row in the buffer.
    let mut toff = [0usize; DOT_TAPS];
    for ky in 0..fh {
        for kx in 0..fw {
            toff[ky * fw + kx] = ky * row_step + kx * dw * c;
        }
    }
    let groups = taps.div_ceil(4);
    let pad = (128 - g.p.input_offset) as u8; // the zero point + 128: offset ∈ -127..=128
    let zp = _mm512_set1_epi32(e.output_offset);
    let lo8 = _mm512_set1_epi8(e.clamp.min);
    let hi8 = _mm512_set1_epi8(e.clamp.max);
    let mut buf = super::Scratch::<u8, DW_ROWS>::new();
    let rows = buf.init(if whole { hp * row } else { fh * row }, |_| pad);
    // Padded row `dst` of input row `iy` of image `b` (`None`: padding).
    let fill = |dst: &mut [u8], b: usize, iy: Option<usize>| match iy {
        None => dst.fill(pad),
        Some(iy) => {
            let src = &input[(b * id.h + iy) * id.w * c..][..id.w * c];
            dst[..pl * c].fill(pad);
            for (d, &x) in dst[pl * c..(pl + id.w) * c].iter_mut().zip(src) {
                *d = (x as u8) ^ 0x80;
            }
            dst[(pl + id.w) * c..].fill(pad);
        }
    };
    let in_image = |y: usize| y.checked_sub(pt).filter(|&iy| iy < id.h);
    // Vectors per output row and where each starts: flat rows step 64
    // elements; otherwise pixels × 64-channel blocks.
    let blocks = if flat { 1 } else { c / 64 };
    // A flat layer's 64-element pattern (channel e % c) of each tap's
    // weights and of the output-stage constants; other layers read 64
    // channels in place.
    let mut wrep = [[0i8; 64]; DOT_TAPS];
    let mut erep = [[0i32; 64]; 4];
    let consts = [e.corr, e.multiplier, e.left_shift, e.right_shift];
    if flat {
        for (t, r) in wrep.iter_mut().enumerate().take(taps) {
            for (el, v) in r.iter_mut().enumerate() {
                *v = filter[t * c + el % c];
            }
        }
        for (r, src) in erep.iter_mut().zip(consts) {
            for (el, v) in r.iter_mut().enumerate() {
                *v = src[el % c];
            }
        }
    }
    let ones = _mm512_set1_epi8(1);
    let off128 = _mm512_set1_epi32(g.p.input_offset - 128);
    for blk in 0..blocks {
        let c0 = blk * 64;
        // Weights in accumulator order: the input's interleave applied to
        // the taps' weight rows; Σ w per lane by `vpdpbusd` with ones.
        let mut w = [[_mm512_setzero_si512(); 4]; DOT_TAPS / 4];
        let mut wsum = [_mm512_setzero_si512(); 4];
        for (gi, wg) in w.iter_mut().enumerate().take(groups) {
            let rows4: [__m512i; 4] = core::array::from_fn(|i| {
                let t = gi * 4 + i;
                if t >= taps {
                    _mm512_setzero_si512()
                } else if flat {
                    // SAFETY: a 64-byte local.
                    unsafe { _mm512_loadu_si512(wrep[t].as_ptr().cast()) }
                } else {
                    // SAFETY: channels c0..c0 + 64 ≤ c of tap t's row.
                    unsafe { _mm512_loadu_si512(filter.as_ptr().add(t * c + c0).cast()) }
                }
            });
            *wg = interleave4(rows4);
            for k in 0..4 {
                wsum[k] = _mm512_dpbusd_epi32(wsum[k], ones, wg[k]);
            }
        }
        // Output-stage constants in accumulator order: a 4x4 transpose of
        // 128-bit chunks (accumulator k holds chunk k of each 16 elements).
        let [bias, mul, ls, rs] = core::array::from_fn(|j| {
            let rows4: [__m512i; 4] = core::array::from_fn(|q| {
                // SAFETY: 16 values from a 64-value local, or from the
                // epilogue's ≥ round_up(c, 16) entries at c0 + 16q < c.
                unsafe {
                    if flat {
                        _mm512_loadu_si512(erep[j].as_ptr().add(16 * q).cast())
                    } else {
                        _mm512_loadu_si512(consts[j].as_ptr().add(c0 + 16 * q).cast())
                    }
                }
            });
            transpose_chunks(rows4)
        });
        let corr: [__m512i; 4] =
            core::array::from_fn(|k| _mm512_add_epi32(bias[k], _mm512_mullo_epi32(off128, wsum[k])));
        if whole && blk == 0 {
            for y in 0..hp {
                fill(&mut rows[y * row..][..row], 0, in_image(y));
            }
        }
        for b in 0..od.n {
            for oy in 0..od.h {
                if !whole {
                    for ky in 0..fh {
                        fill(&mut rows[ky * row..][..row], b, in_image(oy * sy + ky * dh));
                    }
                }
                // Where this output row's windows start in the buffer.
                let base = if whole { oy * sy * row } else { 0 };
                let out_row = &mut output[(b * od.h + oy) * od.w * c..][..od.w * c];
                let mut step = |inp: usize, out: usize, n: usize| {
                    let mask: __mmask64 = if n >= 64 { !0 } else { (1u64 << n) - 1 };
                    let mut acc = corr;
                    for (gi, wg) in w.iter().enumerate().take(groups) {
                        // Taps past the last are zero (their weights are 0).
                        let x: [__m512i; 4] = core::array::from_fn(|i| {
                            let t = gi * 4 + i;
                            if t < taps {
                                // SAFETY: masked loads of lanes < n at inp +
                                // toff[t] + lane < the buffer's length (the
                                // window of the vector's last element ends
                                // inside the padded rows: `fh` of them, or
                                // the whole image's `hp` from `base` on).
                                unsafe { _mm512_maskz_loadu_epi8(mask, rows.as_ptr().add(inp + toff[t]).cast()) }
                            } else {
                                _mm512_setzero_si512()
                            }
                        });
                        let v = interleave4(x);
                        for k in 0..4 {
                            acc[k] = _mm512_dpbusd_epi32(acc[k], v[k], wg[k]);
                        }
                    }
                    // The zero point is added in 32 bits, wrapping as the
                    // reference does; the packs saturate, the clamp is
                    // inside int8.
                    let r: [__m512i; 4] = core::array::from_fn(|k| {
                        _mm512_add_epi32(requant512_ls::<LS>(acc[k], mul[k], ls[k], rs[k]), zp)
                    });
                    let p01 = _mm512_packs_epi32(r[0], r[1]);
                    let p23 = _mm512_packs_epi32(r[2], r[3]);
                    let v = _mm512_min_epi8(_mm512_max_epi8(_mm512_packs_epi16(p01, p23), lo8), hi8);
                    // SAFETY: lanes < n of out_row[out..out + n].
                    unsafe { _mm512_mask_storeu_epi8(out_row.as_mut_ptr().add(out).cast(), mask, v) };
                };
                if flat {
                    let n = od.w * c;
                    let mut j = 0;
                    while j < n {
                        step(base + j, j, (n - j).min(64));
                        j += 64;
                    }
                } else {
                    for ox in 0..od.w {
                        step(base + ox * sx * c + c0, ox * c + c0, 64);
                    }
                }
            }
        }
    }
    true
}

/// Four 64-byte rows `a, b, c, d` interleaved byte-wise: vector `k` lane
/// `4L + i` (128-bit lane L) holds `[a, b, c, d]` at element `16L + 4k + i`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
#[inline]
fn interleave4([a, b, c, d]: [__m512i; 4]) -> [__m512i; 4] {
    let (ab_lo, ab_hi) = (_mm512_unpacklo_epi8(a, b), _mm512_unpackhi_epi8(a, b));
    let (cd_lo, cd_hi) = (_mm512_unpacklo_epi8(c, d), _mm512_unpackhi_epi8(c, d));
    [
        _mm512_unpacklo_epi16(ab_lo, cd_lo),
        _mm512_unpackhi_epi16(ab_lo, cd_lo),
        _mm512_unpacklo_epi16(ab_hi, cd_hi),
        _mm512_unpackhi_epi16(ab_hi, cd_hi),
    ]
}

/// 4x4 transpose of 128-bit chunks: result `k` is chunk `k` of each row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
#[inline]
fn transpose_chunks([r0, r1, r2, r3]: [__m512i; 4]) -> [__m512i; 4] {
    let t0 = _mm512_shuffle_i32x4::<0b01_00_01_00>(r0, r1);
    let t1 = _mm512_shuffle_i32x4::<0b11_10_11_10>(r0, r1);
    let t2 = _mm512_shuffle_i32x4::<0b01_00_01_00>(r2, r3);
    let t3 = _mm512_shuffle_i32x4::<0b11_10_11_10>(r2, r3);
    [
        _mm512_shuffle_i32x4::<0b10_00_10_00>(t0, t2),
        _mm512_shuffle_i32x4::<0b11_01_11_01>(t0, t2),
        _mm512_shuffle_i32x4::<0b10_00_10_00>(t1, t3),
        _mm512_shuffle_i32x4::<0b11_01_11_01>(t1, t3),
    ]
}

/// Bytes of zero-point-padded input rows [`depthwise512_padded`] builds per
/// output row (on the stack).
const DW_ROWS: usize = 24 * 1024;
/// Taps whose weights stay in registers.
const DW_TAPS: usize = 9;

/// Depthwise convolution over zero-point-padded copies of each output row's
/// input rows: every window then lies inside the buffer, so all pixels take
/// the same loop (no border cases: on small feature maps most pixels are
/// borders). Padding holds the input zero point, whose `x + input_offset` is
/// 0, exactly the reference's skipped tap. For the layers
/// [`depthwise512_dot`] does not take. Returns false (nothing written) when
/// the layer does not fit (larger filters than 3x3, rows wider than
/// [`DW_ROWS`]) or is better left to [`depthwise512`] (mostly interior
/// windows).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
fn depthwise512_padded(g: &DwGeom, input: &[i8], filter: &[i8], e: &Epilogue, output: &mut [i8]) -> bool {
    let (id, od) = (&g.input_dims, &g.output_dims);
    let c = id.c;
    let (fh, fw) = (g.filter_dims.h, g.filter_dims.w);
    let (sy, sx) = g.p.stride;
    let (dh, dw) = g.p.dilation;
    let (pt, pl) = g.p.padding;
    let taps = fh * fw;
    if taps == 0 || taps > DW_TAPS || od.elements() == Some(0) || c == 0 {
        return taps != 0 && od.elements() == Some(0);
    }
    // Padded width: the input with its left padding, and whatever the
    // rightmost window reaches.
    let wp = (pl + id.w).max((od.w - 1) * sx + (fw - 1) * dw + 1);
    let row = wp * c;
    // Copying rows costs ~15 % on large maps, where windows are mostly
    // inside the image: there [`depthwise512`] is faster.
    let inside = |o: usize, s: usize, d: usize, k: usize, p: usize, n: usize| {
        (0..o).filter(|&i| i * s >= p && i * s + (k - 1) * d < p + n).count()
    };
    let interior = inside(od.h, sy, dh, fh, pt, id.h) * inside(od.w, sx, dw, fw, pl, id.w);
    if fh * row > DW_ROWS || 2 * interior > od.h * od.w {
        return false;
    }
    let zpb = (-g.p.input_offset) as i8; // input_offset ∈ -127..=128 (checked)
    let mut toff = [0usize; DW_TAPS];
    for ky in 0..fh {
        for kx in 0..fw {
            toff[ky * fw + kx] = ky * row + kx * dw * c;
        }
    }
    let toff = &toff[..taps];
    let off = _mm512_set1_epi32(g.p.input_offset);
    let k = DwConst {
        lo: _mm512_set1_epi32(i32::from(e.clamp.min)),
        hi: _mm512_set1_epi32(i32::from(e.clamp.max)),
        zp: _mm512_set1_epi32(e.output_offset),
    };
    let mut buf = super::Scratch::<i8, DW_ROWS>::new();
    let rows = buf.init(fh * row, |_| zpb);
    for b in 0..od.n {
        for oy in 0..od.h {
            // The input rows under this output row, padded.
            for ky in 0..fh {
                let dst = &mut rows[ky * row..][..row];
                let iy = (oy * sy + ky * dh).checked_sub(pt).filter(|&iy| iy < id.h);
                match iy {
                    None => dst.fill(zpb),
                    Some(iy) => {
                        dst[..pl * c].fill(zpb);
                        let src = ((b * id.h + iy) * id.w) * c;
                        dst[pl * c..(pl + id.w) * c].copy_from_slice(&input[src..src + id.w * c]);
                        dst[(pl + id.w) * c..].fill(zpb);
                    }
                }
            }
            let out_row = &mut output[(b * od.h + oy) * od.w * c..][..od.w * c];
            let mut c0 = 0;
            while c0 < c {
                let lanes = (c - c0).min(16);
                let mask: __mmask16 = if lanes == 16 { 0xFFFF } else { (1u16 << lanes) - 1 };
                let mut wz = [_mm512_setzero_si512(); DW_TAPS];
                let mut wsum = _mm512_setzero_si512();
                // SAFETY: masked filter loads of channels c0..c of tap t's
                // row of c values; the epilogue slices have ≥ round_up(c,
                // 16) entries (checked by the caller).
                let blk = unsafe {
                    for (t, w) in wz.iter_mut().enumerate().take(taps) {
                        let w8 = _mm_maskz_loadu_epi8(mask, filter.as_ptr().add(t * c + c0).cast());
                        *w = _mm512_cvtepu16_epi32(_mm256_cvtepi8_epi16(w8));
                        wsum = _mm512_add_epi32(wsum, _mm512_cvtepi8_epi32(w8));
                    }
                    let corr = _mm512_loadu_si512(e.corr.as_ptr().add(c0).cast());
                    DwBlock {
                        corr: _mm512_add_epi32(corr, _mm512_mullo_epi32(off, wsum)),
                        m: _mm512_loadu_si512(e.multiplier.as_ptr().add(c0).cast()),
                        ls: _mm512_loadu_si512(e.left_shift.as_ptr().add(c0).cast()),
                        rs: _mm512_loadu_si512(e.right_shift.as_ptr().add(c0).cast()),
                    }
                };
                for ox in 0..od.w {
                    // SAFETY: window loads read channels c0..c0 + lanes of
                    // buffer pixels ox·sx + kx·dw < wp in rows < fh; the
                    // store writes channels c0..c0 + lanes of pixel ox.
                    unsafe {
                        dw_vector(
                            rows.as_ptr().add(ox * sx * c + c0),
                            toff,
                            &wz,
                            &blk,
                            &k,
                            mask,
                            out_row.as_mut_ptr().add(ox * c + c0),
                        )
                    };
                }
                c0 += 16;
            }
        }
    }
    true
}

/// Output-stage constants shared by every vector of a depthwise layer.
struct DwConst {
    lo: __m512i,
    hi: __m512i,
    zp: __m512i,
}

/// Per-lane constants of one 16-lane depthwise block: `corr` is the bias
/// plus `input_offset · Σ w`.
struct DwBlock {
    corr: __m512i,
    m: __m512i,
    ls: __m512i,
    rs: __m512i,
}

/// One 16-lane depthwise output: `Σ_t w_t · x[base + toff[t]]` (weights
/// with a zero high half, so `vpdpwssd` forms exact products), the output
/// stage, a masked store of `mask`'s lanes at `out`.
///
/// # Safety
/// Lanes of `mask` at `base + toff[t]` must be readable, at `out` writable.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
#[inline]
unsafe fn dw_vector(
    base: *const i8,
    toff: &[usize],
    w: &[__m512i; DW_TAPS],
    blk: &DwBlock,
    k: &DwConst,
    mask: __mmask16,
    out: *mut i8,
) {
    let mut acc = blk.corr;
    for (&to, w) in toff.iter().zip(w) {
        // SAFETY: the caller's contract.
        let xv = _mm512_cvtepi8_epi32(unsafe { _mm_maskz_loadu_epi8(mask, base.add(to).cast()) });
        acc = _mm512_dpwssd_epi32(acc, xv, *w);
    }
    let v = _mm512_add_epi32(requant512(acc, blk.m, blk.ls, blk.rs), k.zp);
    let v = _mm512_min_epi32(_mm512_max_epi32(v, k.lo), k.hi);
    // SAFETY: the caller's contract.
    unsafe { _mm_mask_storeu_epi8(out.cast(), mask, _mm512_cvtepi32_epi8(v)) };
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
fn depthwise512(g: &DwGeom, input: &[i8], filter: &[i8], e: &Epilogue, output: &mut [i8]) {
    /// Taps whose widened weights stay in registers (3x3 and smaller).
    const HELD: usize = 9;
    let c = g.input_dims.c;
    let (fh, fw) = (g.filter_dims.h, g.filter_dims.w);
    let held = fh * fw <= HELD;
    let off = _mm512_set1_epi32(g.p.input_offset);
    let lo = _mm512_set1_epi32(i32::from(e.clamp.min));
    let hi = _mm512_set1_epi32(i32::from(e.clamp.max));
    let zp = _mm512_set1_epi32(e.output_offset);
    // Tap offsets from a window's first input pixel, and whether a window
    // lies wholly inside the image.
    let (dh, dw) = g.p.dilation;
    let mut toff = [0usize; HELD];
    if held {
        for ky in 0..fh {
            for kx in 0..fw {
                toff[ky * fw + kx] = (ky * dh * g.input_dims.w + kx * dw) * c;
            }
        }
    }
    let span_y = (fh.max(1) - 1) * dh;
    let span_x = (fw.max(1) - 1) * dw;
    let interior = |oy: usize, ox: usize| {
        let (y, x) = (oy * g.p.stride.0, ox * g.p.stride.1);
        y >= g.p.padding.0
            && y + span_y < g.p.padding.0 + g.input_dims.h
            && x >= g.p.padding.1
            && x + span_x < g.p.padding.1 + g.input_dims.w
    };
    let mut c0 = 0;
    // Channel blocks outside, pixels inside: a block's weights are widened
    // once and its epilogue constants loaded once.
    while c0 < c {
        let lanes = (c - c0).min(16);
        let mask: __mmask16 = if lanes == 16 { 0xFFFF } else { (1u16 << lanes) - 1 };
        let mut wv = [_mm512_setzero_si512(); HELD];
        // Weights with a zero high half (for `vpdpwssd`) and their sum.
        let mut wz = [_mm512_setzero_si512(); HELD];
        let mut wsum = _mm512_setzero_si512();
        // SAFETY (whole block): masked loads/stores touch only lanes <
        // `lanes`, i.e. channels c0..c of a pixel's or tap's row of c
        // values, which `taps()` (or, for interior pixels, the window
        // being inside the image) keeps inside the tensors; the epilogue
        // slices have ≥ round_up(c, 16) entries (checked on entry).
        unsafe {
            if held {
                for t in 0..fh * fw {
                    let w8 = _mm_maskz_loadu_epi8(mask, filter.as_ptr().add(t * c + c0).cast());
                    wv[t] = _mm512_cvtepi8_epi32(w8);
                    wz[t] = _mm512_cvtepu16_epi32(_mm256_cvtepi8_epi16(w8));
                    wsum = _mm512_add_epi32(wsum, wv[t]);
                }
            }
            let corr = _mm512_loadu_si512(e.corr.as_ptr().add(c0).cast());
            // Interior windows: Σ w·(x + off) = Σ w·x + off·Σ w.
            let corr_in = _mm512_add_epi32(corr, _mm512_mullo_epi32(off, wsum));
            let m = _mm512_loadu_si512(e.multiplier.as_ptr().add(c0).cast());
            let ls = _mm512_loadu_si512(e.left_shift.as_ptr().add(c0).cast());
            let rs = _mm512_loadu_si512(e.right_shift.as_ptr().add(c0).cast());
            for b in 0..g.output_dims.n {
                for oy in 0..g.output_dims.h {
                    for ox in 0..g.output_dims.w {
                        let o = ((b * g.output_dims.h + oy) * g.output_dims.w + ox) * c + c0;
                        if held && interior(oy, ox) {
                            let py = oy * g.p.stride.0 - g.p.padding.0;
                            let px = ox * g.p.stride.1 - g.p.padding.1;
                            let base = input.as_ptr().add(((b * g.input_dims.h + py) * g.input_dims.w + px) * c + c0);
                            let mut acc = corr_in;
                            for (&to, w) in toff[..fh * fw].iter().zip(&wz) {
                                let xv = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, base.add(to).cast()));
                                // x fits in i16 and w's high half is 0: the
                                // pair sum is the exact product.
                                acc = _mm512_dpwssd_epi32(acc, xv, *w);
                            }
                            let v = _mm512_add_epi32(requant512_for(e.shifts_left, acc, m, ls, rs), zp);
                            let v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
                            _mm_mask_storeu_epi8(output.as_mut_ptr().add(o).cast(), mask, _mm512_cvtepi32_epi8(v));
                            continue;
                        }
                        let (ys, xs) = g.taps(oy, ox);
                        let mut acc = corr;
                        for ky in ys {
                            for kx in xs.clone() {
                                let xp = input.as_ptr().add(g.input_at(b, oy, ox, ky, kx) + c0);
                                let xv =
                                    _mm512_add_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, xp.cast())), off);
                                let t = ky * fw + kx;
                                let w = if held {
                                    wv[t]
                                } else {
                                    _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(
                                        mask,
                                        filter.as_ptr().add(t * c + c0).cast(),
                                    ))
                                };
                                acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(w, xv));
                            }
                        }
                        let v = _mm512_add_epi32(requant512_for(e.shifts_left, acc, m, ls, rs), zp);
                        let v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
                        _mm_mask_storeu_epi8(output.as_mut_ptr().add(o).cast(), mask, _mm512_cvtepi32_epi8(v));
                    }
                }
            }
        }
        c0 += 16;
    }
}

/// Pixels of 3 values widened to 4, the 4th `pad`, every byte flipped
/// (`^ 0x80`: the `u8` the indirect GEMM reads): `dst.len() == src.len() /
/// 3 · 4`. Four pixels per `pshufb` (AVX2 implies SSSE3).
pub(super) fn widen3to4_flipped(src: &[i8], dst: &mut [i8], pad: i8) {
    let pixels = dst.len() / 4;
    let mut x = 0;
    if has_avx2() && src.len() >= 3 * pixels {
        // SAFETY: the CPU has AVX2 (the callee bounds its own accesses).
        unsafe { x = widen3to4_ssse3(src, dst, pad, pixels) };
    }
    // Vector steps read 16 bytes at 3·x: the last pixels go scalar.
    for x in x..pixels {
        for (d, &v) in dst[4 * x..4 * x + 3].iter_mut().zip(&src[3 * x..3 * x + 3]) {
            *d = v ^ i8::MIN;
        }
        dst[4 * x + 3] = pad ^ i8::MIN;
    }
}

/// Widens while 16 bytes can be read; returns the pixels done.
#[target_feature(enable = "avx2")]
fn widen3to4_ssse3(src: &[i8], dst: &mut [i8], pad: i8, pixels: usize) -> usize {
    let shuf = _mm_setr_epi8(0, 1, 2, -128, 3, 4, 5, -128, 6, 7, 8, -128, 9, 10, 11, -128);
    let padv = _mm_setr_epi8(0, 0, 0, pad, 0, 0, 0, pad, 0, 0, 0, pad, 0, 0, 0, pad);
    let flip = _mm_set1_epi8(i8::MIN);
    let mut x = 0;
    while x + 4 <= pixels && 3 * x + 16 <= src.len() && 4 * x + 16 <= dst.len() {
        // SAFETY: src[3x .. 3x + 16] and dst[4x .. 4x + 16] are in bounds
        // (loop condition).
        unsafe {
            let v = _mm_loadu_si128(src.as_ptr().add(3 * x).cast());
            let w = _mm_xor_si128(_mm_or_si128(_mm_shuffle_epi8(v, shuf), padv), flip);
            _mm_storeu_si128(dst.as_mut_ptr().add(4 * x).cast(), w);
        }
        x += 4;
    }
    x
}

/// `out[i] = table[a[i] << 8 | b[i]]` (inputs as unsigned bytes), 16 at a
/// time with `vpgatherdd` (each gather reads 4 bytes: the table ends with 4
/// bytes of padding). Lengths checked by the caller.
pub(super) fn add_table_avx512(table: &[i8], a: &[i8], b: &[i8], out: &mut [i8]) {
    if !has_avx512vnni() || table.len() < 256 * 256 + 4 || a.len() != out.len() || b.len() != out.len() {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = table[usize::from(x as u8) << 8 | usize::from(y as u8)];
        }
        return;
    }
    // SAFETY: the CPU has the features; lengths checked just above.
    unsafe { add_table512(table, a, b, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
fn add_table512(table: &[i8], a: &[i8], b: &[i8], out: &mut [i8]) {
    let n = out.len();
    let mut i = 0;
    while i < n {
        let lanes = (n - i).min(16);
        let mask: __mmask16 = if lanes == 16 { 0xFFFF } else { (1u16 << lanes) - 1 };
        // SAFETY: masked loads and stores of lanes < n − i; gathered
        // indices are < 2^16 and each reads table[idx .. idx + 4], inside
        // the 2^16 + 4 bytes.
        unsafe {
            let x = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, a.as_ptr().add(i).cast()));
            let y = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, b.as_ptr().add(i).cast()));
            let idx = _mm512_or_si512(_mm512_slli_epi32::<8>(x), y);
            let v = _mm512_mask_i32gather_epi32::<1>(_mm512_setzero_si512(), mask, idx, table.as_ptr().cast());
            _mm_mask_storeu_epi8(out.as_mut_ptr().add(i).cast(), mask, _mm512_cvtepi32_epi8(v));
        }
        i += 16;
    }
}

/// Elementwise int8 ADD (TFLite `AddFunc`) on 16 lanes. Arguments checked by
/// the caller (`check_add`): equal lengths, shifts ≤ 0, left shift ≤ 22.
pub(super) fn add_avx512(p: &crate::reference::AddParams, a: &[i8], b: &[i8], out: &mut [i8]) {
    if !has_avx512vnni() || a.len() != out.len() || b.len() != out.len() {
        // The caller's checks passed, so the reference cannot fail here.
        let _ = crate::reference::add_i8(p, a, b, out);
        return;
    }
    // SAFETY: the CPU has the features (VBMI checked for the first); all
    // three slices have out.len() elements and the masked loads/stores stay
    // below it.
    unsafe { if has_avx512vbmi() { add512_vbmi(p, a, b, out) } else { add512(p, a, b, out) } }
}

/// Elementwise int8 ADD by byte-table lookups. Each input's rescaled term
/// (`RDP(SRDHM((x + offset) << left_shift, m), r)`, an i32) depends only
/// on its int8 value: both 256-entry tables are computed first, with the
/// kernel's own vector arithmetic, and kept as four byte planes each. Per
/// 64 elements, a plane lookup is two `vpermi2b` (128 entries each) and a
/// blend on the index's top bit; the four planes interleaved
/// (`interleave4`) rebuild the i32 terms in the lane order the depthwise
/// kernel uses, the output stage runs on their sum, and the saturating
/// packs put the bytes back in order. Three requantizations per element
/// become one per element plus byte permutes (the 64 KiB pair table's
/// gathers missed L1).
///
/// Exactness: the terms are those of [`add512`] (same arithmetic), the sum
/// wraps as the reference's does, `+ zp` wraps in 32 bits, and
/// `sat8(sat16(v))` then the clamp equals `clamp(v)` (the clamp lies inside
/// int8).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2")]
fn add512_vbmi(p: &crate::reference::AddParams, a: &[i8], b: &[i8], out: &mut [i8]) {
    let zero = _mm512_setzero_si512();
    let ls = _mm512_set1_epi32(p.left_shift);
    // planes[input][byte][value as u8]
    let mut planes = [[[0u8; 256]; 4]; 2];
    let inputs = [
        (p.input1_offset, p.input1_multiplier, p.input1_shift),
        (p.input2_offset, p.input2_multiplier, p.input2_shift),
    ];
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (table, &(off, m, shift)) in planes.iter_mut().zip(&inputs) {
        let (off, m, r) = (_mm512_set1_epi32(off), _mm512_set1_epi32(m), _mm512_set1_epi32(-shift));
        for chunk in 0..16 {
            // Indices 16·chunk.. as u8, their int8 values sign-extended.
            let idx = _mm512_add_epi32(_mm512_set1_epi32(16 * chunk as i32), iota);
            let x = _mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(idx));
            let t = requant512(_mm512_sllv_epi32(_mm512_add_epi32(x, off), ls), m, zero, r);
            for (j, plane) in table.iter_mut().enumerate() {
                let bytes = _mm512_cvtepi32_epi8(_mm512_srlv_epi32(t, _mm512_set1_epi32(8 * j as i32)));
                // SAFETY: 16 bytes at 16·chunk ≤ 240 of a 256-byte plane.
                unsafe { _mm_storeu_si128(plane.as_mut_ptr().add(16 * chunk).cast(), bytes) };
            }
        }
    }
    let (mo, ro) = (_mm512_set1_epi32(p.output_multiplier), _mm512_set1_epi32(-p.output_shift));
    let zp = _mm512_set1_epi32(p.output_offset);
    let lo = _mm512_set1_epi8(p.clamp.min);
    let hi = _mm512_set1_epi8(p.clamp.max);
    // One plane's 256 entries looked up for 64 indices.
    let lookup = |plane: &[u8; 256], idx: __m512i, top: __mmask64| {
        // SAFETY: four 64-byte loads inside the 256-byte plane.
        let t: [__m512i; 4] =
            core::array::from_fn(|q| unsafe { _mm512_loadu_si512(plane.as_ptr().add(64 * q).cast()) });
        let low = _mm512_permutex2var_epi8(t[0], idx, t[1]);
        let high = _mm512_permutex2var_epi8(t[2], idx, t[3]);
        _mm512_mask_blend_epi8(top, low, high)
    };
    let n = out.len();
    let mut i = 0;
    while i < n {
        let lanes = (n - i).min(64);
        let mask: __mmask64 = if lanes == 64 { !0 } else { (1u64 << lanes) - 1 };
        // SAFETY: masked loads and stores of lanes < n − i, inside all three
        // slices (equal lengths, checked by the caller).
        unsafe {
            let xa = _mm512_maskz_loadu_epi8(mask, a.as_ptr().add(i).cast());
            let xb = _mm512_maskz_loadu_epi8(mask, b.as_ptr().add(i).cast());
            let (ta, tb) = (_mm512_movepi8_mask(xa), _mm512_movepi8_mask(xb));
            let va = interleave4(core::array::from_fn(|j| lookup(&planes[0][j], xa, ta)));
            let vb = interleave4(core::array::from_fn(|j| lookup(&planes[1][j], xb, tb)));
            let r: [__m512i; 4] = core::array::from_fn(|k| {
                _mm512_add_epi32(requant512(_mm512_add_epi32(va[k], vb[k]), mo, zero, ro), zp)
            });
            let p01 = _mm512_packs_epi32(r[0], r[1]);
            let p23 = _mm512_packs_epi32(r[2], r[3]);
            let v = _mm512_min_epi8(_mm512_max_epi8(_mm512_packs_epi16(p01, p23), lo), hi);
            _mm512_mask_storeu_epi8(out.as_mut_ptr().add(i).cast(), mask, v);
        }
        i += 64;
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
fn add512(p: &crate::reference::AddParams, a: &[i8], b: &[i8], out: &mut [i8]) {
    let n = out.len();
    let off1 = _mm512_set1_epi32(p.input1_offset);
    let off2 = _mm512_set1_epi32(p.input2_offset);
    let ls = _mm512_set1_epi32(p.left_shift);
    let zero = _mm512_setzero_si512();
    let (m1, r1) = (_mm512_set1_epi32(p.input1_multiplier), _mm512_set1_epi32(-p.input1_shift));
    let (m2, r2) = (_mm512_set1_epi32(p.input2_multiplier), _mm512_set1_epi32(-p.input2_shift));
    let (mo, ro) = (_mm512_set1_epi32(p.output_multiplier), _mm512_set1_epi32(-p.output_shift));
    let zp = _mm512_set1_epi32(p.output_offset);
    let lo = _mm512_set1_epi32(i32::from(p.clamp.min));
    let hi = _mm512_set1_epi32(i32::from(p.clamp.max));
    let mut i = 0;
    while i < n {
        let lanes = (n - i).min(16);
        let mask: __mmask16 = if lanes == 16 { 0xFFFF } else { (1u16 << lanes) - 1 };
        // SAFETY: lanes < n - i are inside all three slices.
        unsafe {
            let x = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, a.as_ptr().add(i).cast()));
            let y = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, b.as_ptr().add(i).cast()));
            let x = requant512(_mm512_sllv_epi32(_mm512_add_epi32(x, off1), ls), m1, zero, r1);
            let y = requant512(_mm512_sllv_epi32(_mm512_add_epi32(y, off2), ls), m2, zero, r2);
            let v = _mm512_add_epi32(requant512(_mm512_add_epi32(x, y), mo, zero, ro), zp);
            let v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
            _mm_mask_storeu_epi8(out.as_mut_ptr().add(i).cast(), mask, _mm512_cvtepi32_epi8(v));
        }
        i += 16;
    }
}

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
            let v = requant512(_mm512_add_epi32(acc[j], corr), m, ls, rs);
            let v = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(v, zp), lo), hi);
            let bytes = _mm512_cvtepi32_epi8(v);
            // SAFETY: out has R·n bytes; row r, channels c0..c0+lanes.
            unsafe { _mm_mask_storeu_epi8(out.as_mut_ptr().add(r * n + c0).cast(), mask, bytes) };
        }
    }
}

/// The indirect GEMM: row `r`'s depth group `q` is the 4 bytes at
/// `base[offs[r] + qoff[q]]` (int8, flipped to `u8` in-register). Returns
/// false, writing nothing, if an offset would leave `base` or the shapes
/// disagree.
pub(super) fn gemm_indirect_avx512vnni(
    base: &[i8],
    offs: &[usize],
    qoff: &[usize],
    packed: &PackedFilter<'_>,
    e: &Epilogue,
    out: &mut [i8],
) -> bool {
    let n = packed.n;
    let k4 = qoff.len();
    let last = qoff.last().copied().unwrap_or(0);
    let ok = has_avx512vnni()
        && (1..=super::MR_INDIRECT).contains(&offs.len())
        && k4 * PACK_K == packed.k
        && n <= MAX_N
        && packed.data.len() == n.div_ceil(PACK_N) * k4 * PACK_N * PACK_K
        && out.len() == offs.len() * n
        && e.len() >= n.div_ceil(PACK_N) * PACK_N
        && qoff.windows(2).all(|w| w[0] <= w[1])
        && offs
            .iter()
            .all(|&o| o.checked_add(last).and_then(|e| e.checked_add(PACK_K)).is_some_and(|e| e <= base.len()));
    if !ok {
        return false;
    }
    let nb = n.div_ceil(PACK_N);
    // SAFETY: features checked; every read base[offs[r] + qoff[q] .. +4] is
    // in bounds (qoff is increasing and its last entry checked per row);
    // packed/out lengths checked above.
    unsafe {
        let mut b = 0;
        macro_rules! rows {
            ($r:literal) => {{
                while b + 1 < nb {
                    block_indirect::<$r, 2>(base, offs, qoff, packed, e, out, b);
                    b += 2;
                }
                if b < nb {
                    block_indirect::<$r, 1>(base, offs, qoff, packed, e, out, b);
                }
            }};
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

/// [`block_vnni`] reading patches through offsets.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
#[inline]
#[allow(clippy::too_many_arguments)]
fn block_indirect<const R: usize, const B: usize>(
    base: &[i8],
    offs: &[usize],
    qoff: &[usize],
    packed: &PackedFilter<'_>,
    e: &Epilogue,
    out: &mut [i8],
    b0: usize,
) {
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
    // caller (`gemm_indirect_avx512vnni`).
    unsafe {
        for (q, &qo) in qoff.iter().enumerate() {
            let mut wv = [_mm512_setzero_si512(); B];
            for (j, wv) in wv.iter_mut().enumerate() {
                *wv = _mm512_loadu_si512(w.add(((b0 + j) * k4 + q) * 64).cast());
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let v = core::ptr::read_unaligned(rows[r].add(qo).cast::<i32>());
                let a = _mm512_xor_si512(_mm512_set1_epi32(v), flip);
                for (acc, wv) in acc.iter_mut().zip(&wv) {
                    *acc = _mm512_dpbusd_epi32(*acc, a, *wv);
                }
            }
        }
    }
    store_blocks::<R, B>(&acc, n, e, out, b0);
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
            let v = requant512(_mm512_add_epi32(acc[j], corr), m, ls, rs);
            let v = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(v, zp), lo), hi);
            let bytes = _mm512_cvtepi32_epi8(v);
            // SAFETY: (r + 1)·n ≤ out.len(); channels c0..c0+lanes ≤ n.
            unsafe { _mm_mask_storeu_epi8(out.as_mut_ptr().add(r * n + c0).cast(), mask, bytes) };
        }
    }
}

/// TFLite `MultiplyByQuantizedMultiplier` (double rounding) on 16 lanes:
/// `RoundingDivideByPOT(SRDHM(x << ls, m), rs)`. SRDHM is `(x·m + 2^30) >> 31`
/// (equal to gemmlowp's nudge-and-truncate for every `m ≥ 0`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
#[inline]
fn requant512(x: __m512i, m: __m512i, ls: __m512i, rs: __m512i) -> __m512i {
    let x = _mm512_sllv_epi32(x, ls);
    let nudge = _mm512_set1_epi64(1 << 30);
    let even = _mm512_srli_epi64::<31>(_mm512_add_epi64(_mm512_mul_epi32(x, m), nudge));
    let odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64::<32>(x), _mm512_srli_epi64::<32>(m)), nudge);
    let odd = _mm512_slli_epi64::<32>(_mm512_srli_epi64::<31>(odd));
    let h = _mm512_mask_blend_epi32(0xAAAA, even, odd);
    let one = _mm512_set1_epi32(1);
    let mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, rs), one);
    let rem = _mm512_and_si512(h, mask);
    let thr = _mm512_add_epi32(_mm512_srli_epi32::<1>(mask), _mm512_srli_epi32::<31>(h));
    let q = _mm512_srav_epi32(h, rs);
    _mm512_mask_add_epi32(q, _mm512_cmpgt_epi32_mask(rem, thr), q, one)
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
    unsafe { depthwise512(g, input, filter, e, output) }
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
                            let v = _mm512_add_epi32(requant512(acc, m, ls, rs), zp);
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
                        let v = _mm512_add_epi32(requant512(acc, m, ls, rs), zp);
                        let v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
                        _mm_mask_storeu_epi8(output.as_mut_ptr().add(o).cast(), mask, _mm512_cvtepi32_epi8(v));
                    }
                }
            }
        }
        c0 += 16;
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
    // SAFETY: the CPU has the features; all three slices have out.len()
    // elements and the masked loads/stores stay below it.
    unsafe { add512(p, a, b, out) }
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

//! 32-bit Arm DSP-extension fast paths (`smlad`, `sxtb16`, `smmlar`, `qadd`,
//! `ssat`): Cortex-M4/M7 firmware and ARMv7-A. Microcontrollers have no
//! allocator, so these read the package's OHWI weights directly (CMSIS-NN
//! style, no packing) and keep their scratch on the stack.
//!
//! - **Convolution and fully connected**: an int8 GEMM. The patches of 7
//!   output pixels are gathered ("im2col") into an `i16` stack buffer with the
//!   input offset already added (taps in the padding are 0), interleaved by
//!   groups of 4 depth values and in the element order `sxtb16` produces:
//!   for depth `4g..4g+4` of pixel `q`, the words `[x0, x2]` and `[x1, x3]`
//!   (as CMSIS-NN's `arm_nn_mat_mult_kernel_s8_s16` reorders them). Each
//!   output channel's weight row is then read 4 bytes at a time, split with
//!   `sxtb16` / `sxtb16 ror #8` into `[w0, w2]`, `[w1, w3]`, and multiplied
//!   into 7 accumulators with `smlad` (the hand-written loop in [`dot7`]:
//!   `ldr`, 2 × `sxtb16`, 7 × (`ldrd` + 2 × `smlad`) per 4 depth values, 24
//!   instructions for 28 MACs). Fewer than 7 pixels (the last block, or deep
//!   layers whose 7 patches do not fit the buffer) go through the same
//!   arithmetic in Rust ([`dot_n`]).
//! - **Depthwise** (multiplier 1): per channel, the rows of the input the
//!   outputs need are converted to a planar `i16` buffer ("planes", 4
//!   channels at a time with `sxtb16` and `pkhbt`/`pkhtb`), padding filled
//!   with the input zero point, so that two horizontally adjacent taps are
//!   one 32-bit load and one `smlad`. `Σ w·(x + off)` is computed as
//!   `Σ w·x' + off·Σ w` over every tap, `x'` the zero point in the padding:
//!   the same value modulo 2^32 as the reference, which skips those taps.
//!   3-wide kernels with stride 1 or 2 have their own loops.
//! - **Output stage**: TFLite's double rounding, exactly. `SRDHM(x, m)` is
//!   one `smmlar x, 2m, x` (for `m ≥ 2^30`, `2m` read as signed is `2m −
//!   2^32`, so the product plus `x·2^32` is `2xm`; `smmlar` adds `2^31` and
//!   keeps the high word, which is `SRDHM`'s rounding). The rounding right
//!   shift and the output offset are `qadd(s − [s < 0], 2^(r−1) + off·2^r)`
//!   then `asr r`; where the saturating add saturates, the exact result is
//!   beyond the int8 range by at least 2^(31−r) − 1 − 127 ≥ 0 for `r ≤ 24`,
//!   so the clamp gives the same byte. Other multipliers and shifts (`m <
//!   2^30`, right shift 0 or above 24) use [`multiply_by_quantized_multiplier`]
//!   as the reference does.
//!
//! Arguments are validated with the reference's own checks, in the
//! reference's order, so errors are identical; grouped convolution and depth
//! multipliers above 1 go to the reference. Nothing here panics on valid or
//! invalid input or allocates. Stack: the im2col buffer is 8 KiB
//! ([`COL_WORDS`]), the depthwise planes 8 KiB ([`PLANE`]); a layer uses one
//! of them, plus a few hundred bytes of frames.
//!
//! Every `unsafe` block is either one DSP instruction in `asm!` (available:
//! this module is only built with `cfg(edgefleet_dsp)`, which `build.rs` sets
//! for targets that have the extension), the hand-written loop [`dot7`], or
//! an unaligned load or store whose bounds the code around it established
//! (each says how).
#![allow(unsafe_code)]

use crate::reference::{self, ConvParams, DepthwiseParams, FullyConnectedParams};
use crate::{Dims4, KernelError, Requant};

/// The DSP extension is in the build: `build.rs` sets `cfg(edgefleet_dsp)`
/// for `thumbv7em-*` (Cortex-M4/M7) and ARMv7-A targets (chosen at compile
/// time; 32-bit Arm target features are not visible to `cfg` on stable).
pub(super) fn has_dsp() -> bool {
    cfg!(edgefleet_dsp)
}

/// As [`reference::conv2d_i8`].
#[allow(clippy::too_many_arguments)]
pub(super) fn conv2d_i8(
    p: &ConvParams,
    input_dims: Dims4,
    input: &[i8],
    filter_dims: Dims4,
    filter: &[i8],
    bias: Option<&[i32]>,
    requant: Requant<'_>,
    output_dims: Dims4,
    output: &mut [i8],
) -> Result<(), KernelError> {
    #[cfg(edgefleet_dsp)]
    {
        dsp::conv2d_i8(p, input_dims, input, filter_dims, filter, bias, requant, output_dims, output)
    }
    #[cfg(not(edgefleet_dsp))]
    {
        reference::conv2d_i8(p, input_dims, input, filter_dims, filter, bias, requant, output_dims, output)
    }
}

/// As [`reference::depthwise_conv2d_i8`].
#[allow(clippy::too_many_arguments)]
pub(super) fn depthwise_conv2d_i8(
    p: &DepthwiseParams,
    input_dims: Dims4,
    input: &[i8],
    filter_dims: Dims4,
    filter: &[i8],
    bias: Option<&[i32]>,
    requant: Requant<'_>,
    output_dims: Dims4,
    output: &mut [i8],
) -> Result<(), KernelError> {
    #[cfg(edgefleet_dsp)]
    {
        dsp::depthwise_conv2d_i8(p, input_dims, input, filter_dims, filter, bias, requant, output_dims, output)
    }
    #[cfg(not(edgefleet_dsp))]
    {
        reference::depthwise_conv2d_i8(p, input_dims, input, filter_dims, filter, bias, requant, output_dims, output)
    }
}

/// As [`reference::fully_connected_i8`].
#[allow(clippy::too_many_arguments)]
pub(super) fn fully_connected_i8(
    p: &FullyConnectedParams,
    batches: usize,
    input: &[i8],
    filter_dims: (usize, usize),
    filter: &[i8],
    bias: Option<&[i32]>,
    requant: Requant<'_>,
    output: &mut [i8],
) -> Result<(), KernelError> {
    #[cfg(edgefleet_dsp)]
    {
        dsp::fully_connected_i8(p, batches, input, filter_dims, filter, bias, requant, output)
    }
    #[cfg(not(edgefleet_dsp))]
    {
        reference::fully_connected_i8(p, batches, input, filter_dims, filter, bias, requant, output)
    }
}

#[cfg(edgefleet_dsp)]
mod dsp {
    use super::reference;
    use crate::quant::multiply_by_quantized_multiplier;
    use crate::reference::common::{
        check_bias, check_clamp, check_input_offset, check_len, check_len2, check_positive, check_requant,
        check_window, check_zero_point,
    };
    use crate::reference::{ConvParams, DepthwiseParams, FullyConnectedParams};
    use crate::{Clamp, Dims4, KernelError, Requant};
    use core::arch::asm;

    // -----------------------------------------------------------------------
    // The DSP instructions
    // -----------------------------------------------------------------------

    /// `acc + lo(a)·lo(b) + hi(a)·hi(b)` (signed halfwords), wrapping.
    #[inline(always)]
    fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        let r: i32;
        // SAFETY: one register-to-register DSP instruction (in the build, see
        // the module docs); no memory or stack; it may set the sticky Q flag.
        unsafe {
            asm!("smlad {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, c = in(reg) acc,
                options(pure, nomem, nostack));
        }
        r
    }

    /// `acc + lo(a)·hi(b)`, wrapping.
    #[inline(always)]
    fn smlabt(a: u32, b: u32, acc: i32) -> i32 {
        let r: i32;
        // SAFETY: as for `smlad`.
        unsafe {
            asm!("smlabt {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, c = in(reg) acc,
                options(pure, nomem, nostack));
        }
        r
    }

    /// `acc + hi(a)·lo(b)`, wrapping.
    #[inline(always)]
    fn smlatb(a: u32, b: u32, acc: i32) -> i32 {
        let r: i32;
        // SAFETY: as for `smlad`.
        unsafe {
            asm!("smlatb {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, c = in(reg) acc,
                options(pure, nomem, nostack));
        }
        r
    }

    /// Bytes 0 and 2 of `v`, sign-extended to the low and high halfword.
    #[inline(always)]
    fn sxtb16(v: u32) -> u32 {
        let r: u32;
        // SAFETY: one register-to-register DSP instruction; no memory, no flags.
        unsafe {
            asm!("sxtb16 {r}, {v}", r = lateout(reg) r, v = in(reg) v,
                options(pure, nomem, nostack, preserves_flags));
        }
        r
    }

    /// Bytes 1 and 3 of `v`, sign-extended to the low and high halfword.
    #[inline(always)]
    fn sxtb16_ror8(v: u32) -> u32 {
        let r: u32;
        // SAFETY: as for `sxtb16`.
        unsafe {
            asm!("sxtb16 {r}, {v}, ror #8", r = lateout(reg) r, v = in(reg) v,
                options(pure, nomem, nostack, preserves_flags));
        }
        r
    }

    /// Halfword-wise `a + b`, wrapping.
    #[inline(always)]
    fn sadd16(a: u32, b: u32) -> u32 {
        let r: u32;
        // SAFETY: one register-to-register DSP instruction; sets the GE flags.
        unsafe {
            asm!("sadd16 {r}, {a}, {b}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b,
                options(pure, nomem, nostack));
        }
        r
    }

    /// `[lo(a), lo(b)]`.
    #[inline(always)]
    fn pkhbt(a: u32, b: u32) -> u32 {
        let r: u32;
        // SAFETY: as for `sxtb16`.
        unsafe {
            asm!("pkhbt {r}, {a}, {b}, lsl #16", r = lateout(reg) r, a = in(reg) a, b = in(reg) b,
                options(pure, nomem, nostack, preserves_flags));
        }
        r
    }

    /// `[hi(b), hi(a)]`.
    #[inline(always)]
    fn pkhtb(a: u32, b: u32) -> u32 {
        let r: u32;
        // SAFETY: as for `sxtb16`.
        unsafe {
            asm!("pkhtb {r}, {a}, {b}, asr #16", r = lateout(reg) r, a = in(reg) a, b = in(reg) b,
                options(pure, nomem, nostack, preserves_flags));
        }
        r
    }

    /// `(c·2^32 + a·b + 2^31) >> 32`, exactly (64-bit intermediate).
    #[inline(always)]
    fn smmlar(a: i32, b: i32, c: i32) -> i32 {
        let r: i32;
        // SAFETY: as for `sxtb16`.
        unsafe {
            asm!("smmlar {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, c = in(reg) c,
                options(pure, nomem, nostack, preserves_flags));
        }
        r
    }

    /// `a + b`, saturating.
    #[inline(always)]
    fn qadd(a: i32, b: i32) -> i32 {
        let r: i32;
        // SAFETY: one register-to-register instruction; may set the Q flag.
        unsafe {
            asm!("qadd {r}, {a}, {b}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b,
                options(pure, nomem, nostack));
        }
        r
    }

    /// `x` saturated to `-128..=127`.
    #[inline(always)]
    fn ssat8(x: i32) -> i32 {
        let r: i32;
        // SAFETY: one register-to-register instruction; may set the Q flag.
        unsafe {
            asm!("ssat {r}, #8, {x}", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack));
        }
        r
    }

    /// `x >> s` (arithmetic), `s` in `0..32` (no masking instruction, unlike
    /// Rust's `>>` with a run-time amount).
    #[inline(always)]
    fn asr(x: i32, s: u32) -> i32 {
        let r: i32;
        // SAFETY: as for `sxtb16`.
        unsafe {
            asm!("asr {r}, {x}, {s}", r = lateout(reg) r, x = in(reg) x, s = in(reg) s,
                options(pure, nomem, nostack, preserves_flags));
        }
        r
    }

    /// Two `i16` as one word, `lo` in the low half.
    #[inline(always)]
    fn pack(lo: i32, hi: i32) -> u32 {
        u32::from(lo as u16) | (u32::from(hi as u16) << 16)
    }

    // -----------------------------------------------------------------------
    // Output stage
    // -----------------------------------------------------------------------

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Mode {
        /// `smmlar` + `qadd` + `asr`, then `ssat` (the clamp is the int8 range).
        FastFull,
        /// As `FastFull`, then the layer's clamp.
        FastClamp,
        /// [`multiply_by_quantized_multiplier`] as in the reference.
        Exact,
    }

    /// The layer's output offset and clamp.
    #[derive(Clone, Copy)]
    struct OutParams {
        offset: i32,
        clamp: Clamp,
    }

    /// One channel's output stage: `clamp(MBQM(acc, m, shift) + offset)`.
    #[derive(Clone, Copy)]
    struct Rq {
        multiplier: i32,
        shift: i32,
        /// `2m` as a signed word (`2m − 2^32`).
        m2: i32,
        /// `2^(r−1) + offset·2^r`.
        cp: i32,
        /// The right shift `r`.
        rs: u32,
        mode: Mode,
        out: OutParams,
    }

    impl Rq {
        #[inline]
        fn new(requant: &Requant<'_>, channel: usize, out: OutParams) -> Rq {
            let i = if requant.multiplier.len() == 1 { 0 } else { channel };
            let multiplier = requant.multiplier.get(i).copied().unwrap_or(0);
            let shift = requant.shift.get(i).copied().unwrap_or(0);
            let rs = if shift < 0 { shift.unsigned_abs() } else { 0 };
            let fast = multiplier >= 1 << 30 && (1..=24).contains(&rs);
            let full = out.clamp.min == i8::MIN && out.clamp.max == i8::MAX;
            let mode = match (fast, full) {
                (false, _) => Mode::Exact,
                (true, true) => Mode::FastFull,
                (true, false) => Mode::FastClamp,
            };
            let (m2, cp) = if fast {
                // 2^(r−1) + offset·2^r: |offset| ≤ 128 and r ≤ 24 keep it in i32.
                ((multiplier as u32).wrapping_shl(1) as i32, (1i32 << (rs - 1)).wrapping_add(out.offset << rs))
            } else {
                (0, 0)
            };
            Rq { multiplier, shift, m2, cp, rs, mode, out }
        }

        /// `MBQM(acc) + offset` (fast modes), possibly saturated where the
        /// clamp makes no difference (see the module docs).
        #[inline(always)]
        fn fast(&self, acc: i32) -> i32 {
            // SRDHM(acc, m) for m ≥ 2^30.
            let s = smmlar(acc, self.m2, acc);
            // s − [s < 0]: s > i32::MIN (|SRDHM| < 2^31), no overflow.
            let u = s.wrapping_add(s >> 31);
            asr(qadd(u, self.cp), self.rs)
        }

        #[inline(always)]
        fn fast_full(&self, acc: i32) -> i8 {
            ssat8(self.fast(acc)) as i8
        }

        #[inline(always)]
        fn fast_clamp(&self, acc: i32) -> i8 {
            self.fast(acc).max(i32::from(self.out.clamp.min)).min(i32::from(self.out.clamp.max)) as i8
        }

        /// The reference's output stage, operation for operation.
        #[inline(never)]
        fn exact(&self, acc: i32) -> i8 {
            let v = multiply_by_quantized_multiplier(acc, self.multiplier, self.shift).wrapping_add(self.out.offset);
            v.max(i32::from(self.out.clamp.min)).min(i32::from(self.out.clamp.max)) as i8
        }
    }

    // -----------------------------------------------------------------------
    // GEMM: convolution and fully connected
    // -----------------------------------------------------------------------

    /// Pixels per block of the hand-written kernel.
    const SLOTS: usize = 7;
    /// Words of the im2col buffer (8 KiB on the stack).
    const COL_WORDS: usize = 2048;

    /// The im2col buffer; 8-byte aligned for `ldrd`.
    #[repr(C, align(8))]
    struct ColBuf([u32; COL_WORDS]);

    /// Pixels per block for depth `k`: 7 if their patches fit the buffer,
    /// else as many as fit (0: the layer is too deep for the buffer).
    fn slots_for(k: usize) -> usize {
        match k.div_ceil(4) {
            0 => SLOTS,
            groups => (COL_WORDS / (2 * groups)).min(SLOTS),
        }
    }

    /// Writes one pixel's patch (`k` values plus the input offset) into its
    /// slot of the interleaved buffer: group `g` (depth `4g..4g+4`) of slot
    /// `q` is the words `buf[2(g·slots + q)]` = `[x0, x2]` and `+ 1` = `[x1,
    /// x3]`; a partial last group is padded with zeros.
    struct PatchWriter<'a> {
        buf: &'a mut [u32],
        /// Word index of the next group.
        pos: usize,
        stride: usize,
        offset: i32,
        offset2: u32,
        stage: [i32; 4],
        staged: usize,
    }

    impl<'a> PatchWriter<'a> {
        fn new(buf: &'a mut [u32], slots: usize, q: usize, offset: i32) -> Self {
            PatchWriter {
                buf,
                pos: 2 * q,
                stride: 2 * slots,
                offset,
                offset2: pack(offset, offset),
                stage: [0; 4],
                staged: 0,
            }
        }

        #[inline(always)]
        fn put(&mut self, a: u32, b: u32) {
            if let Some(d) = self.buf.get_mut(self.pos..self.pos + 2) {
                d[0] = a;
                d[1] = b;
            }
            self.pos += self.stride;
        }

        /// Appends input values (the offset is added here).
        #[inline]
        fn values(&mut self, src: &[i8]) {
            let mut rest = src;
            if self.staged == 0 {
                let words = src.chunks_exact(4);
                rest = words.remainder();
                for w in words {
                    let v = u32::from_le_bytes([w[0] as u8, w[1] as u8, w[2] as u8, w[3] as u8]);
                    self.put(sadd16(sxtb16(v), self.offset2), sadd16(sxtb16_ror8(v), self.offset2));
                }
            }
            for &x in rest {
                self.push(i32::from(x) + self.offset);
            }
        }

        /// Appends `n` zeros (taps in the padding).
        #[inline]
        fn zeros(&mut self, mut n: usize) {
            while self.staged != 0 && n > 0 {
                self.push(0);
                n -= 1;
            }
            for _ in 0..n / 4 {
                self.put(0, 0);
            }
            for _ in 0..n % 4 {
                self.push(0);
            }
        }

        #[inline]
        fn push(&mut self, v: i32) {
            self.stage[self.staged & 3] = v;
            self.staged += 1;
            if self.staged == 4 {
                let s = self.stage;
                self.put(pack(s[0], s[2]), pack(s[1], s[3]));
                self.staged = 0;
            }
        }

        /// Pads a partial last group with zeros.
        fn finish(&mut self) {
            while self.staged != 0 {
                self.push(0);
            }
        }
    }

    /// A validated `[n, k]` layer: weights (OHWI rows), bias, requantization.
    struct Gemm<'a> {
        n: usize,
        k: usize,
        filter: &'a [i8],
        bias: Option<&'a [i32]>,
        requant: Requant<'a>,
        out: OutParams,
    }

    impl Gemm<'_> {
        /// `output[pix·n + c]` for every pixel, `fill(buf, slots, q, pix)`
        /// writing the patch of pixel `pix` into slot `q` (see
        /// [`PatchWriter`]). `slots_for(k) ≥ 1` and `output.len() ≥ pixels·n`.
        fn run(&self, pixels: usize, mut fill: impl FnMut(&mut [u32], usize, usize, usize), output: &mut [i8]) {
            let slots = slots_for(self.k);
            let mut buf = ColBuf([0; COL_WORDS]);
            let mut pix = 0;
            while pix < pixels {
                let np = slots.min(pixels - pix);
                let used = (self.k.div_ceil(4) * 2 * np).min(COL_WORDS);
                let xs = &mut buf.0[..used];
                for q in 0..np {
                    fill(xs, np, q, pix + q);
                }
                let Some(out) = output.get_mut(pix * self.n..(pix + np) * self.n) else { return };
                match np {
                    7 => self.block::<7>(xs, out),
                    6 => self.block::<6>(xs, out),
                    5 => self.block::<5>(xs, out),
                    4 => self.block::<4>(xs, out),
                    3 => self.block::<3>(xs, out),
                    2 => self.block::<2>(xs, out),
                    _ => self.block::<1>(xs, out),
                }
                pix += np;
            }
        }

        /// All channels of `N` pixels whose patches are in `xs`.
        #[inline(never)]
        fn block<const N: usize>(&self, xs: &[u32], out: &mut [i8]) {
            let (n, k) = (self.n, self.k);
            let groups = k / 4;
            let tail = k % 4;
            if xs.len() < k.div_ceil(4) * 2 * N || out.len() < N * n {
                return;
            }
            for ch in 0..n {
                let row = self.filter.get(ch * k..(ch + 1) * k).unwrap_or(&[]);
                let b = self.bias.and_then(|b| b.get(ch)).copied().unwrap_or(0);
                let mut acc = [b; N];
                if N == SLOTS {
                    // SAFETY: `row` has k ≥ 4·groups bytes; `xs` has
                    // ceil(k/4)·2·7 ≥ groups·14 words and is 8-byte aligned
                    // (a prefix of `ColBuf`).
                    let a = unsafe { dot7(row.as_ptr(), xs.as_ptr(), groups, b) };
                    for (d, s) in acc.iter_mut().zip(a) {
                        *d = s;
                    }
                } else {
                    dot_n(row, xs, groups, &mut acc);
                }
                if tail != 0 {
                    let mut w = [0u8; 4];
                    for (d, &s) in w.iter_mut().zip(row.get(groups * 4..).unwrap_or(&[])) {
                        *d = s as u8;
                    }
                    step(u32::from_le_bytes(w), xs.get(groups * 2 * N..).unwrap_or(&[]), &mut acc);
                }
                let rq = Rq::new(&self.requant, ch, self.out);
                let rows = out.chunks_exact_mut(n).zip(acc);
                match rq.mode {
                    Mode::FastFull => rows.for_each(|(o, a)| o[ch] = rq.fast_full(a)),
                    Mode::FastClamp => rows.for_each(|(o, a)| o[ch] = rq.fast_clamp(a)),
                    Mode::Exact => rows.for_each(|(o, a)| o[ch] = rq.exact(a)),
                }
            }
        }
    }

    /// One group of 4 depth values (`w` the 4 weights) into `N` accumulators.
    #[inline(always)]
    fn step<const N: usize>(w: u32, x: &[u32], acc: &mut [i32; N]) {
        let (wa, wb) = (sxtb16(w), sxtb16_ror8(w));
        for (a, x) in acc.iter_mut().zip(x.chunks_exact(2)) {
            *a = smlad(wb, x[1], smlad(wa, x[0], *a));
        }
    }

    /// `groups` groups of `row` against `N` interleaved patches.
    #[inline(always)]
    fn dot_n<const N: usize>(row: &[i8], xs: &[u32], groups: usize, acc: &mut [i32; N]) {
        for (w, x) in row.chunks_exact(4).zip(xs.chunks_exact(2 * N)).take(groups) {
            step(u32::from_le_bytes([w[0] as u8, w[1] as u8, w[2] as u8, w[3] as u8]), x, acc);
        }
    }

    /// One group of 4 depth values for 7 pixels: weights at `r0`, patches at
    /// `r1`; accumulators r6, r7, r8, r9, r10, r11, lr.
    macro_rules! step7 {
        () => {
            concat!(
                "ldr r4, [r0], #4\n",
                "sxtb16 r5, r4, ror #8\n",
                "sxtb16 r4, r4\n",
                "ldrd r2, r3, [r1], #8\n",
                "smlad r6, r4, r2, r6\n",
                "smlad r6, r5, r3, r6\n",
                "ldrd r2, r3, [r1], #8\n",
                "smlad r7, r4, r2, r7\n",
                "smlad r7, r5, r3, r7\n",
                "ldrd r2, r3, [r1], #8\n",
                "smlad r8, r4, r2, r8\n",
                "smlad r8, r5, r3, r8\n",
                "ldrd r2, r3, [r1], #8\n",
                "smlad r9, r4, r2, r9\n",
                "smlad r9, r5, r3, r9\n",
                "ldrd r2, r3, [r1], #8\n",
                "smlad r10, r4, r2, r10\n",
                "smlad r10, r5, r3, r10\n",
                "ldrd r2, r3, [r1], #8\n",
                "smlad r11, r4, r2, r11\n",
                "smlad r11, r5, r3, r11\n",
                "ldrd r2, r3, [r1], #8\n",
                "smlad lr, r4, r2, lr\n",
                "smlad lr, r5, r3, lr\n",
            )
        };
    }

    /// `bias + Σ_{g < groups} dot(w[4g..4g+4], patch_q[g])` for the 7 pixels
    /// `q` of an interleaved buffer (slot stride 7), two groups per
    /// iteration.
    ///
    /// Uses all 14 general registers: r0–r5, r8–r10, r12 and lr as operands,
    /// and r6, r7 and r11 (which `asm!` does not hand out: base and frame
    /// pointers) saved on the stack and restored. The register choices work
    /// in both ARM and Thumb-2 state (`ldrd` takes an even/odd pair in ARM).
    ///
    /// # Safety
    /// `w` must be readable for `4·groups` bytes (any alignment) and `x`
    /// readable for `56·groups` bytes and 4-byte aligned.
    #[inline(always)]
    unsafe fn dot7(w: *const i8, x: *const u32, groups: usize, bias: i32) -> [i32; 7] {
        let (a0, a1, a2, a3, a4, a5, a6): (i32, i32, i32, i32, i32, i32, i32);
        // SAFETY: reads `4·groups` bytes from `w` (`ldr` allows any
        // alignment) and `56·groups` bytes from `x` (`ldrd`, 4-byte aligned),
        // which the caller guarantees; r6, r7 and r11 are pushed and popped
        // (8-byte-unaligned stack only inside the block, no calls); flags are
        // clobbered (no `preserves_flags`).
        unsafe {
            asm!(
                "push {{r6, r7, r11}}",
                "mov r6, r8",
                "mov r7, r8",
                "mov r9, r8",
                "mov r10, r8",
                "mov r11, r8",
                "mov lr, r8",
                // C = odd group count, Z = no pairs left.
                "lsrs r12, r12, #1",
                "bcc 2f",
                step7!(),
                "2:",
                "beq 4f",
                "3:",
                step7!(),
                step7!(),
                "subs r12, r12, #1",
                "bne 3b",
                "4:",
                "mov r0, r6",
                "mov r1, r7",
                "mov r2, r11",
                "pop {{r6, r7, r11}}",
                inout("r0") w => a0,
                inout("r1") x => a1,
                out("r2") a5,
                out("r3") _,
                out("r4") _,
                out("r5") _,
                inout("r8") bias => a2,
                out("r9") a3,
                out("r10") a4,
                inout("r12") groups => _,
                out("lr") a6,
            );
        }
        [a0, a1, a2, a3, a4, a5, a6]
    }

    /// Geometry of a validated, ungrouped convolution.
    struct ConvGeom {
        ih: usize,
        iw: usize,
        c: usize,
        fh: usize,
        fw: usize,
        sh: usize,
        sw: usize,
        dh: usize,
        dw: usize,
        ph: usize,
        pw: usize,
        oh: usize,
        ow: usize,
        offset: i32,
    }

    impl ConvGeom {
        /// The patch of flat output pixel `pix` (batch, y, x) in OHWI order.
        fn fill(&self, input: &[i8], buf: &mut [u32], slots: usize, q: usize, pix: usize) {
            let per_image = self.oh * self.ow;
            let (b, r) = (pix / per_image, pix % per_image);
            let (oy, ox) = (r / self.ow, r % self.ow);
            let c = self.c;
            let mut w = PatchWriter::new(buf, slots, q, self.offset);
            for ky in 0..self.fh {
                let iy = (oy * self.sh + ky * self.dh).checked_sub(self.ph).filter(|&y| y < self.ih);
                let Some(iy) = iy else {
                    w.zeros(self.fw * c);
                    continue;
                };
                let line = (b * self.ih + iy) * self.iw;
                let px0 = ox * self.sw;
                if self.dw == 1 && px0 >= self.pw && px0 - self.pw + self.fw <= self.iw {
                    // The whole kernel row inside the image: one run.
                    let s = (line + px0 - self.pw) * c;
                    w.values(input.get(s..s + self.fw * c).unwrap_or(&[]));
                    continue;
                }
                for kx in 0..self.fw {
                    match (px0 + kx * self.dw).checked_sub(self.pw).filter(|&x| x < self.iw) {
                        Some(ix) => {
                            let s = (line + ix) * c;
                            w.values(input.get(s..s + c).unwrap_or(&[]));
                        }
                        None => w.zeros(c),
                    }
                }
            }
            w.finish();
        }
    }

    /// As [`reference::conv2d_i8`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv2d_i8(
        p: &ConvParams,
        input_dims: Dims4,
        input: &[i8],
        filter_dims: Dims4,
        filter: &[i8],
        bias: Option<&[i32]>,
        requant: Requant<'_>,
        output_dims: Dims4,
        output: &mut [i8],
    ) -> Result<(), KernelError> {
        let k = filter_dims.h.checked_mul(filter_dims.w).and_then(|hw| hw.checked_mul(filter_dims.c));
        let fits = k.is_some_and(|k| slots_for(k) > 0);
        if input_dims.c != filter_dims.c || !fits {
            // Grouped, or deeper than the im2col buffer: the reference
            // (which validates the same way).
            return reference::conv2d_i8(p, input_dims, input, filter_dims, filter, bias, requant, output_dims, output);
        }
        // The reference's checks, in its order (ungrouped: groups = 1).
        check_len(input.len(), input_dims)?;
        check_len(filter.len(), filter_dims)?;
        check_len(output.len(), output_dims)?;
        let n = output_dims.c;
        if output_dims.n != input_dims.n || filter_dims.n != n || filter_dims.c == 0 {
            return Err(KernelError::ShapeMismatch);
        }
        check_bias(bias, n)?;
        check_requant(&requant, n)?;
        check_positive(&[p.stride.0, p.stride.1, p.dilation.0, p.dilation.1])?;
        check_input_offset(p.input_offset)?;
        check_zero_point(p.output_offset)?;
        check_clamp(p.clamp)?;
        check_window(output_dims.h, p.stride.0, filter_dims.h, p.dilation.0, p.padding.0, input_dims.h)?;
        check_window(output_dims.w, p.stride.1, filter_dims.w, p.dilation.1, p.padding.1, input_dims.w)?;
        if output.is_empty() {
            return Ok(());
        }
        // Non-empty output: n·h·w·c fits, c ≥ 1.
        let pixels = output_dims.n * output_dims.h * output_dims.w;
        let Some(k) = k else { return Ok(()) };
        let g = ConvGeom {
            ih: input_dims.h,
            iw: input_dims.w,
            c: input_dims.c,
            fh: filter_dims.h,
            fw: filter_dims.w,
            sh: p.stride.0,
            sw: p.stride.1,
            dh: p.dilation.0,
            dw: p.dilation.1,
            ph: p.padding.0,
            pw: p.padding.1,
            oh: output_dims.h,
            ow: output_dims.w,
            offset: p.input_offset,
        };
        let gemm = Gemm {
            n,
            k,
            filter,
            bias,
            requant,
            out: OutParams { offset: p.output_offset, clamp: p.clamp },
        };
        gemm.run(pixels, |buf, slots, q, pix| g.fill(input, buf, slots, q, pix), output);
        Ok(())
    }

    /// As [`reference::fully_connected_i8`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fully_connected_i8(
        p: &FullyConnectedParams,
        batches: usize,
        input: &[i8],
        filter_dims: (usize, usize),
        filter: &[i8],
        bias: Option<&[i32]>,
        requant: Requant<'_>,
        output: &mut [i8],
    ) -> Result<(), KernelError> {
        let (n, k) = filter_dims;
        if slots_for(k) == 0 {
            return reference::fully_connected_i8(p, batches, input, filter_dims, filter, bias, requant, output);
        }
        check_len2(input.len(), batches, k)?;
        check_len2(filter.len(), n, k)?;
        check_len2(output.len(), batches, n)?;
        check_bias(bias, n)?;
        check_requant(&requant, n)?;
        check_input_offset(p.input_offset)?;
        check_zero_point(p.output_offset)?;
        check_clamp(p.clamp)?;
        if output.is_empty() {
            return Ok(());
        }
        let gemm = Gemm {
            n,
            k,
            filter,
            bias,
            requant,
            out: OutParams { offset: p.output_offset, clamp: p.clamp },
        };
        let offset = p.input_offset;
        gemm.run(
            batches,
            |buf, slots, q, b| {
                let mut w = PatchWriter::new(buf, slots, q, offset);
                w.values(input.get(b * k..(b + 1) * k).unwrap_or(&[]));
                w.finish();
            },
            output,
        );
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Depthwise
    // -----------------------------------------------------------------------

    /// `i16` elements of the depthwise planes (8 KiB on the stack).
    const PLANE: usize = 4096;
    /// Channels converted together.
    const GROUP: usize = 4;
    /// Most tap pairs per channel (`kh · ceil(kw / 2)`) the pair kernels take.
    const MAX_PAIRS: usize = 32;

    /// Geometry of a validated depthwise convolution with multiplier 1, and
    /// the plane layout: `group` planes of `ps` elements, rows of `wp`
    /// elements (the padded columns the outputs read), bands of `band`
    /// output rows.
    struct DwGeom {
        ih: usize,
        iw: usize,
        c: usize,
        kh: usize,
        kw: usize,
        sh: usize,
        sw: usize,
        dh: usize,
        dw: usize,
        pt: usize,
        pl: usize,
        oh: usize,
        ow: usize,
        wp: usize,
        /// Padded input rows a band of `band` output rows reads.
        ps: usize,
        band: usize,
        group: usize,
        zero_point: i16,
    }

    impl DwGeom {
        /// Plane rows for output rows `oy0..oy1`.
        fn rows(&self, outputs: usize) -> usize {
            (outputs - 1) * self.sh + (self.kh - 1) * self.dh + 1
        }

        /// Plane columns `[c_lo, c_hi)` hold image columns; the rest padding.
        fn image_cols(&self) -> (usize, usize) {
            let lo = self.pl.min(self.wp);
            let hi = (self.pl + self.iw).clamp(lo, self.wp);
            (lo, hi)
        }

        /// Fills plane row `r` (padded input row `py`) of the planes of
        /// channels `ch..ch + self.group` (all present) for batch `b`.
        fn fill_row_group(&self, planes: &mut [i16], input: &[i8], b: usize, ch: usize, r: usize, py: usize) {
            let (wp, ps, zp) = (self.wp, self.ps, self.zero_point);
            let at = r * wp;
            let iy = py.checked_sub(self.pt).filter(|&y| y < self.ih);
            let Some(iy) = iy else {
                for j in 0..GROUP {
                    if let Some(row) = planes.get_mut(j * ps + at..j * ps + at + wp) {
                        row.fill(zp);
                    }
                }
                return;
            };
            let (lo, hi) = self.image_cols();
            for j in 0..GROUP {
                if let Some(row) = planes.get_mut(j * ps + at..j * ps + at + wp) {
                    row[..lo].fill(zp);
                    row[hi..].fill(zp);
                }
            }
            // Image columns lo..hi are input columns 0..hi − lo (lo = pl when lo < wp).
            let line = ((b * self.ih + iy) * self.iw) * self.c + ch;
            let n = hi - lo;
            let Some(src) = input.get(line..) else { return };
            let Some(dst) = planes.get_mut(at + lo..) else { return };
            // Every element written below is in dst[j·ps + col] for col < n
            // (col + lo < wp, so inside plane j's row r), read from
            // src[col·c .. col·c + 4] (inside the input: channel ch + 3 < c
            // of an image pixel of row iy).
            let need_src = if n == 0 { 0 } else { (n - 1) * self.c + GROUP };
            let need_dst = if n == 0 { 0 } else { (GROUP - 1) * ps + n };
            if src.len() < need_src || dst.len() < need_dst {
                return;
            }
            let c = self.c;
            let load = |col: usize| -> u32 {
                // SAFETY: col < n, so col·c + 4 ≤ need_src ≤ src.len().
                unsafe { src.as_ptr().add(col * c).cast::<u32>().read_unaligned() }
            };
            let dp = dst.as_mut_ptr();
            let store = |j: usize, col: usize, v: u32| {
                // SAFETY: col + 1 < n, so j·ps + col + 2 ≤ need_dst ≤ dst.len().
                unsafe { dp.add(j * ps + col).cast::<u32>().write_unaligned(v) }
            };
            let mut col = 0;
            while col + 1 < n {
                let (a, b) = (load(col), load(col + 1));
                let (a02, a13, b02, b13) = (sxtb16(a), sxtb16_ror8(a), sxtb16(b), sxtb16_ror8(b));
                store(0, col, pkhbt(a02, b02));
                store(1, col, pkhbt(a13, b13));
                store(2, col, pkhtb(b02, a02));
                store(3, col, pkhtb(a13, b13));
                col += 2;
            }
            if col < n {
                let v = load(col).to_le_bytes();
                for (j, &x) in v.iter().enumerate() {
                    if let Some(d) = dst.get_mut(j * ps + col) {
                        *d = i16::from(x as i8);
                    }
                }
            }
        }

        /// As `fill_row_group` for the one channel `ch`, into the first plane.
        fn fill_row_one(&self, planes: &mut [i16], input: &[i8], b: usize, ch: usize, r: usize, py: usize) {
            let (wp, zp) = (self.wp, self.zero_point);
            let at = r * wp;
            let Some(row) = planes.get_mut(at..at + wp) else { return };
            let iy = py.checked_sub(self.pt).filter(|&y| y < self.ih);
            let Some(iy) = iy else {
                row.fill(zp);
                return;
            };
            let (lo, hi) = self.image_cols();
            row[..lo].fill(zp);
            row[hi..].fill(zp);
            let line = ((b * self.ih + iy) * self.iw) * self.c + ch;
            let src = input.get(line..).unwrap_or(&[]);
            for (d, s) in row[lo..hi].iter_mut().zip(src.iter().step_by(self.c)) {
                *d = i16::from(*s);
            }
        }
    }

    /// The weights of one channel as tap pairs: `pairs[ky·kp + j] = [w(ky,
    /// 2j), w(ky, 2j+1)]` (0 past the last tap), `kp = ceil(kw / 2)`; and
    /// `Σ w` over every tap.
    fn channel_weights(g: &DwGeom, filter: &[i8], ch: usize, pairs: &mut [u32; MAX_PAIRS]) -> i32 {
        let kp = g.kw.div_ceil(2);
        let w = |ky: usize, kx: usize| -> i32 {
            if kx < g.kw { filter.get((ky * g.kw + kx) * g.c + ch).map_or(0, |&v| i32::from(v)) } else { 0 }
        };
        let mut sum = 0i32;
        for ky in 0..g.kh {
            for j in 0..kp {
                let (a, b) = (w(ky, 2 * j), w(ky, 2 * j + 1));
                sum = sum.wrapping_add(a + b);
                if let Some(d) = pairs.get_mut(ky * kp + j) {
                    *d = pack(a, b);
                }
            }
        }
        sum
    }

    /// The output stage of one channel, resolved once per channel.
    trait Stage: Copy {
        fn apply(self, acc: i32) -> i8;
    }

    #[derive(Clone, Copy)]
    struct FastFull(Rq);
    #[derive(Clone, Copy)]
    struct FastClamp(Rq);
    #[derive(Clone, Copy)]
    struct Exact(Rq);

    impl Stage for FastFull {
        #[inline(always)]
        fn apply(self, acc: i32) -> i8 {
            self.0.fast_full(acc)
        }
    }
    impl Stage for FastClamp {
        #[inline(always)]
        fn apply(self, acc: i32) -> i8 {
            self.0.fast_clamp(acc)
        }
    }
    impl Stage for Exact {
        #[inline(always)]
        fn apply(self, acc: i32) -> i8 {
            self.0.exact(acc)
        }
    }

    /// The outputs of one channel for output rows `oy0..oy0 + rows` of batch
    /// `b`, from its plane (plane row 0 = padded input row `oy0·sh`).
    struct Band<'a> {
        g: &'a DwGeom,
        plane: &'a [i16],
        pairs: &'a [u32; MAX_PAIRS],
        filter: &'a [i8],
        init: i32,
        b: usize,
        oy0: usize,
        rows: usize,
        ch: usize,
    }

    impl Band<'_> {
        fn run<S: Stage>(&self, s: S, output: &mut [i8]) {
            let g = self.g;
            if g.dw == 1 && g.kw == 3 && g.kh <= 8 && (g.sw == 1 || g.sw == 2) {
                if g.sw == 1 { self.k3s1(s, output) } else { self.k3s2(s, output) }
            } else if g.dw == 1 && g.kh * g.kw.div_ceil(2) <= MAX_PAIRS {
                self.pairs_any(s, output)
            } else {
                self.scalar(s, output)
            }
        }

        /// Output index of (oy, ox) for this channel.
        #[inline(always)]
        fn out_at(&self, oy: usize, ox: usize) -> usize {
            ((self.b * self.g.oh + oy) * self.g.ow + ox) * self.g.c + self.ch
        }

        /// Whether every plane read of this band (through one element past
        /// the last plane column, slack the caller provides) is in bounds,
        /// and every output of it.
        fn in_bounds(&self, output: &[i8]) -> bool {
            let g = self.g;
            let last_out = self.out_at(self.oy0 + self.rows - 1, g.ow - 1);
            g.rows(self.rows) * g.wp < self.plane.len() && last_out < output.len()
        }

        /// Loads plane elements `i` and `i + 1` as `[lo, hi]`.
        ///
        /// # Safety
        /// `i + 1 < self.plane.len()`.
        #[inline(always)]
        unsafe fn ld2(&self, i: usize) -> u32 {
            // SAFETY: the caller guarantees i + 1 < len: 4 readable bytes.
            unsafe { self.plane.as_ptr().add(i).cast::<u32>().read_unaligned() }
        }

        /// Any kernel width, dilation 1: tap pairs.
        fn pairs_any<S: Stage>(&self, s: S, output: &mut [i8]) {
            let g = self.g;
            if !self.in_bounds(output) {
                return;
            }
            let kp = g.kw.div_ceil(2);
            for r in 0..self.rows {
                let oy = self.oy0 + r;
                for ox in 0..g.ow {
                    let mut acc = self.init;
                    for ky in 0..g.kh {
                        let base = (r * g.sh + ky * g.dh) * g.wp + ox * g.sw;
                        for j in 0..kp {
                            // SAFETY: base + 2j + 1 ≤ (rows(band) − 1)·wp +
                            // (ow − 1)·sw + kw ≤ rows(band)·wp < len
                            // (`in_bounds`).
                            let x = unsafe { self.ld2(base + 2 * j) };
                            acc = smlad(self.pairs[ky * kp + j], x, acc);
                        }
                    }
                    output[self.out_at(oy, ox)] = s.apply(acc);
                }
            }
        }

        /// 3-wide kernel, stride 1: two outputs per step.
        fn k3s1<S: Stage>(&self, s: S, output: &mut [i8]) {
            let g = self.g;
            if !self.in_bounds(output) {
                return;
            }
            // [w0, w1] and [w1, w2] per kernel row.
            let mut w01 = [0u32; 8];
            let mut w12 = [0u32; 8];
            for ky in 0..g.kh.min(8) {
                let (p0, p1) = (self.pairs[ky * 2], self.pairs[ky * 2 + 1]);
                w01[ky] = p0;
                w12[ky] = pkhbt(p0 >> 16, p1);
            }
            let step = g.c;
            for r in 0..self.rows {
                let oy = self.oy0 + r;
                let mut at = self.out_at(oy, 0);
                let mut ox = 0;
                while ox + 1 < g.ow {
                    let (mut a0, mut a1) = (self.init, self.init);
                    for ky in 0..g.kh {
                        let base = (r * g.sh + ky * g.dh) * g.wp + ox;
                        // SAFETY: base + 3 ≤ (rows(band) − 1)·wp + ow + 1
                        // < rows(band)·wp (wp = ow + 2).
                        let (l0, l2) = unsafe { (self.ld2(base), self.ld2(base + 2)) };
                        a0 = smlatb(w12[ky], l2, smlad(w01[ky], l0, a0));
                        a1 = smlad(w12[ky], l2, smlabt(w01[ky], l0, a1));
                    }
                    output[at] = s.apply(a0);
                    output[at + step] = s.apply(a1);
                    at += 2 * step;
                    ox += 2;
                }
                if ox < g.ow {
                    let mut a0 = self.init;
                    for ky in 0..g.kh {
                        let base = (r * g.sh + ky * g.dh) * g.wp + ox;
                        // SAFETY: as above (base + 3 ≤ row·wp + wp ≤ rows(band)·wp).
                        let (l0, l2) = unsafe { (self.ld2(base), self.ld2(base + 2)) };
                        a0 = smlatb(w12[ky], l2, smlad(w01[ky], l0, a0));
                    }
                    output[at] = s.apply(a0);
                }
            }
        }

        /// 3-wide kernel, stride 2: the pair at column 2·ox + 2 is the next
        /// output's first pair.
        fn k3s2<S: Stage>(&self, s: S, output: &mut [i8]) {
            let g = self.g;
            if !self.in_bounds(output) {
                return;
            }
            let mut w01 = [0u32; 8];
            let mut w2 = [0u32; 8];
            for ky in 0..g.kh.min(8) {
                w01[ky] = self.pairs[ky * 2];
                w2[ky] = self.pairs[ky * 2 + 1];
            }
            let step = g.c;
            for r in 0..self.rows {
                let oy = self.oy0 + r;
                let mut at = self.out_at(oy, 0);
                let row0 = r * g.sh;
                for ox in 0..g.ow {
                    let mut acc = self.init;
                    for ky in 0..g.kh {
                        let base = (row0 + ky * g.dh) * g.wp + 2 * ox;
                        // SAFETY: base + 3 ≤ (rows(band) − 1)·wp + 2·(ow − 1)
                        // + 3 = rows(band)·wp < len (wp = 2·ow + 1).
                        let (l0, l2) = unsafe { (self.ld2(base), self.ld2(base + 2)) };
                        acc = smlad(w2[ky], l2, smlad(w01[ky], l0, acc));
                    }
                    output[at] = s.apply(acc);
                    at += step;
                }
            }
        }

        /// Any geometry (dilated kernels, very large kernels), one tap at a time.
        fn scalar<S: Stage>(&self, s: S, output: &mut [i8]) {
            let g = self.g;
            for r in 0..self.rows {
                let oy = self.oy0 + r;
                for ox in 0..g.ow {
                    let mut acc = self.init;
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let i = (r * g.sh + ky * g.dh) * g.wp + ox * g.sw + kx * g.dw;
                            let x = self.plane.get(i).map_or(0, |&v| i32::from(v));
                            let w = self.filter.get((ky * g.kw + kx) * g.c + self.ch).map_or(0, |&v| i32::from(v));
                            acc = acc.wrapping_add(w * x);
                        }
                    }
                    if let Some(o) = output.get_mut(self.out_at(oy, ox)) {
                        *o = s.apply(acc);
                    }
                }
            }
        }
    }

    /// As [`reference::depthwise_conv2d_i8`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn depthwise_conv2d_i8(
        p: &DepthwiseParams,
        input_dims: Dims4,
        input: &[i8],
        filter_dims: Dims4,
        filter: &[i8],
        bias: Option<&[i32]>,
        requant: Requant<'_>,
        output_dims: Dims4,
        output: &mut [i8],
    ) -> Result<(), KernelError> {
        let reference = |output: &mut [i8]| {
            reference::depthwise_conv2d_i8(p, input_dims, input, filter_dims, filter, bias, requant, output_dims, output)
        };
        let conv = &p.conv;
        // Plane layout: rows of wp padded columns; each plane must hold the
        // rows of at least one output row, plus one element of slack.
        let layout = (|| {
            let (ow, sw, kw, dw) = (output_dims.w, conv.stride.1, filter_dims.w, conv.dilation.1);
            let wp = ow.checked_sub(1)?.checked_mul(sw)?.checked_add(kw.checked_sub(1)?.checked_mul(dw)?)?.checked_add(1)?;
            let eff_kh = filter_dims.h.checked_sub(1)?.checked_mul(conv.dilation.0)?.checked_add(1)?;
            let need = eff_kh.checked_mul(wp)?.checked_add(1)?;
            if need <= PLANE / GROUP && input_dims.c >= GROUP {
                Some((wp, PLANE / GROUP, GROUP))
            } else if need <= PLANE {
                Some((wp, PLANE, 1))
            } else {
                None
            }
        })();
        let Some((wp, ps, group)) = layout else { return reference(output) };
        if p.depth_multiplier != 1 {
            return reference(output);
        }
        // The reference's checks, in its order (depth multiplier 1).
        check_len(input.len(), input_dims)?;
        check_len(filter.len(), filter_dims)?;
        check_len(output.len(), output_dims)?;
        check_positive(&[p.depth_multiplier])?;
        let c = input_dims.c;
        if output_dims.n != input_dims.n || filter_dims.n != 1 || filter_dims.c != output_dims.c || output_dims.c != c
        {
            return Err(KernelError::ShapeMismatch);
        }
        check_bias(bias, c)?;
        check_requant(&requant, c)?;
        check_positive(&[conv.stride.0, conv.stride.1, conv.dilation.0, conv.dilation.1])?;
        check_input_offset(conv.input_offset)?;
        check_zero_point(conv.output_offset)?;
        check_clamp(conv.clamp)?;
        check_window(output_dims.h, conv.stride.0, filter_dims.h, conv.dilation.0, conv.padding.0, input_dims.h)?;
        check_window(output_dims.w, conv.stride.1, filter_dims.w, conv.dilation.1, conv.padding.1, input_dims.w)?;
        if output.is_empty() {
            return Ok(());
        }
        let mut g = DwGeom {
            ih: input_dims.h,
            iw: input_dims.w,
            c,
            kh: filter_dims.h,
            kw: filter_dims.w,
            sh: conv.stride.0,
            sw: conv.stride.1,
            dh: conv.dilation.0,
            dw: conv.dilation.1,
            pt: conv.padding.0,
            pl: conv.padding.1,
            oh: output_dims.h,
            ow: output_dims.w,
            wp,
            ps,
            band: 1,
            group,
            // −input_offset, in −128..=127.
            zero_point: (-conv.input_offset) as i16,
        };
        // Output rows per band: plane rows ≤ (ps − 1) / wp.
        let max_rows = (ps - 1) / wp;
        g.band = ((max_rows - g.rows(1)) / g.sh + 1).min(g.oh).max(1);
        let out = OutParams { offset: conv.output_offset, clamp: conv.clamp };
        let mut planes = [0i16; PLANE];
        let mut pairs = [0u32; MAX_PAIRS];
        let mut ch0 = 0;
        while ch0 < c {
            let n_ch = if g.group == GROUP && ch0 + GROUP <= c { GROUP } else { 1 };
            for b in 0..output_dims.n {
                let mut oy0 = 0;
                while oy0 < g.oh {
                    let rows = g.band.min(g.oh - oy0);
                    for r in 0..g.rows(rows) {
                        let py = oy0 * g.sh + r;
                        if n_ch == GROUP {
                            g.fill_row_group(&mut planes, input, b, ch0, r, py);
                        } else {
                            g.fill_row_one(&mut planes, input, b, ch0, r, py);
                        }
                    }
                    for j in 0..n_ch {
                        let ch = ch0 + j;
                        let sum = channel_weights(&g, filter, ch, &mut pairs);
                        let b0 = bias.and_then(|v| v.get(ch)).copied().unwrap_or(0);
                        let init = b0.wrapping_add(conv.input_offset.wrapping_mul(sum));
                        let Some(plane) = planes.get(j * g.ps..(j + 1) * g.ps) else { break };
                        let band = Band { g: &g, plane, pairs: &pairs, filter, init, b, oy0, rows, ch };
                        let rq = Rq::new(&requant, ch, out);
                        match rq.mode {
                            Mode::FastFull => band.run(FastFull(rq), output),
                            Mode::FastClamp => band.run(FastClamp(rq), output),
                            Mode::Exact => band.run(Exact(rq), output),
                        }
                    }
                    oy0 += rows;
                }
            }
            ch0 += n_ch;
        }
        Ok(())
    }
}

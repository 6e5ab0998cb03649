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

    /// The first 4 bytes of `s` as a little-endian word, one `ldr` (any
    /// alignment); 0 if `s` is shorter.
    #[inline(always)]
    fn load4(s: &[i8]) -> u32 {
        if s.len() < 4 {
            return 0;
        }
        // SAFETY: `s` has at least 4 bytes; `read_unaligned` has no alignment
        // requirement (and the targets load unaligned words with `ldr`).
        unsafe { s.as_ptr().cast::<u32>().read_unaligned() }
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
                    let v = load4(w);
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
            if xs.len() < k.div_ceil(4) * 2 * N || out.len() < N * n || self.filter.len() < n * k {
                return;
            }
            let tail_xs = xs.get(groups * 2 * N..).unwrap_or(&[]);
            for ch in 0..n {
                let row = self.filter.get(ch * k..(ch + 1) * k).unwrap_or(&[]);
                let b = match self.bias {
                    Some(bias) => bias.get(ch).copied().unwrap_or(0),
                    None => 0,
                };
                let mut acc = [b; N];
                if N == SLOTS {
                    // SAFETY: `row` has k ≥ 4·groups bytes; `xs` has
                    // ceil(k/4)·2·7 ≥ 14·groups words and is 8-byte aligned
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
                    step(u32::from_le_bytes(w), tail_xs, &mut acc);
                }
                let rq = Rq::new(&self.requant, ch, self.out);
                let o = out.as_mut_ptr();
                let put = |q: usize, v: i8| {
                    // SAFETY: out.len() ≥ N·n (checked above), ch < n and q < N,
                    // so q·n + ch < N·n.
                    unsafe { *o.add(q * n + ch) = v };
                };
                match rq.mode {
                    Mode::FastFull => acc.iter().enumerate().for_each(|(q, &a)| put(q, rq.fast_full(a))),
                    Mode::FastClamp => acc.iter().enumerate().for_each(|(q, &a)| put(q, rq.fast_clamp(a))),
                    Mode::Exact => acc.iter().enumerate().for_each(|(q, &a)| put(q, rq.exact(a))),
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
            step(load4(w), x, acc);
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
    /// `q` of an interleaved buffer (slot stride 7), four groups per
    /// iteration (one and two before, for the remainder).
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
        // (no calls in between); flags are clobbered (no `preserves_flags`).
        unsafe {
            asm!(
                "push {{r6, r7, r11}}",
                "mov r6, r8",
                "mov r7, r8",
                "mov r9, r8",
                "mov r10, r8",
                "mov r11, r8",
                "mov lr, r8",
                // C = odd group count.
                "lsrs r12, r12, #1",
                "bcc 2f",
                step7!(),
                "2:",
                // C = odd pair count, Z = no quads.
                "lsrs r12, r12, #1",
                "bcc 3f",
                step7!(),
                step7!(),
                "3:",
                "beq 5f",
                "4:",
                step7!(),
                step7!(),
                step7!(),
                step7!(),
                "subs r12, r12, #1",
                "bne 4b",
                "5:",
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
        let gemm = Gemm { n, k, filter, bias, requant, out: OutParams { offset: p.output_offset, clamp: p.clamp } };
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
        let gemm = Gemm { n, k, filter, bias, requant, out: OutParams { offset: p.output_offset, clamp: p.clamp } };
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
    /// Channels converted together (one input word).
    const GROUP: usize = 4;
    /// Plane elements after a band's rows that the row kernels may read
    /// (values they multiply by a zero weight or discard).
    const SLACK: usize = 8;
    /// Outputs per call of a row kernel.
    const ACC_ROW: usize = 64;
    /// Most taps per channel the tap-pair kernel takes.
    const MAX_PAIRS: usize = 32;

    /// One spatial axis of a depthwise convolution.
    #[derive(Clone, Copy)]
    struct Axis {
        input: usize,
        output: usize,
        k: usize,
        stride: usize,
        dil: usize,
        pad: usize,
        /// Input, output and filter elements between neighbours on this axis.
        in_step: usize,
        out_step: usize,
        w_step: usize,
    }

    impl Axis {
        /// Padded positions `outputs ≥ 1` outputs read (`k ≥ 1`).
        fn span(&self, outputs: usize) -> Option<usize> {
            (outputs - 1).checked_mul(self.stride)?.checked_add((self.k - 1).checked_mul(self.dil)?)?.checked_add(1)
        }

        /// Input coordinate of padded position `p`, if inside the image.
        #[inline(always)]
        fn image(&self, p: usize) -> Option<usize> {
            p.checked_sub(self.pad).filter(|&i| i < self.input)
        }
    }

    /// A validated depthwise convolution with multiplier 1 and its plane
    /// layout. Plane rows run along the `outer` axis, plane columns (the
    /// contiguous `i16` values) along `inner`: the output's longer axis, so
    /// that the row kernels run long. `group` planes of `ps` elements, rows
    /// of `wp` padded columns, bands of `band` outer outputs.
    struct DwGeom {
        outer: Axis,
        inner: Axis,
        wp: usize,
        ps: usize,
        band: usize,
        group: usize,
        /// The input zero point, in the padding (so it adds `w · 0`).
        zero_point: i32,
        batch_in: usize,
        batch_out: usize,
    }

    impl DwGeom {
        /// The layout, or `None` if one outer output's rows do not fit a plane
        /// (or the kernel is empty).
        fn new(input_dims: Dims4, filter_dims: Dims4, output_dims: Dims4, conv: &ConvParams) -> Option<DwGeom> {
            let c = input_dims.c;
            if filter_dims.h == 0 || filter_dims.w == 0 || output_dims.h == 0 || output_dims.w == 0 {
                return None;
            }
            let h = Axis {
                input: input_dims.h,
                output: output_dims.h,
                k: filter_dims.h,
                stride: conv.stride.0,
                dil: conv.dilation.0,
                pad: conv.padding.0,
                in_step: input_dims.w * c,
                out_step: output_dims.w * c,
                w_step: filter_dims.w * c,
            };
            let w = Axis {
                input: input_dims.w,
                output: output_dims.w,
                k: filter_dims.w,
                stride: conv.stride.1,
                dil: conv.dilation.1,
                pad: conv.padding.1,
                in_step: c,
                out_step: c,
                w_step: c,
            };
            let (outer, inner) = if output_dims.h > output_dims.w { (w, h) } else { (h, w) };
            let wp = inner.span(inner.output)?;
            let need = outer.span(1)?.checked_mul(wp)?.checked_add(SLACK)?;
            let (ps, group) = if c >= GROUP && need <= PLANE / GROUP {
                (PLANE / GROUP, GROUP)
            } else if need <= PLANE {
                (PLANE, 1)
            } else {
                return None;
            };
            let max_rows = (ps - SLACK) / wp;
            let band = ((max_rows - outer.span(1)?) / outer.stride + 1).min(outer.output);
            Some(DwGeom {
                outer,
                inner,
                wp,
                ps,
                band,
                group,
                zero_point: -conv.input_offset,
                batch_in: input_dims.h * input_dims.w * c,
                batch_out: output_dims.h * output_dims.w * c,
            })
        }

        /// Fills plane row `r` (padded outer position `po`) of the planes of
        /// channels `ch..ch + 4` (all present) for batch `b`.
        fn fill_row_group(&self, planes: &mut [i16; PLANE], input: &[i8], b: usize, ch: usize, r: usize, po: usize) {
            let (wp, ps) = (self.wp, self.ps);
            let at = r * wp;
            if at + wp > ps || GROUP * ps > PLANE {
                return;
            }
            let zp4 = u32::from(self.zero_point as u8).wrapping_mul(0x0101_0101);
            let base = self.outer.image(po).map(|io| b * self.batch_in + io * self.outer.in_step + ch);
            let word = |col: usize| -> u32 {
                match (base, self.inner.image(col)) {
                    (Some(base), Some(ii)) => load4(input.get(base + ii * self.inner.in_step..).unwrap_or(&[])),
                    _ => zp4,
                }
            };
            let dp = planes.as_mut_ptr();
            let store = |j: usize, col: usize, v: u32| {
                // SAFETY: j < 4, col + 1 < wp and at + wp ≤ ps (checked
                // above): j·ps + at + col + 2 ≤ 4·ps ≤ PLANE.
                unsafe { dp.add(j * ps + at + col).cast::<u32>().write_unaligned(v) }
            };
            let mut col = 0;
            while col + 1 < wp {
                let (a, b) = (word(col), word(col + 1));
                let (a02, a13, b02, b13) = (sxtb16(a), sxtb16_ror8(a), sxtb16(b), sxtb16_ror8(b));
                store(0, col, pkhbt(a02, b02));
                store(1, col, pkhbt(a13, b13));
                store(2, col, pkhtb(b02, a02));
                store(3, col, pkhtb(b13, a13));
                col += 2;
            }
            if col < wp {
                let v = word(col).to_le_bytes();
                for (j, &x) in v.iter().enumerate() {
                    planes[j * ps + at + col] = i16::from(x as i8);
                }
            }
        }

        /// As `fill_row_group` for the one channel `ch`, into the first plane.
        fn fill_row_one(&self, planes: &mut [i16; PLANE], input: &[i8], b: usize, ch: usize, r: usize, po: usize) {
            let at = r * self.wp;
            let Some(row) = planes.get_mut(at..at + self.wp) else { return };
            let zp = self.zero_point as i16;
            let base = self.outer.image(po).map(|io| b * self.batch_in + io * self.outer.in_step + ch);
            for (col, d) in row.iter_mut().enumerate() {
                *d = match (base, self.inner.image(col)) {
                    (Some(base), Some(ii)) => input.get(base + ii * self.inner.in_step).map_or(zp, |&x| i16::from(x)),
                    _ => zp,
                };
            }
        }

        /// Tap `(ko, ki)` (outer, inner) of channel `ch`.
        #[inline]
        fn weight(&self, filter: &[i8], ko: usize, ki: usize, ch: usize) -> i32 {
            if ko < self.outer.k && ki < self.inner.k {
                filter.get(ko * self.outer.w_step + ki * self.inner.w_step + ch).map_or(0, |&v| i32::from(v))
            } else {
                0
            }
        }
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

    /// Three taps along the inner axis, inner stride 1, three kernel rows:
    /// `acc[2i], acc[2i + 1]` for `i < pairs`, output `j` reading columns
    /// `j..j + 3` of the rows at `p0`, `p1`, `p2`. `w`: per kernel row
    /// `[w0, w1]`, `[w1, w2]`, then the initial value twice.
    ///
    /// # Safety
    /// Each row pointer readable for `2·pairs + 2` elements; `w` 8-byte
    /// aligned... (it is a `[u32; 8]`, 4-byte aligned, which `ldrd` on
    /// Cortex-M and ARMv7 accepts); `acc` writable for `2·pairs` values,
    /// 4-byte aligned; `pairs ≥ 1`.
    #[inline(never)]
    unsafe fn k3s1_row(p: [*const i16; 3], w: &[u32; 8], acc: *mut i32, pairs: usize) {
        // SAFETY: reads p_r[0 .. 2·pairs + 2] (`ldr`, any alignment), w[0..8]
        // (`ldrd`, 4-byte aligned), writes acc[0 .. 2·pairs] (`strd`, 4-byte
        // aligned), as the caller guarantees; r6 is pushed and popped.
        unsafe {
            asm!(
                "push {{r6}}",
                "mov r6, r0",
                "2:",
                "ldrd r0, r1, [r12, #24]",
                "ldrd r2, r3, [r12]",
                "ldr r4, [r8], #4",
                "ldr r5, [r8]",
                "smlad r0, r2, r4, r0",
                "smlatb r0, r3, r5, r0",
                "smlabt r1, r2, r4, r1",
                "smlad r1, r3, r5, r1",
                "ldrd r2, r3, [r12, #8]",
                "ldr r4, [r9], #4",
                "ldr r5, [r9]",
                "smlad r0, r2, r4, r0",
                "smlatb r0, r3, r5, r0",
                "smlabt r1, r2, r4, r1",
                "smlad r1, r3, r5, r1",
                "ldrd r2, r3, [r12, #16]",
                "ldr r4, [r10], #4",
                "ldr r5, [r10]",
                "smlad r0, r2, r4, r0",
                "smlatb r0, r3, r5, r0",
                "smlabt r1, r2, r4, r1",
                "smlad r1, r3, r5, r1",
                "strd r0, r1, [lr], #8",
                "subs r6, r6, #1",
                "bne 2b",
                "pop {{r6}}",
                inout("r0") pairs => _,
                out("r1") _,
                out("r2") _,
                out("r3") _,
                out("r4") _,
                out("r5") _,
                inout("r8") p[0] => _,
                inout("r9") p[1] => _,
                inout("r10") p[2] => _,
                in("r12") w.as_ptr(),
                inout("lr") acc => _,
            );
        }
    }

    /// As [`k3s1_row`] with inner stride 2: output `j` reads columns `2j ..
    /// 2j + 3`; `w` per kernel row `[w0, w1]`, `[w2, 0]`.
    ///
    /// # Safety
    /// As [`k3s1_row`], the rows readable for `4·pairs + 6` elements.
    #[inline(never)]
    unsafe fn k3s2_row(p: [*const i16; 3], w: &[u32; 8], acc: *mut i32, pairs: usize) {
        // SAFETY: reads p_r[0 .. 4·pairs + 6], w[0..8], writes acc[0 ..
        // 2·pairs], as the caller guarantees; r6 and r11 are pushed and
        // popped.
        unsafe {
            asm!(
                "push {{r6, r11}}",
                "mov r6, r0",
                "2:",
                "ldrd r0, r1, [r12, #24]",
                "ldrd r2, r3, [r12]",
                "ldr r4, [r8]",
                "ldr r5, [r8, #4]",
                "ldr r11, [r8, #8]!",
                "smlad r0, r2, r4, r0",
                "smlad r0, r3, r5, r0",
                "smlad r1, r2, r5, r1",
                "smlad r1, r3, r11, r1",
                "ldrd r2, r3, [r12, #8]",
                "ldr r4, [r9]",
                "ldr r5, [r9, #4]",
                "ldr r11, [r9, #8]!",
                "smlad r0, r2, r4, r0",
                "smlad r0, r3, r5, r0",
                "smlad r1, r2, r5, r1",
                "smlad r1, r3, r11, r1",
                "ldrd r2, r3, [r12, #16]",
                "ldr r4, [r10]",
                "ldr r5, [r10, #4]",
                "ldr r11, [r10, #8]!",
                "smlad r0, r2, r4, r0",
                "smlad r0, r3, r5, r0",
                "smlad r1, r2, r5, r1",
                "smlad r1, r3, r11, r1",
                "strd r0, r1, [lr], #8",
                "subs r6, r6, #1",
                "bne 2b",
                "pop {{r6, r11}}",
                inout("r0") pairs => _,
                out("r1") _,
                out("r2") _,
                out("r3") _,
                out("r4") _,
                out("r5") _,
                inout("r8") p[0] => _,
                inout("r9") p[1] => _,
                inout("r10") p[2] => _,
                in("r12") w.as_ptr(),
                inout("lr") acc => _,
            );
        }
    }

    /// The outputs of one channel for outer outputs `oo0 .. oo0 + rows` of
    /// batch `b`, from its plane (plane row 0 = padded outer position
    /// `oo0 · stride`), rows `span(rows)` filled.
    struct Band<'a> {
        g: &'a DwGeom,
        plane: &'a [i16],
        filter: &'a [i8],
        ch: usize,
        b: usize,
        oo0: usize,
        rows: usize,
        init: i32,
    }

    impl Band<'_> {
        fn run<S: Stage>(&self, s: S, output: &mut [i8]) {
            let g = self.g;
            let Some(span) = g.outer.span(self.rows) else { return };
            // Every plane read below is below span·wp + SLACK ≤ ps = plane.len()
            // (the kernels over-read at most SLACK − 1 columns past a row).
            if span * g.wp + SLACK > self.plane.len() {
                return;
            }
            let (o, i) = (&g.outer, &g.inner);
            if o.k == 3 && i.k == 3 && i.dil == 1 && (i.stride == 1 || i.stride == 2) {
                self.k3(s, output);
            } else if i.dil == 1 && o.k * i.k.div_ceil(2) <= MAX_PAIRS {
                self.pairs(s, output);
            } else {
                self.scalar(s, output);
            }
        }

        /// Output index of outer output `oo`, inner output `oi`.
        #[inline(always)]
        fn out_at(&self, oo: usize, oi: usize) -> usize {
            self.b * self.g.batch_out + oo * self.g.outer.out_step + oi * self.g.inner.out_step + self.ch
        }

        /// 3×3 kernels, inner stride 1 or 2: the row kernels in `asm!`.
        fn k3<S: Stage>(&self, s: S, output: &mut [i8]) {
            let g = self.g;
            let (o, i) = (&g.outer, &g.inner);
            let w = |ko: usize, ki: usize| g.weight(self.filter, ko, ki, self.ch);
            let mut wt = [0u32; 8];
            for ko in 0..3 {
                wt[2 * ko] = pack(w(ko, 0), w(ko, 1));
                wt[2 * ko + 1] = if i.stride == 1 { pack(w(ko, 1), w(ko, 2)) } else { pack(w(ko, 2), 0) };
            }
            wt[6] = self.init as u32;
            wt[7] = self.init as u32;
            let mut acc = [0i32; ACC_ROW];
            for r in 0..self.rows {
                let oo = self.oo0 + r;
                let mut oi0 = 0;
                while oi0 < i.output {
                    let n = (i.output - oi0).min(ACC_ROW);
                    let pairs = n.div_ceil(2);
                    let col = oi0 * i.stride;
                    let rows = [0, 1, 2].map(|ko| (r * o.stride + ko * o.dil) * g.wp + col);
                    // Reads: row start + up to col + 4·pairs + 6 (stride 2) or
                    // 2·pairs + 2 (stride 1) ≤ row start + wp + SLACK − 1
                    // (n ≤ output − oi0, wp = (output − 1)·stride + 3), and
                    // the last row starts at (span − 1)·wp: inside the
                    // plane (`run` checked span·wp + SLACK ≤ len).
                    let p = rows.map(|at| self.plane.as_ptr().wrapping_add(at));
                    // SAFETY: as above; `acc` has ACC_ROW ≥ 2·pairs values.
                    unsafe {
                        if i.stride == 1 {
                            k3s1_row(p, &wt, acc.as_mut_ptr(), pairs);
                        } else {
                            k3s2_row(p, &wt, acc.as_mut_ptr(), pairs);
                        }
                    }
                    let mut at = self.out_at(oo, oi0);
                    for &a in &acc[..n] {
                        if let Some(d) = output.get_mut(at) {
                            *d = s.apply(a);
                        }
                        at += i.out_step;
                    }
                    oi0 += n;
                }
            }
        }

        /// Inner dilation 1, any kernel: tap pairs along the inner axis.
        fn pairs<S: Stage>(&self, s: S, output: &mut [i8]) {
            let g = self.g;
            let (o, i) = (&g.outer, &g.inner);
            let kp = i.k.div_ceil(2);
            let mut wt = [0u32; MAX_PAIRS];
            for ko in 0..o.k {
                for j in 0..kp {
                    if let Some(d) = wt.get_mut(ko * kp + j) {
                        let w = |ki: usize| g.weight(self.filter, ko, ki, self.ch);
                        *d = pack(w(2 * j), w(2 * j + 1));
                    }
                }
            }
            for r in 0..self.rows {
                let oo = self.oo0 + r;
                for oi in 0..i.output {
                    let mut acc = self.init;
                    for ko in 0..o.k {
                        let base = (r * o.stride + ko * o.dil) * g.wp + oi * i.stride;
                        for j in 0..kp {
                            // Columns oi·stride + 2j + 1 ≤ (output − 1)·stride
                            // + k = wp of a row before span: inside (`run`).
                            let x = load_pair(self.plane, base + 2 * j);
                            acc = smlad(wt[(ko * kp + j) % MAX_PAIRS], x, acc);
                        }
                    }
                    if let Some(d) = output.get_mut(self.out_at(oo, oi)) {
                        *d = s.apply(acc);
                    }
                }
            }
        }

        /// Any geometry (dilated or very large kernels), one tap at a time.
        fn scalar<S: Stage>(&self, s: S, output: &mut [i8]) {
            let g = self.g;
            let (o, i) = (&g.outer, &g.inner);
            for r in 0..self.rows {
                let oo = self.oo0 + r;
                for oi in 0..i.output {
                    let mut acc = self.init;
                    for ko in 0..o.k {
                        for ki in 0..i.k {
                            let at = (r * o.stride + ko * o.dil) * g.wp + oi * i.stride + ki * i.dil;
                            let x = self.plane.get(at).map_or(0, |&v| i32::from(v));
                            acc = acc.wrapping_add(g.weight(self.filter, ko, ki, self.ch) * x);
                        }
                    }
                    if let Some(d) = output.get_mut(self.out_at(oo, oi)) {
                        *d = s.apply(acc);
                    }
                }
            }
        }
    }

    /// Plane elements `i` and `i + 1` as `[lo, hi]` (0 past the end).
    #[inline(always)]
    fn load_pair(plane: &[i16], i: usize) -> u32 {
        match plane.get(i..i + 2) {
            Some(s) => pack(i32::from(s[0]), i32::from(s[1])),
            None => 0,
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
            reference::depthwise_conv2d_i8(
                p,
                input_dims,
                input,
                filter_dims,
                filter,
                bias,
                requant,
                output_dims,
                output,
            )
        };
        if p.depth_multiplier != 1 {
            return reference(output);
        }
        let conv = &p.conv;
        // The reference's checks, in its order (depth multiplier 1).
        check_len(input.len(), input_dims)?;
        check_len(filter.len(), filter_dims)?;
        check_len(output.len(), output_dims)?;
        check_positive(&[p.depth_multiplier])?;
        let c = input_dims.c;
        if output_dims.n != input_dims.n || filter_dims.n != 1 || filter_dims.c != output_dims.c || output_dims.c != c {
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
        let Some(g) = DwGeom::new(input_dims, filter_dims, output_dims, conv) else {
            // A kernel row wider than the planes (or an empty kernel).
            return reference(output);
        };
        let out = OutParams { offset: conv.output_offset, clamp: conv.clamp };
        let mut planes = [0i16; PLANE];
        let mut ch0 = 0;
        while ch0 < c {
            let n_ch = if g.group == GROUP && ch0 + GROUP <= c { GROUP } else { 1 };
            for b in 0..output_dims.n {
                let mut oo0 = 0;
                while oo0 < g.outer.output {
                    let rows = g.band.min(g.outer.output - oo0);
                    let span = g.outer.span(rows).unwrap_or(0);
                    for r in 0..span {
                        let po = oo0 * g.outer.stride + r;
                        if n_ch == GROUP {
                            g.fill_row_group(&mut planes, input, b, ch0, r, po);
                        } else {
                            g.fill_row_one(&mut planes, input, b, ch0, r, po);
                        }
                    }
                    for j in 0..n_ch {
                        let ch = ch0 + j;
                        // Σ w over every tap: the padding holds the zero
                        // point, which `input_offset · Σ w` cancels.
                        let mut sum = 0i32;
                        for ko in 0..g.outer.k {
                            for ki in 0..g.inner.k {
                                sum = sum.wrapping_add(g.weight(filter, ko, ki, ch));
                            }
                        }
                        let b0 = bias.and_then(|v| v.get(ch)).copied().unwrap_or(0);
                        let init = b0.wrapping_add(conv.input_offset.wrapping_mul(sum));
                        let Some(plane) = planes.get(j * g.ps..(j + 1) * g.ps) else { break };
                        let band = Band { g: &g, plane, filter, ch, b, oo0, rows, init };
                        let rq = Rq::new(&requant, ch, out);
                        match rq.mode {
                            Mode::FastFull => band.run(FastFull(rq), output),
                            Mode::FastClamp => band.run(FastClamp(rq), output),
                            Mode::Exact => band.run(Exact(rq), output),
                        }
                    }
                    oo0 += rows;
                }
            }
            ch0 += n_ch;
        }
        Ok(())
    }
}

//! 32-bit Arm DSP-extension fast paths (`smlad`, `sxtb16`, `sxtab16`, `smmlar`, `qadd`,
//! `ssat`, `pkhbt`): Cortex-M4/M7 firmware and ARMv7-A. Microcontrollers have
//! no allocator, so these read the package's OHWI weights directly
//! (CMSIS-NN style, no packing) and keep their scratch on the stack.
//!
//! - **Convolution and fully connected**: an int8 GEMM. The patches of 6
//!   output pixels are gathered ("im2col") into an `i16` stack buffer with
//!   the input offset added (taps in the padding are 0), interleaved by
//!   groups of 4 depth values and in the element order `sxtb16` produces:
//!   for depth `4g..4g+4` of pixel `q`, the words `[x0, x2]` and `[x1, x3]`
//!   (as CMSIS-NN's `arm_nn_mat_mult_kernel_s8_s16` reorders them). Each
//!   output channel's weight row is read 4 bytes at a time, split with
//!   `sxtb16` / `sxtb16 ror #8` into `[w0, w2]`, `[w1, w3]` and multiplied
//!   into 6 accumulators with `smlad`: `ldr`, 2 × `sxtb16`, 3 × (`ldm` of two
//!   pixels' 4 words + 4 × `smlad`) per 4 depth values, 18 instructions for
//!   24 MACs (7 pixels with `ldrd` took 24 for 28), which uses all 14
//!   general registers. [`gemm6_fast`] runs that loop and the output
//!   stage for channel after channel in one `asm!` block (its loop state on
//!   the stack); channels whose output stage it does not do, and blocks of
//!   fewer than 4 pixels, go through [`dot6`] / [`dot_n`] and the output
//!   stage in Rust. A depth that is not a multiple of 4 ends in a group
//!   whose weight word reads the next row's first bytes, which meet the
//!   patch's zero padding (the filter's last row is done in Rust).
//! - **Depthwise** (multiplier 1): per channel, the input rows the outputs
//!   need are converted to a planar `i16` buffer ("planes", 4 channels at a
//!   time with `sxtb16` and `pkhbt`/`pkhtb`, [`fill_pairs`]), the padding
//!   holding the input zero point, so that two neighbouring taps are one
//!   32-bit load and one `smlad`. `Σ w·(x + off)` is computed as `Σ w·x' +
//!   off·Σ w` over every tap, `x'` the zero point in the padding: the same
//!   value modulo 2^32 as the reference, which skips those taps. The planes
//!   run along the output's longer side (KWS's 25×5 maps are transposed).
//!   3×3 kernels with stride 1 or 2 along the planes run in `asm!` band
//!   kernels ([`k3s1_band`], [`k3s2_band`]) that also do the output stage;
//!   other kernels use tap pairs or single taps in Rust.
//! - **Output stage**: TFLite's double rounding, exactly ([`Rq`]).
//!   `SRDHM(x, m)` is one `smmlar x, 2m, x` (for `m ≥ 2^30`, `2m` read as
//!   signed is `2m − 2^32`, so the product plus `x·2^32` is `2xm`; `smmlar`
//!   adds `2^31` and keeps the high word, which is `SRDHM`'s rounding). For
//!   right shifts `r` of 1 to 24 the rounding shift and the output offset
//!   are `qadd(s − [s < 0], 2^(r−1) + off·2^r)` then `asr r`; where the
//!   saturating add saturates, the exact result is beyond the int8 range by
//!   at least `2^(31−r) − 1 − 127 ≥ 0`, so the clamp gives the same byte.
//!   Right shifts of 25 to 31 use `(⌊u/2⌋ + 2^(r−2)) >> (r − 1)` (exact, no
//!   overflow), a zero multiplier gives `clamp(offset)` without a dot
//!   product, and anything else (left shifts, `m < 2^30`, a narrower clamp
//!   with a wide shift) takes [`Rq::general`], still without 64-bit
//!   arithmetic. A unit test checks every shift against the reference's
//!   arithmetic.
//! - **Add**: each input's rescaled term depends only on its int8 value: a
//!   256-entry table per input, built with the reference's own function;
//!   four elements a loop in `asm!` ([`add_fast4`]).
//! - **Average pool**: 8 channels a step, the window's sums in halfword
//!   pairs (`sxtab16`), for windows of up to 256 values.
//!
//! Arguments are validated with the reference's own checks, in the
//! reference's order, so errors are identical; grouped convolution, depth
//! multipliers above 1 and layers deeper than the buffers go to the
//! reference. No allocation; no reachable panic (the indexing the compiler
//! keeps is checked, and in range). Stack: convolution and fully connected
//! 8 KiB of im2col buffer ([`COL_WORDS`], of which a layer zeroes the prefix
//! it uses) + 1 KiB of per-channel table + 384 bytes of partial-block
//! scratch + 260 bytes of gathered patch;
//! depthwise 8 KiB of planes ([`PLANE`]); add 2 KiB of tables; plus frames
//! (the KWS, VWW and IC firmware peaks at about 12.7 KB of stack in all).
//!
//! Every `unsafe` block is either one DSP instruction in `asm!` (available:
//! this module is only built with `cfg(edgefleet_dsp)`, which `build.rs` sets
//! for targets that have the extension), one of the hand-written loops, or
//! an unaligned load or store whose bounds the code around it established
//! (each says how). The `asm!` blocks use register names and instructions
//! valid in both ARM and Thumb-2 state (`ldrd`/`strd` on even/odd pairs),
//! and save r6, r7 and r11 themselves where they need them (`asm!` cannot
//! take them as operands: base and frame pointers).
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

/// As [`reference::add_i8`].
#[cfg_attr(not(target_arch = "arm"), allow(dead_code))]
pub(super) fn add_i8(
    p: &reference::AddParams,
    input1: &[i8],
    input2: &[i8],
    output: &mut [i8],
) -> Result<(), KernelError> {
    #[cfg(edgefleet_dsp)]
    {
        dsp::add_i8(p, input1, input2, output)
    }
    #[cfg(not(edgefleet_dsp))]
    {
        reference::add_i8(p, input1, input2, output)
    }
}

/// As [`reference::average_pool_i8`] for inputs the caller validated
/// (`check_pool`, every window non-empty); `false` (nothing written) where
/// this path does not apply.
#[cfg_attr(not(target_arch = "arm"), allow(dead_code))]
pub(super) fn average_pool_i8(
    p: &reference::PoolParams,
    input_dims: Dims4,
    input: &[i8],
    output_dims: Dims4,
    output: &mut [i8],
) -> bool {
    #[cfg(edgefleet_dsp)]
    {
        dsp::average_pool_i8(p, input_dims, input, output_dims, output)
    }
    #[cfg(not(edgefleet_dsp))]
    {
        let _ = (p, input_dims, input, output_dims, output);
        false
    }
}

#[cfg(edgefleet_dsp)]
mod dsp {
    use super::reference;
    use crate::quant::multiply_by_quantized_multiplier_smaller_than_one_exp;
    use crate::reference::common::{
        check_bias, check_clamp, check_input_offset, check_len, check_len2, check_positive, check_requant,
        check_window, check_zero_point,
    };
    use crate::reference::{AddParams, ConvParams, DepthwiseParams, FullyConnectedParams};
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

    /// `a + sxtb16(v)` halfword-wise, wrapping: bytes 0 and 2 of `v`, sign
    /// extended, added to the halves of `a` (one instruction for `sxtb16`
    /// and `sadd16`).
    #[inline(always)]
    fn sxtab16(a: u32, v: u32) -> u32 {
        let r: u32;
        // SAFETY: as for `sxtb16`.
        unsafe {
            asm!("sxtab16 {r}, {a}, {v}", r = lateout(reg) r, a = in(reg) a, v = in(reg) v,
                options(pure, nomem, nostack, preserves_flags));
        }
        r
    }

    /// As [`sxtab16`] with bytes 1 and 3 of `v`.
    #[inline(always)]
    fn sxtab16_ror8(a: u32, v: u32) -> u32 {
        let r: u32;
        // SAFETY: as for `sxtb16`.
        unsafe {
            asm!("sxtab16 {r}, {a}, {v}, ror #8", r = lateout(reg) r, a = in(reg) a, v = in(reg) v,
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
        /// `m ≥ 2^30`, right shift 1..=24, the clamp is the int8 range:
        /// `smmlar` + `qadd` + `asr`, then `ssat` ([`Rq::fast`]).
        FastFull,
        /// As `FastFull`, then the layer's clamp.
        FastClamp,
        /// `m ≥ 2^30`, right shift 25..=31, the int8 range: [`Rq::wide`].
        Wide,
        /// `m = 0`: the output is `clamp(offset)`, whatever the accumulator.
        Const,
        /// Any multiplier and shift: [`Rq::general`].
        General,
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
        /// `2m` as a signed word: `2m − 2^32` when `m ≥ 2^30`, else `2m`.
        m2: i32,
        /// Fast modes: `2^(r−1) + offset·2^r`.
        cp: i32,
        offset: i32,
        /// The right shift `r = max(−shift, 0)`.
        rs: u8,
        /// The left shift `max(shift, 0)`.
        ls: u8,
        mode: Mode,
        clamp: Clamp,
    }

    impl Rq {
        /// Multiplier ≥ 0 and shift in `-31..=30` (validated by the caller).
        #[inline]
        fn new(requant: &Requant<'_>, channel: usize, out: OutParams) -> Rq {
            let i = if requant.multiplier.len() == 1 { 0 } else { channel };
            let multiplier = requant.multiplier.get(i).copied().unwrap_or(0);
            let shift = requant.shift.get(i).copied().unwrap_or(0).clamp(-31, 30);
            let rs = if shift < 0 { shift.unsigned_abs() } else { 0 };
            let ls = if shift > 0 { shift as u32 } else { 0 };
            let full = out.clamp.min == i8::MIN && out.clamp.max == i8::MAX;
            let high = multiplier >= 1 << 30;
            let (mode, cp) = match rs {
                // 2^(r−1) + offset·2^r: |offset| ≤ 128 and r ≤ 24 keep it in i32.
                1..=24 if high => {
                    let cp = (1i32 << (rs - 1)).wrapping_add(out.offset << rs);
                    (if full { Mode::FastFull } else { Mode::FastClamp }, cp)
                }
                25..=31 if high && full => (Mode::Wide, 1i32 << (rs - 2)),
                _ if multiplier == 0 => {
                    let c = out.offset.max(i32::from(out.clamp.min)).min(i32::from(out.clamp.max));
                    (Mode::Const, c)
                }
                _ => (Mode::General, 0),
            };
            Rq {
                m2: (multiplier as u32).wrapping_shl(1) as i32,
                cp,
                offset: out.offset,
                rs: rs as u8,
                ls: ls as u8,
                mode,
                clamp: out.clamp,
            }
        }

        /// `MBQM(acc) + offset` (fast modes), possibly saturated where the
        /// clamp makes no difference (see the module docs).
        #[inline(always)]
        fn fast(&self, acc: i32) -> i32 {
            // SRDHM(acc, m) for m ≥ 2^30.
            let s = smmlar(acc, self.m2, acc);
            // s − [s < 0]: s > i32::MIN (|SRDHM| < 2^31), no overflow.
            let u = s.wrapping_add(s >> 31);
            asr(qadd(u, self.cp), u32::from(self.rs))
        }

        #[inline(always)]
        fn fast_full(&self, acc: i32) -> i8 {
            ssat8(self.fast(acc)) as i8
        }

        #[inline(always)]
        fn fast_clamp(&self, acc: i32) -> i8 {
            self.fast(acc).max(i32::from(self.clamp.min)).min(i32::from(self.clamp.max)) as i8
        }

        /// `Wide`: `RDBPOT(s, r) = (⌊u/2⌋ + 2^(r−2)) >> (r − 1)` (see
        /// [`Rq::general`]), then the offset and `ssat`.
        #[inline(always)]
        fn wide(&self, acc: i32) -> i8 {
            let s = smmlar(acc, self.m2, acc);
            let u = s.wrapping_add(s >> 31);
            ssat8(asr(self.cp + (u >> 1), u32::from(self.rs) - 1) + self.offset) as i8
        }

        /// The reference's output stage for any multiplier and shift,
        /// exactly, without 64-bit arithmetic:
        ///
        /// - `x = acc << l` (wrapping, as the reference's `x * (1 << l)`);
        /// - `SRDHM(x, m) = smmlar(x, 2m, x·[m ≥ 2^30])`: `2m` read as
        ///   signed is `2m − 2^32·[m ≥ 2^30]`, so the 64-bit sum is `2xm`,
        ///   and `smmlar` adds `2^31` and keeps the high word;
        /// - `RDBPOT(s, r)` (ties away from zero) `= ⌊(u + 2^(r−1)) / 2^r⌋`
        ///   with `u = s − [s < 0]`; for `r ≥ 2` that is `(⌊u/2⌋ +
        ///   2^(r−2)) >> (r − 1)` (halving first cannot overflow, and the
        ///   dropped bit never carries), for `r = 1` it is `⌊u/2⌋ + (u & 1)`;
        /// - `+ offset` wrapping, then the clamp.
        #[inline(always)]
        fn general(&self, acc: i32) -> i8 {
            let x = acc.wrapping_shl(u32::from(self.ls));
            let s = smmlar(x, self.m2, x & (self.m2 >> 31));
            let r = match self.rs {
                0 => s,
                rs => {
                    let u = s.wrapping_add(s >> 31);
                    let h = u >> 1;
                    if rs == 1 { h + (u & 1) } else { (h + (1 << (rs - 2))) >> (rs - 1) }
                }
            };
            r.wrapping_add(self.offset).max(i32::from(self.clamp.min)).min(i32::from(self.clamp.max)) as i8
        }

        #[inline(always)]
        fn apply(&self, acc: i32) -> i8 {
            match self.mode {
                Mode::FastFull => self.fast_full(acc),
                Mode::FastClamp => self.fast_clamp(acc),
                Mode::Wide => self.wide(acc),
                Mode::Const => self.cp as i8,
                Mode::General => self.general(acc),
            }
        }
    }

    /// One output channel as the fused GEMM kernel [`gemm6_fast`] reads it
    /// (byte offsets 0, 4, 8, 12): the bias and the channel's [`Rq`].
    #[derive(Clone, Copy)]
    #[repr(C)]
    struct Chan {
        bias: i32,
        m2: i32,
        cp: i32,
        /// `shift | ls << 8 | mode << 16 | (offset as u8) << 24`: `shift` the
        /// `asr` amount (`rs`, or `rs − 1` for `Wide`; `asr` by a register
        /// reads only the low byte), mode `FastFull` 0, `Wide` 1 (the
        /// kernel's own), `Const` 2, `FastClamp` 3, `General` 4 (left to
        /// Rust).
        shifts: u32,
    }

    impl Chan {
        const NONE: Chan = Chan { bias: 0, m2: 0, cp: 0, shifts: 4 << 16 };

        fn new(rq: &Rq, bias: i32) -> Chan {
            let (mode, shift) = match rq.mode {
                Mode::FastFull => (0, rq.rs),
                Mode::Wide => (1, rq.rs - 1),
                Mode::Const => (2, rq.rs),
                Mode::FastClamp => (3, rq.rs),
                Mode::General => (4, rq.rs),
            };
            let shifts = u32::from(shift) | u32::from(rq.ls) << 8 | mode << 16 | u32::from(rq.offset as u8) << 24;
            Chan { bias, m2: rq.m2, cp: rq.cp, shifts }
        }

        #[inline]
        fn rq(&self, out: OutParams) -> Rq {
            let mode = match (self.shifts >> 16) & 0xff {
                0 => Mode::FastFull,
                1 => Mode::Wide,
                2 => Mode::Const,
                3 => Mode::FastClamp,
                _ => Mode::General,
            };
            let shift = self.shifts as u8;
            Rq {
                m2: self.m2,
                cp: self.cp,
                offset: out.offset,
                rs: if mode == Mode::Wide { shift + 1 } else { shift },
                ls: (self.shifts >> 8) as u8,
                mode,
                clamp: out.clamp,
            }
        }
    }

    // -----------------------------------------------------------------------
    // GEMM: convolution and fully connected
    // -----------------------------------------------------------------------

    /// Pixels per block of the hand-written kernel.
    const SLOTS: usize = 6;
    /// Words of the im2col buffer (8 KiB on the stack).
    const COL_WORDS: usize = 2048;

    /// The im2col buffer; 8-byte aligned for `ldrd`/`ldm`. Left
    /// uninitialised: a convolution zeroes only the prefix its blocks use (a
    /// shallow layer's few words, not 8 KiB per call).
    #[repr(C, align(8))]
    struct ColBuf(crate::fast::Scratch<u32, COL_WORDS>);

    impl ColBuf {
        fn new() -> Self {
            ColBuf(crate::fast::Scratch::new())
        }

        /// The first `len` words (at most all), zeroed.
        fn zeroed(&mut self, len: usize) -> &mut [u32] {
            self.0.init(len, |_| 0)
        }
    }

    /// Pixels per block for depth `k`: 6 if their patches fit the buffer,
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
    /// x3]`; a partial last group is padded with zeros. Writes at most
    /// `ceil(k/4)` groups, all inside `buf` (checked in `new`).
    struct PatchWriter<'a> {
        buf: &'a mut [u32],
        /// Word index of the next group.
        pos: usize,
        stride: usize,
        /// Groups that may still be written.
        left: usize,
        offset: i32,
        offset2: u32,
        stage: [i32; 4],
        staged: usize,
    }

    impl<'a> PatchWriter<'a> {
        fn new(buf: &'a mut [u32], slots: usize, q: usize, k: usize, offset: i32) -> Self {
            let groups = k.div_ceil(4);
            // Group g of slot q is words 2(g·slots + q) and + 1.
            let fits = q < slots && groups.checked_mul(2 * slots).is_some_and(|w| w <= buf.len());
            PatchWriter {
                buf,
                pos: 2 * q,
                stride: 2 * slots,
                left: if fits { groups } else { 0 },
                offset,
                offset2: pack(offset, offset),
                stage: [0; 4],
                staged: 0,
            }
        }

        #[inline(always)]
        fn put(&mut self, a: u32, b: u32) {
            if self.left > 0 {
                self.left -= 1;
                let p = self.buf.as_mut_ptr();
                // SAFETY: a group still left: pos + 1 < 2·groups·slots ≤ len (`new`).
                unsafe {
                    p.add(self.pos).write(a);
                    p.add(self.pos + 1).write(b);
                }
                self.pos += self.stride;
            }
        }

        /// Appends input values (the offset is added here).
        #[inline]
        fn values(&mut self, src: &[i8]) {
            let mut rest = src;
            if self.staged == 0 {
                let words = (src.len() / 4).min(self.left);
                rest = src.get(4 * words..).unwrap_or(&[]);
                let (off2, stride) = (self.offset2, self.stride);
                let p = self.buf.as_mut_ptr();
                let mut pos = self.pos;
                for w in src.chunks_exact(4).take(words) {
                    let v = load4(w);
                    // SAFETY: `words ≤ left` groups: pos + 1 < len (`new`).
                    unsafe {
                        p.add(pos).write(sxtab16(off2, v));
                        p.add(pos + 1).write(sxtab16_ror8(off2, v));
                    }
                    pos += stride;
                }
                self.pos = pos;
                self.left -= words;
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

    /// Output channels per requantization table (on the stack).
    const CHUNK: usize = 64;

    impl Gemm<'_> {
        /// `output[pix·n + c]` for every pixel, `fill(buf, slots, q, pix)`
        /// writing the patch of pixel `pix` into slot `q` (see
        /// [`PatchWriter`]). `slots_for(k) ≥ 1`, `output.len() = pixels·n`.
        /// Channels go in chunks of [`CHUNK`] (the patches are gathered once
        /// per chunk), pixels in blocks of 6; a last block of 4 or 5 pixels
        /// runs the 6-pixel kernel on a padded block and keeps what it needs.
        fn run(&self, pixels: usize, mut fill: impl FnMut(&mut [u32], usize, usize, usize), output: &mut [i8]) {
            let (n, k) = (self.n, self.k);
            let slots = slots_for(k);
            let mut table = [Chan::NONE; CHUNK];
            if k == 0 {
                // No taps: every output is the bias, requantized.
                for (i, o) in output.iter_mut().enumerate() {
                    let ch = i % n.max(1);
                    let b = self.bias.and_then(|b| b.get(ch)).copied().unwrap_or(0);
                    *o = Rq::new(&self.requant, ch, self.out).apply(b);
                }
                return;
            }
            let mut buf = ColBuf::new();
            // The most any block uses: whole blocks' patches.
            let cols = buf.zeroed(k.div_ceil(4) * 2 * slots);
            let mut scratch = [0i8; SLOTS * CHUNK];
            let mut c0 = 0;
            while c0 < n {
                let nc = CHUNK.min(n - c0);
                for (j, t) in table.iter_mut().take(nc).enumerate() {
                    let bias = self.bias.and_then(|b| b.get(c0 + j)).copied().unwrap_or(0);
                    *t = Chan::new(&Rq::new(&self.requant, c0 + j, self.out), bias);
                }
                // Bit j: channel c0 + j's output stage is `FastFull`
                // (`fast[0]`) or `Wide` (`fast[1]`), those `gemm6_fast` does.
                let mode = |t: &Chan| (t.shifts >> 16) & 0xff;
                let fast = [0, 1].map(|m| {
                    table[..nc].iter().enumerate().fold(0u64, |a, (j, t)| if mode(t) == m { a | 1 << j } else { a })
                });
                let chunk = Chunk { gemm: self, c0, table: &table[..nc], fast };
                let scratch = &mut scratch;
                let mut pix = 0;
                while pix < pixels {
                    // Blocks of 6 (4 or 5 padded to 6), else of 1 or 2 (3 as
                    // 2 + 1: two channels at a time in `asm!`, where 3 would
                    // take the Rust loop); layers too deep for 6 patches one
                    // pixel at a time.
                    let np = match pixels - pix {
                        _ if slots < SLOTS => 1,
                        3 => 2,
                        left => left.min(SLOTS),
                    };
                    let stride = if slots == SLOTS && np >= 4 { SLOTS } else { np };
                    let used = (k.div_ceil(4) * 2 * stride).min(COL_WORDS);
                    let Some(xs) = cols.get_mut(..used) else { return };
                    for q in 0..np {
                        fill(xs, stride, q, pix + q);
                    }
                    let Some(out) = output.get_mut(pix * n..(pix + np) * n) else { return };
                    match stride {
                        6 => chunk.block::<6>(xs, np, out, scratch),
                        3 => chunk.block::<3>(xs, np, out, scratch),
                        2 => chunk.block::<2>(xs, np, out, scratch),
                        _ => chunk.block::<1>(xs, np, out, scratch),
                    }
                    pix += np;
                }
                c0 += nc;
            }
        }
    }

    /// Channels `c0 .. c0 + table.len()` of a [`Gemm`], `k ≥ 1`.
    struct Chunk<'a> {
        gemm: &'a Gemm<'a>,
        c0: usize,
        table: &'a [Chan],
        /// Bit j: `table[j]`'s output stage is `FastFull` (`[0]`), `Wide`
        /// (`[1]`).
        fast: [u64; 2],
    }

    impl Chunk<'_> {
        /// The chunk's channels of `valid ≤ N` pixels whose patches are in
        /// `xs` (slot stride `N`); `out` holds the `valid` pixels' outputs.
        #[inline(never)]
        fn block<const N: usize>(&self, xs: &[u32], valid: usize, out: &mut [i8], scratch: &mut [i8; SLOTS * CHUNK]) {
            let g = self.gemm;
            let (n, k) = (g.n, g.k);
            let nc = self.table.len();
            if valid > N
                || xs.len() < k.div_ceil(4) * 2 * N
                || out.len() < valid * n
                || self.c0 + nc > n
                || g.filter.len() < (self.c0 + nc) * k
            {
                return;
            }
            // The fused kernel takes whole 6-slot blocks; it reads
            // ceil(k/4)·4 bytes of each weight row, up to 3 bytes into the
            // next row, so not the filter's last row when k % 4 ≠ 0. Partial
            // blocks write into `scratch` (6 rows of the chunk's channels)
            // and copy the valid rows out.
            let groups = k.div_ceil(4);
            let fused_end = if k % 4 != 0 && self.c0 + nc == n { nc - 1 } else { nc };
            let (dst, stride) = if valid == SLOTS { (out.as_mut_ptr(), n) } else { (scratch.as_mut_ptr(), nc) };
            let fused = N == SLOTS && nc <= CHUNK;
            // Channel j's outputs, written to `out` in Rust, into `scratch`
            // too (which is copied over `out` at the end).
            let keep = |scratch: &mut [i8; SLOTS * CHUNK], out: &[i8], j: usize| {
                for q in 0..valid {
                    if let (Some(d), Some(&v)) = (scratch.get_mut(q * nc + j), out.get(q * n + self.c0 + j)) {
                        *d = v;
                    }
                }
            };
            let mut j = 0;
            while j < nc {
                // The run of channels `gemm6_fast` does from j (j < nc ≤
                // 64): `FastFull` ones, or with `Wide` ones if the chunk has
                // any (`mixed`).
                let mixed = self.fast[1] != 0;
                let run = (!((self.fast[0] | self.fast[1]) >> j)).trailing_zeros() as usize;
                let run_end = (j + run).min(fused_end);
                if fused && j < run_end {
                    // SAFETY: channels c0 + j .. c0 + run_end (run_end ≤
                    // fused_end): their weight rows (k bytes each,
                    // consecutive) plus the ≤ 3 bytes read past each (the
                    // next row's) are inside the filter (checked above; not
                    // the last row when k % 4 ≠ 0); their outputs at dst + j
                    // + q·stride (q < 6): inside `out` (valid = 6, out.len()
                    // ≥ 6n, c0 + nc ≤ n) or `scratch` (6·nc ≤ 6·CHUNK); `xs`
                    // holds 12·groups words (groups ≥ 1: k ≥ 1), 8-byte
                    // aligned (a prefix of `ColBuf`); the table has run_end −
                    // j ≥ 1 entries from j, all `FastFull` unless `mixed`,
                    // else `FastFull` or `Wide`.
                    unsafe {
                        let (w, t) = (g.filter.as_ptr().add((self.c0 + j) * k), self.table.as_ptr().add(j));
                        let o = dst.add(if valid == SLOTS { self.c0 + j } else { j });
                        let (count, wadj, x) = (run_end - j, k as isize - 4 * groups as isize, xs.as_ptr());
                        if mixed {
                            gemm6_fast::<true>(w, t, count, o, x, groups, wadj, stride);
                        } else {
                            gemm6_fast::<false>(w, t, count, o, x, groups, wadj, stride);
                        }
                    };
                    j = run_end;
                    if j == nc {
                        break;
                    }
                }
                // Channel j is not `FastFull` or `Wide`, or is the filter's
                // last row when k % 4 ≠ 0, or the block has fewer than 6
                // slots: in Rust, two channels at a time in blocks of fewer
                // than 6 slots.
                if !fused && N <= 2 && j + 1 < nc {
                    self.channel_pair::<N>(j, xs, valid, out);
                    j += 2;
                    continue;
                }
                self.channel::<N>(j, xs, valid, out);
                if fused && valid < SLOTS {
                    keep(scratch, out, j);
                }
                j += 1;
            }
            if fused && valid < SLOTS {
                for q in 0..valid {
                    let from = scratch.get(q * nc..(q + 1) * nc);
                    let to = out.get_mut(q * n + self.c0..q * n + self.c0 + nc);
                    if let (Some(from), Some(to)) = (from, to) {
                        to.copy_from_slice(from);
                    }
                }
            }
        }

        /// Channel `c0 + j` of the block (bounds checked by `block`).
        #[inline(always)]
        fn channel<const N: usize>(&self, j: usize, xs: &[u32], valid: usize, out: &mut [i8]) {
            let g = self.gemm;
            let k = g.k;
            let groups = k / 4;
            let ch = self.c0 + j;
            let Some(t) = self.table.get(j) else { return };
            let row = g.filter.get(ch * k..(ch + 1) * k).unwrap_or(&[]);
            let mut acc = [t.bias; N];
            if N == SLOTS && groups > 0 {
                // SAFETY: `groups ≥ 1`; `row` has k ≥ 4·groups bytes; `xs` has
                // ceil(k/4)·2·6 ≥ 12·groups words and is 8-byte aligned (a
                // prefix of `ColBuf`).
                let a = unsafe { dot6(row.as_ptr(), xs.as_ptr(), groups, t.bias) };
                for (d, s) in acc.iter_mut().zip(a) {
                    *d = s;
                }
            } else {
                dot_n(row, xs, groups, &mut acc);
            }
            self.finish(j, acc, xs, valid, out);
        }

        /// Channels `c0 + j` and `c0 + j + 1` of a block of `N < 7` pixels
        /// ([`dot_pair`] for 1 or 2; bounds checked by `block`).
        #[inline(always)]
        fn channel_pair<const N: usize>(&self, j: usize, xs: &[u32], valid: usize, out: &mut [i8]) {
            let g = self.gemm;
            let k = g.k;
            let ch = self.c0 + j;
            let (Some(ta), Some(tb)) = (self.table.get(j), self.table.get(j + 1)) else { return };
            let ra = g.filter.get(ch * k..(ch + 1) * k).unwrap_or(&[]);
            let rb = g.filter.get((ch + 1) * k..(ch + 2) * k).unwrap_or(&[]);
            let (mut a, mut b) = ([ta.bias; N], [tb.bias; N]);
            let groups = k / 4;
            if N <= 2 && ra.len() >= 4 * groups && rb.len() >= 4 * groups && xs.len() >= 2 * N * groups {
                let mut acc = [ta.bias, ta.bias, tb.bias, tb.bias];
                let args = PairArgs { ra: ra.as_ptr(), rb: rb.as_ptr(), xs: xs.as_ptr(), groups };
                // SAFETY: the rows have 4·groups bytes and `xs` 2N·groups
                // words (checked), 8-byte aligned (a prefix of `ColBuf`).
                unsafe { dot_pair::<N>(&args, &mut acc) };
                a.copy_from_slice(&acc[..N]);
                b.copy_from_slice(&acc[2..2 + N]);
            } else {
                dot_n(ra, xs, groups, &mut a);
                dot_n(rb, xs, groups, &mut b);
            }
            self.finish(j, a, xs, valid, out);
            self.finish(j + 1, b, xs, valid, out);
        }

        /// Channel `c0 + j`'s last partial depth group (if any) and output
        /// stage, from its accumulators over the whole groups.
        #[inline(always)]
        fn finish<const N: usize>(&self, j: usize, mut acc: [i32; N], xs: &[u32], valid: usize, out: &mut [i8]) {
            let g = self.gemm;
            let (n, k) = (g.n, g.k);
            let groups = k / 4;
            let ch = self.c0 + j;
            let Some(t) = self.table.get(j) else { return };
            let row = g.filter.get(ch * k..(ch + 1) * k).unwrap_or(&[]);
            if k % 4 != 0 {
                let mut w = [0u8; 4];
                for (d, &s) in w.iter_mut().zip(row.get(groups * 4..).unwrap_or(&[])) {
                    *d = s as u8;
                }
                step(u32::from_le_bytes(w), xs.get(groups * 2 * N..).unwrap_or(&[]), &mut acc);
            }
            let rq = t.rq(g.out);
            let o = out.as_mut_ptr();
            let put = |q: usize, v: i8| {
                // SAFETY: out.len() ≥ valid·n (checked in `block`), ch < n
                // and q < valid, so q·n + ch < valid·n.
                unsafe { *o.add(q * n + ch) = v };
            };
            macro_rules! store {
                ($f:ident) => {
                    if valid == N {
                        acc.iter().enumerate().for_each(|(q, &a)| put(q, rq.$f(a)));
                    } else {
                        acc.iter().take(valid).enumerate().for_each(|(q, &a)| put(q, rq.$f(a)));
                    }
                };
            }
            match rq.mode {
                Mode::FastFull => store!(fast_full),
                Mode::FastClamp => store!(fast_clamp),
                Mode::Wide => store!(wide),
                Mode::Const => store!(apply),
                Mode::General => store!(general),
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

    /// The rows, patches and group count of [`dot_pair`], read by its `asm!`
    /// with one `ldm`.
    #[repr(C)]
    struct PairArgs {
        ra: *const i8,
        rb: *const i8,
        xs: *const u32,
        groups: usize,
    }

    /// [`dot_n`] for two channels at once (rows `ra`, `rb`) of a block of
    /// `N` = 1 or 2 pixels: each patch word pair is loaded once for both,
    /// 18 instructions per group of 2 × 2 (Rust made 13 of one channel's
    /// 2 pixels). `acc` is `[a_0 .. a_N, b_0 .. b_N]`.
    ///
    /// # Safety
    /// `ra` and `rb` readable for `4·groups` bytes; `xs` for `2N·groups`
    /// words, 4-byte aligned; `N` 1 or 2.
    #[inline(always)]
    unsafe fn dot_pair<const N: usize>(args: &PairArgs, acc: &mut [i32; 4]) {
        if args.groups == 0 {
            return;
        }
        let [mut a0, mut a1, mut b0, mut b1] = *acc;
        // SAFETY: reads the rows and patches the caller vouches for (`ldr`
        // any alignment, `ldrd` 4-byte aligned); r6, r7 and r11 are pushed
        // and popped; flags clobbered.
        unsafe {
            if N == 2 {
                asm!(
                    "push {{r6, r7, r11}}",
                    "ldm r12, {{r6, r7, r11}}",
                    "ldr lr, [r12, #12]",
                    "2:",
                    "ldrd r4, r5, [r11], #8",
                    "ldrd r8, r9, [r11], #8",
                    "ldr r10, [r6], #4",
                    "sxtb16 r12, r10, ror #8",
                    "sxtb16 r10, r10",
                    "smlad r0, r10, r4, r0",
                    "smlad r0, r12, r5, r0",
                    "smlad r1, r10, r8, r1",
                    "smlad r1, r12, r9, r1",
                    "ldr r10, [r7], #4",
                    "sxtb16 r12, r10, ror #8",
                    "sxtb16 r10, r10",
                    "smlad r2, r10, r4, r2",
                    "smlad r2, r12, r5, r2",
                    "smlad r3, r10, r8, r3",
                    "smlad r3, r12, r9, r3",
                    "subs lr, lr, #1",
                    "bne 2b",
                    "pop {{r6, r7, r11}}",
                    inout("r0") a0,
                    inout("r1") a1,
                    inout("r2") b0,
                    inout("r3") b1,
                    out("r4") _,
                    out("r5") _,
                    out("r8") _,
                    out("r9") _,
                    out("r10") _,
                    inout("r12") args as *const PairArgs => _,
                    out("lr") _,
                );
            } else {
                asm!(
                    "push {{r6, r7, r11}}",
                    "ldm r12, {{r6, r7, r11}}",
                    "ldr lr, [r12, #12]",
                    "2:",
                    "ldrd r4, r5, [r11], #8",
                    "ldr r10, [r6], #4",
                    "sxtb16 r12, r10, ror #8",
                    "sxtb16 r10, r10",
                    "smlad r0, r10, r4, r0",
                    "smlad r0, r12, r5, r0",
                    "ldr r10, [r7], #4",
                    "sxtb16 r12, r10, ror #8",
                    "sxtb16 r10, r10",
                    "smlad r2, r10, r4, r2",
                    "smlad r2, r12, r5, r2",
                    "subs lr, lr, #1",
                    "bne 2b",
                    "pop {{r6, r7, r11}}",
                    inout("r0") a0,
                    inout("r2") b0,
                    out("r4") _,
                    out("r5") _,
                    out("r10") _,
                    inout("r12") args as *const PairArgs => _,
                    out("lr") _,
                );
            }
        }
        *acc = [a0, a1, b0, b1];
    }

    /// The first group of [`gemm6_fast`]'s channel: as `step6!`, every
    /// accumulator starting from the bias in r11 (pixel 5's, r11 itself,
    /// last), so no `mov`s set them up.
    #[rustfmt::skip]
    macro_rules! step6_init {
        () => {
            concat!(
                "ldr r12, [r0], #4\n",
                "sxtb16 lr, r12, ror #8\n",
                "sxtb16 r12, r12\n",
                "ldm r1!, {{r2, r3, r4, r5}}\n",
                "smlad r6, r12, r2, r11\n",
                "smlad r6, lr, r3, r6\n",
                "smlad r7, r12, r4, r11\n",
                "smlad r7, lr, r5, r7\n",
                "ldm r1!, {{r2, r3, r4, r5}}\n",
                "smlad r8, r12, r2, r11\n",
                "smlad r8, lr, r3, r8\n",
                "smlad r9, r12, r4, r11\n",
                "smlad r9, lr, r5, r9\n",
                "ldm r1!, {{r2, r3, r4, r5}}\n",
                "smlad r10, r12, r2, r11\n",
                "smlad r10, lr, r3, r10\n",
                "smlad r11, r12, r4, r11\n",
                "smlad r11, lr, r5, r11\n",
            )
        };
    }

    /// One group of 4 depth values for 6 pixels: weights at `r0` (widened
    /// into r12 and lr), patches at `r1`, two pixels per `ldm` (r2–r5);
    /// accumulators r6–r11. 18 instructions for 24 MACs.
    #[rustfmt::skip]
    macro_rules! step6 {
        () => {
            concat!(
                "ldr r12, [r0], #4\n",
                "sxtb16 lr, r12, ror #8\n",
                "sxtb16 r12, r12\n",
                "ldm r1!, {{r2, r3, r4, r5}}\n",
                "smlad r6, r12, r2, r6\n",
                "smlad r6, lr, r3, r6\n",
                "smlad r7, r12, r4, r7\n",
                "smlad r7, lr, r5, r7\n",
                "ldm r1!, {{r2, r3, r4, r5}}\n",
                "smlad r8, r12, r2, r8\n",
                "smlad r8, lr, r3, r8\n",
                "smlad r9, r12, r4, r9\n",
                "smlad r9, lr, r5, r9\n",
                "ldm r1!, {{r2, r3, r4, r5}}\n",
                "smlad r10, r12, r2, r10\n",
                "smlad r10, lr, r3, r10\n",
                "smlad r11, r12, r4, r11\n",
                "smlad r11, lr, r5, r11\n",
            )
        };
    }

    /// The depth loop after a channel's first group, its shape in the flags
    /// ([`depth_flags`], set with `msr` before the first group; no step
    /// changes N, Z, C or V): one step (N), two steps (C), four steps (V),
    /// then, unless Z, eight at a time until `r1` reaches the end pointer at
    /// `[sp, #$end]`.
    #[rustfmt::skip]
    macro_rules! steps6 {
        ($end:literal) => {
            concat!(
                "bpl 2f\n",
                step6!(),
                "2:\n",
                "bcc 3f\n",
                step6!(),
                step6!(),
                "3:\n",
                "bvc 9f\n",
                step6!(),
                step6!(),
                step6!(),
                step6!(),
                "9:\n",
                "beq 5f\n",
                "4:\n",
                step6!(),
                step6!(),
                step6!(),
                step6!(),
                step6!(),
                step6!(),
                step6!(),
                step6!(),
                "ldr r2, [sp, #", $end, "]\n",
                "cmp r1, r2\n",
                "bne 4b\n",
                "5:\n",
            )
        };
    }

    /// The flags word (`msr APSR_nzcvq`) that shapes [`steps6!`] for the
    /// `groups − 1 ≥ 0` depth groups after a channel's first: N = bit 0, C
    /// = bit 1, V = bit 2, Z = no group of eight (Q clear).
    const fn depth_flags(groups: usize) -> u32 {
        let left = groups.saturating_sub(1);
        ((left & 1) as u32) << 31
            | ((left >> 3 == 0) as u32) << 30
            | (((left >> 1) & 1) as u32) << 29
            | (((left >> 2) & 1) as u32) << 28
    }

    /// `bias + Σ_{g < groups} dot(w[4g..4g+4], patch_q[g])` for the 6 pixels
    /// `q` of an interleaved buffer (slot stride 6), `groups ≥ 1`.
    ///
    /// Uses all 14 general registers: r0–r5, r8–r10, r12 and lr as operands,
    /// and r6, r7 and r11 (which `asm!` does not hand out: base and frame
    /// pointers) saved on the stack and restored; the end pointer of the
    /// patches lives on the stack. The register choices work in both ARM and
    /// Thumb-2 state.
    ///
    /// # Safety
    /// `groups ≥ 1`; `w` must be readable for `4·groups` bytes (any
    /// alignment) and `x` readable for `48·groups` bytes and 4-byte aligned.
    #[inline(always)]
    unsafe fn dot6(w: *const i8, x: *const u32, groups: usize, bias: i32) -> [i32; 6] {
        let (a0, a1, a2, a3, a4, a5): (i32, i32, i32, i32, i32, i32);
        let end = x.wrapping_add(12 * groups);
        // SAFETY: reads `4·groups` bytes from `w` (`ldr` allows any
        // alignment) and `48·groups` bytes from `x` (`ldm`, 4-byte aligned),
        // which the caller guarantees (the loop stops at `end`, reached after
        // whole groups); r6, r7 and r11 are pushed and popped, the end
        // pointer pushed below them popped first (no calls in between);
        // flags are clobbered (no `preserves_flags`).
        unsafe {
            asm!(
                "push {{r6, r7, r11}}",
                "push {{r3}}",
                "mov r11, r8",
                // The first group from the bias, then the others.
                "msr APSR_nzcvq, r2",
                step6_init!(),
                steps6!("0"),
                "add sp, sp, #4",
                "mov r0, r6",
                "mov r1, r7",
                "mov r2, r11",
                "pop {{r6, r7, r11}}",
                inout("r0") w => a0,
                inout("r1") x => a1,
                inout("r2") depth_flags(groups) => a5,
                inout("r3") end => _,
                out("r4") _,
                out("r5") _,
                inout("r8") bias => a2,
                out("r9") a3,
                out("r10") a4,
                out("r12") _,
                out("lr") _,
            );
        }
        [a0, a1, a2, a3, a4, a5]
    }

    /// Requantizes accumulator `$r` in place (`FastFull`: m2, cp, rs in r2,
    /// r3, r4); `store6!` stores the six.
    #[rustfmt::skip]
    macro_rules! stage_acc {
        ($r:literal) => {
            concat!(
                "smmlar ", $r, ", ", $r, ", r2, ", $r, "\n",
                "add ", $r, ", ", $r, ", ", $r, ", asr #31\n",
                "qadd ", $r, ", ", $r, ", r3\n",
                "asr ", $r, ", ", $r, ", r4\n",
                "ssat ", $r, ", #8, ", $r, "\n",
            )
        };
    }

    /// Stores the 6 requantized accumulators (r6–r11) at `[r1 + q·r12]`
    /// (two per pointer step); r1 is dead after.
    #[rustfmt::skip]
    macro_rules! store6 {
        () => {
            concat!(
                "strb r6, [r1]\n",
                "strb r7, [r1, r12]\n",
                "add r1, r1, r12, lsl #1\n",
                "strb r8, [r1]\n",
                "strb r9, [r1, r12]\n",
                "add r1, r1, r12, lsl #1\n",
                "strb r10, [r1]\n",
                "strb r11, [r1, r12]\n",
            )
        };
    }

    /// Requantizes accumulator `$r` (`Wide`: m2, 2^(rs−2), rs − 1, offset in
    /// r2, r3, r4, r5) in place.
    #[rustfmt::skip]
    macro_rules! stage_wide {
        ($r:literal) => {
            concat!(
                "smmlar ", $r, ", ", $r, ", r2, ", $r, "\n",
                "add ", $r, ", ", $r, ", ", $r, ", asr #31\n",
                "add ", $r, ", r3, ", $r, ", asr #1\n",
                "asr ", $r, ", ", $r, ", r4\n",
                "add ", $r, ", ", $r, ", r5\n",
                "ssat ", $r, ", #8, ", $r, "\n",
            )
        };
    }

    /// All 6 pixels of `count` consecutive output channels, dot product and
    /// output stage, `FastFull` or (if `MIXED`) `Wide`, channel by channel
    /// (a `FastFull`-only kernel saves the test per channel): weights from `w` (rows of `4·groups + wadj` bytes,
    /// consecutive, `−3 ≤ wadj ≤ 0`: a partial last group reads the first
    /// bytes of the next row, which the zero padding of the patches
    /// cancels), channel `j`'s bias and stage from `table[j]`, its outputs
    /// at `out + j + q·n` (`q < 6`).
    ///
    /// The loop state lives on the stack (`sp`-relative: the dot product
    /// needs all 14 registers, see [`dot6`]).
    ///
    /// # Safety
    /// `count ≥ 1`, `groups ≥ 1`; for each of the `count` channels: its
    /// weight row readable for `4·groups` bytes, its table entry readable
    /// (4-byte aligned) and `FastFull` (or, if `MIXED`, `Wide`), its 6 outputs
    /// writable; `xs` readable for `48·groups` bytes, 4-byte aligned.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn gemm6_fast<const MIXED: bool>(
        w: *const i8,
        table: *const Chan,
        count: usize,
        out: *mut i8,
        xs: *const u32,
        groups: usize,
        wadj: isize,
        n: usize,
    ) {
        let end = xs.wrapping_add(12 * groups);
        // Each row starts `wadj` bytes after the previous one's last group
        // ends; the first, `wadj` after this.
        let w = w.wrapping_offset(-wadj);
        let flags = depth_flags(groups);
        // The kernel around its output stage (`FastFull`: m2, cp, rs in r2,
        // r3, r4; `Wide`: see `stage_wide!`).
        macro_rules! kernel {
            ($($stage:expr),*) => {
                asm!(
                    "push {{r6, r7, r11}}",
                    // [sp]: xs, table, wadj, depth flags, count, out, end, n.
                    "push {{r1, r2, r3, r4, r5, r8, r9, r10}}",
                    "6:",
                    "ldm sp, {{r1, r2, r3, r5}}",
                    "add r0, r0, r3",
                    // The bias; the table pointer moves to the next channel.
                    "ldr r11, [r2], #16",
                    "str r2, [sp, #4]",
                    // The first group from the bias, then the others.
                    "msr APSR_nzcvq, r5",
                    step6_init!(),
                    steps6!("24"),
                    // m2, cp and shifts: the 12 bytes below the table pointer.
                    "ldr r1, [sp, #4]",
                    "ldmdb r1, {{r2, r3, r4}}",
                    "ldr r1, [sp, #20]",
                    "ldr r12, [sp, #28]",
                    $($stage,)*
                    // count − 1, out + 1 (`strd` keeps the flags of `subs`).
                    "ldrd r2, r3, [sp, #16]",
                    "add r3, r3, #1",
                    "subs r2, r2, #1",
                    "strd r2, r3, [sp, #16]",
                    "bne 6b",
                    "add sp, sp, #32",
                    "pop {{r6, r7, r11}}",
                    inout("r0") w => _,
                    inout("r1") xs => _,
                    inout("r2") table => _,
                    inout("r3") wadj => _,
                    inout("r4") flags => _,
                    inout("r5") count => _,
                    inout("r8") out => _,
                    inout("r9") end => _,
                    inout("r10") n => _,
                    out("r12") _,
                    out("lr") _,
                )
            };
        }
        // SAFETY: reads the weights, table entries and patches and writes
        // the outputs the caller vouches for (the depth loop stops at `end`,
        // after whole groups); r6, r7 and r11 are pushed and popped, and the
        // 32 bytes of state pushed below them are popped before (no calls in
        // between); flags clobbered.
        unsafe {
            if MIXED {
                kernel!(
                    "tst r4, #0x10000",
                    "bne 8f",
                    stage_acc!("r6"),
                    stage_acc!("r7"),
                    stage_acc!("r8"),
                    stage_acc!("r9"),
                    stage_acc!("r10"),
                    stage_acc!("r11"),
                    store6!(),
                    "b 11f",
                    // Wide: r3 = 2^(rs−2), r4 = rs − 1, r5 = the offset (the
                    // shifts word's top byte).
                    "8:",
                    "asr r5, r4, #24",
                    stage_wide!("r6"),
                    stage_wide!("r7"),
                    stage_wide!("r8"),
                    stage_wide!("r9"),
                    stage_wide!("r10"),
                    stage_wide!("r11"),
                    store6!(),
                    "11:"
                );
            } else {
                kernel!(
                    stage_acc!("r6"),
                    stage_acc!("r7"),
                    stage_acc!("r8"),
                    stage_acc!("r9"),
                    stage_acc!("r10"),
                    stage_acc!("r11"),
                    store6!()
                );
            }
        }
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
        fn fill(&self, input: &[i8], buf: &mut [u32], slots: usize, q: usize, pix: usize, raw: &mut Raw) {
            let per_image = self.oh * self.ow;
            let (b, r) = (pix / per_image, pix % per_image);
            let (oy, ox) = (r / self.ow, r % self.ow);
            if self.c.is_multiple_of(4) && self.dw == 1 {
                self.fill_words(input, buf, slots, q, b, oy, ox);
            } else {
                self.fill_any(input, buf, slots, q, b, oy, ox, raw);
            }
        }

        /// `fill` for a one-channel image (KWS's spectrogram), no horizontal
        /// dilation: each kernel row's columns inside the image are one run
        /// of words, its padding columns the zero point, gathered in `raw`
        /// and converted as a whole (`fill_any` made a call per byte for rows
        /// partly in the padding). `conv2d_i8` runs it through its own
        /// instance of [`Gemm::run`] (4 KB of `.text`): a branch to it inside
        /// `fill` changed the compiler's inlining for the other depths and
        /// cost VWW and IC 0.1 M instructions each.
        fn fill_c1(&self, input: &[i8], buf: &mut [u32], slots: usize, q: usize, pix: usize, raw: &mut Raw) {
            let per_image = self.oh * self.ow;
            let (b, r) = (pix / per_image, pix % per_image);
            let (oy, ox) = (r / self.ow, r % self.ow);
            let (fh, fw) = (self.fh, self.fw);
            let k = fh * fw;
            let words = k.div_ceil(4);
            if q >= slots || words * 2 * slots > buf.len() || k > GATHER || words == 0 {
                return;
            }
            let zp = (-self.offset) as i8 as u8;
            let zp4 = u32::from(zp).wrapping_mul(0x0101_0101);
            let rp = raw.as_mut_ptr().cast::<u8>();
            let px0 = ox * self.sw;
            // Kernel columns inside the image: kx_lo..kx_hi.
            let kx_lo = self.pw.saturating_sub(px0).min(fw);
            let kx_hi = (self.pw + self.iw).saturating_sub(px0).clamp(kx_lo, fw);
            let (len, run_words) = (kx_hi - kx_lo, (kx_hi - kx_lo).div_ceil(4));
            for ky in 0..fh {
                let at = ky * fw;
                let iy = (oy * self.sh + ky * self.dh).checked_sub(self.ph).filter(|&y| y < self.ih);
                // (len > 0: kx_lo < fw, so px0 + kx_lo ≥ pw; a window wholly
                // in the horizontal padding has no run.)
                let from = iy.filter(|_| len > 0).map(|iy| (b * self.ih + iy) * self.iw + px0 + kx_lo - self.pw);
                match from {
                    Some(f) if len > 0 && f + 4 * run_words <= input.len() => {
                        // SAFETY: the input range is checked in the guard;
                        // the destination ends at at + kx_lo + 4·run_words ≤
                        // k + 3 ≤ GATHER + 3, inside `raw`.
                        unsafe { copy_words(input.as_ptr().add(f), rp.add(at + kx_lo), run_words) };
                    }
                    Some(f) => {
                        for i in 0..len {
                            // SAFETY: at + kx_lo + i < k ≤ GATHER.
                            unsafe { rp.add(at + kx_lo + i).write(input.get(f + i).map_or(zp, |&x| x as u8)) };
                        }
                    }
                    None => {
                        for i in kx_lo..kx_hi {
                            // SAFETY: at + i < k ≤ GATHER.
                            unsafe { rp.add(at + i).write(zp) };
                        }
                    }
                }
                // The padding columns, after the run (which may write up to
                // 3 bytes past its end).
                for i in (0..kx_lo).chain(kx_hi..fw) {
                    // SAFETY: at + i < k ≤ GATHER.
                    unsafe { rp.add(at + i).write(zp) };
                }
            }
            // The zero point after the last value (at most 3 bytes).
            // SAFETY: k + 4 ≤ GATHER + 4 = the bytes of `raw`.
            unsafe { rp.add(k).cast::<u32>().write_unaligned(zp4) };
            // SAFETY: `raw` holds 4·words ≤ k + 3 bytes written above; group
            // g of slot q is words 2(g·slots + q), + 1 < 2·words·slots ≤
            // buf.len().
            unsafe {
                conv_words(
                    raw.as_ptr().cast::<i8>(),
                    buf.as_mut_ptr().add(2 * q),
                    words,
                    2 * slots,
                    pack(self.offset, self.offset),
                )
            };
        }

        /// `fill` for depths that are a multiple of 4 and no horizontal
        /// dilation: each kernel row is zeros, one run of whole input words,
        /// zeros.
        #[allow(clippy::too_many_arguments)]
        fn fill_words(&self, input: &[i8], buf: &mut [u32], slots: usize, q: usize, b: usize, oy: usize, ox: usize) {
            let c4 = self.c / 4;
            let row_groups = self.fw * c4;
            // Group g of slot q: words 2(g·slots + q), + 1; fh·fw·c/4 groups.
            if q >= slots || self.fh * row_groups * 2 * slots > buf.len() {
                return;
            }
            let stride = 2 * slots;
            let off2 = pack(self.offset, self.offset);
            let mut d = buf.as_mut_ptr().wrapping_add(2 * q);
            let px0 = ox * self.sw;
            // Kernel columns inside the image: kx_lo..kx_hi.
            let kx_lo = self.pw.saturating_sub(px0).min(self.fw);
            let kx_hi = (self.pw + self.iw).saturating_sub(px0).clamp(kx_lo, self.fw);
            // The window inside the image (most pixels): fh runs of
            // fw·c/4 words, dh·iw·c bytes apart, in one loop.
            let py0 = oy * self.sh;
            if kx_lo == 0 && kx_hi == self.fw && row_groups > 0 && py0 >= self.ph {
                let iy0 = py0 - self.ph;
                let row_step = self.dh * self.iw * self.c;
                let start = ((b * self.ih + iy0) * self.iw + px0 - self.pw) * self.c;
                let last = iy0 + (self.fh - 1) * self.dh;
                if last < self.ih && start + (self.fh - 1) * row_step + 4 * row_groups <= input.len() {
                    // SAFETY (each block): rows iy0 + ky·dh ≤ last < ih and
                    // columns px0 − pw .. px0 − pw + fw ≤ iw (kx_lo = 0, kx_hi =
                    // fw): the reads, the last ending at start + (fh − 1)·
                    // row_step + 4·row_groups, are inside the input (checked);
                    // the fh·row_groups groups written are inside buf (checked
                    // above); row_groups ≥ 1.
                    for ky in 0..self.fh {
                        unsafe {
                            conv_words(input.as_ptr().add(start + ky * row_step), d, row_groups, stride, off2);
                        }
                        d = d.wrapping_add(row_groups * stride);
                    }
                    return;
                }
            }
            for ky in 0..self.fh {
                let iy = (oy * self.sh + ky * self.dh).checked_sub(self.ph).filter(|&y| y < self.ih);
                let (zeros_before, words) = match iy {
                    Some(_) => (kx_lo * c4, (kx_hi - kx_lo) * c4),
                    None => (row_groups, 0),
                };
                // A non-empty run starts inside the image: kx_lo = pw − px0
                // when the window starts in the padding, else 0 with px0 ≥ pw.
                let start = match iy {
                    Some(iy) if words > 0 => ((b * self.ih + iy) * self.iw + px0 + kx_lo - self.pw) * self.c,
                    _ => 0,
                };
                // SAFETY: the row's groups are written in order, row_groups
                // per kernel row, fh rows: all inside buf (checked above);
                // the run reads `words` input words from `start`, checked
                // against the input here.
                unsafe {
                    d = zero_words(d, zeros_before, stride);
                    if words > 0 && start + 4 * words <= input.len() {
                        conv_words(input.as_ptr().add(start), d, words, stride, off2);
                    }
                    d = d.wrapping_add(words * stride);
                    d = zero_words(d, row_groups - zeros_before - words, stride);
                }
            }
        }

        /// `fill` for any geometry, value by value where needed.
        #[allow(clippy::too_many_arguments)]
        fn fill_any(
            &self,
            input: &[i8],
            buf: &mut [u32],
            slots: usize,
            q: usize,
            b: usize,
            oy: usize,
            ox: usize,
            raw: &mut Raw,
        ) {
            let c = self.c;
            let k = self.fh * self.fw * c;
            if k <= GATHER {
                // Gather the raw bytes (the zero point in the padding, and
                // after the last value: both become 0 with the offset), then
                // convert whole words. Every byte of `raw` that is converted
                // is written below, so it is the caller's, reused from pixel
                // to pixel (zeroing it per pixel cost more than the gather).
                let zp = (-self.offset) as i8;
                let zp4 = u32::from(zp as u8).wrapping_mul(0x0101_0101);
                let rp = raw.as_mut_ptr().cast::<u8>();
                // Copies `len` bytes from input[from..] (or the zero point)
                // to raw[at..], whole words: up to 3 bytes more are written
                // (within raw: at + len ≤ k ≤ GATHER) and, if the input has
                // them, read; later runs and the tail overwrite them.
                let run = |at: usize, from: Option<usize>, len: usize| {
                    let words = len.div_ceil(4);
                    if at + 4 * words > GATHER + 4 {
                        return;
                    }
                    match from.filter(|&f| f + 4 * words <= input.len()) {
                        // SAFETY: f + 4·words ≤ input.len() and at + 4·words
                        // ≤ 4·(GATHER/4 + 1): in bounds.
                        Some(f) => unsafe { copy_words(input.as_ptr().add(f), rp.add(at), words) },
                        None => {
                            for i in 0..len {
                                let v = match from {
                                    Some(f) => input.get(f + i).map_or(zp, |&x| x) as u8,
                                    None => zp as u8,
                                };
                                // SAFETY: at + i < at + 4·words, in bounds.
                                unsafe { rp.add(at + i).write(v) };
                            }
                            if from.is_none() {
                                for i in 0..words {
                                    // SAFETY: as above.
                                    unsafe { rp.add(at + 4 * i).cast::<u32>().write_unaligned(zp4) };
                                }
                            }
                        }
                    }
                };
                let mut at = 0;
                // A window inside the image (most pixels): fh runs of fw·c
                // bytes, dh·iw·c apart, one after the other.
                let (px0, py0) = (ox * self.sw, oy * self.sh);
                let run_len = self.fw * c;
                if self.dw == 1
                    && px0 >= self.pw
                    && px0 - self.pw + self.fw <= self.iw
                    && py0 >= self.ph
                    && py0 - self.ph + (self.fh - 1) * self.dh < self.ih
                    && run_len > 0
                {
                    let words = run_len.div_ceil(4);
                    let row_step = self.dh * self.iw * c;
                    let start = ((b * self.ih + py0 - self.ph) * self.iw + px0 - self.pw) * c;
                    if start + (self.fh - 1) * row_step + 4 * words <= input.len()
                        && (self.fh - 1) * run_len + 4 * words <= GATHER + 4
                    {
                        for ky in 0..self.fh {
                            // SAFETY: the run's 4·words bytes end at or
                            // before start + (fh − 1)·row_step + 4·words ≤
                            // input.len(), its destination at or before
                            // (fh − 1)·run_len + 4·words ≤ GATHER + 4 bytes
                            // into `raw` (checked above).
                            unsafe { copy_words(input.as_ptr().add(start + ky * row_step), rp.add(at), words) };
                            at += run_len;
                        }
                    }
                }
                for ky in 0..self.fh {
                    if at == k {
                        break;
                    }
                    let iy = (oy * self.sh + ky * self.dh).checked_sub(self.ph).filter(|&y| y < self.ih);
                    let Some(iy) = iy else {
                        run(at, None, self.fw * c);
                        at += self.fw * c;
                        continue;
                    };
                    let line = (b * self.ih + iy) * self.iw;
                    let px0 = ox * self.sw;
                    if self.dw == 1 && px0 >= self.pw && px0 - self.pw + self.fw <= self.iw {
                        run(at, Some((line + px0 - self.pw) * c), self.fw * c);
                        at += self.fw * c;
                        continue;
                    }
                    for kx in 0..self.fw {
                        let ix = (px0 + kx * self.dw).checked_sub(self.pw).filter(|&x| x < self.iw);
                        run(at, ix.map(|ix| (line + ix) * c), c);
                        at += c;
                    }
                }
                let words = k.div_ceil(4);
                // The zero point after the last value (bytes k .. 4·words,
                // at most 3): one word from k (a loop here was a `memset`).
                // SAFETY: k + 4 ≤ GATHER + 4 = the bytes of `raw`.
                unsafe { rp.add(k).cast::<u32>().write_unaligned(zp4) };
                if q < slots && words * 2 * slots <= buf.len() && words > 0 {
                    // SAFETY: `raw` holds 4·words ≤ GATHER + 3 bytes; group g
                    // of slot q is words 2(g·slots + q), + 1 < 2·words·slots
                    // ≤ buf.len().
                    unsafe {
                        conv_words(
                            raw.as_ptr().cast::<i8>(),
                            buf.as_mut_ptr().add(2 * q),
                            words,
                            2 * slots,
                            pack(self.offset, self.offset),
                        )
                    };
                }
                return;
            }
            let mut w = PatchWriter::new(buf, slots, q, k, self.offset);
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

    /// Deepest patch `fill_any` gathers on the stack before converting it.
    const GATHER: usize = 256;

    /// `fill_any`'s gathered bytes: [`GATHER`] plus a word of padding.
    type Raw = [u32; GATHER / 4 + 1];

    /// Writes `n` zero groups (pairs of words) at `d`, `stride` words apart;
    /// returns the next group's address.
    ///
    /// # Safety
    /// `d[i·stride]` and `d[i·stride + 1]` writable for `i < n`.
    #[inline(always)]
    unsafe fn zero_words(mut d: *mut u32, n: usize, stride: usize) -> *mut u32 {
        for _ in 0..n {
            // SAFETY: as the caller guarantees.
            unsafe {
                d.write(0);
                d.add(1).write(0);
            }
            d = d.wrapping_add(stride);
        }
        d
    }

    /// Copies `n` words from `src` to `dst`, both any alignment (`ldr`/`str`:
    /// the compiler turns the equivalent Rust loop into a `memcpy` call,
    /// byte by byte for unaligned pointers).
    ///
    /// # Safety
    /// `src` readable and `dst` writable for `4n` bytes.
    #[inline(always)]
    unsafe fn copy_words(src: *const i8, dst: *mut u8, n: usize) {
        if n == 0 {
            return;
        }
        // SAFETY: reads and writes the 4n bytes the caller vouches for;
        // flags clobbered.
        unsafe {
            asm!(
                "2:",
                "ldr {v}, [{s}], #4",
                "str {v}, [{d}], #4",
                "subs {n}, {n}, #1",
                "bne 2b",
                v = out(reg) _,
                s = inout(reg) src => _,
                d = inout(reg) dst => _,
                n = inout(reg) n => _,
                options(nostack),
            );
        }
    }

    /// One word of [`conv_words`]' whole-block path: 4 input values from
    /// `{s}` widened with the offset `{o}` into a group at `{d}`, which
    /// moves on by a block's group stride (48 bytes).
    #[rustfmt::skip]
    macro_rules! word48 {
        () => {
            concat!(
                "ldr {v}, [{s}], #4\n",
                "sxtab16 r2, {o}, {v}\n",
                "sxtab16 r3, {o}, {v}, ror #8\n",
                "strd r2, r3, [{d}], #48\n",
            )
        };
    }

    /// Converts `n ≥ 1` words of input (4 values each) at `src` into groups
    /// at `d`, `stride` words apart: `[x0, x2] + off`, `[x1, x3] + off`.
    ///
    /// # Safety
    /// `src` readable for `4n` bytes (any alignment); `d[i·stride]` and
    /// `d[i·stride + 1]` writable for `i < n`, `d` 4-byte aligned.
    #[inline(always)]
    unsafe fn conv_words(src: *const i8, d: *mut u32, n: usize, stride: usize, off2: u32) {
        if stride == 2 * SLOTS {
            // Whole blocks: the group stride is an immediate, the store
            // post-increments (4 instructions a word); 1, 2 and 4 words by
            // the bits of n, then 8 a loop.
            // SAFETY: as below.
            unsafe {
                asm!(
                    "lsls {v}, {n}, #31",
                    "bpl 2f",
                    word48!(),
                    "2:",
                    "bcc 3f",
                    word48!(), word48!(),
                    "3:",
                    "tst {n}, #4",
                    "beq 6f",
                    word48!(), word48!(), word48!(), word48!(),
                    "6:",
                    "lsrs {n}, {n}, #3",
                    "beq 5f",
                    "4:",
                    word48!(), word48!(), word48!(), word48!(),
                    word48!(), word48!(), word48!(), word48!(),
                    "subs {n}, {n}, #1",
                    "bne 4b",
                    "5:",
                    v = out(reg) _,
                    s = inout(reg) src => _,
                    d = inout(reg) d => _,
                    n = inout(reg) n => _,
                    o = in(reg) off2,
                    out("r2") _,
                    out("r3") _,
                    options(nostack),
                );
            }
            return;
        }
        // SAFETY: reads 4n bytes from `src` (`ldr`, any alignment), writes
        // the two words of n groups (`strd`, 4-byte aligned), as the caller
        // guarantees; flags clobbered.
        unsafe {
            asm!(
                // An odd word first, then pairs (6 instructions a word).
                "tst {n}, #1",
                "beq 3f",
                "ldr {v}, [{s}], #4",
                "sxtab16 r2, {o}, {v}",
                "sxtab16 r3, {o}, {v}, ror #8",
                "strd r2, r3, [{d}]",
                "add {d}, {d}, {st}",
                "subs {n}, {n}, #1",
                "beq 4f",
                "3:",
                "ldr {v}, [{s}], #4",
                "sxtab16 r2, {o}, {v}",
                "sxtab16 r3, {o}, {v}, ror #8",
                "strd r2, r3, [{d}]",
                "add {d}, {d}, {st}",
                "ldr {v}, [{s}], #4",
                "sxtab16 r2, {o}, {v}",
                "sxtab16 r3, {o}, {v}, ror #8",
                "strd r2, r3, [{d}]",
                "add {d}, {d}, {st}",
                "subs {n}, {n}, #2",
                "bne 3b",
                "4:",
                v = out(reg) _,
                s = inout(reg) src => _,
                d = inout(reg) d => _,
                n = inout(reg) n => _,
                st = in(reg) stride * 4,
                o = in(reg) off2,
                out("r2") _,
                out("r3") _,
                options(nostack),
            );
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
        let pointwise = g.fh == 1 && g.fw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
        if pointwise && g.c.is_multiple_of(4) && g.oh == g.ih && g.ow == g.iw {
            // 1×1, stride 1, no padding: pixel p's patch is input row p.
            let (c4, off2) = (g.c / 4, pack(g.offset, g.offset));
            gemm.run(
                pixels,
                |buf, slots, q, pix| {
                    let src = input.get(pix * g.c..(pix + 1) * g.c);
                    if let Some(src) = src.filter(|_| q < slots && c4 * 2 * slots <= buf.len() && c4 > 0) {
                        // SAFETY: `src` holds 4·c4 bytes; group g of slot q
                        // is words 2(g·slots + q), + 1 < 2·c4·slots ≤ len.
                        unsafe { conv_words(src.as_ptr(), buf.as_mut_ptr().add(2 * q), c4, 2 * slots, off2) };
                    }
                },
                output,
            );
        } else if g.c == 1 && g.dw == 1 && g.fh * g.fw <= GATHER {
            let mut raw = [0; GATHER / 4 + 1];
            gemm.run(pixels, |buf, slots, q, pix| g.fill_c1(input, buf, slots, q, pix, &mut raw), output);
        } else {
            let mut raw = [0; GATHER / 4 + 1];
            gemm.run(pixels, |buf, slots, q, pix| g.fill(input, buf, slots, q, pix, &mut raw), output);
        }
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
                let mut w = PatchWriter::new(buf, slots, q, k, offset);
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
    // `fill_pairs` addresses the planes 2048 bytes apart.
    const _: () = assert!(PLANE / GROUP * 2 == 2048);
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
        /// channels `ch..ch + 4` (all present) for batch `b`: the image's
        /// columns two at a time (two input words, [`fill_pairs`]), an odd
        /// last one alone; the padding columns, and whole rows outside the
        /// image, get the zero point.
        fn fill_row_group(&self, planes: &mut [i16; PLANE], input: &[i8], b: usize, ch: usize, r: usize, po: usize) {
            const PS: usize = PLANE / GROUP;
            let wp = self.wp;
            let at = r * wp;
            if self.ps != PS || at + wp > PS {
                return;
            }
            let zp = i16::from(self.zero_point as i8);
            let inner = &self.inner;
            let step = inner.in_step;
            let Some(base) = self.outer.image(po).map(|io| b * self.batch_in + io * self.outer.in_step + ch) else {
                for plane in planes.chunks_exact_mut(PS) {
                    plane[at..at + wp].fill(zp);
                }
                return;
            };
            // Plane columns lo..hi are image columns 0..hi − lo.
            let lo = inner.pad.min(wp);
            let hi = (inner.pad + inner.input).clamp(lo, wp);
            // A column or two: element by element (`fill` on such short
            // slices cost more than the whole image part of the row).
            for col in 0..lo {
                for j in 0..GROUP {
                    planes[j * PS + at + col] = zp;
                }
            }
            for col in hi..wp {
                for j in 0..GROUP {
                    planes[j * PS + at + col] = zp;
                }
            }
            let mut col = lo;
            let n = (hi - lo) / 2;
            // The last word of the pairs is at base + (lo + 2n − 1 − pad)·step.
            let last = (lo + 2 * n).checked_sub(1 + inner.pad).and_then(|i| i.checked_mul(step)?.checked_add(base));
            if n > 0 && last.is_some_and(|l| l.checked_add(4).is_some_and(|e| e <= input.len())) {
                let sp = input.as_ptr().wrapping_add(base + (lo - inner.pad) * step);
                // SAFETY: columns lo .. lo + 2n ≤ hi are image columns (lo =
                // pad here, as n > 0 needs hi > lo), whose words end at or
                // before `last + 4 ≤ input.len()`; the planes' columns lo ..
                // lo + 2n of row r are inside (lo + 2n ≤ hi ≤ wp, at + wp ≤ PS).
                unsafe { fill_pairs(sp, step, planes.as_mut_ptr().wrapping_add(at + lo), n) };
                col += 2 * n;
            }
            while col < hi {
                let v = load4(input.get(base + (col - inner.pad) * step..).unwrap_or(&[])).to_le_bytes();
                for (plane, x) in planes.chunks_exact_mut(PS).zip(v) {
                    plane[at + col] = i16::from(x as i8);
                }
                col += 1;
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

        /// The 9 taps of channel `ch` of a 3×3 kernel, `[3·ko + ki]` (outer,
        /// inner), read with one bounds check; `None` for other kernels.
        fn taps3(&self, filter: &[i8], ch: usize) -> Option<[i32; 9]> {
            let (so, si) = (self.outer.w_step, self.inner.w_step);
            if self.outer.k != 3 || self.inner.k != 3 || 2 * so + 2 * si + ch >= filter.len() {
                return None;
            }
            let mut t = [0; 9];
            for ko in 0..3 {
                for ki in 0..3 {
                    // SAFETY: ko·so + ki·si + ch ≤ 2·so + 2·si + ch < len
                    // (checked above; the steps are a validated filter's).
                    t[3 * ko + ki] = i32::from(unsafe { *filter.get_unchecked(ko * so + ki * si + ch) });
                }
            }
            Some(t)
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

    /// Converts `n ≥ 1` column pairs of 4 channels (input words at `src`,
    /// `src + step`, then `2·step` further each pair) into the 4 planes at
    /// `d`, `d + PLANE / 4`, ... (`i16` elements), two columns per pair.
    ///
    /// # Safety
    /// The `2n` input words readable (any alignment), the planes' `2n`
    /// elements from `d` writable.
    #[inline(always)]
    unsafe fn fill_pairs(src: *const i8, step: usize, d: *mut i16, n: usize) {
        // SAFETY: reads the 2n words and writes the 4 × 2n elements the
        // caller vouches for (`ldr`/`str`, any alignment); flags clobbered.
        unsafe {
            asm!(
                "2:",
                "ldr {a}, [{s}]",
                "ldr {b}, [{s}, {st}]",
                "add {s}, {s}, {st2}",
                "sxtb16 {t}, {a}",
                "sxtb16 {a}, {a}, ror #8",
                "sxtb16 {c}, {b}",
                "sxtb16 {b}, {b}, ror #8",
                "pkhbt {v}, {t}, {c}, lsl #16",
                "pkhtb {c}, {c}, {t}, asr #16",
                "pkhbt {t}, {a}, {b}, lsl #16",
                "pkhtb {b}, {b}, {a}, asr #16",
                "str {t}, [{d}, #2048]",
                "str {v}, [{d}], #4",
                "str {b}, [{d2}, #2048]",
                "str {c}, [{d2}], #4",
                "subs {n}, {n}, #1",
                "bne 2b",
                a = out(reg) _,
                b = out(reg) _,
                c = out(reg) _,
                t = out(reg) _,
                v = out(reg) _,
                s = inout(reg) src => _,
                st = in(reg) step,
                st2 = in(reg) 2 * step,
                d = inout(reg) d => _,
                d2 = inout(reg) d.wrapping_add(2 * (PLANE / GROUP)) => _,
                n = inout(reg) n => _,
                options(nostack),
            );
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

    /// The parameter block of the band kernels ([`k3s1_band`],
    /// [`k3s2_band`]); byte offsets in the comments, as the `asm!` reads them.
    #[repr(C, align(8))]
    struct BandParams {
        /// 0: per kernel row `[w0, w1]` and `[w1, w2]` (stride 1) or `[w2, 0]`
        /// (stride 2).
        w: [u32; 6],
        /// 24: the initial value, twice.
        init: [i32; 2],
        /// 32, 36, 40: the output stage: `Rq::m2`, `Rq::cp`, and the `asr`
        /// amount (`FastFull`: `rs`; `Wide`: `rs − 1`).
        m2: i32,
        cp: i32,
        rs: u32,
        /// 44: output pairs per row (after the quads, stride 1); 48: 1 if a
        /// last single output follows.
        pairs: u32,
        odd: u32,
        /// 52: rows (≥ 1; counted down by the kernels).
        rows: u32,
        /// 56: bytes between outputs of a row.
        ostep: u32,
        /// 60: bytes from a row's plane pointers after its pairs to the next
        /// row's; 64: the same for the output pointer.
        padv: u32,
        oadv: u32,
        /// 68: the output offset (`Wide`).
        offset: i32,
        /// 72: stride 1: output quads per row; 76: the quads left (counted
        /// down).
        quads: u32,
        quads_left: u32,
    }

    /// Requantizes r0 and r1 (`FastFull`: m2, cp, rs at 32, 36, 40 of r12)
    /// and stores them at `[lr]` and `[lr + r11]`, then `lr += 2·r11`.
    #[rustfmt::skip]
    macro_rules! stage2 {
        () => {
            concat!(
                "ldrd r2, r3, [r12, #32]\n",
                "ldr r4, [r12, #40]\n",
                "smmlar r0, r0, r2, r0\n",
                "smmlar r1, r1, r2, r1\n",
                "add r0, r0, r0, asr #31\n",
                "add r1, r1, r1, asr #31\n",
                "qadd r0, r0, r3\n",
                "qadd r1, r1, r3\n",
                "asr r0, r0, r4\n",
                "asr r1, r1, r4\n",
                "ssat r0, #8, r0\n",
                "ssat r1, #8, r1\n",
                "strb r0, [lr]\n",
                "strb r1, [lr, r11]\n",
                "add lr, lr, r11, lsl #1\n",
            )
        };
    }

    /// Requantizes r0 (as `stage2`) and stores it at `[lr]`.
    #[rustfmt::skip]
    macro_rules! stage1 {
        () => {
            concat!(
                "ldrd r2, r3, [r12, #32]\n",
                "ldr r4, [r12, #40]\n",
                "smmlar r0, r0, r2, r0\n",
                "add r0, r0, r0, asr #31\n",
                "qadd r0, r0, r3\n",
                "asr r0, r0, r4\n",
                "ssat r0, #8, r0\n",
                "strb r0, [lr]\n",
            )
        };
    }

    /// As `stage2` for `Wide` (r3 = 2^(rs−2), shift rs − 1, offset at 68).
    #[rustfmt::skip]
    macro_rules! stage2w {
        () => {
            concat!(
                "ldrd r2, r3, [r12, #32]\n",
                "ldr r4, [r12, #40]\n",
                "ldr r5, [r12, #68]\n",
                "smmlar r0, r0, r2, r0\n",
                "smmlar r1, r1, r2, r1\n",
                "add r0, r0, r0, asr #31\n",
                "add r1, r1, r1, asr #31\n",
                "add r0, r3, r0, asr #1\n",
                "add r1, r3, r1, asr #1\n",
                "asr r0, r0, r4\n",
                "asr r1, r1, r4\n",
                "add r0, r0, r5\n",
                "add r1, r1, r5\n",
                "ssat r0, #8, r0\n",
                "ssat r1, #8, r1\n",
                "strb r0, [lr]\n",
                "strb r1, [lr, r11]\n",
                "add lr, lr, r11, lsl #1\n",
            )
        };
    }

    /// As `stage1` for `Wide`.
    #[rustfmt::skip]
    macro_rules! stage1w {
        () => {
            concat!(
                "ldrd r2, r3, [r12, #32]\n",
                "ldr r4, [r12, #40]\n",
                "ldr r5, [r12, #68]\n",
                "smmlar r0, r0, r2, r0\n",
                "add r0, r0, r0, asr #31\n",
                "add r0, r3, r0, asr #1\n",
                "asr r0, r0, r4\n",
                "add r0, r0, r5\n",
                "ssat r0, #8, r0\n",
                "strb r0, [lr]\n",
            )
        };
    }

    /// Kernel row `$row` (weights at `r12 + 8·$row`, plane pointer `$p`) of
    /// two stride-1 outputs: r0 += w0·x0 + w1·x1 + w2·x2, r1 += w0·x1 +
    /// w1·x2 + w2·x3; `$p += 4`.
    #[rustfmt::skip]
    macro_rules! s1_row2 {
        ($w:literal, $p:literal) => {
            concat!(
                "ldrd r2, r3, [r12, #", $w, "]\n",
                "ldr r4, [", $p, "], #4\n",
                "ldr r5, [", $p, "]\n",
                "smlad r0, r2, r4, r0\n",
                "smlatb r0, r3, r5, r0\n",
                "smlabt r1, r2, r4, r1\n",
                "smlad r1, r3, r5, r1\n",
            )
        };
    }

    /// As `s1_row2` for one output (r0), `$p` unchanged.
    #[rustfmt::skip]
    macro_rules! s1_row1 {
        ($w:literal, $p:literal) => {
            concat!(
                "ldrd r2, r3, [r12, #", $w, "]\n",
                "ldr r4, [", $p, "]\n",
                "ldr r5, [", $p, ", #4]\n",
                "smlad r0, r2, r4, r0\n",
                "smlatb r0, r3, r5, r0\n",
            )
        };
    }

    /// Kernel row of two stride-2 outputs: r0 += [w0 w1]·[x0 x1] + [w2 0]·[x2
    /// x3], r1 the same from x2; `$p += 8`.
    #[rustfmt::skip]
    macro_rules! s2_row2 {
        ($w:literal, $p:literal) => {
            concat!(
                "ldrd r2, r3, [r12, #", $w, "]\n",
                "ldr r4, [", $p, "]\n",
                "ldr r5, [", $p, ", #4]\n",
                "ldr r7, [", $p, ", #8]!\n",
                "smlad r0, r2, r4, r0\n",
                "smlad r0, r3, r5, r0\n",
                "smlad r1, r2, r5, r1\n",
                "smlad r1, r3, r7, r1\n",
            )
        };
    }

    /// As `s2_row2` for one output (r0), `$p` unchanged.
    #[rustfmt::skip]
    macro_rules! s2_row1 {
        ($w:literal, $p:literal) => {
            concat!(
                "ldrd r2, r3, [r12, #", $w, "]\n",
                "ldr r4, [", $p, "]\n",
                "ldr r5, [", $p, ", #4]\n",
                "smlad r0, r2, r4, r0\n",
                "smlad r0, r3, r5, r0\n",
            )
        };
    }

    /// Kernel row `$row` (weights at `r12 + $w`, plane pointer `$p`) of four
    /// stride-1 outputs into r0..r3 (`s1_row2` twice over, the middle
    /// input word shared): inputs x0..x5 in r6, r7, r11; `$p += 8`.
    #[rustfmt::skip]
    macro_rules! s1_row4 {
        ($w:literal, $p:literal) => {
            concat!(
                "ldrd r4, r5, [r12, #", $w, "]\n",
                "ldr r6, [", $p, "], #8\n",
                "ldr r7, [", $p, ", #-4]\n",
                "ldr r11, [", $p, "]\n",
                "smlad r0, r4, r6, r0\n",
                "smlatb r0, r5, r7, r0\n",
                "smlabt r1, r4, r6, r1\n",
                "smlad r1, r5, r7, r1\n",
                "smlad r2, r4, r7, r2\n",
                "smlatb r2, r5, r11, r2\n",
                "smlabt r3, r4, r7, r3\n",
                "smlad r3, r5, r11, r3\n",
            )
        };
    }

    /// Requantizes r0..r3 (`FastFull`, as `stage2`) and stores them at
    /// `[lr]`, `[lr + ostep]`, ..., then `lr += 4·ostep` (ostep reloaded
    /// into r7: r11 holds an input here).
    #[rustfmt::skip]
    macro_rules! stage4 {
        () => {
            concat!(
                "ldrd r4, r5, [r12, #32]\n",
                "ldr r6, [r12, #40]\n",
                "ldr r7, [r12, #56]\n",
                "smmlar r0, r0, r4, r0\n",
                "smmlar r1, r1, r4, r1\n",
                "smmlar r2, r2, r4, r2\n",
                "smmlar r3, r3, r4, r3\n",
                "add r0, r0, r0, asr #31\n",
                "add r1, r1, r1, asr #31\n",
                "add r2, r2, r2, asr #31\n",
                "add r3, r3, r3, asr #31\n",
                "qadd r0, r0, r5\n",
                "qadd r1, r1, r5\n",
                "qadd r2, r2, r5\n",
                "qadd r3, r3, r5\n",
                "asr r0, r0, r6\n",
                "asr r1, r1, r6\n",
                "asr r2, r2, r6\n",
                "asr r3, r3, r6\n",
                "ssat r0, #8, r0\n",
                "ssat r1, #8, r1\n",
                "ssat r2, #8, r2\n",
                "ssat r3, #8, r3\n",
                "strb r0, [lr]\n",
                "strb r1, [lr, r7]\n",
                "add lr, lr, r7, lsl #1\n",
                "strb r2, [lr]\n",
                "strb r3, [lr, r7]\n",
                "add lr, lr, r7, lsl #1\n",
            )
        };
    }

    /// As `stage4` for `Wide` (as `stage2w`).
    #[rustfmt::skip]
    macro_rules! stage4w {
        () => {
            concat!(
                "ldrd r4, r5, [r12, #32]\n",
                "smmlar r0, r0, r4, r0\n",
                "smmlar r1, r1, r4, r1\n",
                "smmlar r2, r2, r4, r2\n",
                "smmlar r3, r3, r4, r3\n",
                "add r0, r0, r0, asr #31\n",
                "add r1, r1, r1, asr #31\n",
                "add r2, r2, r2, asr #31\n",
                "add r3, r3, r3, asr #31\n",
                "add r0, r5, r0, asr #1\n",
                "add r1, r5, r1, asr #1\n",
                "add r2, r5, r2, asr #1\n",
                "add r3, r5, r3, asr #1\n",
                "ldr r4, [r12, #40]\n",
                "ldr r5, [r12, #68]\n",
                "asr r0, r0, r4\n",
                "asr r1, r1, r4\n",
                "asr r2, r2, r4\n",
                "asr r3, r3, r4\n",
                "add r0, r0, r5\n",
                "add r1, r1, r5\n",
                "add r2, r2, r5\n",
                "add r3, r3, r5\n",
                "ssat r0, #8, r0\n",
                "ssat r1, #8, r1\n",
                "ssat r2, #8, r2\n",
                "ssat r3, #8, r3\n",
                "ldr r7, [r12, #56]\n",
                "strb r0, [lr]\n",
                "strb r1, [lr, r7]\n",
                "add lr, lr, r7, lsl #1\n",
                "strb r2, [lr]\n",
                "strb r3, [lr, r7]\n",
                "add lr, lr, r7, lsl #1\n",
            )
        };
    }

    /// Defines a band kernel: for each of `prm.rows` rows, `prm.pairs`
    /// pairs of outputs (`$row2` per kernel row, then `$stage2`) and, if
    /// `prm.odd`, a last single one (`$row1`, `$stage1`).
    /// Defines a band kernel: for each of `prm.rows` rows, if given
    /// `$row4`/`$stage4`, `prm.quads` quads of outputs (`$row4` per kernel
    /// row, then `$stage4`: 7 fewer instructions per 4 outputs than two
    /// pairs), then `prm.pairs` pairs (`$row2`, `$stage2`) and, if
    /// `prm.odd`, a last single output (`$row1`, `$stage1`).
    macro_rules! band_kernel {
        ($(#[$doc:meta])* $name:ident, $row2:ident, $row1:ident, $stage2:ident, $stage1:ident
            $(, $row4:ident, $stage4:ident)?) => {
            $(#[$doc])*
            ///
            /// # Safety
            /// Every plane element the rows' outputs read (see the kernel
            /// rows; a few past the row included) readable; every output
            /// written (row `r`, output `j` at `out + r·(row step) +
            /// j·ostep`) writable; `rows ≥ 1`; `prm` 8-byte aligned (it is a
            /// `BandParams`).
            #[inline(never)]
            unsafe fn $name(p: [*const i16; 3], prm: &mut BandParams, out: *mut i8) {
                // SAFETY: reads the plane elements and writes the outputs the
                // caller vouches for, reads `prm` and counts `prm.rows` (and
                // `prm.quads_left`) down; r6, r7 and r11 are pushed and
                // popped; flags clobbered.
                unsafe {
                    asm!(
                        "push {{r6, r7, r11}}",
                        "ldr r11, [r12, #56]",
                        "2:",
                        $(
                            "ldr r6, [r12, #72]",
                            "cmp r6, #0",
                            "beq 6f",
                            "str r6, [r12, #76]",
                            "3:",
                            "ldrd r0, r1, [r12, #24]",
                            "ldrd r2, r3, [r12, #24]",
                            $row4!("0", "r8"),
                            $row4!("8", "r9"),
                            $row4!("16", "r10"),
                            $stage4!(),
                            "ldr r6, [r12, #76]",
                            "subs r6, r6, #1",
                            "str r6, [r12, #76]",
                            "bne 3b",
                            "6:",
                            // (The quads use r11 for an input.)
                            "ldr r11, [r12, #56]",
                        )?
                        "ldr r6, [r12, #44]",
                        "cmp r6, #0",
                        "beq 4f",
                        "7:",
                        "ldrd r0, r1, [r12, #24]",
                        $row2!("0", "r8"),
                        $row2!("8", "r9"),
                        $row2!("16", "r10"),
                        $stage2!(),
                        "subs r6, r6, #1",
                        "bne 7b",
                        "4:",
                        "ldr r6, [r12, #48]",
                        "cmp r6, #0",
                        "beq 5f",
                        "ldr r0, [r12, #24]",
                        $row1!("0", "r8"),
                        $row1!("8", "r9"),
                        $row1!("16", "r10"),
                        $stage1!(),
                        "5:",
                        "ldr r5, [r12, #60]",
                        "add r8, r8, r5",
                        "add r9, r9, r5",
                        "add r10, r10, r5",
                        "ldr r5, [r12, #64]",
                        "add lr, lr, r5",
                        "ldr r7, [r12, #52]",
                        "subs r7, r7, #1",
                        "str r7, [r12, #52]",
                        "bne 2b",
                        "pop {{r6, r7, r11}}",
                        out("r0") _,
                        out("r1") _,
                        out("r2") _,
                        out("r3") _,
                        out("r4") _,
                        out("r5") _,
                        inout("r8") p[0] => _,
                        inout("r9") p[1] => _,
                        inout("r10") p[2] => _,
                        in("r12") prm as *mut BandParams,
                        inout("lr") out => _,
                    );
                }
            }
        };
    }

    band_kernel!(
        /// A band of a 3×3 depthwise channel, inner stride 1, `FastFull`
        /// output stage, all in registers; the plane rows at `p[0..3]`
        /// advance by `padv` bytes per row, the outputs are `ostep` bytes
        /// apart from `out` (advanced by `oadv` per row). Output `j` reads
        /// columns `j .. j + 4` (the last of a quad or pair up to `j + 3`).
        k3s1_band, s1_row2, s1_row1, stage2, stage1, s1_row4, stage4
    );
    band_kernel!(
        /// As [`k3s1_band`] with the `Wide` output stage.
        k3s1_band_wide, s1_row2, s1_row1, stage2w, stage1w, s1_row4, stage4w
    );
    band_kernel!(
        /// A band of a 3×3 depthwise channel, inner stride 2, `FastFull`
        /// output stage, all in registers (as [`k3s1_band`], in pairs):
        /// output `j` reads columns `2j .. 2j + 4`, the pointers advance 8
        /// bytes per pair.
        k3s2_band, s2_row2, s2_row1, stage2, stage1
    );
    band_kernel!(
        /// As [`k3s2_band`] with the `Wide` output stage.
        k3s2_band_wide, s2_row2, s2_row1, stage2w, stage1w
    );

    /// Whether the band kernels run this layer's 3×3 kernel (inner
    /// dilation 1, inner stride 1 or 2; any outer stride and dilation).
    fn k3_kernels(g: &DwGeom) -> bool {
        g.outer.k == 3 && g.inner.k == 3 && g.inner.dil == 1 && (g.inner.stride == 1 || g.inner.stride == 2)
    }

    /// One channel's band with the band kernels ([`k3_kernels`]): `taps`
    /// `[3·ko + ki]`, `rq` `FastFull` or `Wide` (else nothing is written),
    /// `rows` outer outputs, the channel's plane row 0 at `plane`, its output
    /// (outer `oo0`, inner 0) at `out`. The parameter block is built in
    /// place (copying a template costs a `memcpy` per channel).
    ///
    /// # Safety
    /// `plane` holds at least `span(rows)·wp + SLACK` elements; every output
    /// of the band (`out + r·outer.out_step + j·inner.out_step`, `r < rows`,
    /// `j < inner.output`) is writable; `rows ≥ 1`.
    unsafe fn k3_channel(g: &DwGeom, rows: usize, taps: &[i32; 9], init: i32, rq: &Rq, plane: &[i16], out: *mut i8) {
        let wide = match rq.mode {
            Mode::FastFull => false,
            Mode::Wide => true,
            _ => return,
        };
        let (o, i) = (&g.outer, &g.inner);
        let stride1 = i.stride == 1;
        let w = |ko: usize| {
            let t = [taps[3 * ko], taps[3 * ko + 1], taps[3 * ko + 2]];
            [pack(t[0], t[1]), if stride1 { pack(t[1], t[2]) } else { pack(t[2], 0) }]
        };
        let [w0, w1, w2] = [w(0), w(1), w(2)];
        let n = i.output;
        let pairs = n / 2;
        let advanced = if stride1 { 4 * pairs } else { 8 * pairs };
        let mut prm = BandParams {
            w: [w0[0], w0[1], w1[0], w1[1], w2[0], w2[1]],
            init: [init; 2],
            m2: rq.m2,
            cp: rq.cp,
            rs: if wide { u32::from(rq.rs) - 1 } else { u32::from(rq.rs) },
            // Stride 1: quads, then a pair if n mod 4 ≥ 2.
            pairs: if stride1 { pairs % 2 } else { pairs } as u32,
            odd: (n % 2) as u32,
            rows: rows as u32,
            ostep: i.out_step as u32,
            padv: (2 * o.stride * g.wp).wrapping_sub(advanced) as u32,
            oadv: o.out_step.wrapping_sub(2 * pairs * i.out_step) as u32,
            offset: rq.offset,
            quads: if stride1 { n / 4 } else { 0 } as u32,
            quads_left: 0,
        };
        let p = [0, 1, 2].map(|ko| plane.as_ptr().wrapping_add(ko * g.outer.dil * g.wp));
        // SAFETY: row r's plane pointers start at (r·stride + ko·dil)·wp ≤
        // (span − 1)·wp and its outputs read at most columns wp + 4 of it
        // (stride 1: 2·pairs + 3 ≤ n + 2 = wp; stride 2: 4·pairs + 5 ≤ 2n +
        // 5 = wp + 4), below span·wp + SLACK; the outputs written are the
        // band's (the caller's); rows ≥ 1.
        unsafe {
            match (stride1, wide) {
                (true, false) => k3s1_band(p, &mut prm, out),
                (true, true) => k3s1_band_wide(p, &mut prm, out),
                (false, false) => k3s2_band(p, &mut prm, out),
                (false, true) => k3s2_band_wide(p, &mut prm, out),
            }
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
        /// The channel's taps if the kernel is 3×3 ([`DwGeom::taps3`]).
        taps: Option<[i32; 9]>,
    }

    impl Band<'_> {
        fn run(&self, rq: Rq, output: &mut [i8]) {
            let g = self.g;
            let Some(span) = g.outer.span(self.rows) else { return };
            // Every plane read below is below span·wp + SLACK ≤ ps = plane.len()
            // (the kernels over-read at most SLACK − 1 columns past a row).
            if span * g.wp + SLACK > self.plane.len() {
                return;
            }
            let (o, i) = (&g.outer, &g.inner);
            if k3_kernels(g) {
                if matches!(rq.mode, Mode::FastFull | Mode::Wide) {
                    self.k3_band(rq, output);
                } else {
                    self.k3(rq, output);
                }
            } else if i.dil == 1 && o.k * i.k.div_ceil(2) <= MAX_PAIRS {
                self.pairs(rq, output);
            } else {
                self.scalar(rq, output);
            }
        }

        /// Every output of the band is `c` (`Const` channels).
        fn constant(&self, c: i8, output: &mut [i8]) {
            for r in 0..self.rows {
                for oi in 0..self.g.inner.output {
                    if let Some(d) = output.get_mut(self.out_at(self.oo0 + r, oi)) {
                        *d = c;
                    }
                }
            }
        }

        /// Output index of outer output `oo`, inner output `oi`.
        #[inline(always)]
        fn out_at(&self, oo: usize, oi: usize) -> usize {
            self.b * self.g.batch_out + oo * self.g.outer.out_step + oi * self.g.inner.out_step + self.ch
        }

        /// 3×3 kernels, inner stride 1 or 2, `FastFull` or `Wide` output
        /// stage: the band kernels in `asm!`.
        fn k3_band(&self, rq: Rq, output: &mut [i8]) {
            let g = self.g;
            let n = g.inner.output;
            // Every output of the band is inside `output` (the last one is
            // the largest index), every plane read below span·wp + SLACK ≤
            // plane.len() (`run`).
            if self.rows == 0 || n == 0 || self.out_at(self.oo0 + self.rows - 1, n - 1) >= output.len() {
                return;
            }
            let taps = self.taps.unwrap_or_else(|| {
                let mut t = [0; 9];
                for (x, d) in t.iter_mut().enumerate() {
                    *d = g.weight(self.filter, x / 3, x % 3, self.ch);
                }
                t
            });
            let out = output.as_mut_ptr().wrapping_add(self.out_at(self.oo0, 0));
            // SAFETY: `run` checked span·wp + SLACK ≤ plane.len(), the
            // outputs are inside `output` (checked above), rows ≥ 1.
            unsafe { k3_channel(g, self.rows, &taps, self.init, &rq, self.plane, out) };
        }

        /// 3×3 kernels, inner stride 1 or 2: the row kernels in `asm!`.
        fn k3(&self, rq: Rq, output: &mut [i8]) {
            let g = self.g;
            let (o, i) = (&g.outer, &g.inner);
            let w = |ko: usize, ki: usize| match &self.taps {
                Some(t) => t[3 * ko + ki],
                None => g.weight(self.filter, ko, ki, self.ch),
            };
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
                    let first = self.out_at(oo, oi0);
                    if self.out_at(oo, oi0 + n - 1) < output.len() {
                        let o = output.as_mut_ptr().wrapping_add(first);
                        for (t, &a) in acc[..n].iter().enumerate() {
                            // SAFETY: the outputs of this row chunk are at
                            // first + t·out_step ≤ out_at(oo, oi0 + n − 1) < len.
                            unsafe { *o.add(t * i.out_step) = rq.apply(a) };
                        }
                    }
                    oi0 += n;
                }
            }
        }

        /// Inner dilation 1, any kernel: tap pairs along the inner axis.
        fn pairs(&self, rq: Rq, output: &mut [i8]) {
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
                        *d = rq.apply(acc);
                    }
                }
            }
        }

        /// Any geometry (dilated or very large kernels), one tap at a time.
        fn scalar(&self, rq: Rq, output: &mut [i8]) {
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
                        *d = rq.apply(acc);
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
                    // The band kernels run this band's channels directly if
                    // they take the layer and the group's outputs and plane
                    // reads are in bounds (checked for its last channel: the
                    // largest output index; the planes have ps elements each).
                    // (rows ≥ 1, inner.output ≥ 1: the output is not empty.)
                    let last_out = b * g.batch_out
                        + (oo0 + rows).saturating_sub(1) * g.outer.out_step
                        + g.inner.output.saturating_sub(1) * g.inner.out_step
                        + ch0
                        + n_ch
                        - 1;
                    let k3 = k3_kernels(&g) && rows >= 1 && span * g.wp + SLACK <= g.ps && last_out < output.len();
                    for j in 0..n_ch {
                        let ch = ch0 + j;
                        // Σ w over every tap: the padding holds the zero
                        // point, which `input_offset · Σ w` cancels.
                        let taps = g.taps3(filter, ch);
                        let sum = match &taps {
                            Some(t) => t.iter().sum(),
                            None => {
                                let mut sum = 0i32;
                                for ko in 0..g.outer.k {
                                    for ki in 0..g.inner.k {
                                        sum = sum.wrapping_add(g.weight(filter, ko, ki, ch));
                                    }
                                }
                                sum
                            }
                        };
                        let b0 = bias.and_then(|v| v.get(ch)).copied().unwrap_or(0);
                        let init = b0.wrapping_add(conv.input_offset.wrapping_mul(sum));
                        let Some(plane) = planes.get(j * g.ps..(j + 1) * g.ps) else { break };
                        let rq = Rq::new(&requant, ch, out);
                        if let (true, Some(taps), Mode::FastFull | Mode::Wide) = (k3, &taps, rq.mode) {
                            let first = b * g.batch_out + oo0 * g.outer.out_step + ch;
                            // SAFETY: the plane has ps ≥ span·wp + SLACK
                            // elements and the band's outputs of channel ch ≤
                            // ch0 + n_ch − 1 are at most `last_out` <
                            // output.len() (checked above); rows ≥ 1.
                            unsafe {
                                k3_channel(&g, rows, taps, init, &rq, plane, output.as_mut_ptr().wrapping_add(first));
                            }
                            continue;
                        }
                        let band = Band { g: &g, plane, filter, ch, b, oo0, rows, init, taps };
                        match rq.mode {
                            Mode::Const => band.constant(rq.cp as i8, output),
                            _ => band.run(rq, output),
                        }
                    }
                    oo0 += rows;
                }
            }
            ch0 += n_ch;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Add
    // -----------------------------------------------------------------------

    /// Elements below which `add_i8` does not build its tables.
    const ADD_TABLES_FROM: usize = 512;

    /// One element of [`add_fast4`]: bytes from r0 and r1 index the tables
    /// at r3 and r4, the sum's `FastFull` stage (m2, cp, rs in r5, r8, r9)
    /// goes to r2; r12 and lr scratch.
    #[rustfmt::skip]
    macro_rules! add_elem {
        () => {
            concat!(
                "ldrb r12, [r0], #1\n",
                "ldrb lr, [r1], #1\n",
                "ldr r12, [r3, r12, lsl #2]\n",
                "ldr lr, [r4, lr, lsl #2]\n",
                "add r12, r12, lr\n",
                "smmlar r12, r12, r5, r12\n",
                "add r12, r12, r12, asr #31\n",
                "qadd r12, r12, r8\n",
                "asr r12, r12, r9\n",
                "ssat r12, #8, r12\n",
                "strb r12, [r2], #1\n",
            )
        };
    }

    /// `out[i] = rq.fast_full(t1[a[i] as u8] + t2[b[i] as u8])` for `4·n4`
    /// elements, four a loop (11 instructions an element and 2 a loop; the
    /// compiler's loop took 13 an element, and 14 unrolled: registers).
    ///
    /// # Safety
    /// `n4 ≥ 1`; `a` and `b` readable and `out` writable for `4·n4` bytes;
    /// `rq` is `FastFull`.
    unsafe fn add_fast4(
        t1: &[i32; 256],
        t2: &[i32; 256],
        a: *const i8,
        b: *const i8,
        out: *mut i8,
        n4: usize,
        rq: &Rq,
    ) {
        // SAFETY: reads 4·n4 bytes at `a` and `b`, writes 4·n4 at `out`
        // (the caller's promise); the table indices are bytes (< 256); no
        // stack; flags clobbered.
        unsafe {
            asm!(
                "1:",
                add_elem!(),
                add_elem!(),
                add_elem!(),
                add_elem!(),
                "subs r10, r10, #1",
                "bne 1b",
                inout("r0") a => _,
                inout("r1") b => _,
                inout("r2") out => _,
                in("r3") t1.as_ptr(),
                in("r4") t2.as_ptr(),
                in("r5") rq.m2,
                in("r8") rq.cp,
                in("r9") u32::from(rq.rs),
                inout("r10") n4 => _,
                out("r12") _,
                out("lr") _,
                options(nostack),
            );
        }
    }

    /// As [`reference::add_i8`]. Each input's term, `MBQM((q + offset) <<
    /// left_shift, m, shift)`, depends only on the int8 value `q`: it is
    /// looked up in a 256-entry table per input (1 KiB each, on the stack),
    /// built with the reference's own function; the output stage is [`Rq`]'s
    /// (the same `MultiplyByQuantizedMultiplierSmallerThanOneExp`, shift ≤ 0).
    pub(super) fn add_i8(p: &AddParams, input1: &[i8], input2: &[i8], output: &mut [i8]) -> Result<(), KernelError> {
        crate::fast::check_add(p, input1, input2, output)?;
        if output.len() < ADD_TABLES_FROM {
            return reference::add_i8(p, input1, input2, output);
        }
        let table = |offset: i32, multiplier: i32, shift: i32| {
            let mut t = [0i32; 256];
            for (i, e) in t.iter_mut().enumerate() {
                let q = i32::from(i as u8 as i8);
                let x = (offset + q).wrapping_shl(p.left_shift as u32);
                *e = multiply_by_quantized_multiplier_smaller_than_one_exp(x, multiplier, shift);
            }
            t
        };
        let t1 = table(p.input1_offset, p.input1_multiplier, p.input1_shift);
        let t2 = table(p.input2_offset, p.input2_multiplier, p.input2_shift);
        let rq = Rq::new(
            &Requant { multiplier: &[p.output_multiplier], shift: &[p.output_shift] },
            0,
            OutParams { offset: p.output_offset, clamp: p.clamp },
        );
        // t[q as u8] for q: i8; the index is < 256.
        let sum = |x: i8, y: i8| t1[usize::from(x as u8)].wrapping_add(t2[usize::from(y as u8)]);
        match rq.mode {
            Mode::FastFull => {
                let n4 = output.len() / 4;
                if n4 > 0 {
                    // SAFETY: the inputs have output.len() ≥ 4·n4 bytes each
                    // (`check_add`); the tables 256 entries.
                    unsafe { add_fast4(&t1, &t2, input1.as_ptr(), input2.as_ptr(), output.as_mut_ptr(), n4, &rq) };
                }
                let tail = output.iter_mut().zip(input1).zip(input2).skip(4 * n4);
                tail.for_each(|((o, &x), &y)| *o = rq.fast_full(sum(x, y)));
            }
            _ => output.iter_mut().zip(input1).zip(input2).for_each(|((o, &x), &y)| *o = rq.apply(sum(x, y))),
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Average pooling
    // -----------------------------------------------------------------------

    /// Average pooling, 8 (or 4) channels per step: `sxtab16` adds bytes 0
    /// and 2 of an input word to one halfword pair, `sxtab16 ror #8` bytes
    /// 1 and 3 to another, so a window's sums stay in 2–4 registers. Exact
    /// for windows of up to 256 values (`256·−128 = −32768` still fits a
    /// halfword). `false` (nothing written) for channels not a multiple of
    /// 4, larger windows or inconsistent lengths; the caller validated the
    /// parameters and that every window is non-empty.
    pub(super) fn average_pool_i8(
        p: &reference::PoolParams,
        id: Dims4,
        input: &[i8],
        od: Dims4,
        output: &mut [i8],
    ) -> bool {
        let c = id.c;
        if c == 0
            || !c.is_multiple_of(4)
            || p.filter.0.saturating_mul(p.filter.1) > 256
            || id.elements() != Some(input.len())
            || od.elements() != Some(output.len())
            || od.c != c
            || od.n != id.n
        {
            return false;
        }
        let window = crate::reference::common::pool_window;
        let (lo, hi) = (i32::from(p.clamp.min), i32::from(p.clamp.max));
        for b in 0..od.n {
            for oy in 0..od.h {
                let (y0, y1) = window(oy, p.stride.0, p.padding.0, p.filter.0, id.h);
                for ox in 0..od.w {
                    let (x0, x1) = window(ox, p.stride.1, p.padding.1, p.filter.1, id.w);
                    let (iy0, ix0) = (
                        (oy * p.stride.0 + y0).wrapping_sub(p.padding.0),
                        (ox * p.stride.1 + x0).wrapping_sub(p.padding.1),
                    );
                    let (rows, cols) = (y1.saturating_sub(y0), x1.saturating_sub(x0));
                    if rows == 0 || cols == 0 || iy0.saturating_add(rows) > id.h || ix0.saturating_add(cols) > id.w {
                        return false;
                    }
                    // The window lies inside the image, so every word read
                    // below is inside `input` (its length is the elements').
                    let first = ((b * id.h + iy0) * id.w + ix0) * c;
                    let o = ((b * od.h + oy) * od.w + ox) * c;
                    let Some(out) = output.get_mut(o..o + c) else { return false };
                    let n = (rows * cols) as i32;
                    let frame =
                        PoolFrame { base: input.as_ptr().wrapping_add(first), rows, cols, c, row_step: id.w * c };
                    let put = |out: &mut [i8], sums: &[u32]| {
                        for (pair, o) in sums.chunks_exact(2).zip(out.chunks_exact_mut(4)) {
                            let (s02, s13) = (pair[0], pair[1]);
                            let vals = [s02 as i16, s13 as i16, (s02 >> 16) as i16, (s13 >> 16) as i16];
                            for (d, v) in o.iter_mut().zip(vals) {
                                let a = i32::from(v);
                                let avg = if a > 0 { (a + n / 2) / n } else { (a - n / 2) / n };
                                *d = avg.clamp(lo, hi) as i8;
                            }
                        }
                    };
                    let mut g = 0;
                    while g + 8 <= c {
                        // SAFETY: channels g..g + 8 ≤ c of the window, all
                        // inside `input` (checked above).
                        let sums = unsafe { frame.sums::<2>(g) };
                        put(&mut out[g..g + 8], &sums);
                        g += 8;
                    }
                    if g < c {
                        // SAFETY: as above, channels g..g + 4 = c.
                        let sums = unsafe { frame.sums::<1>(g) };
                        put(&mut out[g..g + 4], &sums);
                    }
                }
            }
        }
        true
    }

    /// One pooling window: `rows × cols` pixels of `c` channels from `base`
    /// (its first pixel's channel 0), rows `row_step` bytes apart.
    struct PoolFrame {
        base: *const i8,
        rows: usize,
        cols: usize,
        c: usize,
        row_step: usize,
    }

    impl PoolFrame {
        /// The window's sums of channels `g .. g + 4·G`: per 4 channels, the
        /// halfword pairs `[x0, x2]` and `[x1, x3]`.
        ///
        /// # Safety
        /// Every pixel of the window must have its channels `g .. g + 4·G`
        /// inside one readable allocation.
        #[inline(always)]
        unsafe fn sums<const G: usize>(&self, g: usize) -> [u32; 4] {
            let mut s = [0u32; 4];
            let mut row = self.base.wrapping_add(g);
            for _ in 0..self.rows {
                let mut px = row;
                for _ in 0..self.cols {
                    for k in 0..G {
                        // SAFETY: inside the window (the caller's promise);
                        // `read_unaligned`: any alignment.
                        let v = unsafe { px.add(4 * k).cast::<u32>().read_unaligned() };
                        s[2 * k] = sxtab16(s[2 * k], v);
                        s[2 * k + 1] = sxtab16_ror8(s[2 * k + 1], v);
                    }
                    px = px.wrapping_add(self.c);
                }
                row = row.wrapping_add(self.row_step);
            }
            s
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::quant::multiply_by_quantized_multiplier;
        use crate::reference;

        /// Invalid arguments give the reference's error, for each kernel and
        /// each check (the battery's parameters are always valid).
        #[test]
        fn errors_match_the_reference() {
            let id = Dims4::new(1, 5, 5, 4);
            let x = vec![1i8; 100];
            let conv = ConvParams {
                stride: (1, 1),
                dilation: (1, 1),
                padding: (1, 1),
                input_offset: 3,
                output_offset: -2,
                clamp: Clamp::NONE,
            };
            let (m, sh) = ([1 << 30; 8], [-3; 8]);
            type Break = dyn Fn(&mut ConvParams, &mut Vec<i32>, &mut Vec<i32>);
            let broken: [&Break; 9] = [
                &|p, _, _| p.clamp = Clamp { min: 5, max: 4 },
                &|p, _, _| p.input_offset = 129,
                &|p, _, _| p.output_offset = 128,
                &|p, _, _| p.stride.1 = 0,
                &|p, _, _| p.dilation.0 = 0,
                &|p, _, _| p.padding.0 = usize::MAX,
                &|_, m, _| m[0] = -1,
                &|_, _, s| s[0] = 31,
                &|_, m, _| m.truncate(3),
            ];
            for (i, f) in broken.iter().enumerate() {
                let (mut p, mut mm, mut ss) = (conv, m.to_vec(), sh.to_vec());
                f(&mut p, &mut mm, &mut ss);
                let rq = Requant { multiplier: &mm, shift: &ss };
                let (fd, od) = (Dims4::new(8, 3, 3, 4), Dims4::new(1, 5, 5, 8));
                let (w, wf) = (vec![1i8; 288], vec![1i8; 400]);
                let mut o = vec![0i8; 200];
                let want = reference::conv2d_i8(&p, id, &x, fd, &w, None, rq, od, &mut o);
                assert!(want.is_err(), "case {i}");
                assert_eq!(conv2d_i8(&p, id, &x, fd, &w, None, rq, od, &mut o), want, "conv case {i}");
                let dp = DepthwiseParams { conv: p, depth_multiplier: 1 };
                let (fd, od) = (Dims4::new(1, 3, 3, 4), Dims4::new(1, 5, 5, 4));
                let rq4 = Requant { multiplier: &mm[..mm.len().min(4)], shift: &ss[..ss.len().min(4)] };
                let mut o = vec![0i8; 100];
                let want = reference::depthwise_conv2d_i8(&dp, id, &x, fd, &w[..36], None, rq4, od, &mut o);
                let got = depthwise_conv2d_i8(&dp, id, &x, fd, &w[..36], None, rq4, od, &mut o);
                assert_eq!(got, want, "depthwise case {i}");
                let fp = FullyConnectedParams {
                    input_offset: p.input_offset,
                    output_offset: p.output_offset,
                    clamp: p.clamp,
                };
                let mut o = vec![0i8; 16];
                let want = reference::fully_connected_i8(&fp, 2, &x[..100], (8, 50), &wf, None, rq, &mut o);
                let got = fully_connected_i8(&fp, 2, &x[..100], (8, 50), &wf, None, rq, &mut o);
                assert_eq!(got, want, "fully connected case {i}");
            }
            // Shape errors: short slices, wrong bias, batch and channel mismatches.
            let rq = Requant { multiplier: &m, shift: &sh };
            let w = vec![1i8; 288];
            let mut o = [0i8; 200];
            for (fd, od, bias, xl) in [
                (Dims4::new(8, 3, 3, 4), Dims4::new(1, 5, 5, 8), Some(&[0i32; 7][..]), 100),
                (Dims4::new(8, 3, 3, 4), Dims4::new(2, 5, 5, 8), None, 100),
                (Dims4::new(8, 3, 3, 4), Dims4::new(1, 5, 5, 8), None, 99),
                (Dims4::new(7, 3, 3, 4), Dims4::new(1, 5, 5, 8), None, 100),
            ] {
                let flen = fd.elements().unwrap().min(288);
                let olen = od.elements().unwrap().min(200);
                let want = reference::conv2d_i8(&conv, id, &x[..xl], fd, &w[..flen], bias, rq, od, &mut o[..olen]);
                assert!(want.is_err());
                let got = conv2d_i8(&conv, id, &x[..xl], fd, &w[..flen], bias, rq, od, &mut o[..olen]);
                assert_eq!(got, want, "{fd:?} {od:?}");
            }
        }

        /// The add against the reference with the crate's battery, and on
        /// tensors long enough for the tables (the battery's are short).
        #[test]
        fn add_matches_the_reference() {
            crate::testing::battery::add(add_i8);
            let mut rng = Rng(0xdead_beef);
            for _ in 0..300 {
                let n = ADD_TABLES_FROM + rng.below(700);
                let (a, b) = (rng.bytes(n), rng.bytes(n));
                let s = |rng: &mut Rng| {
                    let range = if rng.below(4) == 0 { 32 } else { 12 };
                    -(rng.below(range) as i32)
                };
                let m = |rng: &mut Rng| match rng.below(6) {
                    0 => 0,
                    1 => i32::MAX,
                    2 => rng.below(1 << 30) as i32,
                    _ => (1 << 30) + rng.below(1 << 30) as i32,
                };
                let p = AddParams {
                    input1_offset: rng.below(256) as i32 - 127,
                    input2_offset: rng.below(256) as i32 - 127,
                    output_offset: rng.below(256) as i32 - 128,
                    left_shift: if rng.below(3) == 0 { rng.below(23) as i32 } else { 20 },
                    input1_multiplier: m(&mut rng),
                    input1_shift: s(&mut rng),
                    input2_multiplier: m(&mut rng),
                    input2_shift: s(&mut rng),
                    output_multiplier: m(&mut rng),
                    output_shift: s(&mut rng) - 10,
                    clamp: if rng.below(3) == 0 { Clamp { min: -100, max: 50 } } else { Clamp::NONE },
                };
                let (mut want, mut got) = (vec![0x55i8; n], vec![0x55i8; n]);
                assert_eq!(reference::add_i8(&p, &a, &b, &mut want), add_i8(&p, &a, &b, &mut got));
                assert_eq!(got, want, "{p:?}");
            }
        }
        use std::vec;
        use std::vec::Vec;

        /// xorshift32.
        struct Rng(u32);

        impl Rng {
            fn next(&mut self) -> u32 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 17;
                self.0 ^= self.0 << 5;
                self.0
            }

            fn below(&mut self, n: usize) -> usize {
                self.next() as usize % n
            }

            fn bytes(&mut self, n: usize) -> Vec<i8> {
                (0..n).map(|_| self.next() as i8).collect()
            }
        }

        /// Per-channel (multiplier, shift) cycling through every output-stage
        /// mode: fast (shifts −1 and −24), wide (−25, −31), constant (m = 0),
        /// general (left shift, m < 2^30).
        fn mixed_requant(rng: &mut Rng, channels: usize) -> (Vec<i32>, Vec<i32>) {
            const CHOICES: [(i32, i32); 8] = [
                (1_518_500_250, -7),
                (1 << 30, -1),
                (i32::MAX, -24),
                (1_300_000_000, -25),
                (1_900_000_000, -31),
                (0, 0),
                (1_400_000_000, 2),
                (12345, -3),
            ];
            let run = 1 + rng.below(3);
            (0..channels).map(|c| CHOICES[(c / run + rng.below(2) * 3) % CHOICES.len()]).unzip()
        }

        /// The `asm!` band kernels (3×3, inner stride 1 and 2, every output
        /// stage, odd and even rows, transposed planes, several bands) and
        /// the other depthwise paths against the reference.
        #[test]
        fn depthwise_band_kernels_match_the_reference() {
            let mut rng = Rng(0x9e37_79b9);
            for case in 0..400 {
                let (kh, kw) = if case % 4 == 3 { (1 + rng.below(4), 1 + rng.below(4)) } else { (3, 3) };
                let (ih, iw) = (1 + rng.below(30), 1 + rng.below(30));
                let c = [1, 3, 4, 5, 8, 12][rng.below(6)];
                let stride = (1 + rng.below(2), 1 + rng.below(2));
                let dilation = if case % 8 == 7 { (1 + rng.below(2), 1 + rng.below(2)) } else { (1, 1) };
                let padding = (rng.below(3), rng.below(3));
                let span = |i: usize, p: usize, k: usize, s: usize, d: usize| {
                    let eff = d * (k - 1) + 1;
                    let padded = (i + 2 * p).max(eff);
                    (padded - eff) / s + 1
                };
                let (oh, ow) =
                    (span(ih, padding.0, kh, stride.0, dilation.0), span(iw, padding.1, kw, stride.1, dilation.1));
                let input_dims = Dims4::new(1 + rng.below(2), ih, iw, c);
                let filter_dims = Dims4::new(1, kh, kw, c);
                let output_dims = Dims4::new(input_dims.n, oh, ow, c);
                let input = rng.bytes(input_dims.elements().unwrap());
                let filter = rng.bytes(filter_dims.elements().unwrap());
                let bias: Vec<i32> = (0..c).map(|i| (rng.next() as i32) >> if i % 2 == 0 { 0 } else { 12 }).collect();
                let (multiplier, shift) = mixed_requant(&mut rng, c);
                let clamp = if case % 5 == 4 { Clamp { min: -20, max: 100 } } else { Clamp::NONE };
                let p = DepthwiseParams {
                    conv: ConvParams {
                        stride,
                        dilation,
                        padding,
                        input_offset: rng.below(256) as i32 - 127,
                        output_offset: rng.below(256) as i32 - 128,
                        clamp,
                    },
                    depth_multiplier: 1,
                };
                let rq = Requant { multiplier: &multiplier, shift: &shift };
                let n = output_dims.elements().unwrap();
                let (mut want, mut got) = (vec![0x55i8; n], vec![0x55i8; n]);
                let r = reference::depthwise_conv2d_i8(
                    &p,
                    input_dims,
                    &input,
                    filter_dims,
                    &filter,
                    Some(&bias),
                    rq,
                    output_dims,
                    &mut want,
                );
                let d = depthwise_conv2d_i8(
                    &p,
                    input_dims,
                    &input,
                    filter_dims,
                    &filter,
                    Some(&bias),
                    rq,
                    output_dims,
                    &mut got,
                );
                assert_eq!(r, d);
                assert_eq!(got, want, "case {case}: {input_dims:?} {filter_dims:?} {p:?}");
            }
        }

        /// The fused GEMM kernel (6-pixel blocks, depth a multiple of 4 or
        /// not, every output stage with mode changes inside a chunk, more
        /// than one chunk) against the reference.
        #[test]
        fn conv_kernels_match_the_reference() {
            let mut rng = Rng(0x1234_5679);
            for case in 0..300 {
                let (kh, kw) = [(1, 1), (3, 3), (1, 3), (2, 2)][rng.below(4)];
                let c = [1, 3, 4, 8, 16, 20][rng.below(6)];
                let n = [1, 5, 16, 70, 130][rng.below(5)];
                // Strides and dilations of 1 or 2, padding of 0 to 2 (the first
                // case of three plain): the patch gathers' padded, partial and
                // whole-window paths, and windows wholly in the padding.
                let plain = case % 3 == 0;
                let mut one_or_two = || if plain { 1 } else { 1 + rng.below(2) };
                let (sh, sw, dh, dw) = (one_or_two(), one_or_two(), one_or_two(), one_or_two());
                let (ph, pw) = if plain { (0, 0) } else { (rng.below(3), rng.below(3)) };
                let (ih, iw) = (dh * (kh - 1) + 1 + rng.below(8), dw * (kw - 1) + 1 + rng.below(8));
                let oh = (ih + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
                let ow = (iw + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
                let input_dims = Dims4::new(1, ih, iw, c);
                let filter_dims = Dims4::new(n, kh, kw, c);
                let output_dims = Dims4::new(1, oh, ow, n);
                let input = rng.bytes(input_dims.elements().unwrap());
                let filter = rng.bytes(filter_dims.elements().unwrap());
                let bias: Vec<i32> = (0..n).map(|i| (rng.next() as i32) >> if i % 2 == 0 { 0 } else { 10 }).collect();
                let (multiplier, shift) = mixed_requant(&mut rng, n);
                let p = ConvParams {
                    stride: (sh, sw),
                    dilation: (dh, dw),
                    padding: (ph, pw),
                    input_offset: rng.below(256) as i32 - 127,
                    output_offset: rng.below(256) as i32 - 128,
                    clamp: if case % 5 == 4 { Clamp { min: -20, max: 100 } } else { Clamp::NONE },
                };
                let rq = Requant { multiplier: &multiplier, shift: &shift };
                let len = output_dims.elements().unwrap();
                let (mut want, mut got) = (vec![0x55i8; len], vec![0x55i8; len]);
                let r = reference::conv2d_i8(
                    &p,
                    input_dims,
                    &input,
                    filter_dims,
                    &filter,
                    Some(&bias),
                    rq,
                    output_dims,
                    &mut want,
                );
                let d = conv2d_i8(&p, input_dims, &input, filter_dims, &filter, Some(&bias), rq, output_dims, &mut got);
                assert_eq!(r, d);
                assert_eq!(got, want, "case {case}: {input_dims:?} {filter_dims:?}");
            }
        }

        /// The output stage against the reference's arithmetic on every shift
        /// and edge multipliers, accumulators, offsets and clamps (the fast
        /// path's saturation argument is tightest at shift −24).
        #[test]
        fn output_stage_is_the_reference_arithmetic() {
            let mut accs: Vec<i32> = vec![i32::MIN, i32::MIN + 1, -1, 0, 1, i32::MAX - 1, i32::MAX];
            for k in 0..31 {
                for d in [-1i64, 0, 1] {
                    for sign in [-1i64, 1] {
                        accs.push((sign * ((1i64 << k) + d)).clamp(i32::MIN.into(), i32::MAX.into()) as i32);
                    }
                }
            }
            let mut x = 0x1234_5678u32;
            for _ in 0..200 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                accs.push(x as i32);
            }
            let multipliers =
                [0, 1, 12345, (1 << 30) - 1, 1 << 30, (1 << 30) + 1, 1_518_500_250, i32::MAX - 1, i32::MAX];
            let clamps =
                [Clamp::NONE, Clamp { min: -128, max: 6 }, Clamp { min: -5, max: 127 }, Clamp { min: 3, max: 3 }];
            for shift in -31..=30 {
                for &m in &multipliers {
                    for offset in [-128, -1, 0, 5, 127] {
                        for clamp in clamps {
                            let rq =
                                Rq::new(&Requant { multiplier: &[m], shift: &[shift] }, 0, OutParams { offset, clamp });
                            for &acc in &accs {
                                let want = multiply_by_quantized_multiplier(acc, m, shift)
                                    .wrapping_add(offset)
                                    .max(i32::from(clamp.min))
                                    .min(i32::from(clamp.max)) as i8;
                                assert_eq!(
                                    rq.apply(acc),
                                    want,
                                    "acc {acc} m {m} shift {shift} offset {offset} {clamp:?}"
                                );
                                assert_eq!(rq.general(acc), want, "general: acc {acc} m {m} shift {shift}");
                            }
                        }
                    }
                }
            }
        }
    }
}

//! Fast paths: the same kernels as [`reference`](crate::reference), bit for
//! bit, using the SIMD instructions of the machine.
//!
//! - **Which ISA**: [`active`] picks the best instruction set once per
//!   process. On hosts (feature `std`) it probes the CPU at run time; without
//!   `std` (microcontrollers) it uses what the build targets
//!   (`-C target-feature` / `target-cpu`). With `std`, the environment
//!   variable `EDGEFLEET_KERNELS` caps the choice: `reference` forces the
//!   portable kernels (CI runs every test both ways), `avx2` stops below
//!   AVX-512, `auto` (or unset) takes the best.
//! - **Packed weights**: convolution and fully connected run as an int8 GEMM
//!   over weights packed once, at load time, into [`PackedFilter`]'s layout
//!   (16 output channels × 4 depth values per 64-byte block, plus per-channel
//!   weight sums). The package keeps the portable OHWI layout, so one signed
//!   package serves every device; hosts with an allocator pack when they load
//!   it (`edgefleet_runtime::OwnedModel`), as XNNPACK and ONNX Runtime do.
//! - **Exactness**: int32 accumulation wraps exactly as the reference's, and
//!   `Σ w·(x + off)` is computed as `Σ w·x' + (off − 128)·Σ w` with
//!   `x' = x + 128` (the unsigned operand VNNI needs) — the same value modulo
//!   2^32. Requantization is the TFLite double-rounding arithmetic, lane by
//!   lane. [`crate::testing`]'s battery proves each ISA equal to the
//!   reference on random shapes and parameters.
//!
//! Each entry point validates its arguments as the reference does and falls
//! back to the reference for shapes the fast path does not cover (grouped
//! convolution, depth multiplier > 1, very deep or very wide layers).

use crate::reference::common::{
    check_bias, check_clamp, check_input_offset, check_len, check_len2, check_positive, check_requant, check_window,
    check_zero_point,
};
use crate::reference::{self, AddParams, ConvParams, DepthwiseParams, FullyConnectedParams, PoolParams};
use crate::{Clamp, Dims4, KernelError, Requant};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "arm")]
mod cortex_m;
#[cfg(target_arch = "x86_64")]
mod x86;

/// An instruction set the kernels can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// The portable [`reference`](crate::reference) kernels.
    Reference,
    /// x86-64 AVX2.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL) with VNNI (`vpdpbusd`).
    Avx512Vnni,
    /// AArch64 Advanced SIMD (every AArch64 CPU).
    Neon,
    /// AArch64 Advanced SIMD with the dot product extension (`sdot`).
    NeonDot,
    /// 32-bit Arm with the DSP extension (`smlad`): Cortex-M4/M7/M33 and
    /// ARMv7-A. Chosen at compile time (`target_feature = "dsp"`/`"v6"`).
    Dsp,
}

/// Every ISA, in order of preference within its architecture.
const ALL: [Isa; 6] = [Isa::Reference, Isa::Avx2, Isa::Avx512Vnni, Isa::Neon, Isa::NeonDot, Isa::Dsp];

impl Isa {
    /// Lower-case name, as accepted by `EDGEFLEET_KERNELS`.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Reference => "reference",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
            Isa::NeonDot => "neondot",
            Isa::Dsp => "dsp",
        }
    }

    /// Parses a name as printed by [`Isa::name`].
    pub fn from_name(name: &str) -> Option<Isa> {
        ALL.into_iter().find(|isa| isa.name().eq_ignore_ascii_case(name))
    }

    const fn code(self) -> u8 {
        match self {
            Isa::Reference => 1,
            Isa::Avx2 => 2,
            Isa::Avx512Vnni => 3,
            Isa::Neon => 4,
            Isa::NeonDot => 5,
            Isa::Dsp => 6,
        }
    }

    const fn from_code(code: u8) -> Isa {
        match code {
            2 => Isa::Avx2,
            3 => Isa::Avx512Vnni,
            4 => Isa::Neon,
            5 => Isa::NeonDot,
            6 => Isa::Dsp,
            _ => Isa::Reference,
        }
    }
}

impl core::fmt::Display for Isa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether this CPU (or, without `std`, this build) can run `isa`.
pub fn supported(isa: Isa) -> bool {
    match isa {
        Isa::Reference => true,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::has_avx2(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => x86::has_avx512vnni(),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => aarch64::has_neon(),
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDot => aarch64::has_dotprod(),
        #[cfg(target_arch = "arm")]
        Isa::Dsp => cortex_m::has_dsp(),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Every ISA this CPU supports, best last.
pub fn all_supported() -> impl Iterator<Item = Isa> {
    ALL.into_iter().filter(|&isa| supported(isa))
}

static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// The ISA the kernels use: the best [`supported`] one, capped by
/// `EDGEFLEET_KERNELS` (with `std`). Probed once, then one atomic load.
pub fn active() -> Isa {
    match ACTIVE.load(Ordering::Relaxed) {
        0 => {
            let isa = probe();
            ACTIVE.store(isa.code(), Ordering::Relaxed);
            isa
        }
        code => Isa::from_code(code),
    }
}

/// Overrides [`active`] for the whole process (for benchmarks and embedders
/// that read their own configuration); an unsupported ISA is capped to the
/// best supported one below it. Returns the ISA now active.
pub fn set_active(isa: Isa) -> Isa {
    let isa = all_supported().filter(|&s| s <= isa).last().unwrap_or(Isa::Reference);
    ACTIVE.store(isa.code(), Ordering::Relaxed);
    isa
}

fn probe() -> Isa {
    let best = all_supported().last().unwrap_or(Isa::Reference);
    #[cfg(feature = "std")]
    {
        if let Ok(wanted) = std::env::var("EDGEFLEET_KERNELS") {
            if wanted.is_empty() || wanted.eq_ignore_ascii_case("auto") {
                return best;
            }
            if let Some(cap) = Isa::from_name(&wanted) {
                return all_supported().filter(|&s| s <= cap).last().unwrap_or(Isa::Reference);
            }
        }
    }
    best
}

// ---------------------------------------------------------------------------
// Packed weights
// ---------------------------------------------------------------------------

/// Output channels per packed block.
pub const PACK_N: usize = 16;
/// Depth values per packed group.
pub const PACK_K: usize = 4;

/// Weights of a convolution or fully connected layer packed for the GEMM
/// kernels: `data` holds `ceil(n/16)` blocks, each `ceil(k/4)` groups of
/// 16 channels × 4 depth values (`data[((b·K4 + q)·16 + j)·4 + r] =
/// w[16b + j][4q + r]`, zero outside the matrix); `colsum[c] = Σ_k w[c][k]`
/// (padded to whole blocks with zeros). Built by [`pack_filter`].
#[derive(Clone, Copy, Debug)]
pub struct PackedFilter<'a> {
    /// Output channels (rows of the unpacked `[n, k]` matrix).
    pub n: usize,
    /// Depth: `kh · kw · in_c` for a convolution, `in` for fully connected.
    pub k: usize,
    /// The packed values, [`packed_len`]`(n, k).0` bytes.
    pub data: &'a [i8],
    /// Per-channel weight sums, [`packed_len`]`(n, k).1` entries.
    pub colsum: &'a [i32],
}

/// `(data bytes, colsum entries)` for packing an `[n, k]` matrix, or `None`
/// on overflow.
pub fn packed_len(n: usize, k: usize) -> Option<(usize, usize)> {
    let nb = n.div_ceil(PACK_N);
    let data = nb.checked_mul(k.div_ceil(PACK_K))?.checked_mul(PACK_N * PACK_K)?;
    Some((data, nb * PACK_N))
}

/// Packs the row-major `[n, k]` matrix `w` (an OHWI filter is `[out_c,
/// kh·kw·in_c]`) into `data` and `colsum`, sized by [`packed_len`].
///
/// # Errors
/// [`KernelError::ShapeMismatch`] if a slice has the wrong length.
pub fn pack_filter(n: usize, k: usize, w: &[i8], data: &mut [i8], colsum: &mut [i32]) -> Result<(), KernelError> {
    check_len2(w.len(), n, k)?;
    let (dlen, clen) = packed_len(n, k).ok_or(KernelError::ShapeMismatch)?;
    if data.len() != dlen || colsum.len() != clen {
        return Err(KernelError::ShapeMismatch);
    }
    pack_rows(n, k, |c, kk| w[c * k + kk], data, colsum);
    Ok(())
}

/// Packs `n` rows of depth `k` whose value at `(c, kk)` is `w(c, kk)`
/// (lengths already checked).
fn pack_rows(n: usize, k: usize, w: impl Fn(usize, usize) -> i8, data: &mut [i8], colsum: &mut [i32]) {
    let k4 = k.div_ceil(PACK_K);
    data.fill(0);
    colsum.fill(0);
    for (c, total) in colsum.iter_mut().enumerate().take(n) {
        let (b, j) = (c / PACK_N, c % PACK_N);
        let mut sum = 0i32;
        for kk in 0..k {
            let v = w(c, kk);
            let (q, r) = (kk / PACK_K, kk % PACK_K);
            data[((b * k4 + q) * PACK_N + j) * PACK_K + r] = v;
            sum = sum.wrapping_add(i32::from(v));
        }
        *total = sum;
    }
}

/// The depth of the packed layout [`conv2d_i8`] wants for an OHWI filter:
/// `kh·kw·in_c`, or `kh·kw·round_up(in_c, 4)` when neither `in_c` nor
/// `kw·in_c` is a multiple of 4 (3-channel images: the channel is padded
/// with zero weights so that every 4-value depth group is contiguous in a
/// zero-point-padded copy of the input, and the layer runs as an indirect
/// GEMM instead of copying windows). `None` on overflow.
pub fn conv_packed_depth(filter_dims: Dims4) -> Option<usize> {
    let (fh, fw, c) = (filter_dims.h, filter_dims.w, filter_dims.c);
    let cp = if c.is_multiple_of(PACK_K) || fw.checked_mul(c)?.is_multiple_of(PACK_K) {
        c
    } else {
        c.div_ceil(PACK_K) * PACK_K
    };
    fh.checked_mul(fw)?.checked_mul(cp)
}

/// Packs an OHWI convolution filter as [`conv2d_i8`] wants it: `n =
/// out_c`, `k =` [`conv_packed_depth`]; buffers sized by [`packed_len`].
///
/// # Errors
/// [`KernelError::ShapeMismatch`] if a slice has the wrong length.
pub fn pack_conv_filter(filter_dims: Dims4, w: &[i8], data: &mut [i8], colsum: &mut [i32]) -> Result<(), KernelError> {
    check_len(w.len(), filter_dims)?;
    let n = filter_dims.n;
    let k = conv_packed_depth(filter_dims).ok_or(KernelError::ShapeMismatch)?;
    let (dlen, clen) = packed_len(n, k).ok_or(KernelError::ShapeMismatch)?;
    if data.len() != dlen || colsum.len() != clen {
        return Err(KernelError::ShapeMismatch);
    }
    let c = filter_dims.c;
    let cp = k / (filter_dims.h * filter_dims.w).max(1);
    let row = filter_dims.h * filter_dims.w * c;
    // Depth index kk = tap·cp + ch of the padded layout; channels ≥ c are 0.
    pack_rows(n, k, |o, kk| if kk % cp < c { w[o * row + kk / cp * c + kk % cp] } else { 0 }, data, colsum);
    Ok(())
}

/// A GEMM layer's output stage computed once, at load time, for one input
/// zero point: per channel, `bias + (input_offset − 128) · colsum` and the
/// requantization multiplier and shifts, each over whole 16-channel blocks
/// ([`prepared_len`] entries). Built by [`prepare_epilogue`].
#[derive(Clone, Copy, Debug)]
pub struct PreparedEpilogue<'a> {
    /// The input offset `corr` was computed for.
    pub input_offset: i32,
    /// `bias[c] + (input_offset − 128) · colsum[c]`.
    pub corr: &'a [i32],
    /// Requantization multipliers.
    pub multiplier: &'a [i32],
    /// `max(shift, 0)`.
    pub left_shift: &'a [i32],
    /// `max(−shift, 0)`.
    pub right_shift: &'a [i32],
    /// Whether any `left_shift` is not zero ([`has_left_shifts`], computed
    /// once with the slices): layers without left shifts skip that step of
    /// the output stage. A `false` here with left shifts gives wrong outputs.
    pub shifts_left: bool,
}

/// Whether a prepared output stage's left shifts are not all zero (the
/// value of [`PreparedEpilogue::shifts_left`]).
pub fn has_left_shifts(left_shift: &[i32]) -> bool {
    any_nonzero(left_shift)
}

/// Entries of each [`PreparedEpilogue`] slice for `n` channels.
pub fn prepared_len(n: usize) -> usize {
    n.div_ceil(PACK_N) * PACK_N
}

/// Fills the slices of a [`PreparedEpilogue`] (each [`prepared_len`]`(n)`
/// long) for `packed`, `bias`, `requant` and `input_offset`.
///
/// # Errors
/// [`KernelError::ShapeMismatch`] for wrong lengths (bias, requantization,
/// output slices); [`KernelError::InvalidParameter`] for an out-of-range
/// multiplier or shift.
#[allow(clippy::too_many_arguments)]
pub fn prepare_epilogue(
    packed: &PackedFilter<'_>,
    bias: Option<&[i32]>,
    requant: Requant<'_>,
    input_offset: i32,
    corr: &mut [i32],
    multiplier: &mut [i32],
    left_shift: &mut [i32],
    right_shift: &mut [i32],
) -> Result<(), KernelError> {
    let n = packed.n;
    let len = prepared_len(n);
    check_bias(bias, n)?;
    check_requant(&requant, n)?;
    check_input_offset(input_offset)?;
    if [corr.len(), multiplier.len(), left_shift.len(), right_shift.len()].iter().any(|&l| l != len)
        || packed.colsum.len() < n
    {
        return Err(KernelError::ShapeMismatch);
    }
    fill_epilogue(
        n,
        bias,
        Some((input_offset - 128, packed.colsum)),
        &requant,
        [corr, multiplier, left_shift, right_shift],
    );
    Ok(())
}

/// Writes an output stage's tables (`[corr, multiplier, left shift, right
/// shift]`, each at least `n` entries; zero past `n`): `corr` is the bias
/// plus, if given, `k · colsum`; multipliers and shifts per channel or
/// broadcast from per-tensor values. Arguments validated by the caller
/// (bias and per-channel requantization have `n` entries, `colsum` at
/// least `n`). Slice loops, which the compiler vectorises: this runs on
/// every depthwise call.
fn fill_epilogue(
    n: usize,
    bias: Option<&[i32]>,
    colsum: Option<(i32, &[i32])>,
    requant: &Requant<'_>,
    [corr, multiplier, left_shift, right_shift]: [&mut [i32]; 4],
) {
    for t in [&mut *corr, &mut *multiplier, &mut *left_shift, &mut *right_shift] {
        t[n..].fill(0);
    }
    let corr = &mut corr[..n];
    match bias {
        Some(b) => corr.copy_from_slice(&b[..n]),
        None => corr.fill(0),
    }
    if let Some((k, colsum)) = colsum {
        for (c, &s) in corr.iter_mut().zip(colsum) {
            *c = c.wrapping_add(k.wrapping_mul(s));
        }
    }
    let (m, ls, rs) = (&mut multiplier[..n], &mut left_shift[..n], &mut right_shift[..n]);
    if let ([m0], [s0]) = (requant.multiplier, requant.shift) {
        m.fill(*m0);
        ls.fill((*s0).max(0));
        rs.fill((-*s0).max(0));
    } else {
        m.copy_from_slice(&requant.multiplier[..n]);
        for ((l, r), &s) in ls.iter_mut().zip(rs.iter_mut()).zip(requant.shift) {
            *l = s.max(0);
            *r = (-s).max(0);
        }
    }
}

/// Whether any value is not zero (a fold the compiler vectorises).
fn any_nonzero(v: &[i32]) -> bool {
    v.iter().fold(0, |acc, &x| acc | x) != 0
}

impl<'a> PreparedEpilogue<'a> {
    /// The epilogue, if this was prepared for `n` channels and `input_offset`.
    fn epilogue(&self, n: usize, input_offset: i32, output_offset: i32, clamp: Clamp) -> Option<Epilogue<'a>> {
        let len = prepared_len(n);
        let ok = self.input_offset == input_offset
            && [self.corr.len(), self.multiplier.len(), self.left_shift.len(), self.right_shift.len()]
                .iter()
                .all(|&l| l == len);
        // A contract of the struct (not input): debug builds check it.
        debug_assert_eq!(self.shifts_left, any_nonzero(self.left_shift), "PreparedEpilogue::shifts_left");
        ok.then_some(Epilogue {
            corr: self.corr,
            multiplier: self.multiplier,
            left_shift: self.left_shift,
            right_shift: self.right_shift,
            shifts_left: self.shifts_left,
            output_offset,
            clamp,
        })
    }
}

impl PackedFilter<'_> {
    fn matches(&self, n: usize, k: usize) -> bool {
        self.n == n
            && self.k == k
            && packed_len(n, k).is_some_and(|(d, c)| self.data.len() == d && self.colsum.len() == c)
    }
}

// ---------------------------------------------------------------------------
// The GEMM driver shared by convolution and fully connected
// ---------------------------------------------------------------------------

/// Rows (output pixels) per micro-kernel call.
const MR: usize = 4;
/// Rows (output pixels) per indirect micro-kernel call: no patch copies, so
/// more rows share each weight load.
#[cfg(target_arch = "x86_64")]
const MR_INDIRECT: usize = 8;
/// Deepest `k` the fast path takes (patch rows live on the stack).
const MAX_K: usize = 4096;
/// Widest `n` the fast path takes (per-channel epilogue on the stack).
const MAX_N: usize = 1024;

/// Uninitialised stack storage of which a prefix is written before it is
/// read: per-call scratch without zeroing kilobytes on every call (that
/// memset was a third of a small model's run time).
pub(crate) struct Scratch<T: Copy, const N: usize>([MaybeUninit<T>; N]);

impl<T: Copy, const N: usize> Scratch<T, N> {
    pub(crate) fn new() -> Self {
        Scratch([const { MaybeUninit::uninit() }; N])
    }

    /// Writes `f(i)` to the first `min(len, N)` elements and returns them.
    #[allow(unsafe_code)]
    pub(crate) fn init(&mut self, len: usize, mut f: impl FnMut(usize) -> T) -> &mut [T] {
        let len = len.min(N);
        for (i, slot) in self.0[..len].iter_mut().enumerate() {
            slot.write(f(i));
        }
        // SAFETY: the first `len` elements were written just above, and
        // `MaybeUninit<T>` has the layout of `T`.
        unsafe { core::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<T>(), len) }
    }
}

/// Storage for an [`Epilogue`].
struct EpilogueBufs {
    corr: Scratch<i32, MAX_N>,
    multiplier: Scratch<i32, MAX_N>,
    left_shift: Scratch<i32, MAX_N>,
    right_shift: Scratch<i32, MAX_N>,
}

impl EpilogueBufs {
    fn new() -> Self {
        EpilogueBufs {
            corr: Scratch::new(),
            multiplier: Scratch::new(),
            left_shift: Scratch::new(),
            right_shift: Scratch::new(),
        }
    }
}

/// Per-channel output stage. Each slice covers whole 16-channel blocks
/// (`round_up(n, 16)` entries, zero beyond `n`), so SIMD code may load 16
/// lanes at any block start below `n`.
pub(crate) struct Epilogue<'a> {
    /// What is added to the raw dot product: the bias, plus for the GEMM
    /// kernels `(input_offset − 128) · colsum[c]`.
    pub(crate) corr: &'a [i32],
    pub(crate) multiplier: &'a [i32],
    pub(crate) left_shift: &'a [i32],
    pub(crate) right_shift: &'a [i32],
    /// Some `left_shift` is not zero (the AVX-512 output stages skip the
    /// variable left shift otherwise).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) shifts_left: bool,
    pub(crate) output_offset: i32,
    pub(crate) clamp: Clamp,
}

impl<'a> Epilogue<'a> {
    /// `n ≤ MAX_N` channels; `corr` is the bias plus, if given,
    /// `k · colsum` (arguments validated by the caller).
    fn new(
        bufs: &'a mut EpilogueBufs,
        n: usize,
        bias: Option<&[i32]>,
        colsum: Option<(i32, &[i32])>,
        requant: &Requant<'_>,
        output_offset: i32,
        clamp: Clamp,
    ) -> Epilogue<'a> {
        let len = n.div_ceil(PACK_N) * PACK_N;
        let corr = bufs.corr.init(len, |_| 0);
        let multiplier = bufs.multiplier.init(len, |_| 0);
        let left_shift = bufs.left_shift.init(len, |_| 0);
        let right_shift = bufs.right_shift.init(len, |_| 0);
        let n = n.min(corr.len());
        fill_epilogue(n, bias, colsum, requant, [&mut *corr, &mut *multiplier, &mut *left_shift, &mut *right_shift]);
        let shifts_left = any_nonzero(left_shift);
        Epilogue { corr, multiplier, left_shift, right_shift, shifts_left, output_offset, clamp }
    }

    /// The GEMM epilogue: bias + `(input_offset − 128) · colsum`.
    fn for_gemm(
        bufs: &'a mut EpilogueBufs,
        packed: &PackedFilter<'_>,
        bias: Option<&[i32]>,
        requant: &Requant<'_>,
        input_offset: i32,
        output_offset: i32,
        clamp: Clamp,
    ) -> Epilogue<'a> {
        let colsum = Some((input_offset - 128, packed.colsum));
        Epilogue::new(bufs, packed.n, bias, colsum, requant, output_offset, clamp)
    }

    /// Entries available to SIMD loads.
    #[cfg_attr(
        not(any(target_arch = "x86_64", all(target_arch = "aarch64", target_feature = "neon"))),
        allow(dead_code)
    )]
    pub(crate) fn len(&self) -> usize {
        self.corr.len().min(self.multiplier.len()).min(self.left_shift.len()).min(self.right_shift.len())
    }
}

/// Fills one patch row: the input values under the window of output pixel
/// `(b, oy, ox)`, plus 128 (as `u8`), in OHWI order; taps in the padding get
/// the input zero point (so they contribute exactly 0, as skipping them in
/// the reference does); `row[k..]` is left as is (its weights are zero).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gather_patch(
    row: &mut [u8],
    p: &ConvParams,
    input_dims: Dims4,
    input: &[i8],
    filter_dims: Dims4,
    cp: usize,
    b: usize,
    oy: usize,
    ox: usize,
) {
    let c = input_dims.c;
    if cp != c {
        return gather_patch_padded(row, p, input_dims, input, filter_dims, cp, b, oy, ox);
    }
    let pad_value = ((-p.input_offset) as i8 as u8) ^ 0x80;
    let (fh, fw) = (filter_dims.h, filter_dims.w);
    let mut at = 0;
    for ky in 0..fh {
        let py = oy * p.stride.0 + ky * p.dilation.0;
        let iy = py.checked_sub(p.padding.0).filter(|&y| y < input_dims.h);
        let Some(iy) = iy else {
            row[at..at + fw * c].fill(pad_value);
            at += fw * c;
            continue;
        };
        let line = (b * input_dims.h + iy) * input_dims.w;
        let px0 = ox * p.stride.1;
        // Fast case: the whole kernel row inside the image, no dilation.
        if p.dilation.1 == 1 && px0 >= p.padding.1 && px0 - p.padding.1 + fw <= input_dims.w {
            let start = (line + px0 - p.padding.1) * c;
            for (d, &s) in row[at..at + fw * c].iter_mut().zip(&input[start..start + fw * c]) {
                *d = (s as u8) ^ 0x80;
            }
            at += fw * c;
            continue;
        }
        for kx in 0..fw {
            let px = px0 + kx * p.dilation.1;
            match px.checked_sub(p.padding.1).filter(|&x| x < input_dims.w) {
                Some(ix) => {
                    let start = (line + ix) * c;
                    for (d, &s) in row[at..at + c].iter_mut().zip(&input[start..start + c]) {
                        *d = (s as u8) ^ 0x80;
                    }
                }
                None => row[at..at + c].fill(pad_value),
            }
            at += c;
        }
    }
}

/// [`gather_patch`] for weights packed with the channel padded to `cp`
/// ([`pack_conv_filter`]): each tap gets its `c` values, then `cp − c`
/// filler values (their weights are zero).
#[allow(clippy::too_many_arguments)]
fn gather_patch_padded(
    row: &mut [u8],
    p: &ConvParams,
    input_dims: Dims4,
    input: &[i8],
    filter_dims: Dims4,
    cp: usize,
    b: usize,
    oy: usize,
    ox: usize,
) {
    let c = input_dims.c;
    let pad_value = ((-p.input_offset) as i8 as u8) ^ 0x80;
    let mut at = 0;
    for ky in 0..filter_dims.h {
        let iy = (oy * p.stride.0 + ky * p.dilation.0).checked_sub(p.padding.0).filter(|&y| y < input_dims.h);
        for kx in 0..filter_dims.w {
            let ix = (ox * p.stride.1 + kx * p.dilation.1).checked_sub(p.padding.1).filter(|&x| x < input_dims.w);
            let tap = &mut row[at..at + cp];
            match (iy, ix) {
                (Some(iy), Some(ix)) => {
                    let start = ((b * input_dims.h + iy) * input_dims.w + ix) * c;
                    for (d, &v) in tap.iter_mut().zip(&input[start..start + c]) {
                        *d = (v as u8) ^ 0x80;
                    }
                    tap[c..].fill(pad_value);
                }
                _ => tap.fill(pad_value),
            }
            at += cp;
        }
    }
}

/// `out[r][c] = requant(Σ_k patch[r][k]·w[c][k] + corr[c])` for `mr ≤ MR`
/// rows, with the ISA's micro-kernel.
fn gemm_rows(
    isa: Isa,
    patches: &[u8],
    kp: usize,
    mr: usize,
    packed: &PackedFilter<'_>,
    e: &Epilogue<'_>,
    out: &mut [i8],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => x86::gemm_avx512vnni(patches, kp, mr, packed, e, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::gemm_avx2(patches, kp, mr, packed, e, out),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDot => aarch64::gemm(isa, patches, kp, mr, packed, e, out),
        _ => gemm_portable(patches, kp, mr, packed, e, out),
    }
}

/// The packed GEMM in plain Rust (the same arithmetic as the SIMD
/// micro-kernels; used for ISAs without one and to test the driver).
fn gemm_portable(patches: &[u8], kp: usize, mr: usize, packed: &PackedFilter<'_>, e: &Epilogue<'_>, out: &mut [i8]) {
    let n = packed.n;
    let k4 = kp / PACK_K;
    for r in 0..mr {
        let row = &patches[r * kp..(r + 1) * kp];
        for c in 0..n {
            let (b, j) = (c / PACK_N, c % PACK_N);
            let mut acc = e.corr[c];
            for q in 0..k4 {
                let w = &packed.data[((b * k4 + q) * PACK_N + j) * PACK_K..][..PACK_K];
                for t in 0..PACK_K {
                    acc = acc.wrapping_add(i32::from(row[q * PACK_K + t]) * i32::from(w[t]));
                }
            }
            out[r * n + c] = output_stage(acc, e, c);
        }
    }
}

/// The scalar output stage, identical to the reference's.
#[inline]
fn output_stage(acc: i32, e: &Epilogue<'_>, c: usize) -> i8 {
    let shift = e.left_shift[c] - e.right_shift[c];
    let v = crate::quant::multiply_by_quantized_multiplier(acc, e.multiplier[c], shift).wrapping_add(e.output_offset);
    v.max(i32::from(e.clamp.min)).min(i32::from(e.clamp.max)) as i8
}

/// Whether the GEMM path takes an `[n, k]` layer.
fn gemm_fits(n: usize, k: usize) -> bool {
    n <= MAX_N && k.div_ceil(PACK_K) * PACK_K <= MAX_K && n > 0 && k > 0
}

// ---------------------------------------------------------------------------
// Public kernels
// ---------------------------------------------------------------------------

/// [`reference::conv2d_i8`] with the [`active`] ISA and, if given, weights
/// packed by [`pack_filter`] from `filter` (`n = out_c`, `k = kh·kw·in_c`).
/// Bit-identical to the reference; falls back to it for grouped convolution,
/// missing or mismatched packed weights, or layers beyond the fast path's
/// limits.
///
/// # Errors
/// As [`reference::conv2d_i8`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_i8(
    p: &ConvParams,
    input_dims: Dims4,
    input: &[i8],
    filter_dims: Dims4,
    filter: &[i8],
    packed: Option<&PackedFilter<'_>>,
    bias: Option<&[i32]>,
    requant: Requant<'_>,
    output_dims: Dims4,
    output: &mut [i8],
) -> Result<(), KernelError> {
    conv2d_i8_with(active(), p, input_dims, input, filter_dims, filter, packed, bias, requant, output_dims, output)
}

/// [`conv2d_i8`] with an explicit ISA (capped to what the CPU supports).
///
/// # Errors
/// As [`reference::conv2d_i8`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_i8_with(
    isa: Isa,
    p: &ConvParams,
    input_dims: Dims4,
    input: &[i8],
    filter_dims: Dims4,
    filter: &[i8],
    packed: Option<&PackedFilter<'_>>,
    bias: Option<&[i32]>,
    requant: Requant<'_>,
    output_dims: Dims4,
    output: &mut [i8],
) -> Result<(), KernelError> {
    conv_impl(isa, p, input_dims, input, filter_dims, filter, packed, None, bias, requant, output_dims, output)
}

/// [`conv2d_i8`] with, besides the packed weights, the output stage
/// prepared at load time by [`prepare_epilogue`] (from the same bias and
/// requantization; used only if its input offset matches `p`'s).
///
/// # Errors
/// As [`reference::conv2d_i8`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_i8_prepared(
    p: &ConvParams,
    input_dims: Dims4,
    input: &[i8],
    filter_dims: Dims4,
    filter: &[i8],
    packed: Option<&PackedFilter<'_>>,
    prepared: Option<&PreparedEpilogue<'_>>,
    bias: Option<&[i32]>,
    requant: Requant<'_>,
    output_dims: Dims4,
    output: &mut [i8],
) -> Result<(), KernelError> {
    conv_impl(active(), p, input_dims, input, filter_dims, filter, packed, prepared, bias, requant, output_dims, output)
}

#[allow(clippy::too_many_arguments)]
fn conv_impl(
    isa: Isa,
    p: &ConvParams,
    input_dims: Dims4,
    input: &[i8],
    filter_dims: Dims4,
    filter: &[i8],
    packed: Option<&PackedFilter<'_>>,
    prepared: Option<&PreparedEpilogue<'_>>,
    bias: Option<&[i32]>,
    requant: Requant<'_>,
    output_dims: Dims4,
    output: &mut [i8],
) -> Result<(), KernelError> {
    let reference = |output: &mut [i8]| {
        reference::conv2d_i8(p, input_dims, input, filter_dims, filter, bias, requant, output_dims, output)
    };
    #[cfg(target_arch = "arm")]
    if isa == Isa::Dsp && supported(isa) {
        // Microcontrollers have no packed weights: the DSP kernels read OHWI.
        return cortex_m::conv2d_i8(p, input_dims, input, filter_dims, filter, bias, requant, output_dims, output);
    }
    let Some(k) = filter_dims.h.checked_mul(filter_dims.w).and_then(|hw| hw.checked_mul(filter_dims.c)) else {
        return reference(output);
    };
    let n = output_dims.c;
    // The packing of `pack_conv_filter`: plain, or with the channel padded
    // (then only the indirect GEMM can use it).
    let cp_k = conv_packed_depth(filter_dims).unwrap_or(k);
    let Some(packed) = packed.filter(|pk| pk.matches(n, k) || (cp_k != k && pk.matches(n, cp_k))) else {
        return reference(output);
    };
    if isa == Isa::Reference
        || !supported(isa)
        || input_dims.c != filter_dims.c
        || filter_dims.n != n
        || !gemm_fits(n, packed.k)
    {
        return reference(output);
    }
    check_window_op(
        p,
        (input_dims, input.len()),
        (filter_dims, filter.len()),
        (output_dims, output.len()),
        bias,
        &requant,
        n,
    )?;
    // Every window coordinate is now in range; windows that leave the image
    // on the far side are clipped by `gather_patch` (`x < input`).

    let mut bufs = EpilogueBufs::new();
    let e = match prepared.and_then(|pr| pr.epilogue(packed.n, p.input_offset, p.output_offset, p.clamp)) {
        Some(e) => e,
        None => Epilogue::for_gemm(&mut bufs, packed, bias, &requant, p.input_offset, p.output_offset, p.clamp),
    };
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni && conv_indirect(p, input_dims, input, filter_dims, packed, &e, output_dims, output) {
        return Ok(());
    }

    let kp = packed.k.div_ceil(PACK_K) * PACK_K;
    let mut pbuf = Scratch::<u8, { MR * MAX_K }>::new();
    let patches = pbuf.init(MR * kp, |_| 0);
    let (oh, ow) = (output_dims.h, output_dims.w);
    let pixels = output_dims.n * oh * ow;
    let mut pix = 0;
    while pix < pixels {
        let mr = MR.min(pixels - pix);
        for r in 0..mr {
            let q = pix + r;
            let (b, rem) = (q / (oh * ow), q % (oh * ow));
            let cp = packed.k / (filter_dims.h * filter_dims.w).max(1);
            gather_patch(
                &mut patches[r * kp..r * kp + packed.k],
                p,
                input_dims,
                input,
                filter_dims,
                cp,
                b,
                rem / ow,
                rem % ow,
            );
        }
        gemm_rows(isa, patches, kp, mr, packed, &e, &mut output[pix * n..(pix + mr) * n]);
        pix += mr;
    }
    Ok(())
}

/// The reference convolution kernels' argument checks, in their order (so
/// the fast paths return the same errors), for a layer whose channel
/// arithmetic (groups, multiplier) the caller has already vetted: slice
/// lengths, batch, bias and requantization of `channels`, strides and
/// dilations, offsets, clamp, window geometry. After this every window
/// coordinate is in range; windows leaving the image on the far side are
/// clipped by the callers (`x < input`).
#[allow(clippy::too_many_arguments)]
fn check_window_op(
    p: &ConvParams,
    (input_dims, input_len): (Dims4, usize),
    (filter_dims, filter_len): (Dims4, usize),
    (output_dims, output_len): (Dims4, usize),
    bias: Option<&[i32]>,
    requant: &Requant<'_>,
    channels: usize,
) -> Result<(), KernelError> {
    check_len(input_len, input_dims)?;
    check_len(filter_len, filter_dims)?;
    check_len(output_len, output_dims)?;
    if output_dims.n != input_dims.n {
        return Err(KernelError::ShapeMismatch);
    }
    check_bias(bias, channels)?;
    check_requant(requant, channels)?;
    check_positive(&[p.stride.0, p.stride.1, p.dilation.0, p.dilation.1])?;
    check_input_offset(p.input_offset)?;
    check_zero_point(p.output_offset)?;
    check_clamp(p.clamp)?;
    check_window(output_dims.h, p.stride.0, filter_dims.h, p.dilation.0, p.padding.0, input_dims.h)?;
    check_window(output_dims.w, p.stride.1, filter_dims.w, p.dilation.1, p.padding.1, input_dims.w)
}

/// Largest zero-point-padded input copy the indirect convolution builds
/// (bytes, on the stack).
#[cfg(target_arch = "x86_64")]
const MAX_PADDED: usize = 40 * 1024;

/// Tests turn the pixel-major path off to reach the two-pixels-per-register
/// one ([`x86`]'s `block_pairs`, for CPUs without VBMI) on this CPU.
#[cfg(test)]
static NO_PIXEL_MAJOR: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether [`conv_indirect`] may take `x86::conv_pixels8` (always, but in
/// tests that ask otherwise).
#[cfg(target_arch = "x86_64")]
#[inline]
fn pixel_major() -> bool {
    #[cfg(test)]
    {
        !NO_PIXEL_MAJOR.load(core::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(test))]
    {
        true
    }
}

/// Convolution as an *indirect* GEMM: the micro-kernel reads each 4-value
/// depth group of a pixel's window straight from the input (or from a
/// zero-point-padded copy when the layer pads), at `pixel offset + group
/// offset`, instead of copying windows into patch rows. Needs every group's
/// 4 values contiguous: `kw·in_c` a multiple of 4 without dilation, or
/// `in_c` a multiple of 4. Returns false (nothing written) when the layer
/// does not qualify; arguments are already validated.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[allow(unsafe_code)] // an uninitialised stack buffer, filled before it is read
fn conv_indirect(
    p: &ConvParams,
    input_dims: Dims4,
    input: &[i8],
    filter_dims: Dims4,
    packed: &PackedFilter<'_>,
    e: &Epilogue<'_>,
    output_dims: Dims4,
    output: &mut [i8],
) -> bool {
    let c = input_dims.c;
    let (fh, fw) = (filter_dims.h, filter_dims.w);
    // Channels per pixel in the layout the weights were packed for.
    let cp = if packed.k == fh * fw * c { c } else { c.div_ceil(PACK_K) * PACK_K };
    let k = fh * fw * cp;
    let contiguous = (p.dilation.1 == 1 && (fw * cp).is_multiple_of(PACK_K)) || cp.is_multiple_of(PACK_K);
    if !contiguous || k == 0 || k != packed.k || k / PACK_K > MAX_K / PACK_K {
        return false;
    }
    // The padded frame the windows cover.
    let hp = (output_dims.h - 1) * p.stride.0 + (fh - 1) * p.dilation.0 + 1;
    let wp = (output_dims.w - 1) * p.stride.1 + (fw - 1) * p.dilation.1 + 1;
    let in_image = cp == c && p.padding == (0, 0) && hp <= input_dims.h && wp <= input_dims.w;
    let (rows, cols) = if in_image { (input_dims.h, input_dims.w) } else { (hp, wp) };
    // Group offsets within a window, increasing with k.
    let k4 = k / PACK_K;
    let mut qbuf = Scratch::<usize, { MAX_K / PACK_K }>::new();
    let qoff = qbuf.init(k4, |q| {
        let kk = q * PACK_K;
        let (ky, rem) = (kk / (fw * cp), kk % (fw * cp));
        let (kx, ch) = (rem / cp, rem % cp);
        (ky * p.dilation.0 * cols + kx * p.dilation.1) * cp + ch
    });
    let mut buf = core::mem::MaybeUninit::<[i8; MAX_PADDED]>::uninit();
    // The micro-kernel reads `u8` values (`x + 128`, `vpdpbusd`'s unsigned
    // operand): a copy holds them flipped already, which takes an `xor` off
    // every broadcast (a third of the inner loop's vector work); an input
    // too large to copy is read in place and flipped in registers.
    let (base, flipped): (&[i8], bool) = if in_image && input.len() > MAX_PADDED {
        (input, false)
    } else if in_image {
        let dst = buf.as_mut_ptr().cast::<i8>();
        // SAFETY: input.len() ≤ MAX_PADDED bytes are written, then read.
        unsafe {
            for (i, &v) in input.iter().enumerate() {
                *dst.add(i) = v ^ i8::MIN;
            }
            (core::slice::from_raw_parts(dst, input.len()), true)
        }
    } else {
        let Some(size) = input_dims.n.checked_mul(hp * wp * cp).filter(|&s| s <= MAX_PADDED) else {
            return false;
        };
        // Written flipped (`x + 128` as `u8`), the padding too.
        let zp = (-p.input_offset) as i8 ^ i8::MIN;
        let dst = buf.as_mut_ptr().cast::<i8>();
        let (pt, pl) = p.padding;
        let zpb = zp as u8;
        // Padded-frame columns [x_lo, x_hi) lie on the image (ix = x − pl).
        let x_lo = pl.min(wp);
        let x_hi = (pl + input_dims.w).min(wp).max(x_lo);
        for b in 0..input_dims.n {
            for y in 0..hp {
                let row = (b * hp + y) * wp * cp;
                let Some(iy) = y.checked_sub(pt).filter(|&iy| iy < input_dims.h) else {
                    // SAFETY: row + wp·cp ≤ size ≤ MAX_PADDED.
                    unsafe { core::ptr::write_bytes(dst.add(row), zpb, wp * cp) };
                    continue;
                };
                let src = &input[(b * input_dims.h + iy) * input_dims.w * c..][..input_dims.w * c];
                let src = &src[(x_lo - pl.min(x_lo)) * c..][..(x_hi - x_lo) * c];
                // SAFETY: all writes stay in [row, row + wp·cp) ⊆ [0, size)
                // (the widened pixels are d[0 .. (x_hi − x_lo)·cp]); `src`
                // holds the (x_hi − x_lo)·c values read.
                unsafe {
                    core::ptr::write_bytes(dst.add(row), zpb, x_lo * cp);
                    let d = dst.add(row + x_lo * cp);
                    if cp == c {
                        for (i, &v) in src.iter().enumerate() {
                            *d.add(i) = v ^ i8::MIN;
                        }
                    } else if c == 3 && cp == 4 {
                        // Images: 3 channels widened to 4 with SSSE3.
                        let widened = core::slice::from_raw_parts_mut(d, src.len() / 3 * 4);
                        x86::widen3to4_flipped(src, widened, zp ^ i8::MIN);
                    } else {
                        for (x, px) in src.chunks_exact(c).enumerate() {
                            for (ch, &v) in px.iter().enumerate() {
                                *d.add(x * cp + ch) = v ^ i8::MIN;
                            }
                            for ch in c..cp {
                                *d.add(x * cp + ch) = zp;
                            }
                        }
                    }
                    core::ptr::write_bytes(dst.add(row + x_hi * cp), zpb, (wp - x_hi) * cp);
                }
            }
        }
        // SAFETY: every byte of [0, size) was written above.
        let padded = unsafe { core::slice::from_raw_parts(dst, size) };
        (padded, true)
    };
    let (oh, ow) = (output_dims.h, output_dims.w);
    let n = output_dims.c;
    // 4-byte pixels into 8 channels (VWW's first layer): pixel-major.
    if n == 8 && cp == PACK_K && flipped && p.dilation == (1, 1) && pixel_major() {
        let frame =
            x86::PixelFrame { batches: output_dims.n, rows, cols, fh, fw, sy: p.stride.0, sx: p.stride.1, oh, ow };
        if x86::conv_pixels8(base, frame, packed, e, output) {
            return true;
        }
    }
    let pixels = output_dims.n * oh * ow;
    let Some(gemm) = x86::IndirectGemm::new(base, flipped, qoff, packed, e) else { return false };
    let mut pix = 0;
    let mut offs = [0usize; MR_INDIRECT];
    // The next pixel's (image row, output x) and its window's offset,
    // stepped without dividing (a division per pixel cost as much as a
    // shallow layer's arithmetic).
    let (mut row_y, mut ox, mut at) = (0usize, 0usize, 0usize);
    let (step_x, step_y) = (p.stride.1 * cp, p.stride.0 * cols * cp);
    while pix < pixels {
        let mr = MR_INDIRECT.min(pixels - pix);
        for o in offs.iter_mut().take(mr) {
            *o = at;
            ox += 1;
            at += step_x;
            if ox == ow {
                ox = 0;
                row_y += 1;
                // Next output row, or the next image's first row.
                at = if row_y % oh == 0 { (row_y / oh) * rows * cols * cp } else { at - ow * step_x + step_y };
            }
        }
        if !gemm.run(&offs[..mr], &mut output[pix * n..(pix + mr) * n]) {
            return false;
        }
        pix += mr;
    }
    true
}

/// [`reference::fully_connected_i8`] with the [`active`] ISA and, if given,
/// weights packed by [`pack_filter`] (`n = out`, `k = in`). Bit-identical to
/// the reference.
///
/// # Errors
/// As [`reference::fully_connected_i8`].
#[allow(clippy::too_many_arguments)]
pub fn fully_connected_i8(
    p: &FullyConnectedParams,
    batches: usize,
    input: &[i8],
    filter_dims: (usize, usize),
    filter: &[i8],
    packed: Option<&PackedFilter<'_>>,
    bias: Option<&[i32]>,
    requant: Requant<'_>,
    output: &mut [i8],
) -> Result<(), KernelError> {
    fully_connected_i8_with(active(), p, batches, input, filter_dims, filter, packed, bias, requant, output)
}

/// [`fully_connected_i8`] with an explicit ISA (capped to what the CPU
/// supports).
///
/// # Errors
/// As [`reference::fully_connected_i8`].
#[allow(clippy::too_many_arguments)]
pub fn fully_connected_i8_with(
    isa: Isa,
    p: &FullyConnectedParams,
    batches: usize,
    input: &[i8],
    filter_dims: (usize, usize),
    filter: &[i8],
    packed: Option<&PackedFilter<'_>>,
    bias: Option<&[i32]>,
    requant: Requant<'_>,
    output: &mut [i8],
) -> Result<(), KernelError> {
    fc_impl(isa, p, batches, input, filter_dims, filter, packed, None, bias, requant, output)
}

/// [`fully_connected_i8`] with the output stage prepared at load time (see
/// [`conv2d_i8_prepared`]).
///
/// # Errors
/// As [`reference::fully_connected_i8`].
#[allow(clippy::too_many_arguments)]
pub fn fully_connected_i8_prepared(
    p: &FullyConnectedParams,
    batches: usize,
    input: &[i8],
    filter_dims: (usize, usize),
    filter: &[i8],
    packed: Option<&PackedFilter<'_>>,
    prepared: Option<&PreparedEpilogue<'_>>,
    bias: Option<&[i32]>,
    requant: Requant<'_>,
    output: &mut [i8],
) -> Result<(), KernelError> {
    fc_impl(active(), p, batches, input, filter_dims, filter, packed, prepared, bias, requant, output)
}

#[allow(clippy::too_many_arguments)]
fn fc_impl(
    isa: Isa,
    p: &FullyConnectedParams,
    batches: usize,
    input: &[i8],
    filter_dims: (usize, usize),
    filter: &[i8],
    packed: Option<&PackedFilter<'_>>,
    prepared: Option<&PreparedEpilogue<'_>>,
    bias: Option<&[i32]>,
    requant: Requant<'_>,
    output: &mut [i8],
) -> Result<(), KernelError> {
    let (n, k) = filter_dims;
    let reference = |output: &mut [i8]| {
        reference::fully_connected_i8(p, batches, input, filter_dims, filter, bias, requant, output)
    };
    #[cfg(target_arch = "arm")]
    if isa == Isa::Dsp && supported(isa) {
        return cortex_m::fully_connected_i8(p, batches, input, filter_dims, filter, bias, requant, output);
    }
    let Some(packed) = packed.filter(|pk| pk.matches(n, k)) else { return reference(output) };
    if isa == Isa::Reference || !supported(isa) || !gemm_fits(n, k) {
        return reference(output);
    }
    check_len2(input.len(), batches, k)?;
    check_len2(filter.len(), n, k)?;
    check_len2(output.len(), batches, n)?;
    check_bias(bias, n)?;
    check_requant(&requant, n)?;
    check_input_offset(p.input_offset)?;
    check_zero_point(p.output_offset)?;
    check_clamp(p.clamp)?;

    match prepared.and_then(|pr| pr.epilogue(packed.n, p.input_offset, p.output_offset, p.clamp)) {
        Some(e) => fc_gemm(isa, batches, input, packed, &e, output),
        None => fc_gemm_unprepared(isa, p, batches, input, packed, bias, &requant, output),
    }
    Ok(())
}

/// [`fc_gemm`] with the output stage computed for this call (its 16 KiB of
/// buffers live in this frame only, not in the usual path's).
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn fc_gemm_unprepared(
    isa: Isa,
    p: &FullyConnectedParams,
    batches: usize,
    input: &[i8],
    packed: &PackedFilter<'_>,
    bias: Option<&[i32]>,
    requant: &Requant<'_>,
    output: &mut [i8],
) {
    let mut bufs = EpilogueBufs::new();
    let e = Epilogue::for_gemm(&mut bufs, packed, bias, requant, p.input_offset, p.output_offset, p.clamp);
    fc_gemm(isa, batches, input, packed, &e, output);
}

/// The fully connected GEMM on checked arguments: rows are copied as `u8`
/// patches, one at a time for batch 1 (a one-row buffer: a small stack
/// frame matters when a layer takes a fraction of a microsecond), else
/// [`MR`] at a time.
#[inline(never)]
fn fc_gemm(isa: Isa, batches: usize, input: &[i8], packed: &PackedFilter<'_>, e: &Epilogue<'_>, output: &mut [i8]) {
    if batches == 1 {
        fc_rows(isa, &mut Scratch::<u8, MAX_K>::new(), 1, input, packed, e, output);
    } else {
        fc_rows(isa, &mut Scratch::<u8, { MR * MAX_K }>::new(), MR, input, packed, e, output);
    }
}

#[inline(always)]
fn fc_rows<const N: usize>(
    isa: Isa,
    buf: &mut Scratch<u8, N>,
    rows: usize,
    input: &[i8],
    packed: &PackedFilter<'_>,
    e: &Epilogue<'_>,
    output: &mut [i8],
) {
    let (n, k) = (packed.n, packed.k);
    let kp = k.div_ceil(PACK_K) * PACK_K;
    let batches = input.len() / k;
    // Depth padding `k..kp` is zero (its weights are zero too).
    let patches = buf.init(rows * kp, |_| 0);
    let mut row = 0;
    while row < batches {
        let mr = rows.min(batches - row);
        for r in 0..mr {
            let src = &input[(row + r) * k..(row + r + 1) * k];
            for (d, &s) in patches[r * kp..r * kp + k].iter_mut().zip(src) {
                *d = (s as u8) ^ 0x80;
            }
        }
        gemm_rows(isa, patches, kp, mr, packed, e, &mut output[row * n..(row + mr) * n]);
        row += mr;
    }
}

/// [`reference::depthwise_conv2d_i8`] with the [`active`] ISA (channels in
/// SIMD lanes; depth multiplier 1). Bit-identical to the reference.
///
/// # Errors
/// As [`reference::depthwise_conv2d_i8`].
#[allow(clippy::too_many_arguments)]
pub fn depthwise_conv2d_i8(
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
    depthwise_conv2d_i8_with(active(), p, input_dims, input, filter_dims, filter, bias, requant, output_dims, output)
}

/// [`depthwise_conv2d_i8`] with an explicit ISA (capped to what the CPU
/// supports).
///
/// # Errors
/// As [`reference::depthwise_conv2d_i8`].
#[allow(clippy::too_many_arguments)]
pub fn depthwise_conv2d_i8_with(
    isa: Isa,
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
    #[cfg(target_arch = "arm")]
    if isa == Isa::Dsp && supported(isa) {
        return cortex_m::depthwise_conv2d_i8(
            p,
            input_dims,
            input,
            filter_dims,
            filter,
            bias,
            requant,
            output_dims,
            output,
        );
    }
    let c = input_dims.c;
    if isa == Isa::Reference
        || !supported(isa)
        || p.depth_multiplier != 1
        || filter_dims.n != 1
        || filter_dims.c != c
        || output_dims.c != c
        || c > MAX_N
    {
        return reference(output);
    }
    let conv = &p.conv;
    check_window_op(
        conv,
        (input_dims, input.len()),
        (filter_dims, filter.len()),
        (output_dims, output.len()),
        bias,
        &requant,
        c,
    )?;

    // Epilogue without the packed correction: `corr` is just the bias.
    let mut bufs = EpilogueBufs::new();
    let e = Epilogue::new(&mut bufs, c, bias, None, &requant, conv.output_offset, conv.clamp);
    let g = DwGeom { input_dims, filter_dims, output_dims, p: *conv };
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni if x86::has_avx512vnni() => x86::depthwise_avx512(&g, input, filter, &e, output),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDot => aarch64::depthwise(isa, &g, input, filter, &e, output),
        _ => depthwise_rows(isa, &g, input, filter, &e, output),
    }
    Ok(())
}

/// The geometry of a (validated) depthwise convolution with multiplier 1.
pub(crate) struct DwGeom {
    pub(crate) input_dims: Dims4,
    pub(crate) filter_dims: Dims4,
    pub(crate) output_dims: Dims4,
    pub(crate) p: ConvParams,
}

impl DwGeom {
    /// The filter taps `(ky, kx)` of output pixel `(oy, ox)` that fall in the
    /// image, as ranges (dilation ≥ 1: stepping is done by the caller).
    #[inline]
    pub(crate) fn taps(&self, oy: usize, ox: usize) -> (core::ops::Range<usize>, core::ops::Range<usize>) {
        let range = |o: usize, stride: usize, dil: usize, pad: usize, k: usize, extent: usize| {
            // First tap with o·stride + t·dil ≥ pad, last with < pad + extent.
            if k == 0 {
                return 0..0;
            }
            let origin = o * stride;
            let lo = if origin >= pad { 0 } else { (pad - origin).div_ceil(dil) };
            let hi = if origin + (k - 1) * dil < pad + extent {
                k
            } else if origin >= pad + extent {
                0
            } else {
                (pad + extent - origin).div_ceil(dil)
            };
            lo..hi.max(lo)
        };
        let (d, p) = (&self.filter_dims, &self.p);
        (
            range(oy, p.stride.0, p.dilation.0, p.padding.0, d.h, self.input_dims.h),
            range(ox, p.stride.1, p.dilation.1, p.padding.1, d.w, self.input_dims.w),
        )
    }

    /// Offset of input pixel under tap `(ky, kx)` of output `(b, oy, ox)`
    /// (the tap must be one of [`Self::taps`]).
    #[inline]
    pub(crate) fn input_at(&self, b: usize, oy: usize, ox: usize, ky: usize, kx: usize) -> usize {
        let p = &self.p;
        let iy = oy * p.stride.0 + ky * p.dilation.0 - p.padding.0;
        let ix = ox * p.stride.1 + kx * p.dilation.1 - p.padding.1;
        ((b * self.input_dims.h + iy) * self.input_dims.w + ix) * self.input_dims.c
    }
}

/// Depthwise, one output pixel at a time, channels through
/// [`depthwise_tap`] and [`requant_row`].
fn depthwise_rows(isa: Isa, g: &DwGeom, input: &[i8], filter: &[i8], e: &Epilogue<'_>, output: &mut [i8]) {
    let c = g.input_dims.c;
    let fw = g.filter_dims.w;
    let mut abuf = Scratch::<i32, MAX_N>::new();
    let acc = abuf.init(c, |_| 0);
    for b in 0..g.output_dims.n {
        for oy in 0..g.output_dims.h {
            for ox in 0..g.output_dims.w {
                acc.copy_from_slice(&e.corr[..c]);
                let (ys, xs) = g.taps(oy, ox);
                for ky in ys {
                    for kx in xs.clone() {
                        let x = &input[g.input_at(b, oy, ox, ky, kx)..][..c];
                        let w = &filter[(ky * fw + kx) * c..][..c];
                        depthwise_tap(isa, acc, x, w, g.p.input_offset);
                    }
                }
                let o = ((b * g.output_dims.h + oy) * g.output_dims.w + ox) * c;
                requant_row(isa, acc, e, &mut output[o..o + c]);
            }
        }
    }
}

/// [`reference::add_i8`] with the [`active`] ISA. Bit-identical to the
/// reference.
///
/// # Errors
/// As [`reference::add_i8`].
pub fn add_i8(p: &AddParams, input1: &[i8], input2: &[i8], output: &mut [i8]) -> Result<(), KernelError> {
    add_i8_with(active(), p, input1, input2, output)
}

/// [`add_i8`] with an explicit ISA (capped to what the CPU supports).
///
/// # Errors
/// As [`reference::add_i8`].
pub fn add_i8_with(
    isa: Isa,
    p: &AddParams,
    input1: &[i8],
    input2: &[i8],
    output: &mut [i8],
) -> Result<(), KernelError> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni if x86::has_avx512vnni() => {
            check_add(p, input1, input2, output)?;
            x86::add_avx512(p, input1, input2, output);
            Ok(())
        }
        #[cfg(target_arch = "arm")]
        Isa::Dsp if supported(Isa::Dsp) => cortex_m::add_i8(p, input1, input2, output),
        _ => reference::add_i8(p, input1, input2, output),
    }
}

/// Bytes of an add lookup table ([`prepare_add_table`]): one output per
/// pair of int8 inputs, then 4 bytes of padding (vector gathers read 4
/// bytes at each index).
pub const ADD_TABLE_LEN: usize = 256 * 256 + 4;

/// Builds the table [`add_i8_table`] reads: entry `(a as u8) << 8 | (b as
/// u8)` is [`add_i8`]'s output (bit-identical to the reference) for the
/// inputs `a` and `b` under `p`, so a lookup is too.
/// An elementwise add otherwise costs three requantizations per element;
/// the table (64 KiB) is for hosts, built once per layer at load time
/// (about 65,536 reference adds).
///
/// # Errors
/// `table.len() != ADD_TABLE_LEN`, or `p` is refused by the reference.
pub fn prepare_add_table(p: &AddParams, table: &mut [i8]) -> Result<(), KernelError> {
    if table.len() != ADD_TABLE_LEN {
        return Err(KernelError::ShapeMismatch);
    }
    let b: [i8; 256] = core::array::from_fn(|i| i as u8 as i8);
    for (q, row) in table.chunks_exact_mut(256).enumerate() {
        let a = [q as u8 as i8; 256];
        add_i8(p, &a, &b, row)?;
    }
    table[256 * 256..].fill(0);
    Ok(())
}

/// [`reference::add_i8`] by lookup in a table [`prepare_add_table`] built
/// for the same parameters (the caller keeps the two together). AVX-512
/// gathers 16 entries at a time; elsewhere one load per element.
///
/// # Errors
/// A table of the wrong length (`InvalidParameter`), inputs and output of
/// different lengths (`ShapeMismatch`).
pub fn add_i8_table(table: &[i8], input1: &[i8], input2: &[i8], output: &mut [i8]) -> Result<(), KernelError> {
    if table.len() != ADD_TABLE_LEN {
        return Err(KernelError::InvalidParameter);
    }
    if input1.len() != output.len() || input2.len() != output.len() {
        return Err(KernelError::ShapeMismatch);
    }
    #[cfg(target_arch = "x86_64")]
    if active() == Isa::Avx512Vnni {
        x86::add_table_avx512(table, input1, input2, output);
        return Ok(());
    }
    for ((o, &a), &b) in output.iter_mut().zip(input1).zip(input2) {
        *o = table[usize::from(a as u8) << 8 | usize::from(b as u8)];
    }
    Ok(())
}

/// An add given the table [`prepare_add_table`] built at load time, if
/// any: AVX-512 with VBMI computes it faster per call, without the table
/// (byte-plane lookups, [`add_i8_with`]); otherwise the table, else
/// [`add_i8`]. Bit-identical to the reference either way.
///
/// # Errors
/// As [`add_i8`] and [`add_i8_table`].
pub fn add_i8_prepared(
    p: &AddParams,
    table: Option<&[i8]>,
    input1: &[i8],
    input2: &[i8],
    output: &mut [i8],
) -> Result<(), KernelError> {
    #[cfg(target_arch = "x86_64")]
    if active() == Isa::Avx512Vnni && x86::has_avx512vbmi() {
        return add_i8_with(Isa::Avx512Vnni, p, input1, input2, output);
    }
    match table {
        Some(t) => add_i8_table(t, input1, input2, output),
        None => add_i8(p, input1, input2, output),
    }
}

/// The reference's argument checks of `add_i8`, in its order.
#[cfg_attr(not(any(target_arch = "x86_64", edgefleet_dsp)), allow(dead_code))]
fn check_add(p: &AddParams, input1: &[i8], input2: &[i8], output: &[i8]) -> Result<(), KernelError> {
    if input1.len() != output.len() || input2.len() != output.len() {
        return Err(KernelError::ShapeMismatch);
    }
    check_input_offset(p.input1_offset)?;
    check_input_offset(p.input2_offset)?;
    check_zero_point(p.output_offset)?;
    check_clamp(p.clamp)?;
    if !(0..=22).contains(&p.left_shift) {
        return Err(KernelError::InvalidParameter);
    }
    let shifts = [p.input1_shift, p.input2_shift, p.output_shift];
    crate::reference::common::check_multipliers(
        &[p.input1_multiplier, p.input2_multiplier, p.output_multiplier],
        &shifts,
    )?;
    if shifts.iter().any(|&s| s > 0) {
        return Err(KernelError::InvalidParameter);
    }
    Ok(())
}

/// [`reference::average_pool_i8`] with the [`active`] ISA: the same sums and
/// rounding, accumulated a pixel row of channels at a time (so the compiler
/// vectorises the adds) instead of one channel at a time. Bit-identical.
///
/// # Errors
/// As [`reference::average_pool_i8`].
pub fn average_pool_i8(
    p: &PoolParams,
    input_dims: Dims4,
    input: &[i8],
    output_dims: Dims4,
    output: &mut [i8],
) -> Result<(), KernelError> {
    average_pool_i8_with(active(), p, input_dims, input, output_dims, output)
}

/// [`average_pool_i8`] with an explicit ISA (any ISA but
/// [`Isa::Reference`] takes the row-at-a-time path, which is portable).
///
/// # Errors
/// As [`reference::average_pool_i8`].
pub fn average_pool_i8_with(
    isa: Isa,
    p: &PoolParams,
    input_dims: Dims4,
    input: &[i8],
    output_dims: Dims4,
    output: &mut [i8],
) -> Result<(), KernelError> {
    let c = input_dims.c;
    if isa == Isa::Reference || c > MAX_N || c == 0 {
        return reference::average_pool_i8(p, input_dims, input, output_dims, output);
    }
    // The reference's checks, in its order.
    crate::reference::common::check_pool(p, input_dims, input.len(), output_dims, output.len())?;
    if p.filter.0.saturating_mul(p.filter.1) > reference::MAX_AVERAGE_POOL_WINDOW {
        return Err(KernelError::InvalidParameter);
    }
    let window = crate::reference::common::pool_window;
    if output_dims.n > 0 && output_dims.h > 0 && output_dims.w > 0 {
        let rows = [0, output_dims.h - 1].map(|o| window(o, p.stride.0, p.padding.0, p.filter.0, input_dims.h));
        let cols = [0, output_dims.w - 1].map(|o| window(o, p.stride.1, p.padding.1, p.filter.1, input_dims.w));
        if rows.iter().chain(&cols).any(|&(start, end)| start >= end) {
            return Err(KernelError::InvalidParameter);
        }
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni && x86::average_pool_avx512(p, input_dims, input, output_dims, output) {
        return Ok(());
    }
    #[cfg(target_arch = "arm")]
    if isa == Isa::Dsp && supported(isa) && cortex_m::average_pool_i8(p, input_dims, input, output_dims, output) {
        return Ok(());
    }
    let mut abuf = Scratch::<i32, MAX_N>::new();
    let acc = abuf.init(c, |_| 0);
    for b in 0..output_dims.n {
        for oy in 0..output_dims.h {
            let (y0, y1) = window(oy, p.stride.0, p.padding.0, p.filter.0, input_dims.h);
            for ox in 0..output_dims.w {
                let (x0, x1) = window(ox, p.stride.1, p.padding.1, p.filter.1, input_dims.w);
                acc.fill(0);
                for fy in y0..y1 {
                    let iy = oy * p.stride.0 + fy - p.padding.0;
                    for fx in x0..x1 {
                        let ix = ox * p.stride.1 + fx - p.padding.1;
                        let row = &input[((b * input_dims.h + iy) * input_dims.w + ix) * c..][..c];
                        accumulate(isa, acc, row);
                    }
                }
                let n = ((y1 - y0) * (x1 - x0)) as i32;
                let o = ((b * output_dims.h + oy) * output_dims.w + ox) * c;
                for (out, &a) in output[o..o + c].iter_mut().zip(acc.iter()) {
                    let avg = if a > 0 { (a + n / 2) / n } else { (a - n / 2) / n };
                    *out = avg.max(i32::from(p.clamp.min)).min(i32::from(p.clamp.max)) as i8;
                }
            }
        }
    }
    Ok(())
}

/// `acc[c] += x[c]`.
#[inline]
fn accumulate(isa: Isa, acc: &mut [i32], x: &[i8]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => x86::accumulate_avx2(acc, x),
        _ => {
            for (a, &x) in acc.iter_mut().zip(x) {
                *a += i32::from(x);
            }
        }
    }
}

/// `acc[c] += w[c] · (x[c] + input_offset)`, wrapping.
#[inline]
fn depthwise_tap(isa: Isa, acc: &mut [i32], x: &[i8], w: &[i8], input_offset: i32) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => x86::depthwise_tap_avx2(acc, x, w, input_offset),
        _ => {
            for ((a, &x), &w) in acc.iter_mut().zip(x).zip(w) {
                *a = a.wrapping_add(i32::from(w) * (i32::from(x) + input_offset));
            }
        }
    }
}

/// `out[c] = clamp(requant(acc[c]) + output_offset)`.
#[inline]
fn requant_row(isa: Isa, acc: &[i32], e: &Epilogue<'_>, out: &mut [i8]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => x86::requant_row_avx2(acc, e, out),
        _ => {
            for (c, (o, &a)) in out.iter_mut().zip(acc).enumerate() {
                *o = output_stage(a, e, c);
            }
        }
    }
}

/// The fast kernels with the reference kernels' signatures (packing the
/// weights on each call), for [`crate::kernel_battery!`].
#[cfg(test)]
mod battery_adapters {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// Packs a conv filter as the runtime does.
    fn pack_conv(fd: Dims4, w: &[i8]) -> Option<(usize, Vec<i8>, Vec<i32>)> {
        let k = conv_packed_depth(fd)?;
        let (dl, cl) = packed_len(fd.n, k)?;
        let (mut data, mut colsum) = (vec![0i8; dl], vec![0i32; cl]);
        pack_conv_filter(fd, w, &mut data, &mut colsum).ok()?;
        Some((k, data, colsum))
    }

    fn pack(n: usize, k: usize, w: &[i8]) -> Option<(Vec<i8>, Vec<i32>)> {
        let (dl, cl) = packed_len(n, k)?;
        let (mut data, mut colsum) = (vec![0i8; dl], vec![0i32; cl]);
        pack_filter(n, k, w, &mut data, &mut colsum).ok()?;
        Some((data, colsum))
    }

    macro_rules! adapters {
        ($isa:expr, $conv:ident, $dw:ident, $fc:ident) => {
            #[allow(clippy::too_many_arguments)]
            pub fn $conv(
                p: &ConvParams,
                id: Dims4,
                x: &[i8],
                fd: Dims4,
                f: &[i8],
                b: Option<&[i32]>,
                r: Requant<'_>,
                od: Dims4,
                o: &mut [i8],
            ) -> Result<(), KernelError> {
                let packed = pack_conv(fd, f);
                let pf = packed.as_ref().map(|(k, data, colsum)| PackedFilter { n: fd.n, k: *k, data, colsum });
                conv2d_i8_with($isa, p, id, x, fd, f, pf.as_ref(), b, r, od, o)
            }

            #[allow(clippy::too_many_arguments)]
            pub fn $dw(
                p: &DepthwiseParams,
                id: Dims4,
                x: &[i8],
                fd: Dims4,
                f: &[i8],
                b: Option<&[i32]>,
                r: Requant<'_>,
                od: Dims4,
                o: &mut [i8],
            ) -> Result<(), KernelError> {
                depthwise_conv2d_i8_with($isa, p, id, x, fd, f, b, r, od, o)
            }

            #[allow(clippy::too_many_arguments)]
            pub fn $fc(
                p: &FullyConnectedParams,
                batches: usize,
                x: &[i8],
                fd: (usize, usize),
                f: &[i8],
                b: Option<&[i32]>,
                r: Requant<'_>,
                o: &mut [i8],
            ) -> Result<(), KernelError> {
                let packed = pack(fd.0, fd.1, f);
                let pf = packed.as_ref().map(|(data, colsum)| PackedFilter { n: fd.0, k: fd.1, data, colsum });
                fully_connected_i8_with($isa, p, batches, x, fd, f, pf.as_ref(), b, r, o)
            }
        };
    }

    pub fn avg_pool_fast(p: &PoolParams, id: Dims4, x: &[i8], od: Dims4, o: &mut [i8]) -> Result<(), KernelError> {
        average_pool_i8_with(Isa::Avx2, p, id, x, od, o)
    }

    pub fn avg_pool_avx512(p: &PoolParams, id: Dims4, x: &[i8], od: Dims4, o: &mut [i8]) -> Result<(), KernelError> {
        average_pool_i8_with(Isa::Avx512Vnni, p, id, x, od, o)
    }

    pub fn add_avx512(p: &AddParams, a: &[i8], b: &[i8], o: &mut [i8]) -> Result<(), KernelError> {
        add_i8_with(Isa::Avx512Vnni, p, a, b, o)
    }

    pub fn avg_pool_dsp(p: &PoolParams, id: Dims4, x: &[i8], od: Dims4, o: &mut [i8]) -> Result<(), KernelError> {
        average_pool_i8_with(Isa::Dsp, p, id, x, od, o)
    }

    pub fn add_dsp(p: &AddParams, a: &[i8], b: &[i8], o: &mut [i8]) -> Result<(), KernelError> {
        add_i8_with(Isa::Dsp, p, a, b, o)
    }

    /// Through a lookup table, as the runtime runs adds on hosts.
    pub fn add_table(p: &AddParams, a: &[i8], b: &[i8], o: &mut [i8]) -> Result<(), KernelError> {
        let mut table = vec![0i8; ADD_TABLE_LEN];
        prepare_add_table(p, &mut table)?;
        add_i8_table(&table, a, b, o)
    }

    /// Runs `f` with the epilogue prepared as the runtime does at load.
    fn with_prepared<R>(
        packed: Option<&PackedFilter<'_>>,
        bias: Option<&[i32]>,
        r: Requant<'_>,
        input_offset: i32,
        f: impl FnOnce(Option<&PreparedEpilogue<'_>>) -> R,
    ) -> R {
        let Some(pk) = packed else { return f(None) };
        let len = prepared_len(pk.n);
        let mut v = [vec![0i32; len], vec![0i32; len], vec![0i32; len], vec![0i32; len]];
        let [c, m, l, rr] = &mut v;
        if prepare_epilogue(pk, bias, r, input_offset, c, m, l, rr).is_err() {
            return f(None);
        }
        let [c, m, l, rr] = &v;
        let shifts_left = has_left_shifts(l);
        f(Some(&PreparedEpilogue { input_offset, corr: c, multiplier: m, left_shift: l, right_shift: rr, shifts_left }))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn conv_prepared(
        p: &ConvParams,
        id: Dims4,
        x: &[i8],
        fd: Dims4,
        f: &[i8],
        b: Option<&[i32]>,
        r: Requant<'_>,
        od: Dims4,
        o: &mut [i8],
    ) -> Result<(), KernelError> {
        let packed = pack_conv(fd, f);
        let pf = packed.as_ref().map(|(k, data, colsum)| PackedFilter { n: fd.n, k: *k, data, colsum });
        with_prepared(pf.as_ref(), b, r, p.input_offset, |pr| {
            conv_impl(Isa::Avx512Vnni, p, id, x, fd, f, pf.as_ref(), pr, b, r, od, o)
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn fc_prepared(
        p: &FullyConnectedParams,
        batches: usize,
        x: &[i8],
        fd: (usize, usize),
        f: &[i8],
        b: Option<&[i32]>,
        r: Requant<'_>,
        o: &mut [i8],
    ) -> Result<(), KernelError> {
        let packed = pack(fd.0, fd.1, f);
        let pf = packed.as_ref().map(|(data, colsum)| PackedFilter { n: fd.0, k: fd.1, data, colsum });
        with_prepared(pf.as_ref(), b, r, p.input_offset, |pr| {
            fc_impl(Isa::Avx512Vnni, p, batches, x, fd, f, pf.as_ref(), pr, b, r, o)
        })
    }

    adapters!(Isa::Avx2, conv_avx2, dw_avx2, fc_avx2);
    adapters!(Isa::Avx512Vnni, conv_avx512, dw_avx512, fc_avx512);
    adapters!(Isa::Neon, conv_neon, dw_neon, fc_neon);
    adapters!(Isa::NeonDot, conv_neondot, dw_neondot, fc_neondot);
    adapters!(Isa::Dsp, conv_dsp, dw_dsp, fc_dsp);
}

// One shared battery per ISA. On a CPU without the ISA the adapters fall
// back to the reference (and `cpu_has_the_isas_ci_expects` says so).
#[cfg(test)]
crate::kernel_battery!(avx2_vs_reference, {
    average_pool: super::battery_adapters::avg_pool_fast,
    conv2d: super::battery_adapters::conv_avx2,
    depthwise_conv2d: super::battery_adapters::dw_avx2,
    fully_connected: super::battery_adapters::fc_avx2,
});
#[cfg(test)]
crate::kernel_battery!(avx512vnni_vs_reference, {
    average_pool: super::battery_adapters::avg_pool_avx512,
    conv2d: super::battery_adapters::conv_avx512,
    depthwise_conv2d: super::battery_adapters::dw_avx512,
    fully_connected: super::battery_adapters::fc_avx512,
    add: super::battery_adapters::add_avx512,
});
// The same with the output stage prepared as the runtime prepares it at
// load time.
#[cfg(test)]
crate::kernel_battery!(avx512vnni_prepared_vs_reference, {
    conv2d: super::battery_adapters::conv_prepared,
    fully_connected: super::battery_adapters::fc_prepared,
    add: super::battery_adapters::add_table,
});
#[cfg(test)]
crate::kernel_battery!(neon_vs_reference, {
    conv2d: super::battery_adapters::conv_neon,
    depthwise_conv2d: super::battery_adapters::dw_neon,
    fully_connected: super::battery_adapters::fc_neon,
});
#[cfg(test)]
crate::kernel_battery!(neondot_vs_reference, {
    conv2d: super::battery_adapters::conv_neondot,
    depthwise_conv2d: super::battery_adapters::dw_neondot,
    fully_connected: super::battery_adapters::fc_neondot,
});
#[cfg(test)]
crate::kernel_battery!(dsp_vs_reference, {
    conv2d: super::battery_adapters::conv_dsp,
    depthwise_conv2d: super::battery_adapters::dw_dsp,
    fully_connected: super::battery_adapters::fc_dsp,
    add: super::battery_adapters::add_dsp,
    average_pool: super::battery_adapters::avg_pool_dsp,
});

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// The batteries above only prove something on a CPU that has the ISA:
    /// `EDGEFLEET_REQUIRE_ISA=avx512vnni` (set by CI on x86-64 runners that
    /// have it) turns a silent fallback into a failure.
    #[test]
    fn cpu_has_the_isas_ci_expects() {
        if let Ok(name) = std::env::var("EDGEFLEET_REQUIRE_ISA") {
            let isa = Isa::from_name(&name).expect("EDGEFLEET_REQUIRE_ISA names an ISA");
            assert!(supported(isa), "this CPU lacks {isa}");
        }
    }

    #[test]
    fn pack_layout_and_sums() {
        // 17 channels x 5 depth: two channel blocks, two depth groups.
        let (n, k) = (17, 5);
        let w: Vec<i8> = (0..n * k).map(|i| (i as i32 * 7 % 255 - 127) as i8).collect();
        let (dl, cl) = packed_len(n, k).unwrap();
        assert_eq!((dl, cl), (2 * 2 * 64, 32));
        let mut data = vec![0i8; dl];
        let mut colsum = vec![0i32; cl];
        pack_filter(n, k, &w, &mut data, &mut colsum).unwrap();
        for c in 0..n {
            for kk in 0..k {
                let (b, j, q, r) = (c / 16, c % 16, kk / 4, kk % 4);
                assert_eq!(data[((b * 2 + q) * 16 + j) * 4 + r], w[c * k + kk]);
            }
            assert_eq!(colsum[c], w[c * k..(c + 1) * k].iter().map(|&v| i32::from(v)).sum::<i32>());
        }
        // Padding is zero.
        // Block 0, depth group 1 (k = 4..8), channel 3, r = 1: k = 5 is out of range.
        assert_eq!(data[(16 + 3) * 4 + 1], 0);
        assert!(colsum[n..].iter().all(|&s| s == 0));
        assert_eq!(pack_filter(n, k, &w[1..], &mut data, &mut colsum), Err(KernelError::ShapeMismatch));
    }

    /// Packs `filter`, runs the convolution on every ISA this CPU has and
    /// asserts each equals the reference's output (which must not be
    /// constant: a degenerate case would prove nothing).
    #[allow(clippy::too_many_arguments)]
    fn conv_matches_on_every_isa(
        p: &ConvParams,
        id: Dims4,
        input: &[i8],
        fd: Dims4,
        filter: &[i8],
        bias: &[i32],
        requant: Requant<'_>,
        od: Dims4,
        what: &str,
    ) {
        let n = fd.n;
        let kp = conv_packed_depth(fd).unwrap();
        let (dl, cl) = packed_len(n, kp).unwrap();
        let (mut data, mut colsum) = (vec![0i8; dl], vec![0i32; cl]);
        pack_conv_filter(fd, filter, &mut data, &mut colsum).unwrap();
        let packed = PackedFilter { n, k: kp, data: &data, colsum: &colsum };
        let mut want = vec![0i8; od.elements().unwrap()];
        reference::conv2d_i8(p, id, input, fd, filter, Some(bias), requant, od, &mut want).unwrap();
        assert!(want.iter().any(|&v| v != want[0]), "a degenerate case");
        for isa in all_supported() {
            let mut got = vec![0i8; want.len()];
            conv2d_i8_with(isa, p, id, input, fd, filter, Some(&packed), Some(bias), requant, od, &mut got).unwrap();
            assert!(got == want, "{isa}: {what}");
        }
    }

    /// The indirect convolution reads a flipped copy of the input (padded
    /// or not) when it fits [`MAX_PADDED`], an unpadded input in place when
    /// it does not, and gives a padded one that does not fit to the patch
    /// GEMM: layers too large for the property battery, each compared with
    /// the reference on every ISA this CPU has.
    #[test]
    fn indirect_convolution_paths_match_the_reference() {
        // (input h = w, channels, filter h = w, padding, filters): 1x1 in
        // place (55 KiB), 1x1 copied, 3x3 padded copy, 3x3 padded too
        // large; 8 filters on a 3-channel image (pixel-major with VBMI, else
        // two pixels per register, 81 of them: the last pair has one).
        let cases = [(48, 24, 1, 0, 20), (16, 16, 1, 0, 20), (20, 16, 3, 1, 20), (52, 16, 3, 1, 20), (7, 3, 3, 1, 8)];
        // The last case once more with the pixel-major path off: the
        // two-pixels-per-register one, which CPUs without VBMI take.
        let pairs = [(false, cases.len()), (true, 1)];
        for (hw, c, f, pad, n, no_pixel_major) in pairs.iter().flat_map(|&(off, count)| {
            cases[cases.len() - count..].iter().map(move |&(a, b, c, d, e)| (a, b, c, d, e, off))
        }) {
            NO_PIXEL_MAJOR.store(no_pixel_major, core::sync::atomic::Ordering::Relaxed);
            let k = f * f * c;
            let id = Dims4::new(1, hw, hw, c);
            let fd = Dims4::new(n, f, f, c);
            let oh = hw + 2 * pad - f + 1;
            let od = Dims4::new(1, oh, oh, n);
            let input: Vec<i8> = (0..id.elements().unwrap()).map(|i| (i * 37 % 251) as i8).collect();
            let filter: Vec<i8> = (0..n * k).map(|i| (i * 11 % 253) as i8).collect();
            let bias: Vec<i32> = (0..n as i32).map(|i| i * 1000 - 9000).collect();
            let (multiplier, shift): (Vec<i32>, Vec<i32>) =
                (0..n as i32).map(|i| (1_100_000_000 + i * 9_000_000, -9 - i % 3)).unzip();
            let requant = Requant { multiplier: &multiplier, shift: &shift };
            let p = ConvParams {
                stride: (1, 1),
                dilation: (1, 1),
                padding: (pad, pad),
                input_offset: 3,
                output_offset: -5,
                clamp: Clamp { min: -128, max: 127 },
            };
            let what =
                std::format!("{hw}x{hw}x{c}, {n} {f}x{f} filters, padding {pad}, no pixel-major {no_pixel_major}");
            conv_matches_on_every_isa(&p, id, &input, fd, &filter, &bias, requant, od, &what);
        }
        NO_PIXEL_MAJOR.store(false, core::sync::atomic::Ordering::Relaxed);
    }

    /// The pixel-major path for 8 filters over 3- or 4-channel images
    /// (`x86::conv_pixels8`): strides 1 and 2 on each axis, with and without
    /// padding, rows of 1 to 33 outputs (partial 16-pixel blocks and their
    /// masked loads and stores), two images; against the reference on every
    /// ISA this CPU has (the portable and AVX2 paths too).
    #[test]
    fn eight_filter_convolutions_match_the_reference() {
        // (input h, input w, channels, filter h, filter w, stride, padding)
        let cases = [
            (7, 7, 3, 3, 3, (1, 1), (1, 1)),
            (9, 66, 3, 3, 3, (2, 2), (0, 0)),
            (10, 67, 3, 3, 3, (2, 2), (1, 1)),
            (5, 34, 4, 3, 3, (1, 2), (1, 0)),
            (6, 17, 3, 2, 2, (2, 1), (0, 1)),
            (3, 3, 3, 3, 3, (2, 2), (1, 1)),
            (12, 40, 3, 1, 1, (1, 1), (0, 0)),
        ];
        let n = 8;
        for (ih, iw, c, fh, fw, stride, pad) in cases {
            let out = |i: usize, p: usize, f: usize, s: usize| (i + 2 * p - f) / s + 1;
            let id = Dims4::new(2, ih, iw, c);
            let fd = Dims4::new(n, fh, fw, c);
            let od = Dims4::new(2, out(ih, pad.0, fh, stride.0), out(iw, pad.1, fw, stride.1), n);
            let input: Vec<i8> = (0..id.elements().unwrap()).map(|i| (i * 37 % 251) as i8).collect();
            let filter: Vec<i8> = (0..n * fh * fw * c).map(|i| (i * 11 % 253) as i8).collect();
            let bias: Vec<i32> = (0..n as i32).map(|i| i * 1000 - 9000).collect();
            let (multiplier, shift): (Vec<i32>, Vec<i32>) =
                (0..n as i32).map(|i| (1_100_000_000 + i * 9_000_000, -8 - i % 3)).unzip();
            let requant = Requant { multiplier: &multiplier, shift: &shift };
            let p = ConvParams {
                stride,
                dilation: (1, 1),
                padding: pad,
                input_offset: 3,
                output_offset: -5,
                clamp: Clamp { min: -120, max: 127 },
            };
            let what = std::format!("{id:?} {fd:?} stride {stride:?} padding {pad:?}");
            conv_matches_on_every_isa(&p, id, &input, fd, &filter, &bias, requant, od, &what);
        }
    }

    /// Global average pooling as the models use it (whole-map windows of
    /// up to 4,096 pixels, where the rounding division sees large counts),
    /// on every ISA this CPU has, against the reference; uniform maps at
    /// both int8 extremes and a pseudo-random one. 16×16 is the largest
    /// window whose sums the DSP kernel keeps in halfwords (−128 · 256 =
    /// −32768), 12 channels its 8- and 4-channel steps.
    #[test]
    fn global_average_pools_match_the_reference() {
        for (h, w, c) in [(25, 5, 64), (64, 64, 16), (3, 3, 260), (16, 16, 12), (17, 16, 8)] {
            let id = Dims4::new(1, h, w, c);
            let od = Dims4::new(1, 1, 1, c);
            let p =
                PoolParams { filter: (h, w), stride: (1, 1), padding: (0, 0), clamp: Clamp { min: -128, max: 127 } };
            let n = id.elements().unwrap();
            let maps: [Vec<i8>; 3] =
                [vec![127; n], vec![-128; n], (0..n).map(|i| ((i * 7919 + i / 3) % 256) as u8 as i8).collect()];
            for input in maps {
                let mut want = vec![0i8; c];
                reference::average_pool_i8(&p, id, &input, od, &mut want).unwrap();
                for isa in all_supported() {
                    let mut got = vec![0i8; c];
                    average_pool_i8_with(isa, &p, id, &input, od, &mut got).unwrap();
                    assert!(got == want, "{isa}: {h}x{w}x{c}");
                }
            }
        }
    }

    #[test]
    fn isa_names_round_trip_and_cap() {
        for isa in ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name("sse9"), None);
        assert!(supported(Isa::Reference));
        assert!(supported(active()));
    }
}

//! Property-test battery: checks a candidate kernel set **bit for bit**
//! against [`crate::reference`] on random shapes and parameters (including
//! edge multipliers and shifts, wrapping biases, zero-sized batches and
//! invalid geometries, where the candidate must return the same error).
//!
//! Available in this crate's tests and, for other crates, with the `testing`
//! feature (which pulls in `std` and `proptest`). Use it through
//! [`kernel_battery!`](crate::kernel_battery), in the spirit of tract's
//! `test_mmm_kernel_*!` macros:
//!
//! ```ignore
//! edgefleet_kernels::kernel_battery!(simd_vs_reference, {
//!     conv2d: crate::simd::conv2d_i8,
//!     fully_connected: crate::simd::fully_connected_i8,
//! });
//! ```
//!
//! expands to a module `simd_vs_reference` with one `#[test]` per listed
//! kernel. Kernel names: `conv2d`, `depthwise_conv2d`, `fully_connected`,
//! `add`, `average_pool`, `max_pool`, `softmax`, `requantize`, `transpose`,
//! `quantize`, `dequantize`; each takes a function with the signature of the
//! matching `reference::*_i8` / `quantize_f32` / `dequantize_i8`. The number
//! of cases follows `PROPTEST_CASES` (default 256).

pub use proptest;

use crate::quant::calculate_input_radius;
use crate::reference::{
    self, AddParams, ConvParams, DepthwiseParams, FullyConnectedParams, PoolParams, RequantizeParams, SoftmaxOutput,
    SoftmaxParams,
};
use crate::{Clamp, Dims4, KernelError, Requant};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::format;
use std::vec;
use std::vec::Vec;

/// The signature of [`reference::conv2d_i8`]; implemented by every function
/// or closure with that signature.
pub trait Conv2dKernel:
    Fn(&ConvParams, Dims4, &[i8], Dims4, &[i8], Option<&[i32]>, Requant<'_>, Dims4, &mut [i8]) -> Result<(), KernelError>
{
}
impl<F> Conv2dKernel for F where
    F: Fn(
        &ConvParams,
        Dims4,
        &[i8],
        Dims4,
        &[i8],
        Option<&[i32]>,
        Requant<'_>,
        Dims4,
        &mut [i8],
    ) -> Result<(), KernelError>
{
}

/// The signature of [`reference::depthwise_conv2d_i8`].
pub trait DepthwiseConv2dKernel:
    Fn(
    &DepthwiseParams,
    Dims4,
    &[i8],
    Dims4,
    &[i8],
    Option<&[i32]>,
    Requant<'_>,
    Dims4,
    &mut [i8],
) -> Result<(), KernelError>
{
}
impl<F> DepthwiseConv2dKernel for F where
    F: Fn(
        &DepthwiseParams,
        Dims4,
        &[i8],
        Dims4,
        &[i8],
        Option<&[i32]>,
        Requant<'_>,
        Dims4,
        &mut [i8],
    ) -> Result<(), KernelError>
{
}

/// The signature of [`reference::fully_connected_i8`].
pub trait FullyConnectedKernel:
    Fn(
    &FullyConnectedParams,
    usize,
    &[i8],
    (usize, usize),
    &[i8],
    Option<&[i32]>,
    Requant<'_>,
    &mut [i8],
) -> Result<(), KernelError>
{
}
impl<F> FullyConnectedKernel for F where
    F: Fn(
        &FullyConnectedParams,
        usize,
        &[i8],
        (usize, usize),
        &[i8],
        Option<&[i32]>,
        Requant<'_>,
        &mut [i8],
    ) -> Result<(), KernelError>
{
}

/// Generates one `#[test]` per listed kernel, each checking the candidate
/// bit-for-bit against the reference kernel with [`proptest`](mod@proptest). See the
/// [`testing`](crate::testing) module.
#[macro_export]
macro_rules! kernel_battery {
    ($name:ident, { $($kernel:ident : $candidate:expr),+ $(,)? }) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $kernel() {
                    $crate::testing::battery::$kernel($candidate);
                }
            )+
        }
    };
}

// ---------------------------------------------------------------------------
// Parameter strategies
// ---------------------------------------------------------------------------

/// Q31 multipliers: the edges (0, 2^30, i32::MAX) and the usual range.
pub fn multiplier() -> impl Strategy<Value = i32> {
    prop_oneof![
        1 => Just(0),
        1 => Just(1 << 30),
        1 => Just(i32::MAX),
        6 => (1 << 30)..=i32::MAX,
    ]
}

/// Shifts: mostly the useful right shifts, sometimes anything valid.
pub fn shift() -> impl Strategy<Value = i32> {
    prop_oneof![4 => -14i32..=2, 1 => -31i32..=30]
}

/// Requantization vectors of `channels` entries, or 1 (per tensor).
pub fn requant(channels: usize) -> impl Strategy<Value = (Vec<i32>, Vec<i32>)> {
    any::<bool>().prop_flat_map(move |per_tensor| {
        let n = if per_tensor { 1 } else { channels };
        (prop::collection::vec(multiplier(), n), prop::collection::vec(shift(), n))
    })
}

/// A clamp with `min <= max`, often the full range.
pub fn clamp() -> impl Strategy<Value = Clamp> {
    prop_oneof![
        1 => Just(Clamp::NONE),
        1 => (any::<i8>(), any::<i8>()).prop_map(|(a, b)| Clamp { min: a.min(b), max: a.max(b) }),
    ]
}

/// `input_offset` (minus an int8 zero point).
pub fn input_offset() -> impl Strategy<Value = i32> {
    -127i32..=128
}

/// An int8 zero point / `output_offset`.
pub fn zero_point() -> impl Strategy<Value = i32> {
    -128i32..=127
}

/// An optional bias: small values, or any `i32` (exercises wrapping).
pub fn bias(channels: usize) -> impl Strategy<Value = Option<Vec<i32>>> {
    prop::option::of(prop_oneof![
        3 => prop::collection::vec(-100_000i32..=100_000, channels),
        1 => prop::collection::vec(any::<i32>(), channels),
    ])
}

/// Output extent of a sliding window (the bottom/right padding is grown so
/// that at least one output exists).
pub fn out_extent(
    input: usize,
    pad_before: usize,
    pad_after: usize,
    k: usize,
    stride: usize,
    dilation: usize,
) -> usize {
    let effective = dilation * (k - 1) + 1;
    let padded = (input + pad_before + pad_after).max(effective);
    (padded - effective) / stride + 1
}

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

/// A convolution problem (regular or grouped).
#[derive(Clone, Debug)]
pub struct ConvCase {
    /// Parameters.
    pub params: ConvParams,
    /// Input shape.
    pub input_dims: Dims4,
    /// Input.
    pub input: Vec<i8>,
    /// Filter shape (OHWI).
    pub filter_dims: Dims4,
    /// Filter.
    pub filter: Vec<i8>,
    /// Bias.
    pub bias: Option<Vec<i32>>,
    /// Requant multipliers.
    pub multiplier: Vec<i32>,
    /// Requant shifts.
    pub shift: Vec<i32>,
    /// Output shape.
    pub output_dims: Dims4,
}

/// Random (grouped) convolutions.
pub fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..=2, 1usize..=8, 1usize..=8),
        // (groups, in channels per group, filters per group): small grouped
        // layers, and wide ungrouped ones (several 16-channel blocks and
        // depths that are not a multiple of 4, for the GEMM fast paths).
        prop_oneof![(1usize..=3, 1usize..=4, 1usize..=4), (Just(1usize), 1usize..=40, 1usize..=40)],
        (1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3, 1usize..=3, 1usize..=3),
        (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3),
        (input_offset(), zero_point(), clamp()),
    )
        .prop_flat_map(
            |((n, ih, iw), (groups, fic, fpg), (kh, kw, sh, sw, dh, dw), (pt, pl, pb, pr), (io, oo, cl))| {
                let out_c = groups * fpg;
                let input_dims = Dims4::new(n, ih, iw, groups * fic);
                let filter_dims = Dims4::new(out_c, kh, kw, fic);
                let output_dims =
                    Dims4::new(n, out_extent(ih, pt, pb, kh, sh, dh), out_extent(iw, pl, pr, kw, sw, dw), out_c);
                let params = ConvParams {
                    stride: (sh, sw),
                    dilation: (dh, dw),
                    padding: (pt, pl),
                    input_offset: io,
                    output_offset: oo,
                    clamp: cl,
                };
                (
                    prop::collection::vec(any::<i8>(), input_dims.elements().unwrap_or(0)),
                    prop::collection::vec(any::<i8>(), filter_dims.elements().unwrap_or(0)),
                    bias(out_c),
                    requant(out_c),
                )
                    .prop_map(move |(input, filter, bias, (multiplier, shift))| ConvCase {
                        params,
                        input_dims,
                        input,
                        filter_dims,
                        filter,
                        bias,
                        multiplier,
                        shift,
                        output_dims,
                    })
            },
        )
}

/// A depthwise convolution problem.
#[derive(Clone, Debug)]
pub struct DepthwiseCase {
    /// Parameters.
    pub params: DepthwiseParams,
    /// Input shape.
    pub input_dims: Dims4,
    /// Input.
    pub input: Vec<i8>,
    /// Filter shape `(1, kh, kw, in_c * multiplier)`.
    pub filter_dims: Dims4,
    /// Filter.
    pub filter: Vec<i8>,
    /// Bias.
    pub bias: Option<Vec<i32>>,
    /// Requant multipliers.
    pub multiplier: Vec<i32>,
    /// Requant shifts.
    pub shift: Vec<i32>,
    /// Output shape.
    pub output_dims: Dims4,
}

/// Random depthwise convolutions.
pub fn depthwise_case() -> impl Strategy<Value = DepthwiseCase> {
    (
        (
            1usize..=2,
            1usize..=8,
            1usize..=8,
            prop_oneof![1usize..=6, 1usize..=40, (1usize..=2).prop_map(|k| 64 * k)],
            1usize..=3,
        ),
        (1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3, 1usize..=3, 1usize..=3),
        (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3),
        (input_offset(), zero_point(), clamp()),
    )
        .prop_flat_map(|((n, ih, iw, ic, mult), (kh, kw, sh, sw, dh, dw), (pt, pl, pb, pr), (io, oo, cl))| {
            let out_c = ic * mult;
            let input_dims = Dims4::new(n, ih, iw, ic);
            let filter_dims = Dims4::new(1, kh, kw, out_c);
            let output_dims =
                Dims4::new(n, out_extent(ih, pt, pb, kh, sh, dh), out_extent(iw, pl, pr, kw, sw, dw), out_c);
            let params = DepthwiseParams {
                conv: ConvParams {
                    stride: (sh, sw),
                    dilation: (dh, dw),
                    padding: (pt, pl),
                    input_offset: io,
                    output_offset: oo,
                    clamp: cl,
                },
                depth_multiplier: mult,
            };
            (
                prop::collection::vec(any::<i8>(), input_dims.elements().unwrap_or(0)),
                prop::collection::vec(any::<i8>(), filter_dims.elements().unwrap_or(0)),
                bias(out_c),
                requant(out_c),
            )
                .prop_map(move |(input, filter, bias, (multiplier, shift))| DepthwiseCase {
                    params,
                    input_dims,
                    input,
                    filter_dims,
                    filter,
                    bias,
                    multiplier,
                    shift,
                    output_dims,
                })
        })
}

/// A fully connected problem.
#[derive(Clone, Debug)]
pub struct FullyConnectedCase {
    /// Parameters.
    pub params: FullyConnectedParams,
    /// Batches (may be 0).
    pub batches: usize,
    /// Input `[batches, in]`.
    pub input: Vec<i8>,
    /// `(out, in)`.
    pub filter_dims: (usize, usize),
    /// Filter `[out, in]`.
    pub filter: Vec<i8>,
    /// Bias.
    pub bias: Option<Vec<i32>>,
    /// Requant multipliers.
    pub multiplier: Vec<i32>,
    /// Requant shifts.
    pub shift: Vec<i32>,
}

/// Random fully connected layers.
pub fn fully_connected_case() -> impl Strategy<Value = FullyConnectedCase> {
    ((0usize..=6, 1usize..=64, 1usize..=40), (input_offset(), zero_point(), clamp())).prop_flat_map(
        |((batches, in_d, out_d), (io, oo, cl))| {
            (
                prop::collection::vec(any::<i8>(), batches * in_d),
                prop::collection::vec(any::<i8>(), out_d * in_d),
                bias(out_d),
                requant(out_d),
            )
                .prop_map(move |(input, filter, bias, (multiplier, shift))| FullyConnectedCase {
                    params: FullyConnectedParams { input_offset: io, output_offset: oo, clamp: cl },
                    batches,
                    input,
                    filter_dims: (out_d, in_d),
                    filter,
                    bias,
                    multiplier,
                    shift,
                })
        },
    )
}

/// An elementwise add problem.
#[derive(Clone, Debug)]
pub struct AddCase {
    /// Parameters.
    pub params: AddParams,
    /// First input.
    pub input1: Vec<i8>,
    /// Second input.
    pub input2: Vec<i8>,
}

/// Random adds: raw parameters in their valid ranges (not only those
/// `AddParams::from_quant` produces).
pub fn add_case() -> impl Strategy<Value = AddCase> {
    let shift = || prop_oneof![3 => -8i32..=0, 1 => -31i32..=0];
    (
        (input_offset(), input_offset(), zero_point(), prop_oneof![3 => Just(20), 1 => 0i32..=22]),
        (multiplier(), shift(), multiplier(), shift()),
        (multiplier(), prop_oneof![3 => -24i32..=-14, 1 => -31i32..=0], clamp()),
        prop::collection::vec((any::<i8>(), any::<i8>()), 0..100),
    )
        .prop_map(|((o1, o2, oo, ls), (m1, s1, m2, s2), (mo, so, cl), data)| {
            let (input1, input2) = data.into_iter().unzip();
            AddCase {
                params: AddParams {
                    input1_offset: o1,
                    input2_offset: o2,
                    output_offset: oo,
                    left_shift: ls,
                    input1_multiplier: m1,
                    input1_shift: s1,
                    input2_multiplier: m2,
                    input2_shift: s2,
                    output_multiplier: mo,
                    output_shift: so,
                    clamp: cl,
                },
                input1,
                input2,
            }
        })
}

/// A pooling problem (also used for invalid geometries: windows entirely in
/// the padding, where average pooling must fail).
#[derive(Clone, Debug)]
pub struct PoolCase {
    /// Parameters.
    pub params: PoolParams,
    /// Input shape.
    pub input_dims: Dims4,
    /// Input.
    pub input: Vec<i8>,
    /// Output shape.
    pub output_dims: Dims4,
}

/// Random pools.
pub fn pool_case() -> impl Strategy<Value = PoolCase> {
    (
        // Channels: a few, or enough for several 16- and 64-lane blocks.
        (1usize..=2, 1usize..=9, 1usize..=9, prop_oneof![1usize..=4, 1usize..=140]),
        (1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
        (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3),
        clamp(),
    )
        .prop_flat_map(|((n, h, w, c), (fh, fw, sh, sw), (pt, pl, pb, pr), cl)| {
            let input_dims = Dims4::new(n, h, w, c);
            let output_dims = Dims4::new(n, out_extent(h, pt, pb, fh, sh, 1), out_extent(w, pl, pr, fw, sw, 1), c);
            let params = PoolParams { filter: (fh, fw), stride: (sh, sw), padding: (pt, pl), clamp: cl };
            prop::collection::vec(any::<i8>(), input_dims.elements().unwrap_or(0)).prop_map(move |input| PoolCase {
                params,
                input_dims,
                input,
                output_dims,
            })
        })
}

/// A softmax problem.
#[derive(Clone, Debug)]
pub struct SoftmaxCase {
    /// Parameters.
    pub params: SoftmaxParams,
    /// Row length.
    pub depth: usize,
    /// Input, `rows * depth`.
    pub input: Vec<i8>,
}

/// Random softmaxes: `diff_min` consistent with the shift (as TFLite
/// derives it) or random; both output kinds.
pub fn softmax_case() -> impl Strategy<Value = SoftmaxCase> {
    let output = prop_oneof![
        1 => Just(SoftmaxOutput::Tflite256),
        1 => (multiplier(), -31i32..=-15, zero_point()).prop_map(|(multiplier, shift, zero_point)| {
            SoftmaxOutput::Requantized { multiplier, shift, zero_point }
        }),
    ];
    (
        (1usize..=40, 0usize..=3),
        (multiplier(), prop_oneof![3 => 18i32..=31, 1 => 0i32..=31], any::<bool>(), -300i32..=0),
        output,
    )
        .prop_flat_map(|((depth, rows), (m, ls, consistent, random_diff_min), output)| {
            let diff_min = if consistent { -calculate_input_radius(5, ls, 31) } else { random_diff_min };
            let params = SoftmaxParams { input_multiplier: m, input_left_shift: ls, diff_min, output };
            prop::collection::vec(any::<i8>(), depth * rows).prop_map(move |input| SoftmaxCase { params, depth, input })
        })
}

/// A requantize problem.
#[derive(Clone, Debug)]
pub struct RequantizeCase {
    /// Parameters.
    pub params: RequantizeParams,
    /// Input.
    pub input: Vec<i8>,
}

/// Random requantizations.
pub fn requantize_case() -> impl Strategy<Value = RequantizeCase> {
    ((input_offset(), multiplier(), shift(), zero_point(), clamp()), prop::collection::vec(any::<i8>(), 0..300))
        .prop_map(|((input_offset, multiplier, shift, output_offset, clamp), input)| RequantizeCase {
            params: RequantizeParams { input_offset, multiplier, shift, output_offset, clamp },
            input,
        })
}

/// A transpose problem.
#[derive(Clone, Debug)]
pub struct TransposeCase {
    /// Input dimensions.
    pub input_dims: [usize; 4],
    /// Permutation.
    pub perm: [usize; 4],
    /// Input.
    pub input: Vec<i8>,
}

/// Random transposes.
pub fn transpose_case() -> impl Strategy<Value = TransposeCase> {
    ([1usize..=5, 1usize..=5, 0usize..=5, 1usize..=5], Just([0usize, 1, 2, 3]).prop_shuffle()).prop_flat_map(
        |(input_dims, perm)| {
            prop::collection::vec(any::<i8>(), input_dims.iter().product::<usize>())
                .prop_map(move |input| TransposeCase { input_dims, perm, input })
        },
    )
}

/// A float → int8 quantization problem (values include NaN and infinities).
#[derive(Clone, Debug)]
pub struct QuantizeCase {
    /// Scale.
    pub scale: f32,
    /// Zero point.
    pub zero_point: i32,
    /// Input.
    pub input: Vec<f32>,
}

/// Random quantizations.
pub fn quantize_case() -> impl Strategy<Value = QuantizeCase> {
    let value = prop_oneof![
        6 => -200.0f32..200.0,
        1 => any::<f32>(),
        1 => (-400i32..=400).prop_map(|h| h as f32 * 0.5),
    ];
    (1.0e-3f32..4.0, zero_point(), prop::collection::vec(value, 0..200))
        .prop_map(|(scale, zero_point, input)| QuantizeCase { scale, zero_point, input })
}

/// An int8 → float dequantization problem.
#[derive(Clone, Debug)]
pub struct DequantizeCase {
    /// Scale.
    pub scale: f32,
    /// Zero point.
    pub zero_point: i32,
    /// Input.
    pub input: Vec<i8>,
}

/// Random dequantizations.
pub fn dequantize_case() -> impl Strategy<Value = DequantizeCase> {
    (1.0e-6f32..100.0, zero_point(), prop::collection::vec(any::<i8>(), 0..200))
        .prop_map(|(scale, zero_point, input)| DequantizeCase { scale, zero_point, input })
}

// ---------------------------------------------------------------------------
// Checks: candidate vs reference, bit for bit
// ---------------------------------------------------------------------------

/// Compares one call of the candidate and the reference on fresh output
/// buffers (same initial fill), then the same with the output one element
/// short (both must refuse it the same way).
fn compare<T: Copy + PartialEq + core::fmt::Debug>(
    len: usize,
    fill: T,
    mut reference: impl FnMut(&mut [T]) -> Result<(), KernelError>,
    mut candidate: impl FnMut(&mut [T]) -> Result<(), KernelError>,
    same: impl Fn(&T, &T) -> bool,
) -> Result<(), TestCaseError> {
    let mut want = vec![fill; len];
    let mut got = vec![fill; len];
    let want_result = reference(&mut want);
    let got_result = candidate(&mut got);
    prop_assert_eq!(got_result, want_result, "result differs");
    if let Some(i) = (0..len).find(|&i| !same(&got[i], &want[i])) {
        return Err(TestCaseError::fail(format!(
            "output[{i}]: candidate {:?}, reference {:?} (first difference of {len})",
            got[i], want[i]
        )));
    }
    if len > 0 {
        let short_want = reference(&mut want[..len - 1]);
        let short_got = candidate(&mut got[..len - 1]);
        prop_assert!(short_want.is_err(), "reference accepted a short output");
        prop_assert_eq!(short_got, short_want, "short output: result differs");
    }
    Ok(())
}

fn eq<T: PartialEq>(a: &T, b: &T) -> bool {
    a == b
}

/// Bit-for-bit check of a `conv2d_i8` candidate on one case.
pub fn check_conv2d<F: Conv2dKernel>(candidate: F, c: &ConvCase) -> Result<(), TestCaseError> {
    fn call(f: &impl Conv2dKernel, c: &ConvCase, out: &mut [i8]) -> Result<(), KernelError> {
        let rq = Requant { multiplier: &c.multiplier, shift: &c.shift };
        let (id, fd, od) = (c.input_dims, c.filter_dims, c.output_dims);
        f(&c.params, id, &c.input, fd, &c.filter, c.bias.as_deref(), rq, od, out)
    }
    compare(
        c.output_dims.elements().unwrap_or(0),
        0x55,
        |out| call(&reference::conv2d_i8, c, out),
        |out| call(&candidate, c, out),
        eq,
    )
}

/// Bit-for-bit check of a `depthwise_conv2d_i8` candidate on one case.
pub fn check_depthwise_conv2d<F: DepthwiseConv2dKernel>(candidate: F, c: &DepthwiseCase) -> Result<(), TestCaseError> {
    fn call(f: &impl DepthwiseConv2dKernel, c: &DepthwiseCase, out: &mut [i8]) -> Result<(), KernelError> {
        let rq = Requant { multiplier: &c.multiplier, shift: &c.shift };
        let (id, fd, od) = (c.input_dims, c.filter_dims, c.output_dims);
        f(&c.params, id, &c.input, fd, &c.filter, c.bias.as_deref(), rq, od, out)
    }
    compare(
        c.output_dims.elements().unwrap_or(0),
        0x55,
        |out| call(&reference::depthwise_conv2d_i8, c, out),
        |out| call(&candidate, c, out),
        eq,
    )
}

/// Bit-for-bit check of a `fully_connected_i8` candidate on one case.
pub fn check_fully_connected<F: FullyConnectedKernel>(
    candidate: F,
    c: &FullyConnectedCase,
) -> Result<(), TestCaseError> {
    fn call(f: &impl FullyConnectedKernel, c: &FullyConnectedCase, out: &mut [i8]) -> Result<(), KernelError> {
        let rq = Requant { multiplier: &c.multiplier, shift: &c.shift };
        f(&c.params, c.batches, &c.input, c.filter_dims, &c.filter, c.bias.as_deref(), rq, out)
    }
    compare(
        c.batches * c.filter_dims.0,
        0x55,
        |out| call(&reference::fully_connected_i8, c, out),
        |out| call(&candidate, c, out),
        eq,
    )
}

/// Bit-for-bit check of an `add_i8` candidate on one case.
pub fn check_add<F>(candidate: F, c: &AddCase) -> Result<(), TestCaseError>
where
    F: Fn(&AddParams, &[i8], &[i8], &mut [i8]) -> Result<(), KernelError>,
{
    compare(
        c.input1.len(),
        0x55,
        |out| reference::add_i8(&c.params, &c.input1, &c.input2, out),
        |out| candidate(&c.params, &c.input1, &c.input2, out),
        eq,
    )
}

/// Bit-for-bit check of an `average_pool_i8` candidate on one case.
pub fn check_average_pool<F>(candidate: F, c: &PoolCase) -> Result<(), TestCaseError>
where
    F: Fn(&PoolParams, Dims4, &[i8], Dims4, &mut [i8]) -> Result<(), KernelError>,
{
    compare(
        c.output_dims.elements().unwrap_or(0),
        0x55,
        |out| reference::average_pool_i8(&c.params, c.input_dims, &c.input, c.output_dims, out),
        |out| candidate(&c.params, c.input_dims, &c.input, c.output_dims, out),
        eq,
    )
}

/// Bit-for-bit check of a `max_pool_i8` candidate on one case.
pub fn check_max_pool<F>(candidate: F, c: &PoolCase) -> Result<(), TestCaseError>
where
    F: Fn(&PoolParams, Dims4, &[i8], Dims4, &mut [i8]) -> Result<(), KernelError>,
{
    compare(
        c.output_dims.elements().unwrap_or(0),
        0x55,
        |out| reference::max_pool_i8(&c.params, c.input_dims, &c.input, c.output_dims, out),
        |out| candidate(&c.params, c.input_dims, &c.input, c.output_dims, out),
        eq,
    )
}

/// Bit-for-bit check of a `softmax_i8` candidate on one case.
pub fn check_softmax<F>(candidate: F, c: &SoftmaxCase) -> Result<(), TestCaseError>
where
    F: Fn(&SoftmaxParams, usize, &[i8], &mut [i8]) -> Result<(), KernelError>,
{
    compare(
        c.input.len(),
        0x55,
        |out| reference::softmax_i8(&c.params, c.depth, &c.input, out),
        |out| candidate(&c.params, c.depth, &c.input, out),
        eq,
    )
}

/// Bit-for-bit check of a `requantize_i8` candidate on one case.
pub fn check_requantize<F>(candidate: F, c: &RequantizeCase) -> Result<(), TestCaseError>
where
    F: Fn(&RequantizeParams, &[i8], &mut [i8]) -> Result<(), KernelError>,
{
    compare(
        c.input.len(),
        0x55,
        |out| reference::requantize_i8(&c.params, &c.input, out),
        |out| candidate(&c.params, &c.input, out),
        eq,
    )
}

/// Bit-for-bit check of a `transpose_i8` candidate on one case.
pub fn check_transpose<F>(candidate: F, c: &TransposeCase) -> Result<(), TestCaseError>
where
    F: Fn([usize; 4], [usize; 4], &[i8], &mut [i8]) -> Result<(), KernelError>,
{
    compare(
        c.input.len(),
        0x55,
        |out| reference::transpose_i8(c.input_dims, c.perm, &c.input, out),
        |out| candidate(c.input_dims, c.perm, &c.input, out),
        eq,
    )
}

/// Bit-for-bit check of a `quantize_f32` candidate on one case.
pub fn check_quantize<F>(candidate: F, c: &QuantizeCase) -> Result<(), TestCaseError>
where
    F: Fn(f32, i32, &[f32], &mut [i8]) -> Result<(), KernelError>,
{
    compare(
        c.input.len(),
        0x55,
        |out| reference::quantize_f32(c.scale, c.zero_point, &c.input, out),
        |out| candidate(c.scale, c.zero_point, &c.input, out),
        eq,
    )
}

/// Bit-for-bit (`to_bits`) check of a `dequantize_i8` candidate on one case.
pub fn check_dequantize<F>(candidate: F, c: &DequantizeCase) -> Result<(), TestCaseError>
where
    F: Fn(f32, i32, &[i8], &mut [f32]) -> Result<(), KernelError>,
{
    compare(
        c.input.len(),
        f32::from_bits(0x7fc0_5555),
        |out| reference::dequantize_i8(c.scale, c.zero_point, &c.input, out),
        |out| candidate(c.scale, c.zero_point, &c.input, out),
        |a: &f32, b: &f32| a.to_bits() == b.to_bits(),
    )
}

// ---------------------------------------------------------------------------
// Runners (what `kernel_battery!` calls)
// ---------------------------------------------------------------------------

/// The battery's proptest configuration: `PROPTEST_CASES` (default 256)
/// cases, no regression files (the failing case is printed).
pub fn config() -> Config {
    Config { failure_persistence: None, ..Config::default() }
}

/// Runs `check` on cases from `strategy`; panics with the minimal failing
/// case.
pub fn run<S: Strategy>(strategy: S, check: impl Fn(&S::Value) -> Result<(), TestCaseError>)
where
    S::Value: core::fmt::Debug,
{
    let mut runner = TestRunner::new(config());
    if let Err(e) = runner.run(&strategy, |case| check(&case)) {
        panic!("kernel battery: {e}");
    }
}

/// One runner per kernel: `battery::conv2d(candidate)` checks `candidate`
/// against [`reference::conv2d_i8`] on random cases, and so on.
pub mod battery {
    use super::*;

    /// Against [`reference::conv2d_i8`].
    pub fn conv2d(candidate: impl Conv2dKernel) {
        run(conv_case(), |c| check_conv2d(&candidate, c));
    }

    /// Against [`reference::depthwise_conv2d_i8`].
    pub fn depthwise_conv2d(candidate: impl DepthwiseConv2dKernel) {
        run(depthwise_case(), |c| check_depthwise_conv2d(&candidate, c));
    }

    /// Against [`reference::fully_connected_i8`].
    pub fn fully_connected(candidate: impl FullyConnectedKernel) {
        run(fully_connected_case(), |c| check_fully_connected(&candidate, c));
    }

    /// Against [`reference::add_i8`].
    pub fn add<F>(candidate: F)
    where
        F: Fn(&AddParams, &[i8], &[i8], &mut [i8]) -> Result<(), KernelError>,
    {
        run(add_case(), |c| check_add(&candidate, c));
    }

    /// Against [`reference::average_pool_i8`].
    pub fn average_pool<F>(candidate: F)
    where
        F: Fn(&PoolParams, Dims4, &[i8], Dims4, &mut [i8]) -> Result<(), KernelError>,
    {
        run(pool_case(), |c| check_average_pool(&candidate, c));
    }

    /// Against [`reference::max_pool_i8`].
    pub fn max_pool<F>(candidate: F)
    where
        F: Fn(&PoolParams, Dims4, &[i8], Dims4, &mut [i8]) -> Result<(), KernelError>,
    {
        run(pool_case(), |c| check_max_pool(&candidate, c));
    }

    /// Against [`reference::softmax_i8`].
    pub fn softmax<F>(candidate: F)
    where
        F: Fn(&SoftmaxParams, usize, &[i8], &mut [i8]) -> Result<(), KernelError>,
    {
        run(softmax_case(), |c| check_softmax(&candidate, c));
    }

    /// Against [`reference::requantize_i8`].
    pub fn requantize<F>(candidate: F)
    where
        F: Fn(&RequantizeParams, &[i8], &mut [i8]) -> Result<(), KernelError>,
    {
        run(requantize_case(), |c| check_requantize(&candidate, c));
    }

    /// Against [`reference::transpose_i8`].
    pub fn transpose<F>(candidate: F)
    where
        F: Fn([usize; 4], [usize; 4], &[i8], &mut [i8]) -> Result<(), KernelError>,
    {
        run(transpose_case(), |c| check_transpose(&candidate, c));
    }

    /// Against [`reference::quantize_f32`].
    pub fn quantize<F>(candidate: F)
    where
        F: Fn(f32, i32, &[f32], &mut [i8]) -> Result<(), KernelError>,
    {
        run(quantize_case(), |c| check_quantize(&candidate, c));
    }

    /// Against [`reference::dequantize_i8`].
    pub fn dequantize<F>(candidate: F)
    where
        F: Fn(f32, i32, &[i8], &mut [f32]) -> Result<(), KernelError>,
    {
        run(dequantize_case(), |c| check_dequantize(&candidate, c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::*;

    // The harness run against the reference itself: proves the macro, the
    // strategies and the checks work end to end.
    crate::kernel_battery!(reference_vs_reference, {
        conv2d: conv2d_i8,
        depthwise_conv2d: depthwise_conv2d_i8,
        fully_connected: fully_connected_i8,
        add: add_i8,
        average_pool: average_pool_i8,
        max_pool: max_pool_i8,
        softmax: softmax_i8,
        requantize: requantize_i8,
        transpose: transpose_i8,
        quantize: quantize_f32,
        dequantize: dequantize_i8,
    });

    /// Runs a check that must find a counterexample.
    fn must_fail<S: Strategy>(strategy: S, check: impl Fn(&S::Value) -> Result<(), TestCaseError>)
    where
        S::Value: core::fmt::Debug,
    {
        let mut runner = TestRunner::new(config());
        assert!(runner.run(&strategy, |case| check(&case)).is_err(), "the battery missed a broken kernel");
    }

    /// The battery catches kernels that are off by one LSB somewhere, use
    /// single rounding, or skip validation.
    #[test]
    fn battery_catches_broken_kernels() {
        // Conv whose output is off by one wherever it is 0.
        let off_by_one = |p: &ConvParams,
                          id: Dims4,
                          i: &[i8],
                          fd: Dims4,
                          f: &[i8],
                          b: Option<&[i32]>,
                          r: Requant<'_>,
                          od: Dims4,
                          o: &mut [i8]| {
            conv2d_i8(p, id, i, fd, f, b, r, od, o)?;
            o.iter_mut().filter(|v| **v == 0).for_each(|v| *v = 1);
            Ok(())
        };
        must_fail(conv_case(), |c| check_conv2d(off_by_one, c));

        // Requantize with single rounding (TFLITE_SINGLE_ROUNDING).
        let single_rounding = |p: &RequantizeParams, i: &[i8], o: &mut [i8]| {
            requantize_i8(p, i, o)?;
            for (o, &x) in o.iter_mut().zip(i) {
                let total_shift = 31 - i64::from(p.shift);
                let v = i64::from(i32::from(x) + p.input_offset) * i64::from(p.multiplier);
                let v = (v + (1i64 << (total_shift - 1))) >> total_shift;
                let v = v + i64::from(p.output_offset);
                *o = v.clamp(i64::from(p.clamp.min), i64::from(p.clamp.max)) as i8;
            }
            Ok(())
        };
        must_fail(requantize_case(), |c| check_requantize(single_rounding, c));

        // Softmax that forgets diff_min.
        let no_diff_min = |p: &SoftmaxParams, d: usize, i: &[i8], o: &mut [i8]| {
            let p = SoftmaxParams { diff_min: i32::MIN / 2, ..*p };
            softmax_i8(&p, d, i, o)
        };
        must_fail(softmax_case(), |c| check_softmax(no_diff_min, c));

        // Add that accepts a short output (writes what fits).
        let lax = |p: &AddParams, a: &[i8], b: &[i8], o: &mut [i8]| {
            let n = o.len();
            let mut full = vec![0i8; a.len()];
            add_i8(p, a, b, &mut full)?;
            o.copy_from_slice(&full[..n]);
            Ok(())
        };
        must_fail(add_case(), |c| check_add(lax, c));
    }
}

//! Every kernel refuses malformed arguments with `Err` — short slices,
//! zero strides, out-of-range parameters, overflowing shapes — and no
//! combination of arguments makes one panic.

use edgefleet_kernels::reference::*;
use edgefleet_kernels::{Clamp, Dims4, KernelError, Requant};
use proptest::prelude::*;

const SHAPE: Result<(), KernelError> = Err(KernelError::ShapeMismatch);
const PARAM: Result<(), KernelError> = Err(KernelError::InvalidParameter);

fn conv_params() -> ConvParams {
    ConvParams {
        stride: (1, 1),
        dilation: (1, 1),
        padding: (1, 1),
        input_offset: 0,
        output_offset: 0,
        clamp: Clamp::NONE,
    }
}

const RQ: Requant<'static> = Requant { multiplier: &[1 << 30], shift: &[-3] };

/// 1x4x4x2 input, 3 output channels, 3x3 filter, pad 1: 1x4x4x3 output.
#[allow(clippy::too_many_arguments)]
fn conv(
    p: ConvParams,
    id: Dims4,
    input_len: usize,
    fd: Dims4,
    filter_len: usize,
    bias: Option<&[i32]>,
    rq: Requant<'_>,
    od: Dims4,
    output_len: usize,
) -> Result<(), KernelError> {
    conv2d_i8(&p, id, &vec![1; input_len], fd, &vec![1; filter_len], bias, rq, od, &mut vec![0; output_len])
}

#[test]
fn conv2d_errors() {
    let (id, fd, od) = (Dims4::new(1, 4, 4, 2), Dims4::new(3, 3, 3, 2), Dims4::new(1, 4, 4, 3));
    let ok = |p: ConvParams| conv(p, id, 32, fd, 54, Some(&[0; 3]), RQ, od, 48);
    assert_eq!(ok(conv_params()), Ok(()));
    // Short / long slices.
    assert_eq!(conv(conv_params(), id, 31, fd, 54, None, RQ, od, 48), SHAPE);
    assert_eq!(conv(conv_params(), id, 32, fd, 53, None, RQ, od, 48), SHAPE);
    assert_eq!(conv(conv_params(), id, 32, fd, 54, None, RQ, od, 47), SHAPE);
    assert_eq!(conv(conv_params(), id, 32, fd, 54, None, RQ, od, 49), SHAPE);
    assert_eq!(conv(conv_params(), id, 32, fd, 54, Some(&[0; 2]), RQ, od, 48), SHAPE);
    // Requant: 1 or out_c entries, same lengths.
    let two = Requant { multiplier: &[1 << 30; 2], shift: &[0; 2] };
    assert_eq!(conv(conv_params(), id, 32, fd, 54, None, two, od, 48), SHAPE);
    let uneven = Requant { multiplier: &[1 << 30; 3], shift: &[0; 1] };
    assert_eq!(conv(conv_params(), id, 32, fd, 54, None, uneven, od, 48), SHAPE);
    let empty = Requant { multiplier: &[], shift: &[] };
    assert_eq!(conv(conv_params(), id, 32, fd, 54, None, empty, od, 48), SHAPE);
    for (m, s) in [(-1, 0), (1 << 30, 31), (1 << 30, -32)] {
        let bad = Requant { multiplier: &[m], shift: &[s] };
        assert_eq!(conv(conv_params(), id, 32, fd, 54, None, bad, od, 48), PARAM);
    }
    // Geometry parameters.
    assert_eq!(ok(ConvParams { stride: (0, 1), ..conv_params() }), PARAM);
    assert_eq!(ok(ConvParams { stride: (1, 0), ..conv_params() }), PARAM);
    assert_eq!(ok(ConvParams { dilation: (0, 1), ..conv_params() }), PARAM);
    assert_eq!(ok(ConvParams { dilation: (1, 0), ..conv_params() }), PARAM);
    assert_eq!(ok(ConvParams { stride: (usize::MAX, 1), ..conv_params() }), PARAM);
    assert_eq!(ok(ConvParams { dilation: (1, usize::MAX / 2), ..conv_params() }), PARAM);
    // Offsets and clamp.
    assert_eq!(ok(ConvParams { input_offset: 129, ..conv_params() }), PARAM);
    assert_eq!(ok(ConvParams { input_offset: -128, ..conv_params() }), PARAM);
    assert_eq!(ok(ConvParams { output_offset: 128, ..conv_params() }), PARAM);
    assert_eq!(ok(ConvParams { clamp: Clamp { min: 1, max: 0 }, ..conv_params() }), PARAM);
    // Channel / batch consistency.
    let bad_groups = Dims4::new(3, 3, 3, 3); // 2 % 3 != 0
    assert_eq!(conv(conv_params(), id, 32, bad_groups, 81, None, RQ, od, 48), SHAPE);
    let zero_in_c = Dims4::new(3, 3, 3, 0);
    assert_eq!(conv(conv_params(), id, 32, zero_in_c, 0, None, RQ, od, 48), SHAPE);
    // 2 groups of 1 channel, but 3 output channels.
    let grouped = Dims4::new(3, 3, 3, 1);
    assert_eq!(conv(conv_params(), id, 32, grouped, 27, None, RQ, od, 48), SHAPE);
    assert_eq!(conv(conv_params(), id, 32, Dims4::new(4, 3, 3, 2), 72, None, RQ, od, 48), SHAPE);
    assert_eq!(conv(conv_params(), id, 32, fd, 54, None, RQ, Dims4::new(2, 4, 4, 3), 96), SHAPE);
    // Shapes whose element count overflows.
    let huge = Dims4::new(usize::MAX, 2, 1, 1);
    assert_eq!(conv(conv_params(), huge, 0, fd, 54, None, RQ, od, 48), SHAPE);
}

#[test]
fn depthwise_conv2d_errors() {
    let p = DepthwiseParams { conv: conv_params(), depth_multiplier: 2 };
    let (id, fd, od) = (Dims4::new(1, 4, 4, 2), Dims4::new(1, 3, 3, 4), Dims4::new(1, 4, 4, 4));
    let run =
        |p: DepthwiseParams, id: Dims4, il: usize, fd: Dims4, fl: usize, bias: Option<&[i32]>, od: Dims4, ol: usize| {
            depthwise_conv2d_i8(&p, id, &vec![0; il], fd, &vec![0; fl], bias, RQ, od, &mut vec![0; ol])
        };
    assert_eq!(run(p, id, 32, fd, 36, Some(&[0; 4]), od, 64), Ok(()));
    assert_eq!(run(p, id, 31, fd, 36, None, od, 64), SHAPE);
    assert_eq!(run(p, id, 32, fd, 35, None, od, 64), SHAPE);
    assert_eq!(run(p, id, 32, fd, 36, None, od, 63), SHAPE);
    assert_eq!(run(p, id, 32, fd, 36, Some(&[0; 3]), od, 64), SHAPE);
    assert_eq!(run(DepthwiseParams { depth_multiplier: 0, ..p }, id, 32, fd, 36, None, od, 64), PARAM);
    assert_eq!(run(DepthwiseParams { depth_multiplier: 3, ..p }, id, 32, fd, 36, None, od, 64), SHAPE);
    assert_eq!(run(p, id, 32, Dims4::new(2, 3, 3, 4), 72, None, od, 64), SHAPE);
    let stride0 = DepthwiseParams { conv: ConvParams { stride: (0, 0), ..conv_params() }, ..p };
    assert_eq!(run(stride0, id, 32, fd, 36, None, od, 64), PARAM);
    let dil0 = DepthwiseParams { conv: ConvParams { dilation: (1, 0), ..conv_params() }, ..p };
    assert_eq!(run(dil0, id, 32, fd, 36, None, od, 64), PARAM);
    let off = DepthwiseParams { conv: ConvParams { input_offset: 1000, ..conv_params() }, ..p };
    assert_eq!(run(off, id, 32, fd, 36, None, od, 64), PARAM);
    let mult_overflow = DepthwiseParams { depth_multiplier: usize::MAX, ..p };
    assert_eq!(run(mult_overflow, id, 32, fd, 36, None, od, 64), SHAPE);
}

#[test]
fn fully_connected_errors() {
    let p = FullyConnectedParams { input_offset: 0, output_offset: 0, clamp: Clamp::NONE };
    let run =
        |p: FullyConnectedParams,
         b: usize,
         il: usize,
         fd: (usize, usize),
         fl: usize,
         bias: Option<&[i32]>,
         rq: Requant<'_>,
         ol: usize| { fully_connected_i8(&p, b, &vec![0; il], fd, &vec![0; fl], bias, rq, &mut vec![0; ol]) };
    assert_eq!(run(p, 2, 10, (3, 5), 15, Some(&[1; 3]), RQ, 6), Ok(()));
    assert_eq!(run(p, 0, 0, (3, 5), 15, None, RQ, 0), Ok(()));
    assert_eq!(run(p, 2, 9, (3, 5), 15, None, RQ, 6), SHAPE);
    assert_eq!(run(p, 2, 10, (3, 5), 14, None, RQ, 6), SHAPE);
    assert_eq!(run(p, 2, 10, (3, 5), 15, None, RQ, 5), SHAPE);
    assert_eq!(run(p, 2, 10, (3, 5), 15, Some(&[1; 4]), RQ, 6), SHAPE);
    assert_eq!(run(p, usize::MAX, 10, (3, 5), 15, None, RQ, 6), SHAPE);
    let two = Requant { multiplier: &[1; 2], shift: &[0; 2] };
    assert_eq!(run(p, 2, 10, (3, 5), 15, None, two, 6), SHAPE);
    let bad = Requant { multiplier: &[1 << 30], shift: &[40] };
    assert_eq!(run(p, 2, 10, (3, 5), 15, None, bad, 6), PARAM);
    assert_eq!(run(FullyConnectedParams { output_offset: -129, ..p }, 2, 10, (3, 5), 15, None, RQ, 6), PARAM);
    assert_eq!(
        run(FullyConnectedParams { clamp: Clamp { min: 5, max: 4 }, ..p }, 2, 10, (3, 5), 15, None, RQ, 6),
        PARAM
    );
}

#[test]
fn add_errors() {
    let p = AddParams::from_quant((0.1, 0), (0.2, 0), (0.3, 0), Clamp::NONE).unwrap();
    let run = |p: AddParams, a: usize, b: usize, o: usize| add_i8(&p, &vec![0; a], &vec![0; b], &mut vec![0; o]);
    assert_eq!(run(p, 4, 4, 4), Ok(()));
    assert_eq!(run(p, 3, 4, 4), SHAPE);
    assert_eq!(run(p, 4, 3, 4), SHAPE);
    assert_eq!(run(p, 4, 4, 3), SHAPE);
    assert_eq!(run(AddParams { left_shift: 23, ..p }, 4, 4, 4), PARAM);
    assert_eq!(run(AddParams { left_shift: -1, ..p }, 4, 4, 4), PARAM);
    assert_eq!(run(AddParams { input1_shift: 1, ..p }, 4, 4, 4), PARAM);
    assert_eq!(run(AddParams { output_shift: -32, ..p }, 4, 4, 4), PARAM);
    assert_eq!(run(AddParams { input2_multiplier: -1, ..p }, 4, 4, 4), PARAM);
    assert_eq!(run(AddParams { input1_offset: 200, ..p }, 4, 4, 4), PARAM);
    assert_eq!(run(AddParams { output_offset: 200, ..p }, 4, 4, 4), PARAM);
    assert_eq!(run(AddParams { clamp: Clamp { min: 0, max: -1 }, ..p }, 4, 4, 4), PARAM);
}

#[test]
fn pool_errors() {
    let p = PoolParams { filter: (2, 2), stride: (2, 2), padding: (0, 0), clamp: Clamp::NONE };
    let (id, od) = (Dims4::new(1, 4, 4, 3), Dims4::new(1, 2, 2, 3));
    for pool in [average_pool_i8, max_pool_i8] {
        let run = |p: PoolParams, id: Dims4, il: usize, od: Dims4, ol: usize| {
            pool(&p, id, &vec![0; il], od, &mut vec![0; ol])
        };
        assert_eq!(run(p, id, 48, od, 12), Ok(()));
        assert_eq!(run(p, id, 47, od, 12), SHAPE);
        assert_eq!(run(p, id, 48, od, 11), SHAPE);
        assert_eq!(run(p, id, 48, Dims4::new(1, 2, 2, 2), 8), SHAPE);
        assert_eq!(run(p, id, 48, Dims4::new(2, 2, 2, 3), 24), SHAPE);
        assert_eq!(run(PoolParams { filter: (0, 2), ..p }, id, 48, od, 12), PARAM);
        assert_eq!(run(PoolParams { filter: (2, 0), ..p }, id, 48, od, 12), PARAM);
        assert_eq!(run(PoolParams { stride: (0, 2), ..p }, id, 48, od, 12), PARAM);
        assert_eq!(run(PoolParams { stride: (2, 0), ..p }, id, 48, od, 12), PARAM);
        assert_eq!(run(PoolParams { stride: (usize::MAX, 1), ..p }, id, 48, od, 12), PARAM);
        assert_eq!(run(PoolParams { padding: (usize::MAX, 0), ..p }, id, 48, od, 12), PARAM);
        assert_eq!(run(PoolParams { clamp: Clamp { min: 3, max: 2 }, ..p }, id, 48, od, 12), PARAM);
    }
    // Average pooling over a window that lies entirely in the padding.
    let padded = PoolParams { padding: (2, 0), ..p };
    assert_eq!(average_pool_i8(&padded, id, &[0; 48], od, &mut [0; 12]), PARAM);
    assert_eq!(max_pool_i8(&padded, id, &[0; 48], od, &mut [0; 12]), Ok(()));
    // Windows too large for the int32 sum.
    let huge = PoolParams { filter: (1 << 12, 1 << 12), ..p };
    assert_eq!(average_pool_i8(&huge, id, &[0; 48], Dims4::new(1, 1, 1, 3), &mut [0; 3]), PARAM);
}

#[test]
fn softmax_errors() {
    let p = SoftmaxParams::from_quant(1.0, 0.1, 1.0 / 256.0, -128).unwrap();
    let run =
        |p: SoftmaxParams, depth: usize, il: usize, ol: usize| softmax_i8(&p, depth, &vec![0; il], &mut vec![0; ol]);
    assert_eq!(run(p, 5, 10, 10), Ok(()));
    assert_eq!(run(p, 5, 0, 0), Ok(()));
    assert_eq!(run(p, 0, 10, 10), PARAM);
    assert_eq!(run(p, 0, 0, 0), PARAM);
    assert_eq!(run(p, 5, 9, 9), SHAPE);
    assert_eq!(run(p, 5, 10, 9), SHAPE);
    assert_eq!(run(SoftmaxParams { input_left_shift: 32, ..p }, 5, 10, 10), PARAM);
    assert_eq!(run(SoftmaxParams { input_left_shift: -1, ..p }, 5, 10, 10), PARAM);
    assert_eq!(run(SoftmaxParams { input_multiplier: -1, ..p }, 5, 10, 10), PARAM);
    assert_eq!(run(SoftmaxParams { diff_min: 1, ..p }, 5, 10, 10), PARAM);
    let rq = |multiplier, shift, zero_point| SoftmaxParams {
        output: SoftmaxOutput::Requantized { multiplier, shift, zero_point },
        ..p
    };
    assert_eq!(run(rq(1 << 30, -20, 0), 5, 10, 10), Ok(()));
    assert_eq!(run(rq(1 << 30, 31, 0), 5, 10, 10), PARAM);
    assert_eq!(run(rq(-5, -20, 0), 5, 10, 10), PARAM);
    assert_eq!(run(rq(1 << 30, -20, 128), 5, 10, 10), PARAM);
}

#[test]
fn requantize_errors() {
    let p = RequantizeParams::from_quant((0.1, 0), (0.2, 0), Clamp::NONE).unwrap();
    assert_eq!(requantize_i8(&p, &[0; 4], &mut [0; 4]), Ok(()));
    assert_eq!(requantize_i8(&p, &[0; 4], &mut [0; 3]), SHAPE);
    assert_eq!(requantize_i8(&p, &[0; 3], &mut [0; 4]), SHAPE);
    assert_eq!(requantize_i8(&RequantizeParams { shift: 31, ..p }, &[0; 4], &mut [0; 4]), PARAM);
    assert_eq!(requantize_i8(&RequantizeParams { multiplier: -1, ..p }, &[0; 4], &mut [0; 4]), PARAM);
    assert_eq!(requantize_i8(&RequantizeParams { input_offset: -128, ..p }, &[0; 4], &mut [0; 4]), PARAM);
    assert_eq!(requantize_i8(&RequantizeParams { output_offset: 128, ..p }, &[0; 4], &mut [0; 4]), PARAM);
    let inverted = RequantizeParams { clamp: Clamp { min: 1, max: -1 }, ..p };
    assert_eq!(requantize_i8(&inverted, &[0; 4], &mut [0; 4]), PARAM);
}

#[test]
fn transpose_errors() {
    assert_eq!(transpose_i8([1, 2, 3, 4], [0, 1, 2, 3], &[0; 24], &mut [0; 24]), Ok(()));
    assert_eq!(transpose_i8([1, 2, 3, 4], [0, 1, 2, 3], &[0; 23], &mut [0; 24]), SHAPE);
    assert_eq!(transpose_i8([1, 2, 3, 4], [0, 1, 2, 3], &[0; 24], &mut [0; 23]), SHAPE);
    assert_eq!(transpose_i8([1, 2, 3, 4], [0, 1, 1, 3], &[0; 24], &mut [0; 24]), PARAM);
    assert_eq!(transpose_i8([1, 2, 3, 4], [0, 1, 2, 4], &[0; 24], &mut [0; 24]), PARAM);
    assert_eq!(transpose_i8([usize::MAX, 2, 3, 4], [0, 1, 2, 3], &[0; 24], &mut [0; 24]), SHAPE);
}

#[test]
fn quantize_and_dequantize_errors() {
    assert_eq!(quantize_f32(0.1, 0, &[0.0; 4], &mut [0; 4]), Ok(()));
    assert_eq!(quantize_f32(0.1, 0, &[0.0; 4], &mut [0; 3]), SHAPE);
    for scale in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert_eq!(quantize_f32(scale, 0, &[0.0; 4], &mut [0; 4]), PARAM);
        assert_eq!(dequantize_i8(scale, 0, &[0; 4], &mut [0.0; 4]), PARAM);
    }
    assert_eq!(quantize_f32(0.1, 128, &[0.0; 4], &mut [0; 4]), PARAM);
    assert_eq!(dequantize_i8(0.1, 0, &[0; 4], &mut [0.0; 4]), Ok(()));
    assert_eq!(dequantize_i8(0.1, 0, &[0; 4], &mut [0.0; 5]), SHAPE);
    assert_eq!(dequantize_i8(0.1, -129, &[0; 4], &mut [0.0; 4]), PARAM);
}

// ---------------------------------------------------------------------------
// No panics, whatever the arguments.
// ---------------------------------------------------------------------------

/// Small dimensions mostly, sometimes 0 or huge ones.
fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0usize..=5, 1 => Just(usize::MAX), 1 => Just(usize::MAX / 3), 1 => any::<usize>()]
}

fn dims() -> impl Strategy<Value = Dims4> {
    (dim(), dim(), dim(), dim()).prop_map(|(n, h, w, c)| Dims4::new(n, h, w, c))
}

/// Any i32, biased towards the interesting edges.
fn int() -> impl Strategy<Value = i32> {
    prop_oneof![
        2 => -40i32..=40,
        1 => Just(i32::MIN),
        1 => Just(i32::MAX),
        1 => Just(1 << 30),
        2 => any::<i32>(),
    ]
}

fn clamp() -> impl Strategy<Value = Clamp> {
    (any::<i8>(), any::<i8>()).prop_map(|(min, max)| Clamp { min, max })
}

fn conv_params_any() -> impl Strategy<Value = ConvParams> {
    ((dim(), dim()), (dim(), dim()), (dim(), dim()), int(), int(), clamp()).prop_map(
        |(stride, dilation, padding, input_offset, output_offset, clamp)| ConvParams {
            stride,
            dilation,
            padding,
            input_offset,
            output_offset,
            clamp,
        },
    )
}

fn bytes() -> impl Strategy<Value = Vec<i8>> {
    prop::collection::vec(any::<i8>(), 0..200)
}

fn ints() -> impl Strategy<Value = Vec<i32>> {
    prop::collection::vec(int(), 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn conv_never_panics(
        p in conv_params_any(), id in dims(), fd in dims(), od in dims(),
        input in bytes(), filter in bytes(), bias in prop::option::of(ints()),
        m in ints(), s in ints(), out_len in 0usize..200,
    ) {
        let _ = conv2d_i8(&p, id, &input, fd, &filter, bias.as_deref(), Requant { multiplier: &m, shift: &s }, od, &mut vec![0; out_len]);
        let dp = DepthwiseParams { conv: p, depth_multiplier: id.c.wrapping_add(fd.n) % 4 };
        let _ = depthwise_conv2d_i8(&dp, id, &input, fd, &filter, bias.as_deref(), Requant { multiplier: &m, shift: &s }, od, &mut vec![0; out_len]);
    }

    /// Valid shapes (so the loops run) with arbitrary parameters.
    #[test]
    fn conv_loops_never_panic(
        (n, h, w, c, k) in (0usize..=2, 0usize..=6, 0usize..=6, 1usize..=3, 0usize..=4),
        (sh, sw, dh, dw) in (1usize..=4, 1usize..=4, 1usize..=4, 1usize..=4),
        (pt, pl) in (0usize..=6, 0usize..=6),
        (oh, ow) in (0usize..=6, 0usize..=6),
        io in -127i32..=128, oo in -128i32..=127,
        bias_vals in prop::collection::vec(any::<i32>(), 3),
        m in prop::collection::vec(0..=i32::MAX, 3), s in prop::collection::vec(-31i32..=30, 3),
        seed in prop::collection::vec(any::<i8>(), 2 * 6 * 6 * 3),
    ) {
        let p = ConvParams { stride: (sh, sw), dilation: (dh, dw), padding: (pt, pl), input_offset: io, output_offset: oo, clamp: Clamp::NONE };
        let id = Dims4::new(n, h, w, c);
        let fd = Dims4::new(c, k, k, 1);
        let od = Dims4::new(n, oh, ow, c);
        let filter = vec![-128i8; fd.elements().unwrap()];
        let rq = Requant { multiplier: &m[..c], shift: &s[..c] };
        let mut out = vec![0; od.elements().unwrap()];
        let input = &seed[..id.elements().unwrap()];
        prop_assert_eq!(conv2d_i8(&p, id, input, fd, &filter, Some(&bias_vals[..c]), rq, od, &mut out), Ok(()));
        let dp = DepthwiseParams { conv: p, depth_multiplier: 1 };
        let fd = Dims4::new(1, k, k, c);
        prop_assert_eq!(depthwise_conv2d_i8(&dp, id, input, fd, &filter, Some(&bias_vals[..c]), rq, od, &mut out), Ok(()));
        let pp = PoolParams { filter: (k.max(1), k.max(1)), stride: (sh, sw), padding: (pt, pl), clamp: Clamp::NONE };
        let _ = average_pool_i8(&pp, id, input, od, &mut out);
        prop_assert_eq!(max_pool_i8(&pp, id, input, od, &mut out), Ok(()));
    }

    #[test]
    fn fully_connected_never_panics(
        io in int(), oo in int(), cl in clamp(), batches in dim(), fd in (dim(), dim()),
        input in bytes(), filter in bytes(), bias in prop::option::of(ints()),
        m in ints(), s in ints(), out_len in 0usize..200,
    ) {
        let p = FullyConnectedParams { input_offset: io, output_offset: oo, clamp: cl };
        let _ = fully_connected_i8(&p, batches, &input, fd, &filter, bias.as_deref(), Requant { multiplier: &m, shift: &s }, &mut vec![0; out_len]);
    }

    #[test]
    fn elementwise_never_panic(
        v in prop::collection::vec(int(), 12), cl in clamp(),
        a in bytes(), b in bytes(), out_len in 0usize..200, depth in dim(),
        floats in prop::collection::vec(any::<f32>(), 0..50), scale in any::<f32>(),
        dims in [dim(), dim(), dim(), dim()], perm in [0usize..6, 0usize..6, 0usize..6, 0usize..6],
    ) {
        let add = AddParams {
            input1_offset: v[0], input2_offset: v[1], output_offset: v[2], left_shift: v[3],
            input1_multiplier: v[4], input1_shift: v[5], input2_multiplier: v[6], input2_shift: v[7],
            output_multiplier: v[8], output_shift: v[9], clamp: cl,
        };
        let _ = add_i8(&add, &a, &b, &mut vec![0; out_len]);
        let _ = add_i8(&add, &a, &a, &mut vec![0; a.len()]);
        let sm = SoftmaxParams {
            input_multiplier: v[0], input_left_shift: v[1], diff_min: v[2],
            output: if v[3] % 2 == 0 { SoftmaxOutput::Tflite256 } else {
                SoftmaxOutput::Requantized { multiplier: v[4], shift: v[5], zero_point: v[6] }
            },
        };
        let _ = softmax_i8(&sm, depth, &a, &mut vec![0; a.len()]);
        let rq = RequantizeParams { input_offset: v[7], multiplier: v[8], shift: v[9], output_offset: v[10], clamp: cl };
        let _ = requantize_i8(&rq, &a, &mut vec![0; a.len()]);
        let _ = transpose_i8(dims, perm, &a, &mut vec![0; out_len]);
        let _ = quantize_f32(scale, v[11], &floats, &mut vec![0; floats.len()]);
        let _ = dequantize_i8(scale, v[11], &a, &mut vec![0.0; a.len()]);
    }

    /// Softmax with valid shapes and any in-range parameters runs.
    #[test]
    fn softmax_loops_never_panic(
        m in 0..=i32::MAX, ls in 0i32..=31, diff_min in i32::MIN..=0, depth in 1usize..300,
        x in prop::collection::vec(any::<i8>(), 300), rq in (0..=i32::MAX, -31i32..=30, -128i32..=127),
    ) {
        let input = &x[..depth];
        let mut out = vec![0; depth];
        let p = SoftmaxParams { input_multiplier: m, input_left_shift: ls, diff_min, output: SoftmaxOutput::Tflite256 };
        prop_assert_eq!(softmax_i8(&p, depth, input, &mut out), Ok(()));
        let p = SoftmaxParams { output: SoftmaxOutput::Requantized { multiplier: rq.0, shift: rq.1, zero_point: rq.2 }, ..p };
        prop_assert_eq!(softmax_i8(&p, depth, input, &mut out), Ok(()));
    }
}

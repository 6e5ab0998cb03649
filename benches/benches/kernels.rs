//! Criterion benches of the int8 kernels on their own, one group per layer
//! shape taken from the MLPerf Tiny models, each ISA this CPU supports
//! (`reference` included) side by side:
//!
//! - `pointwise`: KWS's 1x1 convolution, 64 → 64 channels over 25x5 pixels
//!   (512,000 MACs);
//! - `conv3x3`: IC's 3x3 convolution, 16 → 16 channels over 32x32, pad 1
//!   (2,359,296 MACs);
//! - `conv0_rgb`: VWW's first layer, 3x3 stride 2 over a 96x96x3 image
//!   into 8 channels (the pixel-major kernel on AVX-512 VBMI);
//! - `depthwise3x3`: KWS's depthwise layer, 64 channels over 25x5, pad 1;
//! - `depthwise_48x48x8`, `depthwise_s2_48x48x16`, `depthwise_6x6x128`:
//!   VWW's first, first stride-2 and a late 3x3 depthwise layer (narrow
//!   channels on a large map; stride 2; a map smaller than its borders);
//! - `fully_connected`: AD's 640 → 128 layer, batch 1;
//! - `vnni_peak` (x86-64 with AVX-512 VNNI): the ceiling the others are
//!   measured against, `vpdpbusd` with 16 independent accumulators and
//!   nothing else (zmm, and ymm), throughput in MACs per second: 64 (32)
//!   MACs per instruction, every instruction's result used, no loads; and
//!   `l2_stream`, the same fed from AD's 264 KB of weights (past L1, inside
//!   L2), in bytes (one MAC each) per second.
//!
//! Weights are packed and the output stage prepared once, outside the timed
//! loop, as the runtime does at load. `cargo bench -p edgefleet-benches --bench kernels`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use edgefleet_kernels::fast::{self, PackedFilter, PreparedEpilogue};
use edgefleet_kernels::reference::{ConvParams, DepthwiseParams, FullyConnectedParams};
use edgefleet_kernels::{Clamp, Dims4, Requant};

/// Deterministic pseudo-random int8 values.
fn data(n: usize, seed: u64) -> Vec<i8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 56) as u8 as i8
        })
        .collect()
}

struct Layer {
    n: usize,
    k: usize,
    data: Vec<i8>,
    colsum: Vec<i32>,
    prep: [Vec<i32>; 4],
    input_offset: i32,
    shifts_left: bool,
}

impl Layer {
    fn packed(&self) -> PackedFilter<'_> {
        PackedFilter { n: self.n, k: self.k, data: &self.data, colsum: &self.colsum }
    }
    fn prepared(&self) -> PreparedEpilogue<'_> {
        let [corr, multiplier, left_shift, right_shift] = &self.prep;
        let shifts_left = self.shifts_left;
        PreparedEpilogue { input_offset: self.input_offset, corr, multiplier, left_shift, right_shift, shifts_left }
    }
}

fn prepare(n: usize, k: usize, data: Vec<i8>, colsum: Vec<i32>, bias: &[i32], rq: Requant<'_>, off: i32) -> Layer {
    let len = fast::prepared_len(n);
    let mut prep = [vec![0; len], vec![0; len], vec![0; len], vec![0; len]];
    let [c, m, l, r] = &mut prep;
    let pf = PackedFilter { n, k, data: &data, colsum: &colsum };
    fast::prepare_epilogue(&pf, Some(bias), rq, off, c, m, l, r).expect("valid parameters");
    let shifts_left = fast::has_left_shifts(&prep[2]);
    Layer { n, k, data, colsum, prep, input_offset: off, shifts_left }
}

fn conv_layer(c: &mut Criterion, name: &str, id: Dims4, fd: Dims4, od: Dims4, stride: usize, pad: usize) {
    let x = data(id.elements().unwrap_or(0), 1);
    let w = data(fd.elements().unwrap_or(0), 2);
    let bias: Vec<i32> = (0..fd.n as i32).map(|i| i * 37 - 500).collect();
    let (mult, shift) = (vec![1_518_500_250; fd.n], vec![-8; fd.n]);
    let rq = Requant { multiplier: &mult, shift: &shift };
    let p = ConvParams {
        stride: (stride, stride),
        dilation: (1, 1),
        padding: (pad, pad),
        input_offset: 83,
        output_offset: -128,
        clamp: Clamp::NONE,
    };
    let k = fast::conv_packed_depth(fd).expect("small filter");
    let (dl, cl) = fast::packed_len(fd.n, k).expect("small filter");
    let (mut pd, mut cs) = (vec![0i8; dl], vec![0i32; cl]);
    fast::pack_conv_filter(fd, &w, &mut pd, &mut cs).expect("valid filter");
    let layer = prepare(fd.n, k, pd, cs, &bias, rq, p.input_offset);
    let mut out = vec![0i8; od.elements().unwrap_or(0)];
    let mut g = c.benchmark_group(name);
    for isa in fast::all_supported() {
        fast::set_active(isa);
        g.bench_function(isa.name(), |b| {
            b.iter(|| {
                let r = fast::conv2d_i8_prepared(
                    &p,
                    id,
                    black_box(&x),
                    fd,
                    &w,
                    Some(&layer.packed()),
                    Some(&layer.prepared()),
                    Some(&bias),
                    rq,
                    od,
                    &mut out,
                );
                black_box(r).expect("valid layer");
            })
        });
    }
    g.finish();
}

/// A 3x3 depthwise layer (depth multiplier 1) on every supported ISA.
fn depthwise_layer(c: &mut Criterion, name: &str, id: Dims4, od: Dims4, stride: usize, pad: usize) {
    let ch = id.c;
    let fd = Dims4::new(1, 3, 3, ch);
    let x = data(id.elements().unwrap_or(0), 3);
    let w = data(fd.elements().unwrap_or(0), 4);
    let bias: Vec<i32> = (0..ch as i32).map(|i| i * 11 - 300).collect();
    let (mult, shift) = (vec![1_300_000_000; ch], vec![-7; ch]);
    let p = DepthwiseParams {
        conv: ConvParams {
            stride: (stride, stride),
            dilation: (1, 1),
            padding: (pad, pad),
            input_offset: 128,
            output_offset: -128,
            clamp: Clamp::NONE,
        },
        depth_multiplier: 1,
    };
    let mut out = vec![0i8; od.elements().unwrap_or(0)];
    let mut g = c.benchmark_group(name);
    for isa in fast::all_supported() {
        g.bench_function(isa.name(), |b| {
            b.iter(|| {
                let rq = Requant { multiplier: &mult, shift: &shift };
                let r =
                    fast::depthwise_conv2d_i8_with(isa, &p, id, black_box(&x), fd, &w, Some(&bias), rq, od, &mut out);
                black_box(r).expect("valid layer");
            })
        });
    }
    g.finish();
}

fn kernels(c: &mut Criterion) {
    conv_layer(c, "pointwise", Dims4::new(1, 25, 5, 64), Dims4::new(64, 1, 1, 64), Dims4::new(1, 25, 5, 64), 1, 0);
    conv_layer(c, "conv3x3", Dims4::new(1, 32, 32, 16), Dims4::new(16, 3, 3, 16), Dims4::new(1, 32, 32, 16), 1, 1);
    conv_layer(c, "conv0_rgb", Dims4::new(1, 96, 96, 3), Dims4::new(8, 3, 3, 3), Dims4::new(1, 48, 48, 8), 2, 1);

    depthwise_layer(c, "depthwise3x3", Dims4::new(1, 25, 5, 64), Dims4::new(1, 25, 5, 64), 1, 1);
    depthwise_layer(c, "depthwise_48x48x8", Dims4::new(1, 48, 48, 8), Dims4::new(1, 48, 48, 8), 1, 1);
    depthwise_layer(c, "depthwise_s2_48x48x16", Dims4::new(1, 48, 48, 16), Dims4::new(1, 24, 24, 16), 2, 0);
    depthwise_layer(c, "depthwise_6x6x128", Dims4::new(1, 6, 6, 128), Dims4::new(1, 6, 6, 128), 1, 1);

    // AD's fully connected shapes, batch 1: the big layer, a middle one and
    // the bottleneck (whose 1,024 MACs show the fixed cost of a call).
    for (name, n, k) in
        [("fully_connected", 128, 640), ("fully_connected_128x128", 128, 128), ("fully_connected_8x128", 8, 128)]
    {
        fully_connected(c, name, n, k);
    }
}

fn fully_connected(c: &mut Criterion, name: &str, n: usize, k: usize) {
    let x = data(k, 5);
    let w = data(n * k, 6);
    let bias: Vec<i32> = (0..n as i32).map(|i| i * 5 - 200).collect();
    let (mult, shift) = (vec![1_200_000_000; n], vec![-9; n]);
    let rq = Requant { multiplier: &mult, shift: &shift };
    let p = FullyConnectedParams { input_offset: -89, output_offset: 0, clamp: Clamp::NONE };
    let (dl, cl) = fast::packed_len(n, k).expect("small layer");
    let (mut pd, mut cs) = (vec![0i8; dl], vec![0i32; cl]);
    fast::pack_filter(n, k, &w, &mut pd, &mut cs).expect("valid filter");
    let layer = prepare(n, k, pd, cs, &bias, rq, p.input_offset);
    let mut out = vec![0i8; n];
    let mut g = c.benchmark_group(name);
    for isa in fast::all_supported() {
        fast::set_active(isa);
        g.bench_function(isa.name(), |b| {
            b.iter(|| {
                let r = fast::fully_connected_i8_prepared(
                    &p,
                    1,
                    black_box(&x),
                    (n, k),
                    &w,
                    Some(&layer.packed()),
                    Some(&layer.prepared()),
                    Some(&bias),
                    rq,
                    &mut out,
                );
                black_box(r).expect("valid layer");
            })
        });
    }
    g.finish();
}

/// `vpdpbusd` peak: `ROUNDS` rounds of 16 independent accumulators.
#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::x86_64::*;

    pub const ROUNDS: usize = 256;
    pub const CHAINS: usize = 16;

    /// 16 · ROUNDS zmm `vpdpbusd` (64 MACs each); returns their folded sums.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and VNNI.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn zmm(a: __m512i, b: __m512i) -> i32 {
        let mut acc = [_mm512_setzero_si512(); CHAINS];
        for _ in 0..ROUNDS {
            for c in acc.iter_mut() {
                *c = _mm512_dpbusd_epi32(*c, a, b);
            }
        }
        acc.iter().fold(0, |s, &c| s ^ _mm512_reduce_add_epi32(c))
    }

    /// `vpdpbusd` fed from memory: one pass over `w` (64 bytes per
    /// instruction, 16 accumulators, one broadcast input), the way a batch-1
    /// fully connected layer streams its weights. `w.len()` a multiple of
    /// 1,024.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and VNNI.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn stream(a: __m512i, w: &[u8]) -> i32 {
        let mut acc = [_mm512_setzero_si512(); CHAINS];
        for block in w.chunks_exact(64 * CHAINS) {
            for (j, c) in acc.iter_mut().enumerate() {
                // SAFETY: bytes 64j .. 64j + 64 of a 1,024-byte block.
                let v = unsafe { _mm512_loadu_si512(block.as_ptr().add(64 * j).cast()) };
                *c = _mm512_dpbusd_epi32(*c, a, v);
            }
        }
        acc.iter().fold(0, |s, &c| s ^ _mm512_reduce_add_epi32(c))
    }

    /// As [`zmm`] with ymm registers (32 MACs each).
    ///
    /// # Safety
    /// The CPU has AVX-512 VL and VNNI.
    #[target_feature(enable = "avx512f,avx512vl,avx512vnni")]
    pub unsafe fn ymm(a: __m256i, b: __m256i) -> i32 {
        let mut acc = [_mm256_setzero_si256(); CHAINS];
        for _ in 0..ROUNDS {
            for c in acc.iter_mut() {
                *c = _mm256_dpbusd_epi32(*c, a, b);
            }
        }
        acc.iter().fold(0, |s, &c| {
            // SAFETY: 32 bytes either way, every bit pattern a valid [i32; 8].
            let v: [i32; 8] = unsafe { std::mem::transmute(c) };
            s ^ v.iter().sum::<i32>()
        })
    }
}

/// The machine's `vpdpbusd` throughput (see the module docs).
#[cfg(target_arch = "x86_64")]
fn vnni_peak(c: &mut Criterion) {
    use std::arch::x86_64::*;
    if !(is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")) {
        return;
    }
    let mut g = c.benchmark_group("vnni_peak");
    g.throughput(criterion::Throughput::Elements((peak::ROUNDS * peak::CHAINS * 64) as u64));
    // SAFETY (both): the CPU has AVX-512 F, VL and VNNI (checked above).
    g.bench_function("zmm", |b| {
        b.iter(|| unsafe { peak::zmm(black_box(_mm512_set1_epi32(0x0102_0304)), black_box(_mm512_set1_epi32(3))) })
    });
    g.throughput(criterion::Throughput::Elements((peak::ROUNDS * peak::CHAINS * 32) as u64));
    g.bench_function("ymm", |b| {
        b.iter(|| unsafe { peak::ymm(black_box(_mm256_set1_epi32(0x0102_0304)), black_box(_mm256_set1_epi32(3))) })
    });
    // AD's weights (264,192 bytes: more than L1, well inside L2), streamed
    // through `vpdpbusd` once per iteration: the ceiling of a batch-1 fully
    // connected model, in bytes (= MACs) per second.
    let w: Vec<u8> = data(264_192, 7).into_iter().map(|x| x as u8).collect();
    g.throughput(criterion::Throughput::Bytes(w.len() as u64));
    g.bench_function("l2_stream", |b| {
        b.iter(|| unsafe { peak::stream(black_box(_mm512_set1_epi32(0x0102_0304)), black_box(&w)) })
    });
    g.finish();
}

#[cfg(not(target_arch = "x86_64"))]
fn vnni_peak(_: &mut Criterion) {}

criterion_group!(benches, kernels, vnni_peak);
criterion_main!(benches);

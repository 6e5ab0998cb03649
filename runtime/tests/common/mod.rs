//! Small, valid `.efm` packages built by hand with [`PackageBuilder`], and
//! helpers to find and patch records inside package bytes.
//!
//! Two models, each in two memory plans:
//! - [`TinyCnn`]: int8 `[1, 8, 8, 3]` → Conv2D 3×3 (8 channels, per-channel
//!   weights and requantization, bias, ReLU) → DepthwiseConv2D 3×3 →
//!   AveragePool2D over the whole image → view `[1, 8]` → FullyConnected
//!   (→ 4, per-channel) → Softmax (1/256, −128), with class labels.
//! - [`AddPool`]: two inputs; Requantize → Add → MaxPool2D 2×2/2 → Transpose.
//!
//! [`Layout::Reuse`] is a tight plan that reuses arena bytes of dead tensors;
//! [`Layout::Probe`] gives every activation its own bytes and makes every
//! intermediate activation a graph output, so tests can check each op.

use core::ops::Range;

use edgefleet_kernels::Clamp;
use edgefleet_kernels::quant::quantize_multiplier;
use edgefleet_kernels::reference::{AddParams, RequantizeParams, SoftmaxOutput, SoftmaxParams};
use edgefleet_runtime::AlignedBytes;
use edgefleet_runtime::format::{
    DType, HEADER_SIZE, IoRecord, NO_TENSOR, OP_PARAMS, OpCode, OpRecord, QuantKind, SECTION_ENTRY_SIZE, SectionEntry,
    Storage, TENSOR_FLAG_VIEW, TensorRecord, header, param,
};
use edgefleet_runtime::writer::{PackageBuilder, reseal};

/// Deterministic pseudo-random numbers (xorshift32), so packages are stable.
pub struct Rng(u32);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u32) -> Self {
        Rng(seed.max(1))
    }
    /// Next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
    /// Uniform in `lo..=hi`.
    pub fn int(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next_u32() % (hi - lo + 1) as u32) as i32
    }
    /// Uniform in `[lo, hi)`.
    pub fn float(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }
}

/// Memory plan of a hand-built package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Tight plan: dead tensors' bytes are reused; only the final output(s) are graph outputs.
    Reuse,
    /// Every activation has its own bytes and every intermediate is also a graph output.
    Probe,
}

/// `(scale, zero_point)` of an int8 tensor.
pub type Q = (f32, i32);

/// The Q31 multiplier and shift of `real`, checked to be what the loader accepts.
pub fn multiplier(real: f64) -> (i32, i32) {
    let (m, s) = quantize_multiplier(real).expect("representable multiplier");
    assert!(m == 0 || (1 << 30..=i32::MAX).contains(&m), "multiplier {m}");
    assert!((-31..=30).contains(&s), "shift {s}");
    (m, s)
}

fn dims4(dims: &[u32]) -> (u8, [u32; 4]) {
    let mut d = [1u32; 4];
    d[..dims.len()].copy_from_slice(dims);
    (dims.len() as u8, d)
}

fn elements(dims: &[u32]) -> u32 {
    dims.iter().product()
}

/// Adds an int8, per-tensor quantized arena tensor.
fn activation(b: &mut PackageBuilder, name: &str, dims: &[u32], offset: u32, q: Q) -> (u16, TensorRecord) {
    let (rank, dims4) = dims4(dims);
    let (name_offset, name_len) = b.string(name);
    let rec = TensorRecord {
        dtype: DType::I8 as u8,
        rank,
        storage: Storage::Arena as u8,
        quant: QuantKind::PerTensor as u8,
        dims: dims4,
        offset,
        size: elements(dims),
        quant_a: q.0.to_bits(),
        quant_b: q.1 as u32,
        name_offset,
        name_len,
        flags: 0,
        reserved: 0,
        base: 0,
    };
    (b.tensor(rec), rec)
}

/// Adds a view (reshape) of `base`.
fn view(b: &mut PackageBuilder, name: &str, dims: &[u32], base: (u16, TensorRecord)) -> u16 {
    let (rank, dims4) = dims4(dims);
    assert_eq!(elements(dims), base.1.size);
    let (name_offset, name_len) = b.string(name);
    b.tensor(TensorRecord { rank, dims: dims4, name_offset, name_len, flags: TENSOR_FLAG_VIEW, base: base.0, ..base.1 })
}

/// Adds constant int8 weights, per tensor (one scale) or per channel along `axis`.
fn weights(b: &mut PackageBuilder, name: &str, dims: &[u32], data: &[i8], scales: &[f32], axis: u32) -> u16 {
    assert_eq!(elements(dims) as usize, data.len());
    let (rank, dims4) = dims4(dims);
    let bytes: Vec<u8> = data.iter().map(|&v| v as u8).collect();
    let offset = b.constant(&bytes);
    let (quant, quant_a, quant_b) = if scales.len() == 1 {
        (QuantKind::PerTensor, scales[0].to_bits(), 0)
    } else {
        assert_eq!(scales.len() as u32, dims[axis as usize]);
        let s: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        (QuantKind::PerChannel, b.constant(&s), axis)
    };
    let (name_offset, name_len) = b.string(name);
    b.tensor(TensorRecord {
        dtype: DType::I8 as u8,
        rank,
        storage: Storage::Const as u8,
        quant: quant as u8,
        dims: dims4,
        offset,
        size: bytes.len() as u32,
        quant_a,
        quant_b,
        name_offset,
        name_len,
        flags: 0,
        reserved: 0,
        base: 0,
    })
}

/// Adds an int32 bias with per-channel scales `input_scale * weight_scale[c]`
/// (as the compiler writes it).
fn bias(b: &mut PackageBuilder, name: &str, data: &[i32], scales: &[f32]) -> u16 {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let offset = b.constant(&bytes);
    let s: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
    let scales_offset = b.constant(&s);
    let (name_offset, name_len) = b.string(name);
    b.tensor(TensorRecord {
        dtype: DType::I32 as u8,
        rank: 1,
        storage: Storage::Const as u8,
        quant: QuantKind::PerChannel as u8,
        dims: [data.len() as u32, 1, 1, 1],
        offset,
        size: bytes.len() as u32,
        quant_a: scales_offset,
        quant_b: 0,
        name_offset,
        name_len,
        flags: 0,
        reserved: 0,
        base: 0,
    })
}

/// An op record; `inputs` are the used slots, the rest are [`NO_TENSOR`].
pub fn op_record(code: OpCode, inputs: &[u16], output: u16, words: &[(usize, u32)]) -> OpRecord {
    let mut ins = [NO_TENSOR; 3];
    ins[..inputs.len()].copy_from_slice(inputs);
    let mut params = [0u32; OP_PARAMS];
    for &(i, v) in words {
        params[i] = v;
    }
    OpRecord { opcode: code as u16, n_inputs: inputs.len() as u8, n_outputs: 1, inputs: ins, output, params }
}

fn geometry(stride: u32, window_or_dilation: (u32, u32), pad: u32) -> Vec<(usize, u32)> {
    vec![
        (param::STRIDE_H, stride),
        (param::STRIDE_W, stride),
        (param::DILATION_H, window_or_dilation.0),
        (param::DILATION_W, window_or_dilation.1),
        (param::PAD_TOP, pad),
        (param::PAD_LEFT, pad),
    ]
}

/// ReLU as a clamp on an output with zero point `zp`.
pub fn relu(zp: i32) -> Clamp {
    Clamp { min: zp as i8, max: i8::MAX }
}

// ---------------------------------------------------------------------------
// Model (a): the tiny CNN
// ---------------------------------------------------------------------------

/// Input height and width of [`TinyCnn`].
pub const CNN_HW: usize = 8;
/// Input channels.
pub const CNN_IN_C: usize = 3;
/// Channels after the convolution.
pub const CNN_C: usize = 8;
/// Classes.
pub const CNN_CLASSES: usize = 4;

/// Parameters of the tiny CNN (deterministic).
#[derive(Clone, Debug)]
pub struct TinyCnn {
    /// Input quantization.
    pub input: Q,
    /// Conv filter `[8, 3, 3, 3]` (OHWI).
    pub conv_w: Vec<i8>,
    /// Conv per-channel weight scales.
    pub conv_scales: Vec<f32>,
    /// Conv bias (scale `input * conv_scales[c]`).
    pub conv_bias: Vec<i32>,
    /// Conv output quantization (ReLU fused).
    pub conv_out: Q,
    /// Depthwise filter `[1, 3, 3, 8]`.
    pub dw_w: Vec<i8>,
    /// Depthwise per-tensor weight scale.
    pub dw_scale: f32,
    /// Depthwise bias.
    pub dw_bias: Vec<i32>,
    /// Depthwise (and average pool) output quantization.
    pub dw_out: Q,
    /// Fully connected filter `[4, 8]`.
    pub fc_w: Vec<i8>,
    /// Fully connected per-channel weight scales.
    pub fc_scales: Vec<f32>,
    /// Fully connected bias.
    pub fc_bias: Vec<i32>,
    /// Logits quantization.
    pub fc_out: Q,
    /// Softmax params (1/256, -128 output).
    pub softmax: SoftmaxParams,
    /// Class labels.
    pub labels: [&'static str; CNN_CLASSES],
}

impl Default for TinyCnn {
    fn default() -> Self {
        Self::new()
    }
}

impl TinyCnn {
    /// The model's parameters.
    pub fn new() -> Self {
        let mut rng = Rng::new(0x5EED_0001);
        let input = (0.02, 3);
        let conv_w = (0..CNN_C * 9 * CNN_IN_C).map(|_| rng.int(-127, 127) as i8).collect();
        let conv_scales: Vec<f32> = (0..CNN_C).map(|c| 0.003 + 0.0005 * c as f32).collect();
        let conv_bias = (0..CNN_C)
            .map(|c| {
                let real = rng.float(-0.3, 0.3);
                (real / (input.0 * conv_scales[c])).round() as i32
            })
            .collect();
        let conv_out = (0.03, -100);
        let dw_w = (0..9 * CNN_C).map(|_| rng.int(-127, 127) as i8).collect();
        let dw_scale = 0.006;
        let dw_bias = (0..CNN_C).map(|_| (rng.float(-0.5, 0.5) / (conv_out.0 * dw_scale)).round() as i32).collect();
        let dw_out = (0.04, -20);
        let fc_w = (0..CNN_CLASSES * CNN_C).map(|_| rng.int(-127, 127) as i8).collect();
        let fc_scales: Vec<f32> = (0..CNN_CLASSES).map(|o| 0.004 + 0.001 * o as f32).collect();
        let fc_bias =
            (0..CNN_CLASSES).map(|o| (rng.float(-1.0, 1.0) / (dw_out.0 * fc_scales[o])).round() as i32).collect();
        let fc_out = (0.04, 4);
        let softmax = SoftmaxParams::from_quant(1.0, fc_out.0, 1.0 / 256.0, -128).expect("softmax params");
        assert_eq!(softmax.output, SoftmaxOutput::Tflite256);
        TinyCnn {
            input,
            conv_w,
            conv_scales,
            conv_bias,
            conv_out,
            dw_w,
            dw_scale,
            dw_bias,
            dw_out,
            fc_w,
            fc_scales,
            fc_bias,
            fc_out,
            softmax,
            labels: ["cat", "dog", "bird", "fish"],
        }
    }

    /// The package. Graph outputs: `Reuse`: the probabilities (with labels);
    /// `Probe`: the probabilities, then conv, depthwise, pool and logits.
    pub fn package(&self, layout: Layout) -> Vec<u8> {
        self.package_with(layout, &[])
    }

    /// [`Self::package`] plus extra sections `(kind, required, bytes)`.
    pub fn package_with(&self, layout: Layout, extra: &[(u16, bool, &[u8])]) -> Vec<u8> {
        let (hw, c) = (CNN_HW as u32, CNN_C as u32);
        let mut b = PackageBuilder::new();
        // Arena offsets: [input, conv, dw, pool, fc, softmax] and the extent.
        let (off, arena) = match layout {
            // input [0,192) dies after conv [512,1024); dw reuses [0,512);
            // pool reuses conv's bytes; logits and probabilities reuse the front.
            Layout::Reuse => ([0, 512, 0, 512, 0, 16], 1024),
            Layout::Probe => ([0, 192, 704, 1216, 1232, 1248], 1252),
        };
        let x = activation(&mut b, "input", &[1, hw, hw, CNN_IN_C as u32], off[0], self.input);
        let w = weights(&mut b, "conv/weights", &[c, 3, 3, CNN_IN_C as u32], &self.conv_w, &self.conv_scales, 0);
        let bias_scales: Vec<f32> = self.conv_scales.iter().map(|s| self.input.0 * s).collect();
        let bi = bias(&mut b, "conv/bias", &self.conv_bias, &bias_scales);
        let y1 = activation(&mut b, "conv", &[1, hw, hw, c], off[1], self.conv_out);
        let (m, s): (Vec<i32>, Vec<i32>) = self
            .conv_scales
            .iter()
            .map(|ws| multiplier(f64::from(self.input.0) * f64::from(*ws) / f64::from(self.conv_out.0)))
            .unzip();
        let table = b.requant_table(&m, &s);
        let clamp = relu(self.conv_out.1);
        let mut words = geometry(1, (1, 1), 1);
        words.extend([
            (param::REQUANT_OFFSET, table),
            (param::REQUANT_COUNT, CNN_C as u32),
            (param::CLAMP, param::pack_clamp(clamp.min, clamp.max)),
        ]);
        b.op(op_record(OpCode::Conv2d, &[x.0, w, bi], y1.0, &words));

        let w = weights(&mut b, "dw/weights", &[1, 3, 3, c], &self.dw_w, &[self.dw_scale], 0);
        let bi = bias(&mut b, "dw/bias", &self.dw_bias, &[self.conv_out.0 * self.dw_scale; CNN_C]);
        let y2 = activation(&mut b, "dw", &[1, hw, hw, c], off[2], self.dw_out);
        let (m, s) = multiplier(f64::from(self.conv_out.0) * f64::from(self.dw_scale) / f64::from(self.dw_out.0));
        let table = b.requant_table(&[m], &[s]);
        let mut words = geometry(1, (1, 1), 1);
        words.extend([
            (param::REQUANT_OFFSET, table),
            (param::REQUANT_COUNT, 1),
            (param::CLAMP, param::pack_clamp(i8::MIN, i8::MAX)),
            (param::DEPTH_MULTIPLIER, 1),
        ]);
        b.op(op_record(OpCode::DepthwiseConv2d, &[y1.0, w, bi], y2.0, &words));

        let y3 = activation(&mut b, "pool", &[1, 1, 1, c], off[3], self.dw_out);
        let mut words = geometry(hw, (hw, hw), 0);
        words.push((param::CLAMP, param::pack_clamp(i8::MIN, i8::MAX)));
        b.op(op_record(OpCode::AveragePool2d, &[y2.0], y3.0, &words));

        let flat = view(&mut b, "flatten", &[1, c], y3);
        let w = weights(&mut b, "fc/weights", &[CNN_CLASSES as u32, c], &self.fc_w, &self.fc_scales, 0);
        let bias_scales: Vec<f32> = self.fc_scales.iter().map(|s| self.dw_out.0 * s).collect();
        let bi = bias(&mut b, "fc/bias", &self.fc_bias, &bias_scales);
        let y4 = activation(&mut b, "logits", &[1, CNN_CLASSES as u32], off[4], self.fc_out);
        let (m, s): (Vec<i32>, Vec<i32>) = self
            .fc_scales
            .iter()
            .map(|ws| multiplier(f64::from(self.dw_out.0) * f64::from(*ws) / f64::from(self.fc_out.0)))
            .unzip();
        let table = b.requant_table(&m, &s);
        let words = [
            (param::REQUANT_OFFSET, table),
            (param::REQUANT_COUNT, CNN_CLASSES as u32),
            (param::CLAMP, param::pack_clamp(i8::MIN, i8::MAX)),
        ];
        b.op(op_record(OpCode::FullyConnected, &[flat, w, bi], y4.0, &words));

        let y5 = activation(&mut b, "probabilities", &[1, CNN_CLASSES as u32], off[5], (1.0 / 256.0, -128));
        let p = &self.softmax;
        let words = [
            (param::SOFTMAX_IN_MULT, p.input_multiplier as u32),
            (param::SOFTMAX_IN_SHIFT, p.input_left_shift as u32),
            (param::SOFTMAX_DIFF_MIN, p.diff_min as u32),
        ];
        b.op(op_record(OpCode::Softmax, &[y4.0], y5.0, &words));

        b.input(x.0);
        b.output(y5.0, &self.labels);
        if layout == Layout::Probe {
            for t in [y1.0, y2.0, y3.0, y4.0] {
                b.output(t, &[]);
            }
        }
        for &(kind, required, bytes) in extra {
            b.section(kind, required, bytes.to_vec());
        }
        b.arena_size(arena);
        b.finish()
    }
}

// ---------------------------------------------------------------------------
// Model (b): Requantize, Add, MaxPool2D, Transpose
// ---------------------------------------------------------------------------

/// Input shape of [`AddPool`] (both inputs).
pub const ADD_DIMS: [usize; 4] = [1, 4, 6, 2];
/// Shape after the 2×2/2 max pool.
pub const POOL_DIMS: [usize; 4] = [1, 2, 3, 2];
/// Transpose permutation (NHWC → NCHW).
pub const PERM: [usize; 4] = [0, 3, 1, 2];

/// Parameters of the add/pool model.
#[derive(Clone, Debug)]
pub struct AddPool {
    /// Input 0 quantization (requantized before the add).
    pub x1: Q,
    /// Input 1 quantization.
    pub x2: Q,
    /// Requantize output.
    pub r: Q,
    /// Requantize clamp.
    pub r_clamp: Clamp,
    /// Add output (and max pool, transpose).
    pub a: Q,
    /// Add clamp.
    pub a_clamp: Clamp,
    /// Requantize params.
    pub requantize: RequantizeParams,
    /// Add params.
    pub add: AddParams,
}

impl Default for AddPool {
    fn default() -> Self {
        Self::new()
    }
}

impl AddPool {
    /// The model's parameters.
    pub fn new() -> Self {
        let (x1, x2, r, a) = ((0.05, -10), (0.1, 5), (0.04, 0), (0.12, 2));
        let r_clamp = Clamp { min: -120, max: 120 };
        let a_clamp = Clamp { min: -100, max: 100 };
        AddPool {
            x1,
            x2,
            r,
            r_clamp,
            a,
            a_clamp,
            requantize: RequantizeParams::from_quant(x1, r, r_clamp).expect("requantize params"),
            add: AddParams::from_quant(r, x2, a, a_clamp).expect("add params"),
        }
    }

    /// The package. Graph outputs: the transposed pool, the pool; `Probe`
    /// adds the requantized input and the sum.
    pub fn package(&self, layout: Layout) -> Vec<u8> {
        let d = ADD_DIMS.map(|v| v as u32);
        let pd = POOL_DIMS.map(|v| v as u32);
        let td = PERM.map(|i| pd[i]);
        let mut b = PackageBuilder::new();
        // Offsets of [x1, x2, r, a, m, t] and the extent.
        let (off, arena) = match layout {
            // a reuses x1's bytes (x1 is dead after the requantize), m reuses x2's.
            Layout::Reuse => ([0, 48, 96, 0, 48, 64], 144),
            Layout::Probe => ([0, 48, 96, 144, 192, 208], 220),
        };
        let x1 = activation(&mut b, "x1", &d, off[0], self.x1);
        let x2 = activation(&mut b, "x2", &d, off[1], self.x2);
        let r = activation(&mut b, "x1_requantized", &d, off[2], self.r);
        let a = activation(&mut b, "sum", &d, off[3], self.a);
        let m = activation(&mut b, "pooled", &pd, off[4], self.a);
        let t = activation(&mut b, "transposed", &td, off[5], self.a);

        let q = &self.requantize;
        let words = [
            (param::CLAMP, param::pack_clamp(q.clamp.min, q.clamp.max)),
            (param::REQ_MULT, q.multiplier as u32),
            (param::REQ_SHIFT, q.shift as u32),
        ];
        b.op(op_record(OpCode::Requantize, &[x1.0], r.0, &words));
        let p = &self.add;
        let words = [
            (param::CLAMP, param::pack_clamp(p.clamp.min, p.clamp.max)),
            (param::ADD_LEFT_SHIFT, p.left_shift as u32),
            (param::ADD_IN1_MULT, p.input1_multiplier as u32),
            (param::ADD_IN1_SHIFT, p.input1_shift as u32),
            (param::ADD_IN2_MULT, p.input2_multiplier as u32),
            (param::ADD_IN2_SHIFT, p.input2_shift as u32),
            (param::ADD_OUT_MULT, p.output_multiplier as u32),
            (param::ADD_OUT_SHIFT, p.output_shift as u32),
        ];
        b.op(op_record(OpCode::Add, &[r.0, x2.0], a.0, &words));
        let mut words = geometry(2, (2, 2), 0);
        words.push((param::CLAMP, param::pack_clamp(i8::MIN, i8::MAX)));
        b.op(op_record(OpCode::MaxPool2d, &[a.0], m.0, &words));
        let words: Vec<(usize, u32)> = PERM.iter().enumerate().map(|(i, &v)| (param::PERM + i, v as u32)).collect();
        b.op(op_record(OpCode::Transpose, &[m.0], t.0, &words));

        b.input(x1.0);
        b.input(x2.0);
        b.output(t.0, &[]);
        b.output(m.0, &[]);
        if layout == Layout::Probe {
            b.output(r.0, &[]);
            b.output(a.0, &[]);
        }
        b.arena_size(arena);
        b.finish()
    }
}

/// Every hand-built valid package, named.
pub fn valid_packages() -> Vec<(&'static str, Vec<u8>)> {
    let (cnn, ap) = (TinyCnn::new(), AddPool::new());
    vec![
        ("tiny_cnn", cnn.package(Layout::Reuse)),
        ("tiny_cnn_probe", cnn.package(Layout::Probe)),
        ("add_pool", ap.package(Layout::Reuse)),
        ("add_pool_probe", ap.package(Layout::Probe)),
    ]
}

// ---------------------------------------------------------------------------
// Byte-level helpers
// ---------------------------------------------------------------------------

/// A 16-byte-aligned copy, as the loader wants it.
pub fn aligned(bytes: &[u8]) -> AlignedBytes {
    AlignedBytes::from_slice(bytes)
}

/// Reads a little-endian `u32`.
pub fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

/// Writes a little-endian `u32`.
pub fn set_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes a little-endian `u16`.
pub fn set_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

/// The section table entries of a (well-formed) package, with their byte
/// position in the table.
pub fn sections(b: &[u8]) -> Vec<(usize, SectionEntry)> {
    let count = get_u32(b, header::SECTION_COUNT) as usize;
    (0..count)
        .map(|i| {
            let at = HEADER_SIZE + i * SECTION_ENTRY_SIZE;
            (at, SectionEntry::decode(&b[at..at + SECTION_ENTRY_SIZE]).0)
        })
        .collect()
}

/// Byte range of the first section of `kind`.
pub fn section_range(b: &[u8], kind: u16) -> Option<Range<usize>> {
    sections(b)
        .into_iter()
        .find(|(_, e)| e.kind == kind)
        .map(|(_, e)| e.offset as usize..e.offset as usize + e.size as usize)
}

/// Byte position of the table entry of the first section of `kind`.
pub fn section_entry_at(b: &[u8], kind: u16) -> usize {
    sections(b).into_iter().find(|(_, e)| e.kind == kind).expect("section present").0
}

/// Rewrites tensor record `i` with `f` (does not reseal).
pub fn patch_tensor(b: &mut [u8], i: usize, f: impl FnOnce(&mut TensorRecord)) {
    let start = section_range(b, 1).expect("tensors").start + i * TensorRecord::SIZE;
    let rec = &mut b[start..start + TensorRecord::SIZE];
    let mut r = TensorRecord::decode(rec);
    f(&mut r);
    r.encode(rec);
}

/// Tensor record `i`.
pub fn tensor_record(b: &[u8], i: usize) -> TensorRecord {
    let start = section_range(b, 1).expect("tensors").start + i * TensorRecord::SIZE;
    TensorRecord::decode(&b[start..start + TensorRecord::SIZE])
}

/// Rewrites op record `i` with `f` (does not reseal).
pub fn patch_op(b: &mut [u8], i: usize, f: impl FnOnce(&mut OpRecord)) {
    let start = section_range(b, 2).expect("ops").start + i * OpRecord::SIZE;
    let rec = &mut b[start..start + OpRecord::SIZE];
    let mut r = OpRecord::decode(rec);
    f(&mut r);
    r.encode(rec);
}

/// Rewrites IO record `slot` (inputs first, then outputs) with `f` (does not reseal).
pub fn patch_io(b: &mut [u8], slot: usize, f: impl FnOnce(&mut IoRecord)) {
    let start = section_range(b, 3).expect("io").start + 8 + slot * IoRecord::SIZE;
    let rec = &mut b[start..start + IoRecord::SIZE];
    let mut r = IoRecord::decode(rec).0;
    f(&mut r);
    r.encode(rec);
}

/// Applies `f` to a copy of `package` and reseals the CRC.
pub fn mutated(package: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = package.to_vec();
    f(&mut b);
    reseal(&mut b);
    b
}

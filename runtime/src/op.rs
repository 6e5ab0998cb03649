//! Typed view of an op record: decoding and the range checks that need only
//! the record itself. Checks against tensors live in [`crate::model`].

use edgefleet_kernels::Clamp;
use edgefleet_kernels::reference::AddParams;

use crate::format::{NO_TENSOR, OpCode, OpRecord, param};

/// Largest stride, dilation, padding or window accepted. Keeps index
/// arithmetic in the kernels far from overflow on every target.
pub const MAX_GEOMETRY: u32 = 1 << 16;

/// Spatial geometry of a convolution or pooling op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Stride (height, width).
    pub stride: (usize, usize),
    /// Dilation (conv) or window (pool), (height, width).
    pub window: (usize, usize),
    /// Padding (top, left).
    pub padding: (usize, usize),
}

/// A decoded op. Tensor fields are tensor indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Conv2D.
    Conv2d {
        /// Input activation.
        input: u16,
        /// Filter `[out_c, kh, kw, in_c / groups]`.
        filter: u16,
        /// Optional bias `[out_c]`.
        bias: Option<u16>,
        /// Output activation.
        output: u16,
        /// Stride, dilation, padding.
        geometry: Geometry,
        /// Requant table offset in `CONST`.
        requant_offset: u32,
        /// Requant table entries.
        requant_count: u32,
        /// Fused clamp.
        clamp: Clamp,
    },
    /// DepthwiseConv2D.
    DepthwiseConv2d {
        /// Input activation.
        input: u16,
        /// Filter `[1, kh, kw, c * m]`.
        filter: u16,
        /// Optional bias.
        bias: Option<u16>,
        /// Output activation.
        output: u16,
        /// Stride, dilation, padding.
        geometry: Geometry,
        /// Channel multiplier.
        depth_multiplier: usize,
        /// Requant table offset.
        requant_offset: u32,
        /// Requant table entries.
        requant_count: u32,
        /// Fused clamp.
        clamp: Clamp,
    },
    /// FullyConnected.
    FullyConnected {
        /// Input activation (flattened to `[batches, in]`).
        input: u16,
        /// Filter `[out, in]`.
        filter: u16,
        /// Optional bias.
        bias: Option<u16>,
        /// Output activation.
        output: u16,
        /// Requant table offset.
        requant_offset: u32,
        /// Requant table entries.
        requant_count: u32,
        /// Fused clamp.
        clamp: Clamp,
    },
    /// Add with rescale.
    Add {
        /// First input.
        input1: u16,
        /// Second input.
        input2: u16,
        /// Output.
        output: u16,
        /// Left shift.
        left_shift: i32,
        /// (multiplier, shift) for input 1, input 2 and the output.
        rescale: [(i32, i32); 3],
        /// Fused clamp.
        clamp: Clamp,
    },
    /// AveragePool2D.
    AveragePool2d {
        /// Input.
        input: u16,
        /// Output.
        output: u16,
        /// Window, stride, padding.
        geometry: Geometry,
        /// Fused clamp.
        clamp: Clamp,
    },
    /// MaxPool2D.
    MaxPool2d {
        /// Input.
        input: u16,
        /// Output.
        output: u16,
        /// Window, stride, padding.
        geometry: Geometry,
        /// Fused clamp.
        clamp: Clamp,
    },
    /// Softmax over the last axis.
    Softmax {
        /// Input.
        input: u16,
        /// Output.
        output: u16,
        /// Input multiplier.
        input_multiplier: i32,
        /// Input left shift.
        input_left_shift: i32,
        /// Diff min.
        diff_min: i32,
        /// `None`: TFLite 1/256 output; `Some((multiplier, shift))`: requantized.
        requant: Option<(i32, i32)>,
    },
    /// int8 → int8 rescale.
    Requantize {
        /// Input.
        input: u16,
        /// Output.
        output: u16,
        /// Multiplier.
        multiplier: i32,
        /// Shift.
        shift: i32,
        /// Fused clamp.
        clamp: Clamp,
    },
    /// 4-D transpose.
    Transpose {
        /// Input.
        input: u16,
        /// Output.
        output: u16,
        /// Output dim `i` is input dim `perm[i]`.
        perm: [usize; 4],
    },
}

/// A decode failure: `Err(None)` for an unknown opcode, `Err(Some(problem))` otherwise.
pub type DecodeResult = Result<Op, Option<&'static str>>;

fn clamp_of(word: u32) -> Result<Clamp, &'static str> {
    if word >> 16 != 0 {
        return Err("clamp word has bits above 16 set");
    }
    let min = (word & 0xFF) as u8 as i8;
    let max = ((word >> 8) & 0xFF) as u8 as i8;
    if min > max {
        return Err("clamp minimum above maximum");
    }
    Ok(Clamp { min, max })
}

fn geometry_of(p: &[u32]) -> Result<Geometry, &'static str> {
    let words = [p[param::STRIDE_H], p[param::STRIDE_W], p[param::DILATION_H], p[param::DILATION_W]];
    if words.iter().any(|&w| w == 0 || w > MAX_GEOMETRY) {
        return Err("stride, dilation or window is 0 or too large");
    }
    if p[param::PAD_TOP] > MAX_GEOMETRY || p[param::PAD_LEFT] > MAX_GEOMETRY {
        return Err("padding too large");
    }
    Ok(Geometry {
        stride: (words[0] as usize, words[1] as usize),
        window: (words[2] as usize, words[3] as usize),
        padding: (p[param::PAD_TOP] as usize, p[param::PAD_LEFT] as usize),
    })
}

fn multiplier_ok(m: i32, s: i32) -> bool {
    m >= 0 && (-31..=30).contains(&s)
}

impl Op {
    /// Decodes a record and checks what it can without looking at tensors:
    /// arity, parameter ranges, unused words being zero.
    pub fn decode(r: &OpRecord) -> DecodeResult {
        let code = OpCode::from_u16(r.opcode).ok_or(None)?;
        let (n_in, n_opt) = match code {
            OpCode::Conv2d | OpCode::DepthwiseConv2d | OpCode::FullyConnected => (2, 1),
            OpCode::Add => (2, 0),
            _ => (1, 0),
        };
        let n = r.n_inputs as usize;
        if n < n_in || n > n_in + n_opt || r.n_outputs != 1 {
            return Err(Some("wrong number of inputs or outputs"));
        }
        for (i, &t) in r.inputs.iter().enumerate() {
            if i < n_in && t == NO_TENSOR {
                return Err(Some("missing required input"));
            }
            if i >= n && t != NO_TENSOR {
                return Err(Some("input slot beyond the input count is used"));
            }
        }
        let input = r.inputs[0];
        let output = r.output;
        let p = &r.params;
        let used_words: usize;
        let op = match code {
            OpCode::Conv2d | OpCode::DepthwiseConv2d | OpCode::FullyConnected => {
                let bias = (n == 3 && r.inputs[2] != NO_TENSOR).then_some(r.inputs[2]);
                let clamp = clamp_of(p[param::CLAMP])?;
                let requant_offset = p[param::REQUANT_OFFSET];
                let requant_count = p[param::REQUANT_COUNT];
                if requant_count == 0 {
                    return Err(Some("empty requantization table"));
                }
                match code {
                    OpCode::FullyConnected => {
                        used_words = 3;
                        Op::FullyConnected {
                            input,
                            filter: r.inputs[1],
                            bias,
                            output,
                            requant_offset,
                            requant_count,
                            clamp,
                        }
                    }
                    OpCode::Conv2d => {
                        used_words = 9;
                        Op::Conv2d {
                            input,
                            filter: r.inputs[1],
                            bias,
                            output,
                            geometry: geometry_of(p)?,
                            requant_offset,
                            requant_count,
                            clamp,
                        }
                    }
                    _ => {
                        used_words = 10;
                        let m = p[param::DEPTH_MULTIPLIER];
                        if m == 0 || m > MAX_GEOMETRY {
                            return Err(Some("depth multiplier is 0 or too large"));
                        }
                        Op::DepthwiseConv2d {
                            input,
                            filter: r.inputs[1],
                            bias,
                            output,
                            geometry: geometry_of(p)?,
                            depth_multiplier: m as usize,
                            requant_offset,
                            requant_count,
                            clamp,
                        }
                    }
                }
            }
            OpCode::Add => {
                used_words = 10;
                let left_shift = p[param::ADD_LEFT_SHIFT] as i32;
                if !(0..=22).contains(&left_shift) {
                    return Err(Some("add left shift out of range"));
                }
                let pair = |m: usize, s: usize| (p[m] as i32, p[s] as i32);
                let rescale = [
                    pair(param::ADD_IN1_MULT, param::ADD_IN1_SHIFT),
                    pair(param::ADD_IN2_MULT, param::ADD_IN2_SHIFT),
                    pair(param::ADD_OUT_MULT, param::ADD_OUT_SHIFT),
                ];
                if rescale.iter().any(|&(m, s)| !multiplier_ok(m, s) || s > 0) {
                    return Err(Some("add multiplier or shift out of range"));
                }
                Op::Add {
                    input1: input,
                    input2: r.inputs[1],
                    output,
                    left_shift,
                    rescale,
                    clamp: clamp_of(p[param::CLAMP])?,
                }
            }
            OpCode::AveragePool2d | OpCode::MaxPool2d => {
                used_words = 9;
                let geometry = geometry_of(p)?;
                let clamp = clamp_of(p[param::CLAMP])?;
                if p[param::REQUANT_OFFSET] != 0 || p[param::REQUANT_COUNT] != 0 {
                    return Err(Some("pooling has no requantization table"));
                }
                if code == OpCode::AveragePool2d {
                    Op::AveragePool2d { input, output, geometry, clamp }
                } else {
                    Op::MaxPool2d { input, output, geometry, clamp }
                }
            }
            OpCode::Softmax => {
                used_words = 9;
                let input_multiplier = p[param::SOFTMAX_IN_MULT] as i32;
                let input_left_shift = p[param::SOFTMAX_IN_SHIFT] as i32;
                let diff_min = p[param::SOFTMAX_DIFF_MIN] as i32;
                if input_multiplier < 0 || !(0..=31).contains(&input_left_shift) || diff_min > 0 {
                    return Err(Some("softmax input scaling out of range"));
                }
                let requant = match p[param::SOFTMAX_MODE] {
                    0 => {
                        if p[param::SOFTMAX_OUT_MULT] != 0 || p[param::SOFTMAX_OUT_SHIFT] != 0 {
                            return Err(Some("softmax 1/256 mode has output rescale words set"));
                        }
                        None
                    }
                    1 => {
                        let m = p[param::SOFTMAX_OUT_MULT] as i32;
                        let s = p[param::SOFTMAX_OUT_SHIFT] as i32;
                        if !multiplier_ok(m, s) {
                            return Err(Some("softmax output multiplier out of range"));
                        }
                        Some((m, s))
                    }
                    _ => return Err(Some("unknown softmax output mode")),
                };
                if p[..3].iter().any(|&w| w != 0) {
                    return Err(Some("softmax has no requant table or clamp"));
                }
                Op::Softmax { input, output, input_multiplier, input_left_shift, diff_min, requant }
            }
            OpCode::Requantize => {
                used_words = 5;
                let multiplier = p[param::REQ_MULT] as i32;
                let shift = p[param::REQ_SHIFT] as i32;
                if !multiplier_ok(multiplier, shift) {
                    return Err(Some("requantize multiplier or shift out of range"));
                }
                if p[param::REQUANT_OFFSET] != 0 || p[param::REQUANT_COUNT] != 0 {
                    return Err(Some("requantize has no requantization table"));
                }
                Op::Requantize { input, output, multiplier, shift, clamp: clamp_of(p[param::CLAMP])? }
            }
            OpCode::Transpose => {
                used_words = 7;
                let mut perm = [0usize; 4];
                let mut seen = [false; 4];
                for (i, slot) in perm.iter_mut().enumerate() {
                    let v = p[param::PERM + i] as usize;
                    if v >= 4 || seen[v] {
                        return Err(Some("transpose permutation is not a permutation of 0..4"));
                    }
                    seen[v] = true;
                    *slot = v;
                }
                if p[..3].iter().any(|&w| w != 0) {
                    return Err(Some("transpose has no requant table or clamp"));
                }
                Op::Transpose { input, output, perm }
            }
        };
        if p[used_words..].iter().any(|&w| w != 0) {
            return Err(Some("unused parameter words must be 0"));
        }
        Ok(op)
    }

    /// The opcode.
    pub fn code(&self) -> OpCode {
        match self {
            Op::Conv2d { .. } => OpCode::Conv2d,
            Op::DepthwiseConv2d { .. } => OpCode::DepthwiseConv2d,
            Op::FullyConnected { .. } => OpCode::FullyConnected,
            Op::Add { .. } => OpCode::Add,
            Op::AveragePool2d { .. } => OpCode::AveragePool2d,
            Op::MaxPool2d { .. } => OpCode::MaxPool2d,
            Op::Softmax { .. } => OpCode::Softmax,
            Op::Requantize { .. } => OpCode::Requantize,
            Op::Transpose { .. } => OpCode::Transpose,
        }
    }

    /// The kernel parameters of an `Add` (None for other ops), given the
    /// zero points of its inputs and output.
    pub(crate) fn add_params(&self, input1_zp: i32, input2_zp: i32, output_zp: i32) -> Option<AddParams> {
        match *self {
            Op::Add { left_shift, rescale, clamp, .. } => Some(AddParams {
                input1_offset: -input1_zp,
                input2_offset: -input2_zp,
                output_offset: output_zp,
                left_shift,
                input1_multiplier: rescale[0].0,
                input1_shift: rescale[0].1,
                input2_multiplier: rescale[1].0,
                input2_shift: rescale[1].1,
                output_multiplier: rescale[2].0,
                output_shift: rescale[2].1,
                clamp,
            }),
            _ => None,
        }
    }

    /// The output tensor.
    pub fn output(&self) -> u16 {
        match *self {
            Op::Conv2d { output, .. }
            | Op::DepthwiseConv2d { output, .. }
            | Op::FullyConnected { output, .. }
            | Op::Add { output, .. }
            | Op::AveragePool2d { output, .. }
            | Op::MaxPool2d { output, .. }
            | Op::Softmax { output, .. }
            | Op::Requantize { output, .. }
            | Op::Transpose { output, .. } => output,
        }
    }

    /// The input tensors (absent optional inputs as `None`).
    pub fn inputs(&self) -> [Option<u16>; 3] {
        match *self {
            Op::Conv2d { input, filter, bias, .. }
            | Op::DepthwiseConv2d { input, filter, bias, .. }
            | Op::FullyConnected { input, filter, bias, .. } => [Some(input), Some(filter), bias],
            Op::Add { input1, input2, .. } => [Some(input1), Some(input2), None],
            Op::AveragePool2d { input, .. }
            | Op::MaxPool2d { input, .. }
            | Op::Softmax { input, .. }
            | Op::Requantize { input, .. }
            | Op::Transpose { input, .. } => [Some(input), None, None],
        }
    }
}

//! Package emission: a [`QNet`] and its [`Plan`] become `.efm` bytes through
//! the runtime's [`PackageBuilder`], so the compiler and the loader share one
//! definition of the format.

use std::collections::HashMap;

use anyhow::{Result, ensure};
use edgefleet_kernels::Clamp;
use edgefleet_runtime::format::{
    DType, NO_TENSOR, OP_PARAMS, OpCode, OpRecord, QuantKind, SectionKind, Storage, TENSOR_FLAG_VIEW, TensorRecord,
    param,
};
use edgefleet_runtime::writer::PackageBuilder;

use crate::plan::Plan;
use crate::quantize::{QNet, QOp, QWeights, Requant};

/// Metadata written next to the graph.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// Class labels per graph output (empty: none).
    pub labels: Vec<Vec<String>>,
    /// Model card JSON.
    pub model_card: Option<String>,
    /// Producer JSON (compiler version, options).
    pub producer: Option<String>,
    /// Reference data profile (opaque here).
    pub reference_profile: Option<Vec<u8>>,
}

/// The parts conv, depthwise and fully connected ops share.
struct Linear<'a> {
    x: usize,
    y: usize,
    w: &'a QWeights,
    b: Option<&'a Vec<i32>>,
    rq: &'a Requant,
    clamp: Clamp,
}

struct Emitter<'q> {
    q: &'q QNet,
    plan: &'q Plan,
    b: PackageBuilder,
    tensor_of: HashMap<usize, u16>,
}

fn dims4(shape: &[usize]) -> Result<(u8, [u32; 4])> {
    ensure!(shape.len() <= 4, "tensors of rank {} are not supported (at most 4)", shape.len());
    let mut d = [1u32; 4];
    for (i, &s) in shape.iter().enumerate() {
        d[i] = u32::try_from(s)?;
    }
    Ok((shape.len() as u8, d))
}

impl Emitter<'_> {
    fn activation(&mut self, v: usize) -> Result<u16> {
        if let Some(&t) = self.tensor_of.get(&v) {
            return Ok(t);
        }
        let root = self.plan.root[v];
        let base = if root != v { Some(self.activation(root)?) } else { None };
        let qv = &self.q.values[v];
        let (rank, dims) = dims4(&qv.shape)?;
        let (name_offset, name_len) = self.b.string(&qv.name);
        let size: usize = qv.shape.iter().product();
        let rec = TensorRecord {
            dtype: DType::I8 as u8,
            rank,
            storage: Storage::Arena as u8,
            quant: QuantKind::PerTensor as u8,
            dims,
            offset: u32::try_from(self.plan.offset[v])?,
            size: u32::try_from(size)?,
            quant_a: qv.scale.to_bits(),
            quant_b: qv.zero_point as u32,
            name_offset,
            name_len,
            flags: if base.is_some() { TENSOR_FLAG_VIEW } else { 0 },
            reserved: 0,
            base: base.unwrap_or(0),
        };
        let t = self.b.tensor(rec);
        self.tensor_of.insert(v, t);
        Ok(t)
    }

    fn weights(&mut self, name: &str, w: &QWeights) -> Result<u16> {
        let (rank, dims) = dims4(&w.shape)?;
        let bytes: Vec<u8> = w.q.iter().map(|&v| v as u8).collect();
        let offset = self.b.constant(&bytes);
        let (quant, quant_a, quant_b) = if w.scales.len() == 1 {
            (QuantKind::PerTensor, w.scales[0].to_bits(), 0)
        } else {
            let s: Vec<u8> = w.scales.iter().flat_map(|s| s.to_le_bytes()).collect();
            (QuantKind::PerChannel, self.b.constant(&s), w.channel_axis as u32)
        };
        let (name_offset, name_len) = self.b.string(name);
        Ok(self.b.tensor(TensorRecord {
            dtype: DType::I8 as u8,
            rank,
            storage: Storage::Const as u8,
            quant: quant as u8,
            dims,
            offset,
            size: u32::try_from(bytes.len())?,
            quant_a,
            quant_b,
            name_offset,
            name_len,
            flags: 0,
            reserved: 0,
            base: 0,
        }))
    }

    fn bias(&mut self, name: &str, b: &[i32], in_scale: f32, w: &QWeights) -> Result<u16> {
        let bytes: Vec<u8> = b.iter().flat_map(|v| v.to_le_bytes()).collect();
        let offset = self.b.constant(&bytes);
        let scales: Vec<u8> = (0..b.len())
            .flat_map(|c| (in_scale * if w.scales.len() == 1 { w.scales[0] } else { w.scales[c] }).to_le_bytes())
            .collect();
        let scales_off = self.b.constant(&scales);
        let (name_offset, name_len) = self.b.string(name);
        Ok(self.b.tensor(TensorRecord {
            dtype: DType::I32 as u8,
            rank: 1,
            storage: Storage::Const as u8,
            quant: QuantKind::PerChannel as u8,
            dims: [u32::try_from(b.len())?, 1, 1, 1],
            offset,
            size: u32::try_from(bytes.len())?,
            quant_a: scales_off,
            quant_b: 0,
            name_offset,
            name_len,
            flags: 0,
            reserved: 0,
            base: 0,
        }))
    }

    fn linear(&mut self, code: OpCode, l: Linear<'_>, extra: &[(usize, u32)]) -> Result<()> {
        let Linear { x, y, w, b, rq, clamp } = l;
        let name = self.q.values[y].name.clone();
        let xt = self.activation(x)?;
        let wt = self.weights(&format!("{name}/weights"), w)?;
        let bt = match b {
            Some(b) => Some(self.bias(&format!("{name}/bias"), b, self.q.values[x].scale, w)?),
            None => None,
        };
        let yt = self.activation(y)?;
        let table = self.b.requant_table(&rq.multiplier, &rq.shift);
        let mut p = [0u32; OP_PARAMS];
        p[param::REQUANT_OFFSET] = table;
        p[param::REQUANT_COUNT] = rq.multiplier.len() as u32;
        p[param::CLAMP] = param::pack_clamp(clamp.min, clamp.max);
        for &(i, v) in extra {
            p[i] = v;
        }
        self.b.op(OpRecord {
            opcode: code as u16,
            n_inputs: if bt.is_some() { 3 } else { 2 },
            n_outputs: 1,
            inputs: [xt, wt, bt.unwrap_or(NO_TENSOR)],
            output: yt,
            params: p,
        });
        Ok(())
    }

    fn simple(&mut self, code: OpCode, ins: &[usize], y: usize, words: &[(usize, u32)]) -> Result<()> {
        let mut inputs = [NO_TENSOR; 3];
        for (slot, &x) in ins.iter().enumerate() {
            inputs[slot] = self.activation(x)?;
        }
        let yt = self.activation(y)?;
        let mut p = [0u32; OP_PARAMS];
        for &(i, v) in words {
            p[i] = v;
        }
        self.b.op(OpRecord {
            opcode: code as u16,
            n_inputs: ins.len() as u8,
            n_outputs: 1,
            inputs,
            output: yt,
            params: p,
        });
        Ok(())
    }
}

fn geometry(win: &crate::net::Window, dilation_or_window: [usize; 2]) -> Vec<(usize, u32)> {
    vec![
        (param::STRIDE_H, win.stride[0] as u32),
        (param::STRIDE_W, win.stride[1] as u32),
        (param::DILATION_H, dilation_or_window[0] as u32),
        (param::DILATION_W, dilation_or_window[1] as u32),
        (param::PAD_TOP, win.pads[0] as u32),
        (param::PAD_LEFT, win.pads[1] as u32),
    ]
}

/// Writes the package.
///
/// # Errors
/// Shapes or sizes the format cannot hold (rank > 4, more than 65534 tensors).
pub fn emit(q: &QNet, plan: &Plan, meta: &Metadata) -> Result<Vec<u8>> {
    let mut e = Emitter { q, plan, b: PackageBuilder::new(), tensor_of: HashMap::new() };
    for &i in &q.inputs {
        let t = e.activation(i)?;
        e.b.input(t);
    }
    for op in &q.ops {
        match op {
            QOp::Conv { x, y, w, b, rq, win, clamp, .. } => {
                let l = Linear { x: *x, y: *y, w, b: b.as_ref(), rq, clamp: *clamp };
                e.linear(OpCode::Conv2d, l, &geometry(win, win.dilation))?;
            }
            QOp::Depthwise { x, y, w, b, rq, win, mult, clamp } => {
                let mut extra = geometry(win, win.dilation);
                extra.push((param::DEPTH_MULTIPLIER, *mult as u32));
                let l = Linear { x: *x, y: *y, w, b: b.as_ref(), rq, clamp: *clamp };
                e.linear(OpCode::DepthwiseConv2d, l, &extra)?;
            }
            QOp::Fc { x, y, w, b, rq, clamp } => {
                let l = Linear { x: *x, y: *y, w, b: b.as_ref(), rq, clamp: *clamp };
                e.linear(OpCode::FullyConnected, l, &[])?;
            }
            QOp::Add { a, b, y, p } => {
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
                e.simple(OpCode::Add, &[*a, *b], *y, &words)?;
            }
            QOp::AvgPool { x, y, win, clamp } | QOp::MaxPool { x, y, win, clamp } => {
                let mut words = geometry(win, win.kernel);
                words.push((param::CLAMP, param::pack_clamp(clamp.min, clamp.max)));
                let code = if matches!(op, QOp::MaxPool { .. }) { OpCode::MaxPool2d } else { OpCode::AveragePool2d };
                e.simple(code, &[*x], *y, &words)?;
            }
            QOp::Softmax { x, y, p } => {
                use edgefleet_kernels::reference::SoftmaxOutput;
                let mut words = vec![
                    (param::SOFTMAX_IN_MULT, p.input_multiplier as u32),
                    (param::SOFTMAX_IN_SHIFT, p.input_left_shift as u32),
                    (param::SOFTMAX_DIFF_MIN, p.diff_min as u32),
                ];
                if let SoftmaxOutput::Requantized { multiplier, shift, .. } = p.output {
                    words.push((param::SOFTMAX_MODE, 1));
                    words.push((param::SOFTMAX_OUT_MULT, multiplier as u32));
                    words.push((param::SOFTMAX_OUT_SHIFT, shift as u32));
                }
                e.simple(OpCode::Softmax, &[*x], *y, &words)?;
            }
            QOp::Requantize { x, y, p } => {
                let words = [
                    (param::CLAMP, param::pack_clamp(p.clamp.min, p.clamp.max)),
                    (param::REQ_MULT, p.multiplier as u32),
                    (param::REQ_SHIFT, p.shift as u32),
                ];
                e.simple(OpCode::Requantize, &[*x], *y, &words)?;
            }
            QOp::Transpose { x, y, perm } => {
                let words: Vec<(usize, u32)> =
                    perm.iter().enumerate().map(|(i, &v)| (param::PERM + i, v as u32)).collect();
                e.simple(OpCode::Transpose, &[*x], *y, &words)?;
            }
            QOp::Reshape { .. } => {}
        }
    }
    for (k, &o) in q.outputs.iter().enumerate() {
        let t = e.activation(o)?;
        let labels: Vec<&str> = meta.labels.get(k).map(|l| l.iter().map(String::as_str).collect()).unwrap_or_default();
        e.b.output(t, &labels);
    }
    e.b.arena_size(u32::try_from(plan.arena_size)?);
    if let Some(card) = &meta.model_card {
        e.b.section(SectionKind::ModelCard as u16, false, card.as_bytes().to_vec());
    }
    if let Some(p) = &meta.producer {
        e.b.section(SectionKind::Producer as u16, false, p.as_bytes().to_vec());
    }
    if let Some(p) = &meta.reference_profile {
        e.b.section(SectionKind::ReferenceProfile as u16, false, p.clone());
    }
    Ok(e.b.finish())
}

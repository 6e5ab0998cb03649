//! Weights packed for the fast GEMM kernels, built once per loaded model on
//! hosts (feature `alloc`).
//!
//! A package stores convolution and fully connected weights in the portable
//! OHWI / `[out, in]` layout, so one signed package runs everywhere. The fast
//! kernels want them as 16-channel × 4-depth blocks with per-channel sums
//! ([`edgefleet_kernels::fast::PackedFilter`]); [`PackedWeights::for_model`]
//! builds that once, at load time, as XNNPACK and ONNX Runtime do.
//! [`crate::OwnedModel`] does it for you; give the result to
//! [`crate::Interpreter::with_packed`]. Without it the interpreter runs the
//! reference GEMM (microcontrollers, which have no allocator).
//!
//! The same load-time pass decodes every op and tensor record once, so a run
//! does not decode them again (on a model of ten small layers that was a
//! fifth of the run time); an interpreter uses them only for the model they
//! were decoded from.

use alloc::vec;
use alloc::vec::Vec;
use edgefleet_kernels::Requant;
use edgefleet_kernels::fast::{
    ADD_TABLE_LEN, PackedFilter, PreparedEpilogue, conv_packed_depth, has_left_shifts, pack_conv_filter, pack_filter,
    packed_len, prepare_add_table, prepare_epilogue, prepared_len,
};

use crate::format::Storage;
use crate::model::{Model, Slot};
use crate::op::Op;

/// One layer's packed weights.
#[derive(Clone, Debug)]
struct Packed {
    n: usize,
    k: usize,
    data: Vec<i8>,
    colsum: Vec<i32>,
    /// The output stage prepared for the op's input zero point, bias and
    /// requantization: (input offset, corr, multiplier, left, right shifts,
    /// whether any left shift is not zero).
    prepared: Option<(i32, [Vec<i32>; 4], bool)>,
}

/// Packed weights of every convolution and fully connected op of a model,
/// and a lookup table per elementwise add
/// ([`edgefleet_kernels::fast::prepare_add_table`], 64 KiB each), indexed by
/// op.
#[derive(Clone, Debug, Default)]
pub struct PackedWeights {
    ops: Vec<Option<Packed>>,
    add_tables: Vec<Option<Vec<i8>>>,
    decoded: Decoded,
}

/// Every op and tensor record of the model, decoded once: the interpreter
/// reads these instead of decoding records on every run (on a model of
/// ten small layers that decoding was a fifth of the run time). Used only
/// for the model whose records they were decoded from (`records`, compared
/// when an interpreter takes them).
#[derive(Clone, Debug, Default)]
pub(crate) struct Decoded {
    pub(crate) ops: Vec<Option<Op>>,
    pub(crate) slots: Vec<Option<Slot>>,
    records: (Vec<u8>, Vec<u8>),
}

impl Decoded {
    fn for_model(model: &Model<'_>) -> Decoded {
        let tensors = u16::try_from(model.tensor_count()).unwrap_or(u16::MAX);
        Decoded {
            ops: (0..model.op_count()).map(|i| model.op(i)).collect(),
            slots: (0..tensors).map(|t| model.slot(t)).collect(),
            records: (model.op_records().to_vec(), model.tensor_records().to_vec()),
        }
    }

    /// Whether these were decoded from `model`'s records.
    pub(crate) fn matches(&self, model: &Model<'_>) -> bool {
        self.records.0 == model.op_records() && self.records.1 == model.tensor_records()
    }
}

impl PackedWeights {
    /// Packs the weights of `model`'s ungrouped convolutions and fully
    /// connected layers (constant weights only; anything else stays on the
    /// reference path).
    pub fn for_model(model: &Model<'_>) -> PackedWeights {
        let ops = (0..model.op_count()).map(|i| model.op(i).and_then(|op| pack_op(model, &op))).collect();
        let add_tables = (0..model.op_count()).map(|i| model.op(i).and_then(|op| add_table(model, &op))).collect();
        PackedWeights { ops, add_tables, decoded: Decoded::for_model(model) }
    }

    /// The decoded records, if they are `model`'s.
    pub(crate) fn decoded_for(&self, model: &Model<'_>) -> Option<&Decoded> {
        self.decoded.matches(model).then_some(&self.decoded)
    }

    /// The decoded records, known to be the model's (built from the same
    /// immutable bytes: [`crate::OwnedModel`]).
    pub(crate) fn decoded(&self) -> &Decoded {
        &self.decoded
    }

    /// The lookup table of add op `i`, if it has one.
    pub fn add_table(&self, i: usize) -> Option<&[i8]> {
        self.add_tables.get(i)?.as_deref()
    }

    /// The packed weights of op `i`, if it has any.
    pub fn get(&self, i: usize) -> Option<PackedFilter<'_>> {
        let p = self.ops.get(i)?.as_ref()?;
        Some(PackedFilter { n: p.n, k: p.k, data: &p.data, colsum: &p.colsum })
    }

    /// The output stage of op `i` prepared at load time, if it has one.
    pub fn prepared(&self, i: usize) -> Option<PreparedEpilogue<'_>> {
        let (input_offset, [corr, multiplier, left_shift, right_shift], shifts_left) =
            self.ops.get(i)?.as_ref()?.prepared.as_ref()?;
        Some(PreparedEpilogue {
            input_offset: *input_offset,
            corr,
            multiplier,
            left_shift,
            right_shift,
            shifts_left: *shifts_left,
        })
    }

    /// Bytes held (packed values and sums, prepared output stages, add
    /// tables).
    pub fn heap_bytes(&self) -> usize {
        let tables: usize = self.add_tables.iter().flatten().map(Vec::len).sum();
        let packed: usize = self
            .ops
            .iter()
            .flatten()
            .map(|p| {
                let prepared: usize = p.prepared.as_ref().map_or(0, |(_, v, _)| v.iter().map(|v| 4 * v.len()).sum());
                p.data.len() + 4 * p.colsum.len() + prepared
            })
            .sum();
        tables + packed
    }
}

/// The lookup table of an add whose parameters the kernels accept.
fn add_table(model: &Model<'_>, op: &Op) -> Option<Vec<i8>> {
    let Op::Add { input1, input2, output, .. } = *op else { return None };
    let zp = |t: u16| model.slot(t).map(|s| s.zero_point);
    let p = op.add_params(zp(input1)?, zp(input2)?, zp(output)?)?;
    let mut table = vec![0i8; ADD_TABLE_LEN];
    prepare_add_table(&p, &mut table).ok()?;
    Some(table)
}

fn pack_op(model: &Model<'_>, op: &Op) -> Option<Packed> {
    let (filter, n, k, input, bias, requant_offset, requant_count) = match *op {
        Op::Conv2d { input, filter, bias, requant_offset, requant_count, .. } => {
            let x = model.slot(input)?.shape.nhwc()?;
            let wi = model.slot(filter)?;
            let w = wi.shape.nhwc()?;
            if w.c != x.c {
                return None; // grouped: reference path
            }
            (wi, w.n, conv_packed_depth(w)?, input, bias, requant_offset, requant_count)
        }
        Op::FullyConnected { input, filter, bias, requant_offset, requant_count, .. } => {
            let wi = model.slot(filter)?;
            match *wi.shape.dims() {
                [o, n] => (wi, o, n, input, bias, requant_offset, requant_count),
                _ => return None,
            }
        }
        _ => return None,
    };
    if filter.storage != Storage::Const {
        return None;
    }
    let bytes: &[i8] = bytemuck::cast_slice(model.const_bytes(&filter)?);
    let (dl, cl) = packed_len(n, k)?;
    let (mut data, mut colsum) = (vec![0i8; dl], vec![0i32; cl]);
    match *op {
        Op::Conv2d { .. } => pack_conv_filter(filter.shape.nhwc()?, bytes, &mut data, &mut colsum).ok()?,
        _ => pack_filter(n, k, bytes, &mut data, &mut colsum).ok()?,
    }
    let prepared = prepare(model, n, k, &data, &colsum, input, bias, requant_offset, requant_count);
    Some(Packed { n, k, data, colsum, prepared })
}

/// The output stage for the op's input zero point, constant bias and
/// requantization table; `None` (computed per call instead) if any is not
/// what the loader guarantees.
#[allow(clippy::too_many_arguments)]
fn prepare(
    model: &Model<'_>,
    n: usize,
    k: usize,
    data: &[i8],
    colsum: &[i32],
    input: u16,
    bias: Option<u16>,
    requant_offset: u32,
    requant_count: u32,
) -> Option<(i32, [Vec<i32>; 4], bool)> {
    let input_offset = -model.slot(input)?.zero_point;
    let bias: Option<&[i32]> = match bias {
        None => None,
        Some(t) => {
            let slot = model.slot(t)?;
            if slot.storage != Storage::Const {
                return None;
            }
            Some(bytemuck::try_cast_slice(model.const_bytes(&slot)?).ok()?)
        }
    };
    let (multiplier, shift) = model.requant_table(requant_offset, requant_count)?;
    let packed = PackedFilter { n, k, data, colsum };
    let len = prepared_len(n);
    let mut v = [vec![0i32; len], vec![0i32; len], vec![0i32; len], vec![0i32; len]];
    let [corr, m, ls, rs] = &mut v;
    prepare_epilogue(&packed, bias, Requant { multiplier, shift }, input_offset, corr, m, ls, rs).ok()?;
    let shifts_left = has_left_shifts(&v[2]);
    Some((input_offset, v, shifts_left))
}

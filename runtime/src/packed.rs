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

use alloc::vec;
use alloc::vec::Vec;
use edgefleet_kernels::fast::{PackedFilter, pack_filter, packed_len};

use crate::format::Storage;
use crate::model::Model;
use crate::op::Op;

/// One layer's packed weights.
#[derive(Clone, Debug)]
struct Packed {
    n: usize,
    k: usize,
    data: Vec<i8>,
    colsum: Vec<i32>,
}

/// Packed weights of every convolution and fully connected op of a model,
/// indexed by op.
#[derive(Clone, Debug, Default)]
pub struct PackedWeights {
    ops: Vec<Option<Packed>>,
}

impl PackedWeights {
    /// Packs the weights of `model`'s ungrouped convolutions and fully
    /// connected layers (constant weights only; anything else stays on the
    /// reference path).
    pub fn for_model(model: &Model<'_>) -> PackedWeights {
        let ops = (0..model.op_count()).map(|i| model.op(i).and_then(|op| pack_op(model, &op))).collect();
        PackedWeights { ops }
    }

    /// The packed weights of op `i`, if it has any.
    pub fn get(&self, i: usize) -> Option<PackedFilter<'_>> {
        let p = self.ops.get(i)?.as_ref()?;
        Some(PackedFilter { n: p.n, k: p.k, data: &p.data, colsum: &p.colsum })
    }

    /// Bytes held (packed values and sums).
    pub fn heap_bytes(&self) -> usize {
        self.ops.iter().flatten().map(|p| p.data.len() + 4 * p.colsum.len()).sum()
    }
}

fn pack_op(model: &Model<'_>, op: &Op) -> Option<Packed> {
    let (filter, n, k) = match *op {
        Op::Conv2d { input, filter, .. } => {
            let x = model.slot(input)?.shape.nhwc()?;
            let wi = model.slot(filter)?;
            let w = wi.shape.nhwc()?;
            if w.c != x.c {
                return None; // grouped: reference path
            }
            (wi, w.n, w.h.checked_mul(w.w)?.checked_mul(w.c)?)
        }
        Op::FullyConnected { filter, .. } => {
            let wi = model.slot(filter)?;
            match *wi.shape.dims() {
                [o, n] => (wi, o, n),
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
    pack_filter(n, k, bytes, &mut data, &mut colsum).ok()?;
    Some(Packed { n, k, data, colsum })
}

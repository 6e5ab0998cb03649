//! Static memory plan: an arena offset for every activation buffer.
//!
//! Algorithm (TFLite Micro's `GreedyMemoryPlanner`, run with several buffer
//! orders, keeping the smallest result): each buffer lives from the op that
//! writes it (graph inputs: from the start) to the last op that reads it or
//! any view of it (graph outputs: to the end). Buffers are placed one by one
//! at the lowest 16-byte-aligned offset where they overlap no already-placed
//! buffer whose lifetime intersects theirs. The orders tried are: largest
//! first (TFLM's), earliest first, and largest `size × lifetime` first.
//!
//! Views (reshapes) share their base's bytes and are not buffers.

use crate::quantize::{QNet, QOp};

/// Alignment of every buffer offset (matches TFLite Micro).
pub const ALIGN: usize = 16;

/// The plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// For each value: its root buffer (itself unless it is a view).
    pub root: Vec<usize>,
    /// Arena offset per value (views share their root's).
    pub offset: Vec<usize>,
    /// Total arena bytes: the end of the highest buffer.
    pub arena_size: usize,
    /// Lower bound: the most bytes live at any one op (sum of live buffer sizes).
    pub peak_live: usize,
}

#[derive(Clone, Copy, Debug)]
struct Buf {
    value: usize,
    size: usize,
    first: usize,
    last: usize,
}

fn align_up(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

fn place(bufs: &[Buf], order: &[usize]) -> (Vec<usize>, usize) {
    let mut offset = vec![usize::MAX; bufs.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(bufs.len());
    let mut end = 0;
    for &b in order {
        let me = bufs[b];
        let mut conflicts: Vec<usize> =
            placed.iter().copied().filter(|&o| bufs[o].first <= me.last && me.first <= bufs[o].last).collect();
        conflicts.sort_by_key(|&o| offset[o]);
        let mut off = 0;
        for c in conflicts {
            if offset[c] >= off + me.size {
                break;
            }
            off = off.max(align_up(offset[c] + bufs[c].size));
        }
        offset[b] = off;
        end = end.max(off + me.size);
        placed.push(b);
    }
    (offset, end)
}

/// Plans the arena for a quantized net.
pub fn plan(q: &QNet) -> Plan {
    let nv = q.values.len();
    let mut root: Vec<usize> = (0..nv).collect();
    for op in &q.ops {
        if let QOp::Reshape { x, y } = op {
            root[*y] = root[*x];
        }
    }
    let runtime_ops: Vec<&QOp> = q.ops.iter().filter(|o| !matches!(o, QOp::Reshape { .. })).collect();
    let end = runtime_ops.len();
    let mut first = vec![usize::MAX; nv];
    let mut last = vec![0usize; nv];
    for &i in &q.inputs {
        first[root[i]] = 0;
    }
    for (i, op) in runtime_ops.iter().enumerate() {
        let y = root[op.output()];
        first[y] = first[y].min(i);
        last[y] = last[y].max(i);
        for x in op.inputs() {
            last[root[x]] = last[root[x]].max(i);
        }
    }
    for &o in &q.outputs {
        last[root[o]] = end;
    }
    let bufs: Vec<Buf> = (0..nv)
        .filter(|&v| root[v] == v && first[v] != usize::MAX)
        .map(|v| Buf {
            value: v,
            size: q.values[v].shape.iter().product(),
            first: first[v],
            last: last[v].max(first[v]),
        })
        .collect();

    let idx: Vec<usize> = (0..bufs.len()).collect();
    let mut by_size = idx.clone();
    by_size.sort_by(|&a, &b| bufs[b].size.cmp(&bufs[a].size).then(bufs[a].first.cmp(&bufs[b].first)));
    let mut by_first = idx.clone();
    by_first.sort_by(|&a, &b| bufs[a].first.cmp(&bufs[b].first).then(bufs[b].size.cmp(&bufs[a].size)));
    let mut by_area = idx;
    by_area.sort_by_key(|&a| std::cmp::Reverse(bufs[a].size * (bufs[a].last - bufs[a].first + 1)));
    let (offsets, arena_size) = [by_size, by_first, by_area]
        .iter()
        .map(|order| place(&bufs, order))
        .min_by_key(|(_, end)| *end)
        .unwrap_or((Vec::new(), 0));

    let peak_live = (0..=end)
        .map(|t| bufs.iter().filter(|b| b.first <= t && t <= b.last).map(|b| b.size).sum::<usize>())
        .max()
        .unwrap_or(0);
    let mut offset = vec![0usize; nv];
    for (b, off) in bufs.iter().zip(&offsets) {
        offset[b.value] = *off;
    }
    for v in 0..nv {
        offset[v] = offset[root[v]];
    }
    Plan { root, offset, arena_size, peak_live }
}

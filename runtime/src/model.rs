//! [`Model`]: a package validated once, then read in place.
//!
//! [`Model::load`] checks every byte that the interpreter will later trust:
//! header, CRC-32, section table, every tensor record (dtype, shape, size,
//! storage bounds, quantization), every op (arity, parameters, the shapes and
//! types of its tensors, its requantization table), the input/output table,
//! and the memory plan (no op reads arena bytes that another tensor has
//! overwritten since they were produced). After that, [`crate::Interpreter`]
//! only indexes within bounds already proven, the split TFLite Micro makes
//! between Prepare and Eval, except that here the model bytes are not trusted.

use crate::error::LoadError;
use crate::format::{
    self, ALIGN, DType, HEADER_SIZE, IoRecord, MAX_RANK, OpRecord, SECTION_ENTRY_SIZE, SECTION_REQUIRED,
    STRING_REF_SIZE, SectionEntry, SectionKind, Storage, TENSOR_FLAG_VIEW, TensorRecord, header, rd_u16, rd_u32,
};
use crate::op::Op;

/// Most ops a package may hold (plan validation is quadratic in it).
pub const MAX_OPS: usize = 4096;
/// Largest dimension accepted.
pub const MAX_DIM: u32 = 1 << 24;

/// A tensor shape of rank 0 to 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    rank: u8,
    dims: [usize; MAX_RANK],
}

impl Shape {
    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank as usize]
    }
    /// The rank.
    pub fn rank(&self) -> usize {
        self.rank as usize
    }
    /// Number of elements.
    pub fn elements(&self) -> usize {
        self.dims().iter().product()
    }
    /// The last dimension (1 for a scalar).
    pub fn last(&self) -> usize {
        self.dims().last().copied().unwrap_or(1)
    }
    /// The shape as NHWC, rank 4 required.
    pub(crate) fn nhwc(&self) -> Option<edgefleet_kernels::Dims4> {
        (self.rank == 4).then(|| edgefleet_kernels::Dims4::new(self.dims[0], self.dims[1], self.dims[2], self.dims[3]))
    }
}

/// How a tensor is quantized.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Quantization<'p> {
    /// Not quantized.
    None,
    /// `real = scale * (q - zero_point)`.
    PerTensor {
        /// Scale.
        scale: f32,
        /// Zero point.
        zero_point: i32,
    },
    /// `real = scales[i] * q` for slice `i` along `axis`.
    PerChannel {
        /// Axis.
        axis: usize,
        /// One scale per slice.
        scales: &'p [f32],
    },
}

/// A validated tensor record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorInfo<'p> {
    /// Index in the package.
    pub index: u16,
    /// Name (from the source model).
    pub name: &'p str,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Shape,
    /// Arena or constant.
    pub storage: Storage,
    /// Byte offset in the arena or the `CONST` section.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    /// Quantization.
    pub quant: Quantization<'p>,
    /// For a view (reshape), the tensor whose storage it shares.
    pub view_of: Option<u16>,
}

impl TensorInfo<'_> {
    /// The tensor whose producer writes these bytes: the base of a view, else itself.
    pub fn root(&self) -> u16 {
        self.view_of.unwrap_or(self.index)
    }
    fn range(&self) -> (usize, usize) {
        (self.offset, self.offset + self.size)
    }
    fn per_tensor(&self) -> Option<(f32, i32)> {
        match self.quant {
            Quantization::PerTensor { scale, zero_point } => Some((scale, zero_point)),
            _ => None,
        }
    }
}

/// The parts of a validated tensor record the interpreter uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Slot {
    pub dtype: DType,
    pub shape: Shape,
    pub storage: Storage,
    pub offset: usize,
    pub size: usize,
    pub zero_point: i32,
    pub scale: f32,
}

/// A graph input or output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IoInfo<'p> {
    /// The tensor.
    pub tensor: TensorInfo<'p>,
    labels: &'p [u8],
    strings: &'p [u8],
}

impl<'p> IoInfo<'p> {
    /// Name of the input or output.
    pub fn name(&self) -> &'p str {
        self.tensor.name
    }
    /// `(scale, zero_point)` of the int8 tensor.
    pub fn quantization(&self) -> (f32, i32) {
        self.tensor.per_tensor().unwrap_or((1.0, 0))
    }
    /// Number of class labels (0 if the output has none).
    pub fn label_count(&self) -> usize {
        self.labels.len() / STRING_REF_SIZE
    }
    /// Class label `i`.
    pub fn label(&self, i: usize) -> Option<&'p str> {
        let r = self.labels.get(i * STRING_REF_SIZE..(i + 1) * STRING_REF_SIZE)?;
        str_at(self.strings, rd_u32(r, 0), rd_u32(r, 4)).ok()
    }
}

fn str_at(strings: &[u8], off: u32, len: u32) -> Result<&str, &'static str> {
    let start = off as usize;
    let end = start.checked_add(len as usize).ok_or("string out of bounds")?;
    let bytes = strings.get(start..end).ok_or("string out of bounds")?;
    core::str::from_utf8(bytes).map_err(|_| "string is not UTF-8")
}

/// Offsets of a validated package's parts (see [`Model::layout`]).
#[cfg(feature = "alloc")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    version: (u16, u16),
    arena_size: usize,
    sections: (usize, usize),
    tensors: (usize, usize),
    ops: (usize, usize),
    io: (usize, usize),
    n_inputs: usize,
    n_outputs: usize,
    strings: (usize, usize),
    consts: (usize, usize),
    labels: (usize, usize),
}

/// A validated package, borrowed from the bytes it was loaded from.
#[derive(Clone, Copy, Debug)]
pub struct Model<'p> {
    bytes: &'p [u8],
    version: (u16, u16),
    arena_size: usize,
    sections: &'p [u8],
    tensors: &'p [u8],
    ops: &'p [u8],
    io: &'p [u8],
    n_inputs: usize,
    n_outputs: usize,
    strings: &'p [u8],
    consts: &'p [u8],
    labels: &'p [u8],
}

fn section_slice<'a>(bytes: &'a [u8], e: &SectionEntry) -> &'a [u8] {
    &bytes[e.offset as usize..e.offset as usize + e.size as usize]
}

impl<'p> Model<'p> {
    /// Validates `bytes` as a package. The buffer must be exactly the package
    /// (as long as its header says) and 4-byte aligned.
    ///
    /// # Errors
    /// [`LoadError`] says what is wrong and where; nothing is partially loaded.
    pub fn load(bytes: &'p [u8]) -> Result<Model<'p>, LoadError> {
        if bytes.len() < HEADER_SIZE {
            return Err(LoadError::Truncated { len: bytes.len() });
        }
        if bytes[..8] != format::MAGIC {
            return Err(LoadError::BadMagic);
        }
        let major = rd_u16(bytes, header::MAJOR);
        let minor = rd_u16(bytes, header::MINOR);
        if major != format::VERSION_MAJOR {
            return Err(LoadError::UnsupportedVersion { major, minor });
        }
        if rd_u32(bytes, header::HEADER_SIZE) as usize != HEADER_SIZE {
            return Err(LoadError::BadHeader { problem: "header size is not 64" });
        }
        let declared = rd_u32(bytes, header::FILE_SIZE);
        if declared as usize != bytes.len() {
            return Err(LoadError::SizeMismatch { declared, actual: bytes.len() });
        }
        if !(bytes.as_ptr() as usize).is_multiple_of(4) {
            return Err(LoadError::Misaligned);
        }
        let stored = rd_u32(bytes, header::CRC32);
        let computed = format::crc32(&bytes[format::CRC_START..]);
        if stored != computed {
            return Err(LoadError::ChecksumMismatch { stored, computed });
        }
        if rd_u32(bytes, header::FLAGS) != 0 || bytes[header::RESERVED..HEADER_SIZE].iter().any(|&b| b != 0) {
            return Err(LoadError::BadHeader { problem: "flags or reserved bytes are not 0" });
        }
        let arena_size = rd_u32(bytes, header::ARENA_SIZE) as usize;

        // Section table.
        let count = rd_u32(bytes, header::SECTION_COUNT) as usize;
        let table_end = count
            .checked_mul(SECTION_ENTRY_SIZE)
            .and_then(|n| n.checked_add(HEADER_SIZE))
            .filter(|&end| end <= bytes.len())
            .ok_or(LoadError::BadHeader { problem: "section table extends past the end" })?;
        let sections = &bytes[HEADER_SIZE..table_end];
        let entry = |i: usize| SectionEntry::decode(&sections[i * SECTION_ENTRY_SIZE..(i + 1) * SECTION_ENTRY_SIZE]);
        let mut found: [Option<SectionEntry>; 7] = [None; 7];
        for i in 0..count {
            let (e, reserved) = entry(i);
            let bad = |problem| LoadError::BadSection { kind: e.kind, problem };
            if reserved != 0 || e.flags & !SECTION_REQUIRED != 0 {
                return Err(bad("reserved bits set"));
            }
            if !(e.offset as usize).is_multiple_of(ALIGN) {
                return Err(bad("offset not 16-byte aligned"));
            }
            let end = (e.offset as usize).checked_add(e.size as usize);
            if (e.offset as usize) < table_end || end.is_none_or(|end| end > bytes.len()) {
                return Err(bad("out of bounds"));
            }
            for j in 0..i {
                let (o, _) = entry(j);
                let (a0, a1) = (e.offset as usize, e.offset as usize + e.size as usize);
                let (b0, b1) = (o.offset as usize, o.offset as usize + o.size as usize);
                if a0 < b1 && b0 < a1 {
                    return Err(bad("overlaps another section"));
                }
            }
            match SectionKind::from_u16(e.kind) {
                Some(k) if (k as u16) < 16 => {
                    let slot = &mut found[k as usize];
                    if slot.is_some() {
                        return Err(bad("duplicate section"));
                    }
                    *slot = Some(e);
                }
                Some(_) => {}
                None if e.flags & SECTION_REQUIRED != 0 => {
                    return Err(LoadError::UnknownRequiredSection { kind: e.kind });
                }
                None => {}
            }
        }
        let need = |k: SectionKind| {
            found[k as usize].map(|e| section_slice(bytes, &e)).ok_or(LoadError::MissingSection { kind: k as u16 })
        };
        let tensors = need(SectionKind::Tensors)?;
        let ops = need(SectionKind::Ops)?;
        let io = need(SectionKind::Io)?;
        let strings = need(SectionKind::Strings)?;
        let consts = need(SectionKind::Const)?;
        let labels = found[SectionKind::Labels as usize].map_or(&[][..], |e| section_slice(bytes, &e));

        let sec = |k: SectionKind, problem| LoadError::BadSection { kind: k as u16, problem };
        if tensors.len() % TensorRecord::SIZE != 0 || tensors.is_empty() {
            return Err(sec(SectionKind::Tensors, "size is not a positive multiple of 48"));
        }
        if tensors.len() / TensorRecord::SIZE >= format::NO_TENSOR as usize {
            return Err(sec(SectionKind::Tensors, "too many tensors"));
        }
        if ops.len() % OpRecord::SIZE != 0 || ops.is_empty() {
            return Err(sec(SectionKind::Ops, "size is not a positive multiple of 64"));
        }
        if ops.len() / OpRecord::SIZE > MAX_OPS {
            return Err(sec(SectionKind::Ops, "too many ops"));
        }
        if !labels.len().is_multiple_of(STRING_REF_SIZE) {
            return Err(sec(SectionKind::Labels, "size is not a multiple of 8"));
        }
        if io.len() < 8 {
            return Err(LoadError::BadIo { problem: "section shorter than its counts" });
        }
        let n_inputs = rd_u32(io, 0) as usize;
        let n_outputs = rd_u32(io, 4) as usize;
        if n_inputs == 0 || n_outputs == 0 {
            return Err(LoadError::BadIo { problem: "no inputs or no outputs" });
        }
        let io_len =
            n_inputs.checked_add(n_outputs).and_then(|n| n.checked_mul(IoRecord::SIZE)).and_then(|n| n.checked_add(8));
        if io_len != Some(io.len()) {
            return Err(LoadError::BadIo { problem: "section size does not match its counts" });
        }

        let model = Model {
            bytes,
            version: (major, minor),
            arena_size,
            sections,
            tensors,
            ops,
            io: &io[8..],
            n_inputs,
            n_outputs,
            strings,
            consts,
            labels,
        };
        let mut max_end = 0;
        for i in 0..model.tensor_count() {
            let t = model.check_tensor(i as u16)?;
            if t.storage == Storage::Arena {
                max_end = max_end.max(t.offset + t.size);
            }
        }
        if max_end != arena_size {
            return Err(LoadError::BadHeader { problem: "arena size differs from the extent of the memory plan" });
        }
        model.check_io()?;
        for i in 0..model.op_count() {
            model.check_op(i)?;
        }
        model.check_plan()?;
        Ok(model)
    }

    /// Where each part of the package lies, to rebuild this view of the
    /// same bytes later without validating them again.
    #[cfg(feature = "alloc")]
    pub(crate) fn layout(&self) -> Layout {
        let base = self.bytes.as_ptr() as usize;
        let span = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
        Layout {
            version: self.version,
            arena_size: self.arena_size,
            sections: span(self.sections),
            tensors: span(self.tensors),
            ops: span(self.ops),
            io: span(self.io),
            n_inputs: self.n_inputs,
            n_outputs: self.n_outputs,
            strings: span(self.strings),
            consts: span(self.consts),
            labels: if self.labels.is_empty() { (0, 0) } else { span(self.labels) },
        }
    }

    /// Rebuilds the view of bytes that `layout` was taken from. Only for
    /// bytes that were validated and have not changed since (an owner that
    /// never hands out mutable access guarantees it); any mismatch yields an
    /// empty view rather than a panic.
    #[cfg(feature = "alloc")]
    pub(crate) fn from_layout(bytes: &'p [u8], l: &Layout) -> Model<'p> {
        let get = |(off, len): (usize, usize)| bytes.get(off..off.saturating_add(len)).unwrap_or(&[]);
        Model {
            bytes,
            version: l.version,
            arena_size: l.arena_size,
            sections: get(l.sections),
            tensors: get(l.tensors),
            ops: get(l.ops),
            io: get(l.io),
            n_inputs: l.n_inputs,
            n_outputs: l.n_outputs,
            strings: get(l.strings),
            consts: get(l.consts),
            labels: get(l.labels),
        }
    }

    /// Format version `(major, minor)`.
    pub fn version(&self) -> (u16, u16) {
        self.version
    }
    /// The package bytes.
    pub fn as_bytes(&self) -> &'p [u8] {
        self.bytes
    }
    /// Exact arena bytes [`crate::Interpreter`] needs: the extent of the memory plan.
    pub fn arena_size(&self) -> usize {
        self.arena_size
    }
    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len() / TensorRecord::SIZE
    }
    /// Number of ops.
    pub fn op_count(&self) -> usize {
        self.ops.len() / OpRecord::SIZE
    }
    /// Number of graph inputs.
    pub fn input_count(&self) -> usize {
        self.n_inputs
    }
    /// Number of graph outputs.
    pub fn output_count(&self) -> usize {
        self.n_outputs
    }
    /// Bytes of constant data (weights, biases, tables).
    pub fn const_size(&self) -> usize {
        self.consts.len()
    }

    /// Tensor `i`.
    pub fn tensor(&self, i: u16) -> Option<TensorInfo<'p>> {
        self.check_tensor(i).ok()
    }

    /// Op `i`.
    pub fn op(&self, i: usize) -> Option<Op> {
        Op::decode(&self.op_record(i)?).ok()
    }

    /// Graph input `i`.
    pub fn input(&self, i: usize) -> Option<IoInfo<'p>> {
        (i < self.n_inputs).then(|| self.io_info(i)).flatten()
    }

    /// Graph output `i`.
    pub fn output(&self, i: usize) -> Option<IoInfo<'p>> {
        (i < self.n_outputs).then(|| self.io_info(self.n_inputs + i)).flatten()
    }

    /// The first section of a metadata kind (model card, reference profile,
    /// producer), or of any kind this runtime does not know, by raw kind.
    pub fn section(&self, kind: u16) -> Option<&'p [u8]> {
        (0..self.sections.len() / SECTION_ENTRY_SIZE)
            .map(|i| SectionEntry::decode(&self.sections[i * SECTION_ENTRY_SIZE..(i + 1) * SECTION_ENTRY_SIZE]).0)
            .find(|e| e.kind == kind)
            .map(|e| section_slice(self.bytes, &e))
    }

    /// Bytes of a constant tensor (`None` only if the model was not validated).
    pub(crate) fn const_bytes(&self, t: &Slot) -> Option<&'p [u8]> {
        self.consts.get(t.offset..t.offset.checked_add(t.size)?)
    }

    /// What the interpreter needs of tensor `i`, decoded without validating
    /// again (the loader did): no name, no per-channel scales.
    pub(crate) fn slot(&self, i: u16) -> Option<Slot> {
        let b = self.tensors.get(i as usize * TensorRecord::SIZE..(i as usize + 1) * TensorRecord::SIZE)?;
        let r = TensorRecord::decode(b);
        let mut dims = [1usize; MAX_RANK];
        for (slot, &d) in dims.iter_mut().zip(&r.dims) {
            *slot = d as usize;
        }
        Some(Slot {
            dtype: DType::from_u8(r.dtype)?,
            shape: Shape { rank: r.rank.min(MAX_RANK as u8), dims },
            storage: if r.storage == Storage::Const as u8 { Storage::Const } else { Storage::Arena },
            offset: r.offset as usize,
            size: r.size as usize,
            zero_point: if r.quant == 1 { r.quant_b as i32 } else { 0 },
            scale: if r.quant == 1 { f32::from_bits(r.quant_a) } else { 1.0 },
        })
    }

    /// The slot of graph input (`output == false`) or output `index`.
    pub(crate) fn io_slot(&self, index: usize, output: bool) -> Option<Slot> {
        let (n, base) = if output { (self.n_outputs, self.n_inputs) } else { (self.n_inputs, 0) };
        if index >= n {
            return None;
        }
        let at = (base + index) * IoRecord::SIZE;
        let (r, _) = IoRecord::decode(self.io.get(at..at + IoRecord::SIZE)?);
        self.slot(u16::try_from(r.tensor).ok()?)
    }

    /// A requantization table: `count` multipliers then `count` shifts.
    pub(crate) fn requant_table(&self, offset: u32, count: u32) -> Option<(&'p [i32], &'p [i32])> {
        let start = offset as usize;
        let n = count as usize;
        let bytes = self.consts.get(start..start.checked_add(n.checked_mul(8)?)?)?;
        let words: &[i32] = bytemuck::try_cast_slice(bytes).ok()?;
        Some(words.split_at(n))
    }

    /// The whole package the model views.
    #[cfg(feature = "alloc")]
    pub(crate) fn package_bytes(&self) -> &'p [u8] {
        self.bytes
    }

    /// The raw op records (to tell one model's decoded records from another's).
    #[cfg(feature = "alloc")]
    pub(crate) fn op_records(&self) -> &'p [u8] {
        self.ops
    }

    /// The raw tensor records.
    #[cfg(feature = "alloc")]
    pub(crate) fn tensor_records(&self) -> &'p [u8] {
        self.tensors
    }

    fn op_record(&self, i: usize) -> Option<OpRecord> {
        self.ops.get(i * OpRecord::SIZE..(i + 1) * OpRecord::SIZE).map(OpRecord::decode)
    }

    fn io_info(&self, slot: usize) -> Option<IoInfo<'p>> {
        let (r, _) = IoRecord::decode(self.io.get(slot * IoRecord::SIZE..(slot + 1) * IoRecord::SIZE)?);
        let tensor = self.tensor(u16::try_from(r.tensor).ok()?)?;
        let first = r.label_first as usize;
        let labels = self.labels.get(first * STRING_REF_SIZE..(first + r.label_count as usize) * STRING_REF_SIZE)?;
        Some(IoInfo { tensor, labels, strings: self.strings })
    }

    fn check_tensor(&self, i: u16) -> Result<TensorInfo<'p>, LoadError> {
        let index = i as usize;
        let bytes = self
            .tensors
            .get(index * TensorRecord::SIZE..(index + 1) * TensorRecord::SIZE)
            .ok_or(LoadError::BadTensor { index: index as u32, problem: "index out of range" })?;
        let r = TensorRecord::decode(bytes);
        let bad = |problem| LoadError::BadTensor { index: index as u32, problem };
        let dtype = DType::from_u8(r.dtype).ok_or(bad("unknown dtype"))?;
        let rank = r.rank as usize;
        if rank > MAX_RANK {
            return Err(bad("rank above 4"));
        }
        let mut dims = [1usize; MAX_RANK];
        let mut elements: usize = 1;
        for (d, (&raw, slot)) in r.dims.iter().zip(dims.iter_mut()).enumerate() {
            if d >= rank {
                if raw != 1 {
                    return Err(bad("dimension past the rank is not 1"));
                }
                continue;
            }
            if raw == 0 || raw > MAX_DIM {
                return Err(bad("dimension is 0 or too large"));
            }
            *slot = raw as usize;
            elements = elements.checked_mul(raw as usize).ok_or(bad("element count overflows"))?;
        }
        let size = r.size as usize;
        if elements.checked_mul(dtype.size()) != Some(size) {
            return Err(bad("byte size does not match shape and dtype"));
        }
        let offset = r.offset as usize;
        // In u64: on 32-bit targets offset + size may not fit a usize.
        let end = r.offset as u64 + r.size as u64;
        let storage = match r.storage {
            0 => {
                if end > self.arena_size as u64 {
                    return Err(bad("extends past the arena"));
                }
                if dtype != DType::I8 {
                    return Err(bad("arena tensors must be int8"));
                }
                Storage::Arena
            }
            1 => {
                if end > self.consts.len() as u64 {
                    return Err(bad("extends past the constant section"));
                }
                if !offset.is_multiple_of(dtype.size()) {
                    return Err(bad("constant not aligned to its element size"));
                }
                Storage::Const
            }
            _ => return Err(bad("unknown storage")),
        };
        let quant = match r.quant {
            0 => Quantization::None,
            1 => {
                let scale = f32::from_bits(r.quant_a);
                let zero_point = r.quant_b as i32;
                if !(scale.is_finite() && scale > 0.0) {
                    return Err(bad("scale is not a positive finite number"));
                }
                let zp_ok = match dtype {
                    DType::I8 => (-128..=127).contains(&zero_point),
                    _ => zero_point == 0,
                };
                if !zp_ok {
                    return Err(bad("zero point out of range for the dtype"));
                }
                Quantization::PerTensor { scale, zero_point }
            }
            2 => {
                let axis = r.quant_b as usize;
                if axis >= rank.max(1) {
                    return Err(bad("per-channel axis beyond the rank"));
                }
                let n = dims[axis];
                let start = r.quant_a as usize;
                let bytes = n
                    .checked_mul(4)
                    .and_then(|len| start.checked_add(len))
                    .and_then(|e| self.consts.get(start..e))
                    .ok_or(bad("per-channel scales out of bounds"))?;
                let scales: &[f32] =
                    bytemuck::try_cast_slice(bytes).map_err(|_| bad("per-channel scales misaligned"))?;
                if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                    return Err(bad("per-channel scale is not a positive finite number"));
                }
                Quantization::PerChannel { axis, scales }
            }
            _ => return Err(bad("unknown quantization kind")),
        };
        if dtype == DType::F32 && quant != Quantization::None {
            return Err(bad("f32 tensors are not quantized"));
        }
        let name = str_at(self.strings, r.name_offset, r.name_len).map_err(bad)?;
        if r.reserved != 0 || r.flags & !TENSOR_FLAG_VIEW != 0 {
            return Err(bad("reserved bits set"));
        }
        let view_of = if r.flags & TENSOR_FLAG_VIEW != 0 {
            let base_bytes = self
                .tensors
                .get(r.base as usize * TensorRecord::SIZE..(r.base as usize + 1) * TensorRecord::SIZE)
                .ok_or(bad("view of a tensor that does not exist"))?;
            let b = TensorRecord::decode(base_bytes);
            if r.base == i || b.flags & TENSOR_FLAG_VIEW != 0 {
                return Err(bad("view of itself or of another view"));
            }
            if b.storage != r.storage
                || b.offset != r.offset
                || b.size != r.size
                || b.dtype != r.dtype
                || b.quant != r.quant
                || b.quant_a != r.quant_a
                || b.quant_b != r.quant_b
            {
                return Err(bad("view differs from its base in storage, dtype or quantization"));
            }
            Some(r.base)
        } else {
            if r.base != 0 {
                return Err(bad("base set on a tensor that is not a view"));
            }
            None
        };
        Ok(TensorInfo {
            index: i,
            name,
            dtype,
            shape: Shape { rank: r.rank, dims },
            storage,
            offset,
            size,
            quant,
            view_of,
        })
    }

    fn check_io(&self) -> Result<(), LoadError> {
        for slot in 0..self.n_inputs + self.n_outputs {
            let (r, reserved) = IoRecord::decode(&self.io[slot * IoRecord::SIZE..(slot + 1) * IoRecord::SIZE]);
            let bad = |problem| LoadError::BadIo { problem };
            if reserved != 0 {
                return Err(bad("reserved word set"));
            }
            let idx = u16::try_from(r.tensor).ok().filter(|&t| (t as usize) < self.tensor_count());
            let t = self.check_tensor(idx.ok_or(bad("tensor index out of range"))?)?;
            if t.storage != Storage::Arena || t.dtype != DType::I8 || t.per_tensor().is_none() {
                return Err(bad("inputs and outputs must be per-tensor quantized int8 arena tensors"));
            }
            let first = r.label_first as usize;
            let end = first.checked_add(r.label_count as usize).ok_or(bad("labels out of range"))?;
            if end > self.labels.len() / STRING_REF_SIZE {
                return Err(bad("labels out of range"));
            }
            if r.label_count != 0 && r.label_count as usize != t.shape.last() {
                return Err(bad("label count differs from the last dimension"));
            }
            for l in first..end {
                let lr = &self.labels[l * STRING_REF_SIZE..(l + 1) * STRING_REF_SIZE];
                str_at(self.strings, rd_u32(lr, 0), rd_u32(lr, 4)).map_err(bad)?;
            }
            // Inputs must not share bytes with each other (each is written by the caller).
            if slot < self.n_inputs {
                for other in 0..slot {
                    let (o, _) = IoRecord::decode(&self.io[other * IoRecord::SIZE..(other + 1) * IoRecord::SIZE]);
                    let ot = self.check_tensor(o.tensor as u16)?;
                    if overlaps(t.range(), ot.range()) {
                        return Err(bad("two inputs share arena bytes"));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_op(&self, i: usize) -> Result<(), LoadError> {
        let index = i as u32;
        let bad = |problem| LoadError::BadOp { index, problem };
        let record = self.op_record(i).ok_or(bad("index out of range"))?;
        let op = Op::decode(&record).map_err(|e| match e {
            None => LoadError::UnsupportedOp { index, opcode: record.opcode },
            Some(problem) => bad(problem),
        })?;
        let tensor = |t: u16| {
            if (t as usize) < self.tensor_count() {
                self.check_tensor(t)
            } else {
                Err(bad("tensor index out of range"))
            }
        };
        let out = tensor(op.output())?;
        if out.storage != Storage::Arena || out.view_of.is_some() {
            return Err(bad("output must be an arena tensor, not a view"));
        }
        for t in op.inputs().into_iter().flatten() {
            let t = tensor(t)?;
            if t.storage == Storage::Arena && overlaps(t.range(), out.range()) {
                return Err(bad("output shares arena bytes with an input"));
            }
        }
        let act = |t: &TensorInfo<'p>| -> Result<(f32, i32), LoadError> {
            if t.dtype != DType::I8 {
                return Err(bad("activation is not int8"));
            }
            t.per_tensor().ok_or(bad("activation is not per-tensor quantized"))
        };
        // The filter: constant int8 of the given rank, symmetric, per tensor
        // or per output channel along `channel_axis`.
        let weights =
            |t: &TensorInfo<'p>, rank: usize, channels: usize, channel_axis: usize| -> Result<(), LoadError> {
                if t.dtype != DType::I8 || t.storage != Storage::Const || t.shape.rank() != rank {
                    return Err(bad("filter must be a constant int8 tensor of the right rank"));
                }
                match t.quant {
                    Quantization::PerTensor { zero_point: 0, .. } => Ok(()),
                    Quantization::PerChannel { axis, scales }
                        if axis == channel_axis && scales.len() == channels && t.shape.dims()[axis] == channels =>
                    {
                        Ok(())
                    }
                    _ => Err(bad("filter must be symmetric, per tensor or per output channel along its channel axis")),
                }
            };
        let bias = |b: Option<u16>, channels: usize| -> Result<(), LoadError> {
            if let Some(b) = b {
                let b = tensor(b)?;
                if b.dtype != DType::I32 || b.storage != Storage::Const || b.shape.elements() != channels {
                    return Err(bad("bias must be a constant int32 tensor with one value per output channel"));
                }
            }
            Ok(())
        };
        let requant = |offset: u32, count: u32, channels: usize| -> Result<(), LoadError> {
            if count as usize != channels && count != 1 {
                return Err(bad("requantization table size is neither 1 nor the channel count"));
            }
            let (m, s) =
                self.requant_table(offset, count).ok_or(bad("requantization table out of bounds or misaligned"))?;
            if m.iter().zip(s).any(|(&m, &s)| m < 0 || !(-31..=30).contains(&s)) {
                return Err(bad("requantization multiplier or shift out of range"));
            }
            Ok(())
        };
        let nhwc = |t: &TensorInfo<'p>| t.shape.nhwc().ok_or(bad("tensor is not rank 4 (NHWC)"));
        match op {
            Op::Conv2d { input, filter, bias: b, geometry, requant_offset, requant_count, .. }
            | Op::DepthwiseConv2d { input, filter, bias: b, geometry, requant_offset, requant_count, .. } => {
                let x = tensor(input)?;
                let w = tensor(filter)?;
                act(&x)?;
                act(&out)?;
                let (xd, yd) = (nhwc(&x)?, nhwc(&out)?);
                let wd = w.shape.nhwc().ok_or(bad("filter is not rank 4"))?;
                if xd.n != yd.n {
                    return Err(bad("batch differs between input and output"));
                }
                if let Op::DepthwiseConv2d { depth_multiplier, .. } = op {
                    if wd.n != 1 || wd.c != yd.c || xd.c.checked_mul(depth_multiplier) != Some(yd.c) {
                        return Err(bad("depthwise filter must be [1, kh, kw, in_c * multiplier]"));
                    }
                    weights(&w, 4, yd.c, 3)?;
                } else {
                    if wd.n != yd.c || wd.c == 0 || xd.c % wd.c != 0 || yd.c % (xd.c / wd.c) != 0 {
                        return Err(bad("filter [out_c, kh, kw, in_c/groups] does not fit the input and output"));
                    }
                    weights(&w, 4, yd.c, 0)?;
                }
                bias(b, yd.c)?;
                requant(requant_offset, requant_count, yd.c)?;
                if !window_fits(yd.h, geometry.stride.0, wd.h, geometry.window.0)
                    || !window_fits(yd.w, geometry.stride.1, wd.w, geometry.window.1)
                {
                    return Err(bad("convolution window coordinates exceed 32 bits"));
                }
            }
            Op::FullyConnected { input, filter, bias: b, requant_offset, requant_count, .. } => {
                let x = tensor(input)?;
                let w = tensor(filter)?;
                act(&x)?;
                act(&out)?;
                if w.shape.rank() != 2 {
                    return Err(bad("fully connected filter must be [out, in]"));
                }
                let (o, n) = (w.shape.dims()[0], w.shape.dims()[1]);
                weights(&w, 2, o, 0)?;
                let xe = x.shape.elements();
                if xe % n != 0 || (xe / n).checked_mul(o) != Some(out.shape.elements()) {
                    return Err(bad("fully connected shapes do not fit"));
                }
                bias(b, o)?;
                requant(requant_offset, requant_count, o)?;
            }
            Op::Add { input1, input2, .. } => {
                let (a, b) = (tensor(input1)?, tensor(input2)?);
                act(&a)?;
                act(&b)?;
                act(&out)?;
                if a.shape.elements() != out.shape.elements() || b.shape.elements() != out.shape.elements() {
                    return Err(bad("add inputs and output differ in size"));
                }
            }
            Op::AveragePool2d { input, .. } | Op::MaxPool2d { input, .. } => {
                let x = tensor(input)?;
                let (qx, qy) = (act(&x)?, act(&out)?);
                if qx != qy {
                    return Err(bad("pooling input and output quantization differ"));
                }
                let (xd, yd) = (nhwc(&x)?, nhwc(&out)?);
                if xd.n != yd.n || xd.c != yd.c {
                    return Err(bad("pooling changes batch or channels"));
                }
                let g = match op {
                    Op::AveragePool2d { geometry, .. } | Op::MaxPool2d { geometry, .. } => geometry,
                    _ => return Err(bad("not a pooling op")),
                };
                if !window_fits(yd.h, g.stride.0, g.window.0, 1) || !window_fits(yd.w, g.stride.1, g.window.1, 1) {
                    return Err(bad("pooling window coordinates exceed 32 bits"));
                }
                if let Op::AveragePool2d { geometry: g, .. } = op {
                    // The kernel refuses (at run time) a window whose int32 sum
                    // could overflow, and an output window that lies entirely
                    // in the padding (nothing to average): reject them here.
                    if g.window.0.saturating_mul(g.window.1) > edgefleet_kernels::reference::MAX_AVERAGE_POOL_WINDOW {
                        return Err(bad("average pool window too large"));
                    }
                    let rows = (yd.h, g.stride.0, g.padding.0, g.window.0, xd.h);
                    let cols = (yd.w, g.stride.1, g.padding.1, g.window.1, xd.w);
                    if !pool_windows_see_input(rows) || !pool_windows_see_input(cols) {
                        return Err(bad("average pool window lies entirely in the padding"));
                    }
                }
            }
            Op::Softmax { input, requant, .. } => {
                let x = tensor(input)?;
                act(&x)?;
                let (scale, zp) = act(&out)?;
                if x.shape.elements() != out.shape.elements() || x.shape.last() != out.shape.last() {
                    return Err(bad("softmax input and output shapes differ"));
                }
                if requant.is_none() && (scale != 1.0 / 256.0 || zp != -128) {
                    return Err(bad("softmax 1/256 mode needs output scale 1/256 and zero point -128"));
                }
            }
            Op::Requantize { input, .. } => {
                let x = tensor(input)?;
                act(&x)?;
                act(&out)?;
                if x.shape.elements() != out.shape.elements() {
                    return Err(bad("requantize input and output differ in size"));
                }
            }
            Op::Transpose { input, perm, .. } => {
                let x = tensor(input)?;
                act(&x)?;
                act(&out)?;
                if x.per_tensor() != out.per_tensor() {
                    return Err(bad("transpose changes quantization"));
                }
                let (xd, yd) = (x.shape, out.shape);
                if xd.rank() != 4 || yd.rank() != 4 || (0..4).any(|i| yd.dims[i] != xd.dims[perm[i]]) {
                    return Err(bad("transpose output shape is not the permuted input shape"));
                }
            }
        }
        Ok(())
    }

    /// Every arena input of every op (and every graph output at the end)
    /// still holds what its producer wrote: the last op that wrote any of its
    /// bytes is its producer, or, for graph inputs, no op wrote them yet.
    fn check_plan(&self) -> Result<(), LoadError> {
        let n_ops = self.op_count();
        // Each tensor is produced once, and never a graph input.
        for i in 0..n_ops {
            let out = self.op(i).map(|o| o.output()).unwrap_or(0);
            let dup = (0..i).any(|j| self.op(j).map(|o| o.output()) == Some(out))
                || (0..self.n_inputs).any(|k| self.input(k).map(|io| io.tensor.root()) == Some(out));
            if dup {
                return Err(LoadError::BadOp {
                    index: i as u32,
                    problem: "output tensor written by two ops or also a graph input",
                });
            }
        }
        let holds = |at: usize, t: TensorInfo<'p>| -> bool {
            let root = t.root();
            let last_writer = (0..at).rev().find_map(|j| {
                let out = self.tensor(self.op(j)?.output())?;
                overlaps(out.range(), t.range()).then_some(out.index)
            });
            match last_writer {
                Some(w) => w == root,
                None => (0..self.n_inputs).any(|k| self.input(k).map(|io| io.tensor.root()) == Some(root)),
            }
        };
        for i in 0..n_ops {
            let op = self.op(i).ok_or(LoadError::BadOp { index: i as u32, problem: "undecodable" })?;
            for t in op.inputs().into_iter().flatten() {
                let Some(info) = self.tensor(t) else { continue };
                if info.storage == Storage::Arena && !holds(i, info) {
                    return Err(LoadError::BadPlan { op: i as u32, tensor: t as u32 });
                }
            }
        }
        for k in 0..self.n_outputs {
            let io = self.output(k).ok_or(LoadError::BadIo { problem: "output unreadable" })?;
            if !holds(n_ops, io.tensor) {
                return Err(LoadError::BadPlan { op: n_ops as u32, tensor: io.tensor.index as u32 });
            }
        }
        Ok(())
    }
}

/// Whether the last input coordinate a sliding window touches,
/// `(outputs - 1) * stride + (window - 1) * dilation + 1`, fits in 32 bits:
/// the kernels compute it in `usize` and refuse to run otherwise, so on a
/// 32-bit target a package passing this check never fails at run time.
fn window_fits(outputs: usize, stride: usize, window: usize, dilation: usize) -> bool {
    let last =
        (outputs.saturating_sub(1) as u64) * stride as u64 + (window.saturating_sub(1) as u64) * dilation as u64 + 1;
    last <= u32::MAX as u64
}

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Whether the first and the last pooling window along one axis (and so,
/// since the windows move monotonically, every window) cover at least one
/// input pixel: `(outputs, stride, padding, window, input)`, the same test
/// as the average pool kernel, in `u64` so that it cannot overflow.
fn pool_windows_see_input((outputs, stride, padding, window, input): (usize, usize, usize, usize, usize)) -> bool {
    let (stride, padding, window, input) = (stride as u64, padding as u64, window as u64, input as u64);
    [0, outputs.saturating_sub(1) as u64].iter().all(|&o| {
        // Window origin in the padded frame; the image is [padding, padding + input).
        let origin = o * stride;
        let start = padding.saturating_sub(origin);
        let end = window.min((padding + input).saturating_sub(origin));
        start < end
    })
}

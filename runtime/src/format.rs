//! The `.efm` byte layout: constants and fixed-size records, shared by the
//! loader (decode) and the writer (encode). `docs/package-format.md` is the
//! normative description; this module is its executable form.
//!
//! Everything is little-endian. A package is a 64-byte header, a section table
//! and 16-byte-aligned sections. Records are fixed-size so that validation is
//! a bounded loop and nothing needs an allocator.

/// The first eight bytes of every package (PNG-style: a high byte catches
/// 7-bit transports, CR LF / LF catch newline translation, 0x1A stops `type`).
pub const MAGIC: [u8; 8] = *b"\x89EFM\r\n\x1a\n";
/// Incompatible layout changes bump the major version.
pub const VERSION_MAJOR: u16 = 1;
/// Compatible additions (new optional sections, new opcodes) bump the minor version.
pub const VERSION_MINOR: u16 = 0;
/// Size of the fixed header.
pub const HEADER_SIZE: usize = 64;
/// Size of one section table entry.
pub const SECTION_ENTRY_SIZE: usize = 16;
/// Alignment of every section and of every constant inside `CONST`.
pub const ALIGN: usize = 16;
/// Byte range covered by the CRC-32: everything after the CRC field.
pub const CRC_START: usize = 24;

/// CRC-32/ISO-HDLC (zlib's), byte-table implementation: a 1 KiB table in
/// flash instead of the 16 KiB of slice-by-16 variants.
pub fn crc32(bytes: &[u8]) -> u32 {
    const CRC: crc::Crc<u32, crc::Table<1>> = crc::Crc::<u32, crc::Table<1>>::new(&crc::CRC_32_ISO_HDLC);
    CRC.checksum(bytes)
}

/// Header field offsets.
pub mod header {
    /// `[u8; 8]` magic.
    pub const MAGIC: usize = 0;
    /// `u16` major version.
    pub const MAJOR: usize = 8;
    /// `u16` minor version.
    pub const MINOR: usize = 10;
    /// `u32` header size (64).
    pub const HEADER_SIZE: usize = 12;
    /// `u32` total file size.
    pub const FILE_SIZE: usize = 16;
    /// `u32` CRC-32 (ISO-HDLC) of bytes `[24, file_size)`.
    pub const CRC32: usize = 20;
    /// `u32` number of section table entries.
    pub const SECTION_COUNT: usize = 24;
    /// `u32` bytes of arena the memory plan needs.
    pub const ARENA_SIZE: usize = 28;
    /// `u32` flags, must be 0 in version 1.
    pub const FLAGS: usize = 32;
    /// Bytes `[36, 64)` are reserved and must be 0.
    pub const RESERVED: usize = 36;
}

/// Section kinds. Kinds below 16 are structural; 16 and up hold metadata the
/// runtime hands out but does not interpret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum SectionKind {
    /// Tensor records ([`TensorRecord`]).
    Tensors = 1,
    /// Op records ([`OpRecord`]), in execution order.
    Ops = 2,
    /// Graph inputs and outputs ([`IoRecord`]): `u32` input count, `u32` output count, records.
    Io = 3,
    /// UTF-8 string pool referenced by (offset, length) pairs.
    Strings = 4,
    /// Constant data (weights, biases, requantization tables), 16-byte aligned entries.
    Const = 5,
    /// Class labels: (offset, length) pairs into `Strings`.
    Labels = 6,
    /// Model card (UTF-8 JSON).
    ModelCard = 16,
    /// Reference data profile for drift monitoring (format owned by the agent).
    ReferenceProfile = 17,
    /// Producer information (UTF-8 JSON: compiler version, options).
    Producer = 18,
}

impl SectionKind {
    /// The kind for a raw value, if this runtime knows it.
    pub fn from_u16(v: u16) -> Option<SectionKind> {
        Some(match v {
            1 => SectionKind::Tensors,
            2 => SectionKind::Ops,
            3 => SectionKind::Io,
            4 => SectionKind::Strings,
            5 => SectionKind::Const,
            6 => SectionKind::Labels,
            16 => SectionKind::ModelCard,
            17 => SectionKind::ReferenceProfile,
            18 => SectionKind::Producer,
            _ => return None,
        })
    }
}

/// Section flag: a reader that does not know this section kind must reject the package.
pub const SECTION_REQUIRED: u16 = 1;

/// Tensor element types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DType {
    /// Signed 8-bit (activations, weights).
    I8 = 1,
    /// Signed 32-bit (biases).
    I32 = 2,
    /// 32-bit float (per-channel scales are stored this way too).
    F32 = 3,
}

impl DType {
    /// From the raw byte.
    pub fn from_u8(v: u8) -> Option<DType> {
        match v {
            1 => Some(DType::I8),
            2 => Some(DType::I32),
            3 => Some(DType::F32),
            _ => None,
        }
    }
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I32 | DType::F32 => 4,
        }
    }
    /// Lower-case name (`i8`, `i32`, `f32`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::I8 => "i8",
            DType::I32 => "i32",
            DType::F32 => "f32",
        }
    }
}

/// Where a tensor's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Storage {
    /// In the caller's arena at `offset`, planned by the compiler.
    Arena = 0,
    /// In the package's `CONST` section at `offset` (read in place, zero-copy).
    Const = 1,
}

/// Quantization kind of a tensor record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum QuantKind {
    /// Not quantized (raw integers or floats).
    None = 0,
    /// One scale and zero point.
    PerTensor = 1,
    /// One scale per slice along an axis, zero points 0 (symmetric weights).
    PerChannel = 2,
}

/// Tensor record flag: this tensor is a view (a reshape) of the tensor whose
/// index is in `base`; it shares the base's storage exactly.
pub const TENSOR_FLAG_VIEW: u8 = 1;

/// Maximum tensor rank.
pub const MAX_RANK: usize = 4;
/// "No tensor" in an op's input list (an absent bias).
pub const NO_TENSOR: u16 = 0xFFFF;

/// Reads a little-endian `u16` at `off`; the caller guarantees bounds.
#[inline]
pub(crate) fn rd_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
/// Reads a little-endian `u32` at `off`; the caller guarantees bounds.
#[inline]
pub(crate) fn rd_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
#[cfg(feature = "alloc")]
#[inline]
pub(crate) fn wr_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
#[cfg(feature = "alloc")]
#[inline]
pub(crate) fn wr_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// One entry of the section table (16 bytes: kind u16, flags u16, offset u32,
/// size u32, reserved u32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionEntry {
    /// Raw section kind.
    pub kind: u16,
    /// [`SECTION_REQUIRED`] or 0.
    pub flags: u16,
    /// Absolute byte offset, multiple of [`ALIGN`].
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

impl SectionEntry {
    /// Decodes from exactly [`SECTION_ENTRY_SIZE`] bytes.
    pub fn decode(b: &[u8]) -> (SectionEntry, u32) {
        (
            SectionEntry { kind: rd_u16(b, 0), flags: rd_u16(b, 2), offset: rd_u32(b, 4), size: rd_u32(b, 8) },
            rd_u32(b, 12),
        )
    }
    /// Encodes into exactly [`SECTION_ENTRY_SIZE`] bytes.
    #[cfg(feature = "alloc")]
    pub fn encode(&self, b: &mut [u8]) {
        wr_u16(b, 0, self.kind);
        wr_u16(b, 2, self.flags);
        wr_u32(b, 4, self.offset);
        wr_u32(b, 8, self.size);
        wr_u32(b, 12, 0);
    }
}

/// A tensor record (48 bytes).
///
/// | off | type | field |
/// |----:|------|-------|
/// | 0 | u8 | dtype ([`DType`]) |
/// | 1 | u8 | rank (0..=4) |
/// | 2 | u8 | storage ([`Storage`]) |
/// | 3 | u8 | quantization ([`QuantKind`]) |
/// | 4 | u32×4 | dims (entries past `rank` are 1) |
/// | 20 | u32 | offset (arena or `CONST`) |
/// | 24 | u32 | size in bytes |
/// | 28 | f32 / u32 | scale (per-tensor) or `CONST` offset of f32 scales (per-channel) |
/// | 32 | i32 / u32 | zero point (per-tensor) or axis (per-channel) |
/// | 36 | u32 | name offset in `STRINGS` |
/// | 40 | u32 | name length |
/// | 44 | u8 | flags ([`TENSOR_FLAG_VIEW`]) |
/// | 45 | u8 | reserved, 0 |
/// | 46 | u16 | base tensor of a view, else 0 |
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorRecord {
    /// Raw dtype.
    pub dtype: u8,
    /// Rank.
    pub rank: u8,
    /// Raw storage.
    pub storage: u8,
    /// Raw quantization kind.
    pub quant: u8,
    /// Dimensions.
    pub dims: [u32; MAX_RANK],
    /// Byte offset.
    pub offset: u32,
    /// Byte size.
    pub size: u32,
    /// Scale bits or per-channel scale offset.
    pub quant_a: u32,
    /// Zero point or axis.
    pub quant_b: u32,
    /// Name offset in `STRINGS`.
    pub name_offset: u32,
    /// Name length.
    pub name_len: u32,
    /// Flags.
    pub flags: u8,
    /// Reserved byte (must be 0).
    pub reserved: u8,
    /// Base tensor of a view.
    pub base: u16,
}

impl TensorRecord {
    /// Record size in bytes.
    pub const SIZE: usize = 48;

    /// Decodes from exactly [`Self::SIZE`] bytes.
    pub fn decode(b: &[u8]) -> TensorRecord {
        TensorRecord {
            dtype: b[0],
            rank: b[1],
            storage: b[2],
            quant: b[3],
            dims: [rd_u32(b, 4), rd_u32(b, 8), rd_u32(b, 12), rd_u32(b, 16)],
            offset: rd_u32(b, 20),
            size: rd_u32(b, 24),
            quant_a: rd_u32(b, 28),
            quant_b: rd_u32(b, 32),
            name_offset: rd_u32(b, 36),
            name_len: rd_u32(b, 40),
            flags: b[44],
            reserved: b[45],
            base: rd_u16(b, 46),
        }
    }

    /// Encodes into exactly [`Self::SIZE`] bytes.
    #[cfg(feature = "alloc")]
    pub fn encode(&self, b: &mut [u8]) {
        b[0] = self.dtype;
        b[1] = self.rank;
        b[2] = self.storage;
        b[3] = self.quant;
        for (i, d) in self.dims.iter().enumerate() {
            wr_u32(b, 4 + 4 * i, *d);
        }
        wr_u32(b, 20, self.offset);
        wr_u32(b, 24, self.size);
        wr_u32(b, 28, self.quant_a);
        wr_u32(b, 32, self.quant_b);
        wr_u32(b, 36, self.name_offset);
        wr_u32(b, 40, self.name_len);
        b[44] = self.flags;
        b[45] = self.reserved;
        wr_u16(b, 46, self.base);
    }
}

/// Opcodes. Adding one is a minor version bump: older runtimes reject the
/// package with [`crate::LoadError::UnsupportedOp`] instead of misreading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum OpCode {
    /// 2-D convolution, NHWC, filter OHWI, optional groups.
    Conv2d = 1,
    /// Depthwise 2-D convolution, filter `[1, kh, kw, c * m]`.
    DepthwiseConv2d = 2,
    /// Fully connected, filter `[out, in]`.
    FullyConnected = 3,
    /// Elementwise add with rescaling.
    Add = 4,
    /// Average pooling.
    AveragePool2d = 5,
    /// Max pooling.
    MaxPool2d = 6,
    /// Softmax over the last axis.
    Softmax = 7,
    /// int8 → int8 rescale with clamp.
    Requantize = 8,
    /// 4-D transpose.
    Transpose = 9,
}

impl OpCode {
    /// From the raw value, if this runtime knows it.
    pub fn from_u16(v: u16) -> Option<OpCode> {
        Some(match v {
            1 => OpCode::Conv2d,
            2 => OpCode::DepthwiseConv2d,
            3 => OpCode::FullyConnected,
            4 => OpCode::Add,
            5 => OpCode::AveragePool2d,
            6 => OpCode::MaxPool2d,
            7 => OpCode::Softmax,
            8 => OpCode::Requantize,
            9 => OpCode::Transpose,
            _ => return None,
        })
    }
    /// Name as shown by `edgefleet inspect`.
    pub const fn name(self) -> &'static str {
        match self {
            OpCode::Conv2d => "Conv2D",
            OpCode::DepthwiseConv2d => "DepthwiseConv2D",
            OpCode::FullyConnected => "FullyConnected",
            OpCode::Add => "Add",
            OpCode::AveragePool2d => "AveragePool2D",
            OpCode::MaxPool2d => "MaxPool2D",
            OpCode::Softmax => "Softmax",
            OpCode::Requantize => "Requantize",
            OpCode::Transpose => "Transpose",
        }
    }
}

/// Number of `u32` parameter words in an op record.
pub const OP_PARAMS: usize = 13;
/// Maximum inputs of one op.
pub const OP_MAX_INPUTS: usize = 3;

/// An op record (64 bytes).
///
/// | off | type | field |
/// |----:|------|-------|
/// | 0 | u16 | opcode ([`OpCode`]) |
/// | 2 | u8 | input count (≤ 3) |
/// | 3 | u8 | output count (1) |
/// | 4 | u16×3 | input tensors ([`NO_TENSOR`] for an absent optional input) |
/// | 10 | u16 | output tensor |
/// | 12 | u32×13 | parameters, meaning per opcode (see [`param`]) |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpRecord {
    /// Raw opcode.
    pub opcode: u16,
    /// Input count.
    pub n_inputs: u8,
    /// Output count.
    pub n_outputs: u8,
    /// Input tensor indices.
    pub inputs: [u16; OP_MAX_INPUTS],
    /// Output tensor index.
    pub output: u16,
    /// Parameter words.
    pub params: [u32; OP_PARAMS],
}

impl OpRecord {
    /// Record size in bytes.
    pub const SIZE: usize = 64;

    /// Decodes from exactly [`Self::SIZE`] bytes.
    pub fn decode(b: &[u8]) -> OpRecord {
        let mut params = [0u32; OP_PARAMS];
        for (i, p) in params.iter_mut().enumerate() {
            *p = rd_u32(b, 12 + 4 * i);
        }
        OpRecord {
            opcode: rd_u16(b, 0),
            n_inputs: b[2],
            n_outputs: b[3],
            inputs: [rd_u16(b, 4), rd_u16(b, 6), rd_u16(b, 8)],
            output: rd_u16(b, 10),
            params,
        }
    }

    /// Encodes into exactly [`Self::SIZE`] bytes.
    #[cfg(feature = "alloc")]
    pub fn encode(&self, b: &mut [u8]) {
        wr_u16(b, 0, self.opcode);
        b[2] = self.n_inputs;
        b[3] = self.n_outputs;
        for (i, t) in self.inputs.iter().enumerate() {
            wr_u16(b, 4 + 2 * i, *t);
        }
        wr_u16(b, 10, self.output);
        for (i, p) in self.params.iter().enumerate() {
            wr_u32(b, 12 + 4 * i, *p);
        }
    }
}

/// Parameter word indices inside [`OpRecord::params`].
///
/// Words 0–2 are shared: requantization table and fused clamp. A requant table
/// is `count` i32 multipliers followed by `count` i32 shifts at a 16-aligned
/// `CONST` offset; `count` is 1 (per tensor) or the output channel count.
pub mod param {
    /// `CONST` offset of the requantization table (conv, depthwise, fully connected).
    pub const REQUANT_OFFSET: usize = 0;
    /// Entries in the requantization table.
    pub const REQUANT_COUNT: usize = 1;
    /// Fused clamp: min i8 in bits 0..8, max i8 in bits 8..16.
    pub const CLAMP: usize = 2;
    /// Conv / pool: stride along height.
    pub const STRIDE_H: usize = 3;
    /// Conv / pool: stride along width.
    pub const STRIDE_W: usize = 4;
    /// Conv: dilation along height. Pool: window height.
    pub const DILATION_H: usize = 5;
    /// Conv: dilation along width. Pool: window width.
    pub const DILATION_W: usize = 6;
    /// Pool: window height (shares the dilation word).
    pub const FILTER_H: usize = 5;
    /// Pool: window width (shares the dilation word).
    pub const FILTER_W: usize = 6;
    /// Conv / pool: padding above the first row.
    pub const PAD_TOP: usize = 7;
    /// Conv / pool: padding left of the first column.
    pub const PAD_LEFT: usize = 8;
    /// Depthwise: output channels per input channel.
    pub const DEPTH_MULTIPLIER: usize = 9;

    /// Add: left shift applied to both inputs (20).
    pub const ADD_LEFT_SHIFT: usize = 3;
    /// Add: input 1 multiplier.
    pub const ADD_IN1_MULT: usize = 4;
    /// Add: input 1 shift.
    pub const ADD_IN1_SHIFT: usize = 5;
    /// Add: input 2 multiplier.
    pub const ADD_IN2_MULT: usize = 6;
    /// Add: input 2 shift.
    pub const ADD_IN2_SHIFT: usize = 7;
    /// Add: output multiplier.
    pub const ADD_OUT_MULT: usize = 8;
    /// Add: output shift.
    pub const ADD_OUT_SHIFT: usize = 9;

    /// Softmax: input multiplier.
    pub const SOFTMAX_IN_MULT: usize = 3;
    /// Softmax: input left shift.
    pub const SOFTMAX_IN_SHIFT: usize = 4;
    /// Softmax: `diff_min` (negative).
    pub const SOFTMAX_DIFF_MIN: usize = 5;
    /// Softmax: 0 = TFLite 1/256 output, 1 = requantized output.
    pub const SOFTMAX_MODE: usize = 6;
    /// Softmax (mode 1): output multiplier.
    pub const SOFTMAX_OUT_MULT: usize = 7;
    /// Softmax (mode 1): output shift.
    pub const SOFTMAX_OUT_SHIFT: usize = 8;

    /// Requantize: multiplier.
    pub const REQ_MULT: usize = 3;
    /// Requantize: shift.
    pub const REQ_SHIFT: usize = 4;

    /// Transpose: permutation, 4 words from here.
    pub const PERM: usize = 3;

    /// Packs a clamp into its parameter word.
    pub const fn pack_clamp(min: i8, max: i8) -> u32 {
        (min as u8 as u32) | ((max as u8 as u32) << 8)
    }
}

/// A graph input or output (16 bytes: tensor u32, first label u32, label count
/// u32, reserved u32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoRecord {
    /// Tensor index.
    pub tensor: u32,
    /// Index of the first label in `LABELS`.
    pub label_first: u32,
    /// Number of labels (0 if none).
    pub label_count: u32,
}

impl IoRecord {
    /// Record size in bytes.
    pub const SIZE: usize = 16;
    /// Decodes from exactly [`Self::SIZE`] bytes; the reserved word is returned too.
    pub fn decode(b: &[u8]) -> (IoRecord, u32) {
        (IoRecord { tensor: rd_u32(b, 0), label_first: rd_u32(b, 4), label_count: rd_u32(b, 8) }, rd_u32(b, 12))
    }
    /// Encodes into exactly [`Self::SIZE`] bytes.
    #[cfg(feature = "alloc")]
    pub fn encode(&self, b: &mut [u8]) {
        wr_u32(b, 0, self.tensor);
        wr_u32(b, 4, self.label_first);
        wr_u32(b, 8, self.label_count);
        wr_u32(b, 12, 0);
    }
}

/// A string reference in `LABELS` (8 bytes: offset u32, length u32 into `STRINGS`).
pub const STRING_REF_SIZE: usize = 8;

//! One test per `LoadError` variant: a specific corruption of a valid
//! package gives exactly that error (variant, index and problem). Mutations
//! behind the checksum are resealed so that they reach the structural checks.

use edgefleet_runtime::format::{HEADER_SIZE, NO_TENSOR, OpRecord, SectionKind, TensorRecord, header, param};
use edgefleet_runtime::writer::reseal;
use edgefleet_runtime::{Interpreter, LoadError, Model};

use crate::common::{
    AddPool, Layout, TinyCnn, aligned, get_u32, mutated, patch_io, patch_op, patch_tensor, section_entry_at,
    section_range, set_u16, set_u32, tensor_record,
};

// Tensor indices of the tiny CNN.
const CNN_INPUT: usize = 0;
const CONV_W: usize = 1;
const CONV_B: usize = 2;
const CONV_OUT: usize = 3;
const DW_W: usize = 4;
const POOL: usize = 7;
const FLAT: usize = 8;
const FC_B: usize = 10;
const PROBS: usize = 12;
// Op indices of the tiny CNN.
const OP_CONV: usize = 0;
const OP_DW: usize = 1;
const OP_POOL: usize = 2;
const OP_FC: usize = 3;
const OP_SOFTMAX: usize = 4;

fn cnn() -> Vec<u8> {
    TinyCnn::new().package(Layout::Reuse)
}
fn cnn_probe() -> Vec<u8> {
    TinyCnn::new().package(Layout::Probe)
}
fn add_pool() -> Vec<u8> {
    AddPool::new().package(Layout::Reuse)
}

const TENSORS: u16 = SectionKind::Tensors as u16;
const OPS: u16 = SectionKind::Ops as u16;
const IO: u16 = SectionKind::Io as u16;
const STRINGS: u16 = SectionKind::Strings as u16;
const CONST: u16 = SectionKind::Const as u16;
const LABELS: u16 = SectionKind::Labels as u16;

#[track_caller]
fn assert_load_err(bytes: &[u8], want: LoadError) {
    let buf = aligned(bytes);
    let Err(got) = Model::load(&buf) else { panic!("expected {want:?}, but the package loaded") };
    assert_eq!(got, want);
    assert!(!got.to_string().is_empty());
}

#[track_caller]
fn assert_loads(bytes: &[u8]) {
    let buf = aligned(bytes);
    if let Err(e) = Model::load(&buf) {
        panic!("expected the package to load, got {e}");
    }
}

/// Absolute position of byte `off` of the `CONST` section.
fn const_at(b: &[u8], off: u32) -> usize {
    section_range(b, CONST).unwrap().start + off as usize
}

#[test]
fn valid_packages_load() {
    for (name, bytes) in crate::common::valid_packages() {
        let buf = aligned(&bytes);
        let model = Model::load(&buf).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(model.as_bytes().len(), bytes.len());
        let mut arena = vec![0u8; model.arena_size()];
        Interpreter::new(&model, &mut arena).unwrap().invoke().unwrap();
    }
}

#[test]
fn truncated_below_the_header() {
    let b = cnn();
    for len in [0, 1, 8, 24, HEADER_SIZE - 1] {
        assert_load_err(&b[..len], LoadError::Truncated { len });
    }
}

#[test]
fn bad_magic() {
    let b = cnn();
    for i in 0..8 {
        let mut m = b.clone();
        m[i] ^= 0x20;
        assert_load_err(&m, LoadError::BadMagic);
    }
    // A transport that turned CR LF into LF.
    let mut m = b[..4].to_vec();
    m.extend_from_slice(&b[5..]);
    assert_load_err(&m, LoadError::BadMagic);
}

#[test]
fn unsupported_major_version() {
    for major in [0u16, 2, 0xFFFF] {
        let m = mutated(&cnn(), |b| {
            set_u16(b, header::MAJOR, major);
            set_u16(b, header::MINOR, 3);
        });
        assert_load_err(&m, LoadError::UnsupportedVersion { major, minor: 3 });
    }
    // A newer minor version is compatible (and informational).
    let mut m = cnn();
    set_u16(&mut m, header::MINOR, 7);
    let buf = aligned(&m);
    assert_eq!(Model::load(&buf).unwrap().version(), (1, 7));
}

#[test]
fn size_mismatch_truncated_or_padded() {
    let b = cnn();
    let len = b.len();
    for cut in [1, 16, len - HEADER_SIZE] {
        assert_load_err(&b[..len - cut], LoadError::SizeMismatch { declared: len as u32, actual: len - cut });
    }
    let mut padded = b.clone();
    padded.extend_from_slice(&[0; 4]);
    assert_load_err(&padded, LoadError::SizeMismatch { declared: len as u32, actual: len + 4 });
    // Resealing does not help: the declared size is part of the header.
    reseal(&mut padded);
    assert_load_err(&padded, LoadError::SizeMismatch { declared: len as u32, actual: len + 4 });
    let m = mutated(&b, |b| set_u32(b, header::FILE_SIZE, len as u32 + 1));
    assert_load_err(&m, LoadError::SizeMismatch { declared: len as u32 + 1, actual: len });
}

#[test]
fn checksum_mismatch() {
    let b = cnn();
    let stored = get_u32(&b, header::CRC32);
    // One flipped bit in the weights, in the section table, in the header's covered part.
    for at in [const_at(&b, 5), HEADER_SIZE + 5, header::ARENA_SIZE, b.len() - 1] {
        let mut m = b.clone();
        m[at] ^= 0x10;
        let mut sealed = m.clone();
        reseal(&mut sealed);
        let computed = get_u32(&sealed, header::CRC32);
        assert_ne!(computed, stored);
        assert_load_err(&m, LoadError::ChecksumMismatch { stored, computed });
    }
    // A corrupted CRC field.
    let mut m = b.clone();
    set_u32(&mut m, header::CRC32, stored ^ 1);
    assert_load_err(&m, LoadError::ChecksumMismatch { stored: stored ^ 1, computed: stored });
}

#[test]
fn misaligned_buffer() {
    let b = cnn();
    for shift in 1..=3 {
        let mut v = vec![0u8; shift];
        v.extend_from_slice(&b);
        let buf = aligned(&v);
        assert_eq!(Model::load(&buf[shift..]).map(|_| ()), Err(LoadError::Misaligned));
    }
    // 4-byte alignment is enough.
    let mut v = vec![0u8; 4];
    v.extend_from_slice(&b);
    let buf = aligned(&v);
    assert!(Model::load(&buf[4..]).is_ok());
}

#[test]
fn bad_header() {
    let b = cnn();
    let reserved = LoadError::BadHeader { problem: "flags or reserved bytes are not 0" };
    for at in [header::RESERVED, header::RESERVED + 13, HEADER_SIZE - 1] {
        assert_load_err(&mutated(&b, |m| m[at] = 1), reserved);
    }
    assert_load_err(&mutated(&b, |m| set_u32(m, header::FLAGS, 1)), reserved);
    for size in [0, 60, 128] {
        let m = mutated(&b, |m| set_u32(m, header::HEADER_SIZE, size));
        assert_load_err(&m, LoadError::BadHeader { problem: "header size is not 64" });
    }
    for count in [1000, u32::MAX] {
        let m = mutated(&b, |m| set_u32(m, header::SECTION_COUNT, count));
        assert_load_err(&m, LoadError::BadHeader { problem: "section table extends past the end" });
    }
    let m = mutated(&b, |m| set_u32(m, header::ARENA_SIZE, 1025));
    assert_load_err(&m, LoadError::BadHeader { problem: "arena size differs from the extent of the memory plan" });
    // Smaller than the plan: the tensor that no longer fits is named.
    let m = mutated(&b, |m| set_u32(m, header::ARENA_SIZE, 1023));
    assert_load_err(&m, LoadError::BadTensor { index: CONV_OUT as u32, problem: "extends past the arena" });
}

#[test]
fn bad_section() {
    let b = cnn();
    let entry = |kind| section_entry_at(&b, kind);
    let bad = |kind, problem| LoadError::BadSection { kind, problem };
    let tensors = section_range(&b, TENSORS).unwrap();

    // Overlap: the ops section moved onto the tensors.
    let m = mutated(&b, |m| set_u32(m, entry(OPS) + 4, tensors.start as u32));
    assert_load_err(&m, bad(OPS, "overlaps another section"));
    // Misaligned.
    let m = mutated(&b, |m| set_u32(m, entry(CONST) + 4, get_u32(&b, entry(CONST) + 4) + 4));
    assert_load_err(&m, bad(CONST, "offset not 16-byte aligned"));
    // Out of bounds: past the end, overflowing, inside the header or table.
    let m = mutated(&b, |m| set_u32(m, entry(CONST) + 8, b.len() as u32));
    assert_load_err(&m, bad(CONST, "out of bounds"));
    let m = mutated(&b, |m| set_u32(m, entry(STRINGS) + 8, u32::MAX));
    assert_load_err(&m, bad(STRINGS, "out of bounds"));
    let m = mutated(&b, |m| set_u32(m, entry(TENSORS) + 4, 0));
    assert_load_err(&m, bad(TENSORS, "out of bounds"));
    let m = mutated(&b, |m| set_u32(m, entry(TENSORS) + 4, HEADER_SIZE as u32));
    assert_load_err(&m, bad(TENSORS, "out of bounds"));
    // Duplicate: the strings entry relabelled as a second CONST.
    let m = mutated(&b, |m| set_u16(m, entry(STRINGS), CONST));
    assert_load_err(&m, bad(CONST, "duplicate section"));
    // Reserved flag bits and the reserved word.
    let m = mutated(&b, |m| set_u16(m, entry(IO) + 2, 3));
    assert_load_err(&m, bad(IO, "reserved bits set"));
    let m = mutated(&b, |m| set_u32(m, entry(IO) + 12, 1));
    assert_load_err(&m, bad(IO, "reserved bits set"));
    // Record sections whose size is not a whole number of records.
    let m = mutated(&b, |m| set_u32(m, entry(TENSORS) + 8, (tensors.len() - 1) as u32));
    assert_load_err(&m, bad(TENSORS, "size is not a positive multiple of 48"));
    let m = mutated(&b, |m| set_u32(m, entry(TENSORS) + 8, 0));
    assert_load_err(&m, bad(TENSORS, "size is not a positive multiple of 48"));
    let m = mutated(&b, |m| set_u32(m, entry(OPS) + 8, OpRecord::SIZE as u32 + 4));
    assert_load_err(&m, bad(OPS, "size is not a positive multiple of 64"));
    let m = mutated(&b, |m| set_u32(m, entry(OPS) + 8, 0));
    assert_load_err(&m, bad(OPS, "size is not a positive multiple of 64"));
    let m = mutated(&b, |m| set_u32(m, entry(LABELS) + 8, get_u32(&b, entry(LABELS) + 8) - 4));
    assert_load_err(&m, bad(LABELS, "size is not a multiple of 8"));
}

#[test]
fn missing_section() {
    let b = cnn();
    for kind in [TENSORS, OPS, IO, STRINGS, CONST] {
        // Relabelled as a (known, uninterpreted) model card.
        let m = mutated(&b, |m| set_u16(m, section_entry_at(&b, kind), SectionKind::ModelCard as u16));
        assert_load_err(&m, LoadError::MissingSection { kind });
    }
    // LABELS is optional as a section, but the output refers to labels.
    let m = mutated(&b, |m| {
        let at = section_entry_at(&b, LABELS);
        set_u16(m, at, 0x0100);
        set_u16(m, at + 2, 0);
    });
    assert_load_err(&m, LoadError::BadIo { problem: "labels out of range" });
}

#[test]
fn unknown_required_section() {
    let cnn = TinyCnn::new();
    let m = cnn.package_with(Layout::Reuse, &[(0x4321, true, b"future")]);
    assert_load_err(&m, LoadError::UnknownRequiredSection { kind: 0x4321 });
    // The same bytes as an optional section are ignored, metadata is handed out.
    let m = cnn.package_with(
        Layout::Reuse,
        &[(0x4321, false, b"future"), (SectionKind::ModelCard as u16, false, b"{\"name\":\"tiny\"}")],
    );
    let buf = aligned(&m);
    let model = Model::load(&buf).expect("unknown optional section is ignored");
    assert_eq!(model.section(0x4321), Some(&b"future"[..]));
    assert_eq!(model.section(SectionKind::ModelCard as u16), Some(&b"{\"name\":\"tiny\"}"[..]));
    assert_eq!(model.section(0x4322), None);
    let mut arena = vec![0u8; model.arena_size()];
    Interpreter::new(&model, &mut arena).unwrap().invoke().unwrap();
    // A required flag on a known metadata kind is fine too.
    let m = cnn.package_with(Layout::Reuse, &[(SectionKind::Producer as u16, true, b"{}")]);
    assert_loads(&m);
}

type TensorPatch = fn(&mut TensorRecord);

#[test]
fn bad_tensor() {
    let b = cnn();
    let const_len = section_range(&b, CONST).unwrap().len() as u32;
    let cases: &[(usize, TensorPatch, &str)] = &[
        (CNN_INPUT, |r| r.dtype = 0, "unknown dtype"),
        (CNN_INPUT, |r| r.dtype = 4, "unknown dtype"),
        (CONV_OUT, |r| r.rank = 5, "rank above 4"),
        (FLAT, |r| r.dims[2] = 2, "dimension past the rank is not 1"),
        (CONV_OUT, |r| r.dims[1] = 0, "dimension is 0 or too large"),
        (CONV_OUT, |r| r.dims[3] = (1 << 24) + 1, "dimension is 0 or too large"),
        (CONV_OUT, |r| r.size -= 1, "byte size does not match shape and dtype"),
        (CONV_B, |r| r.size = 8, "byte size does not match shape and dtype"),
        (PROBS, |r| r.offset = 1021, "extends past the arena"),
        (PROBS, |r| r.offset = u32::MAX, "extends past the arena"),
        (CONV_B, |r| r.storage = 0, "arena tensors must be int8"),
        (CONV_B, |r| r.offset += 2, "constant not aligned to its element size"),
        (CNN_INPUT, |r| r.storage = 2, "unknown storage"),
        (CNN_INPUT, |r| r.quant = 3, "unknown quantization kind"),
        (CNN_INPUT, |r| r.quant_a = f32::NAN.to_bits(), "scale is not a positive finite number"),
        (CNN_INPUT, |r| r.quant_a = f32::INFINITY.to_bits(), "scale is not a positive finite number"),
        (CNN_INPUT, |r| r.quant_a = (-0.5f32).to_bits(), "scale is not a positive finite number"),
        (CNN_INPUT, |r| r.quant_a = 0, "scale is not a positive finite number"),
        (CNN_INPUT, |r| r.quant_b = 128, "zero point out of range for the dtype"),
        (CNN_INPUT, |r| r.quant_b = -129i32 as u32, "zero point out of range for the dtype"),
        (
            CONV_B,
            |r| {
                r.quant = 1;
                r.quant_a = 1.0f32.to_bits();
                r.quant_b = 1;
            },
            "zero point out of range for the dtype",
        ),
        (CONV_W, |r| r.quant_b = 4, "per-channel axis beyond the rank"),
        (CONV_B, |r| r.quant_b = 1, "per-channel axis beyond the rank"),
        (CONV_W, |r| r.quant_a = u32::MAX - 3, "per-channel scales out of bounds"),
        (CONV_W, |r| r.quant_a += 2, "per-channel scales misaligned"),
        (CONV_B, |r| r.dtype = 3, "f32 tensors are not quantized"),
        (CNN_INPUT, |r| r.name_offset = 100_000, "string out of bounds"),
        (CNN_INPUT, |r| r.name_len = u32::MAX, "string out of bounds"),
        (CNN_INPUT, |r| r.reserved = 1, "reserved bits set"),
        (CNN_INPUT, |r| r.flags = 2, "reserved bits set"),
        (FLAT, |r| r.base = 200, "view of a tensor that does not exist"),
        (FLAT, |r| r.base = NO_TENSOR, "view of a tensor that does not exist"),
        (FLAT, |r| r.base = FLAT as u16, "view of itself or of another view"),
        (
            POOL,
            |r| {
                r.flags = 1;
                r.base = FLAT as u16;
            },
            "view of itself or of another view",
        ),
        (FLAT, |r| r.offset = 0, "view differs from its base in storage, dtype or quantization"),
        (FLAT, |r| r.quant_b = 0, "view differs from its base in storage, dtype or quantization"),
        (CONV_OUT, |r| r.base = 1, "base set on a tensor that is not a view"),
    ];
    for &(index, patch, problem) in cases {
        let m = mutated(&b, |m| patch_tensor(m, index, patch));
        assert_load_err(&m, LoadError::BadTensor { index: index as u32, problem });
    }
    // Offsets relative to the CONST section.
    let m = mutated(&b, |m| patch_tensor(m, CONV_W, |r| r.offset = const_len - 8));
    assert_load_err(&m, LoadError::BadTensor { index: CONV_W as u32, problem: "extends past the constant section" });
    // A per-channel scale of 0 (bytes inside CONST).
    let scales = tensor_record(&b, CONV_W).quant_a;
    let m = mutated(&b, |m| set_u32(m, const_at(&b, scales + 12), 0));
    assert_load_err(
        &m,
        LoadError::BadTensor { index: CONV_W as u32, problem: "per-channel scale is not a positive finite number" },
    );
    // A name that is not UTF-8 (bytes inside STRINGS).
    let name = tensor_record(&b, CONV_OUT);
    let at = section_range(&b, STRINGS).unwrap().start + name.name_offset as usize;
    let m = mutated(&b, |m| m[at] = 0xFF);
    assert_load_err(&m, LoadError::BadTensor { index: CONV_OUT as u32, problem: "string is not UTF-8" });
}

type OpPatch = fn(&mut OpRecord);

#[test]
fn bad_op() {
    let b = cnn();
    let tensor_count = section_range(&b, TENSORS).unwrap().len() / TensorRecord::SIZE;
    let cases: &[(usize, OpPatch, &str)] = &[
        // Decoding (arity, parameter ranges).
        (OP_CONV, |r| r.n_inputs = 4, "wrong number of inputs or outputs"),
        (OP_CONV, |r| r.n_inputs = 1, "wrong number of inputs or outputs"),
        (OP_CONV, |r| r.n_outputs = 2, "wrong number of inputs or outputs"),
        (OP_POOL, |r| r.n_inputs = 2, "wrong number of inputs or outputs"),
        (OP_CONV, |r| r.inputs[1] = NO_TENSOR, "missing required input"),
        (OP_POOL, |r| r.inputs[1] = 3, "input slot beyond the input count is used"),
        (OP_CONV, |r| r.params[param::CLAMP] |= 1 << 16, "clamp word has bits above 16 set"),
        (OP_CONV, |r| r.params[param::CLAMP] = param::pack_clamp(10, 5), "clamp minimum above maximum"),
        (OP_CONV, |r| r.params[param::REQUANT_COUNT] = 0, "empty requantization table"),
        (OP_CONV, |r| r.params[param::STRIDE_W] = 0, "stride, dilation or window is 0 or too large"),
        (OP_CONV, |r| r.params[param::DILATION_H] = (1 << 16) + 1, "stride, dilation or window is 0 or too large"),
        (OP_POOL, |r| r.params[param::FILTER_W] = 0, "stride, dilation or window is 0 or too large"),
        (OP_CONV, |r| r.params[param::PAD_TOP] = (1 << 16) + 1, "padding too large"),
        (OP_DW, |r| r.params[param::DEPTH_MULTIPLIER] = 0, "depth multiplier is 0 or too large"),
        (OP_DW, |r| r.params[param::DEPTH_MULTIPLIER] = u32::MAX, "depth multiplier is 0 or too large"),
        (OP_CONV, |r| r.params[12] = 1, "unused parameter words must be 0"),
        (OP_CONV, |r| r.params[param::DEPTH_MULTIPLIER] = 1, "unused parameter words must be 0"),
        (OP_FC, |r| r.params[param::STRIDE_H] = 1, "unused parameter words must be 0"),
        (OP_POOL, |r| r.params[param::REQUANT_OFFSET] = 16, "pooling has no requantization table"),
        (OP_SOFTMAX, |r| r.params[param::SOFTMAX_MODE] = 2, "unknown softmax output mode"),
        (OP_SOFTMAX, |r| r.params[param::SOFTMAX_IN_SHIFT] = 32, "softmax input scaling out of range"),
        (OP_SOFTMAX, |r| r.params[param::SOFTMAX_IN_MULT] = 1 << 31, "softmax input scaling out of range"),
        (OP_SOFTMAX, |r| r.params[param::SOFTMAX_DIFF_MIN] = 1, "softmax input scaling out of range"),
        (
            OP_SOFTMAX,
            |r| r.params[param::SOFTMAX_OUT_MULT] = 1 << 30,
            "softmax 1/256 mode has output rescale words set",
        ),
        (
            OP_SOFTMAX,
            |r| {
                r.params[param::SOFTMAX_MODE] = 1;
                r.params[param::SOFTMAX_OUT_MULT] = 1 << 30;
                r.params[param::SOFTMAX_OUT_SHIFT] = 31;
            },
            "softmax output multiplier out of range",
        ),
        (OP_SOFTMAX, |r| r.params[param::CLAMP] = 1, "softmax has no requant table or clamp"),
        (OP_SOFTMAX, |r| r.params[9] = 1, "unused parameter words must be 0"),
        // Against the tensors.
        (OP_CONV, |r| r.output = 13, "tensor index out of range"),
        (OP_CONV, |r| r.inputs[0] = 0xFFFE, "tensor index out of range"),
        (OP_CONV, |r| r.output = CONV_W as u16, "output must be an arena tensor, not a view"),
        (OP_POOL, |r| r.output = FLAT as u16, "output must be an arena tensor, not a view"),
        (OP_FC, |r| r.inputs[0] = 11, "output shares arena bytes with an input"),
        (OP_CONV, |r| r.inputs[0] = CONV_B as u16, "activation is not int8"),
        (OP_CONV, |r| r.inputs[0] = CONV_W as u16, "activation is not per-tensor quantized"),
        (OP_DW, |r| r.inputs[1] = CONV_OUT as u16, "filter must be a constant int8 tensor of the right rank"),
        (OP_FC, |r| r.inputs[1] = DW_W as u16, "fully connected filter must be [out, in]"),
        (
            OP_CONV,
            |r| r.inputs[1] = DW_W as u16,
            "filter [out_c, kh, kw, in_c/groups] does not fit the input and output",
        ),
        (OP_DW, |r| r.inputs[1] = CONV_W as u16, "depthwise filter must be [1, kh, kw, in_c * multiplier]"),
        (OP_DW, |r| r.params[param::DEPTH_MULTIPLIER] = 2, "depthwise filter must be [1, kh, kw, in_c * multiplier]"),
        (
            OP_CONV,
            |r| r.inputs[2] = FC_B as u16,
            "bias must be a constant int32 tensor with one value per output channel",
        ),
        (
            OP_CONV,
            |r| r.params[param::REQUANT_COUNT] = 3,
            "requantization table size is neither 1 nor the channel count",
        ),
        (
            OP_CONV,
            |r| r.params[param::REQUANT_OFFSET] = u32::MAX - 7,
            "requantization table out of bounds or misaligned",
        ),
        (OP_CONV, |r| r.params[param::REQUANT_OFFSET] += 2, "requantization table out of bounds or misaligned"),
        (OP_FC, |r| r.inputs[0] = CONV_OUT as u16, "fully connected shapes do not fit"),
        (OP_POOL, |r| r.inputs[0] = CNN_INPUT as u16, "pooling input and output quantization differ"),
    ];
    for &(index, patch, problem) in cases {
        let m = mutated(&b, |m| patch_op(m, index, patch));
        assert_load_err(&m, LoadError::BadOp { index: index as u32, problem });
    }
    assert_eq!(tensor_count, 13);

    // Parameters that live in CONST: a negative multiplier, a shift out of range.
    let table = section_range(&b, OPS).unwrap().start + 12 + 4 * param::REQUANT_OFFSET;
    let table = get_u32(&b, table);
    for (word, value) in [(0, 0x8000_0000), (8 + 3, 31), (8 + 7, (-32i32) as u32)] {
        let m = mutated(&b, |m| set_u32(m, const_at(&b, table + 4 * word), value));
        assert_load_err(
            &m,
            LoadError::BadOp { index: OP_CONV as u32, problem: "requantization multiplier or shift out of range" },
        );
    }
    // A filter that is not symmetric.
    let m = mutated(&b, |m| patch_tensor(m, DW_W, |r| r.quant_b = 1));
    assert_load_err(
        &m,
        LoadError::BadOp {
            index: OP_DW as u32,
            problem: "filter must be symmetric, per tensor or per output channel along its channel axis",
        },
    );
    // Softmax in 1/256 mode with another output quantization.
    let m = mutated(&b, |m| patch_tensor(m, PROBS, |r| r.quant_a = (1.0f32 / 128.0).to_bits()));
    assert_load_err(
        &m,
        LoadError::BadOp {
            index: OP_SOFTMAX as u32,
            problem: "softmax 1/256 mode needs output scale 1/256 and zero point -128",
        },
    );
    // A conv reading a rank-2 tensor (probe plan: the view does not overlap the conv output).
    let p = cnn_probe();
    let m = mutated(&p, |m| patch_op(m, OP_CONV, |r| r.inputs[0] = FLAT as u16));
    assert_load_err(&m, LoadError::BadOp { index: OP_CONV as u32, problem: "tensor is not rank 4 (NHWC)" });
}

#[test]
fn bad_op_add_pool_model() {
    // Tensors: 0 x1, 1 x2, 2 r, 3 a, 4 m, 5 t. Ops: 0 requantize, 1 add, 2 max pool, 3 transpose.
    let b = add_pool();
    let cases: &[(usize, OpPatch, &str)] = &[
        (1, |r| r.params[param::ADD_LEFT_SHIFT] = 23, "add left shift out of range"),
        (1, |r| r.params[param::ADD_IN2_SHIFT] = 1, "add multiplier or shift out of range"),
        (1, |r| r.params[param::ADD_OUT_MULT] = 1 << 31, "add multiplier or shift out of range"),
        (1, |r| r.params[10] = 1, "unused parameter words must be 0"),
        (1, |r| r.inputs[1] = 4, "add inputs and output differ in size"),
        (0, |r| r.params[param::REQ_SHIFT] = 31, "requantize multiplier or shift out of range"),
        (0, |r| r.params[param::REQUANT_COUNT] = 1, "requantize has no requantization table"),
        (0, |r| r.params[5] = 1, "unused parameter words must be 0"),
        (0, |r| r.output = 4, "requantize input and output differ in size"),
        (3, |r| r.params[param::PERM + 1] = 0, "transpose permutation is not a permutation of 0..4"),
        (3, |r| r.params[param::PERM] = 4, "transpose permutation is not a permutation of 0..4"),
        (3, |r| r.params[param::CLAMP] = 1, "transpose has no requant table or clamp"),
        (3, |r| r.output = 4, "output shares arena bytes with an input"),
        (3, |r| r.params[param::PERM + 3] = 3, "transpose permutation is not a permutation of 0..4"),
        (
            3,
            |r| {
                r.params[param::PERM + 1] = 2;
                r.params[param::PERM + 2] = 1;
                r.params[param::PERM + 3] = 3;
            },
            "transpose output shape is not the permuted input shape",
        ),
        (2, |r| r.output = 5, "pooling changes batch or channels"),
        // Written twice: by the requantize and as a graph input.
        (0, |r| r.output = 1, "output tensor written by two ops or also a graph input"),
    ];
    for &(index, patch, problem) in cases {
        let m = mutated(&b, |m| patch_op(m, index, patch));
        assert_load_err(&m, LoadError::BadOp { index: index as u32, problem });
    }
    // The transpose's output quantization differs from its input's.
    let m = mutated(&b, |m| patch_tensor(m, 5, |r| r.quant_b = 0));
    assert_load_err(&m, LoadError::BadOp { index: 3, problem: "transpose changes quantization" });
}

#[test]
fn unsupported_opcode() {
    let b = cnn();
    for (index, opcode) in [(OP_CONV, 0u16), (OP_POOL, 10), (OP_SOFTMAX, 42), (OP_FC, 0xFFFF)] {
        let m = mutated(&b, |m| patch_op(m, index, |r| r.opcode = opcode));
        assert_load_err(&m, LoadError::UnsupportedOp { index: index as u32, opcode });
    }
}

#[test]
fn bad_io() {
    let b = cnn();
    let io = section_range(&b, IO).unwrap();
    let bad = |problem| LoadError::BadIo { problem };
    let m = mutated(&b, |m| set_u32(m, io.start, 0));
    assert_load_err(&m, bad("no inputs or no outputs"));
    let m = mutated(&b, |m| set_u32(m, io.start + 4, 0));
    assert_load_err(&m, bad("no inputs or no outputs"));
    for count in [2, u32::MAX] {
        let m = mutated(&b, |m| set_u32(m, io.start + 4, count));
        assert_load_err(&m, bad("section size does not match its counts"));
    }
    let m = mutated(&b, |m| {
        set_u32(m, io.start, u32::MAX);
        set_u32(m, io.start + 4, u32::MAX);
    });
    assert_load_err(&m, bad("section size does not match its counts"));
    let m = mutated(&b, |m| set_u32(m, section_entry_at(&b, IO) + 8, 4));
    assert_load_err(&m, bad("section shorter than its counts"));
    for tensor in [13, 0xFFFF, 0x1_0000] {
        let m = mutated(&b, |m| patch_io(m, 0, |r| r.tensor = tensor));
        assert_load_err(&m, bad("tensor index out of range"));
    }
    for tensor in [CONV_W, CONV_B] {
        let m = mutated(&b, |m| patch_io(m, 1, |r| r.tensor = tensor as u32));
        assert_load_err(&m, bad("inputs and outputs must be per-tensor quantized int8 arena tensors"));
    }
    let m = mutated(&b, |m| patch_io(m, 1, |r| r.label_count = 3));
    assert_load_err(&m, bad("label count differs from the last dimension"));
    for first in [1, u32::MAX] {
        let m = mutated(&b, |m| patch_io(m, 1, |r| r.label_first = first));
        assert_load_err(&m, bad("labels out of range"));
    }
    let m = mutated(&b, |m| patch_io(m, 0, |r| r.label_count = 1));
    assert_load_err(&m, bad("label count differs from the last dimension"));
    let m = mutated(&b, |m| set_u32(m, io.start + 8 + 16 + 12, 1));
    assert_load_err(&m, bad("reserved word set"));
    // Label strings: out of the pool, not UTF-8.
    let labels = section_range(&b, LABELS).unwrap();
    let m = mutated(&b, |m| set_u32(m, labels.start + 8 + 4, 100_000));
    assert_load_err(&m, bad("string out of bounds"));
    let at = section_range(&b, STRINGS).unwrap().start + get_u32(&b, labels.start + 16) as usize;
    let m = mutated(&b, |m| m[at] = 0xC3);
    assert_load_err(&m, bad("string is not UTF-8"));
    // Two graph inputs sharing bytes.
    let ap = add_pool();
    let m = mutated(&ap, |m| patch_tensor(m, 1, |r| r.offset = 40));
    assert_load_err(&m, bad("two inputs share arena bytes"));
}

#[test]
fn bad_plan() {
    // Tensors: 0 x1, 1 x2, 2 r, 3 a, 4 m, 5 t. Ops: 0 requantize, 1 add, 2 max pool, 3 transpose.
    let b = add_pool();
    // The requantize output is placed over x2, which the add reads next.
    let m = mutated(&b, |m| {
        patch_tensor(m, 2, |r| r.offset = 48);
        set_u32(m, header::ARENA_SIZE, 96);
    });
    assert_load_err(&m, LoadError::BadPlan { op: 1, tensor: 1 });
    // The add reads the requantized tensor before the requantize wrote it.
    let m = mutated(&b, |m| {
        let ops = section_range(m, OPS).unwrap().start;
        let (first, second) = m[ops..ops + 2 * OpRecord::SIZE].split_at_mut(OpRecord::SIZE);
        first.swap_with_slice(second);
    });
    assert_load_err(&m, LoadError::BadPlan { op: 0, tensor: 2 });
    // A graph output overwritten by a later op (probe CNN: logits over the conv output).
    let p = cnn_probe();
    let conv = tensor_record(&p, CONV_OUT).offset;
    let m = mutated(&p, |m| patch_tensor(m, 11, |r| r.offset = conv));
    assert_load_err(&m, LoadError::BadPlan { op: 5, tensor: CONV_OUT as u32 });
    // The softmax reading the logits before the FC wrote them (FC and softmax swapped).
    let m = mutated(&cnn(), |m| {
        let ops = section_range(m, OPS).unwrap().start + OP_FC * OpRecord::SIZE;
        let (first, second) = m[ops..ops + 2 * OpRecord::SIZE].split_at_mut(OpRecord::SIZE);
        first.swap_with_slice(second);
    });
    assert_load_err(&m, LoadError::BadPlan { op: OP_FC as u32, tensor: 11 });
}

//! Property tests: random corruptions of the valid packages never panic, a
//! corrupt package is an `Err`, and a package that still loads runs within
//! exactly its arena (bytes past `arena_size()` stay untouched) and computes
//! outputs that do not depend on what the arena held before.
//!
//! Most cases reseal the CRC after mutating, so that mutations reach the
//! structural validation behind the checksum; the others must be rejected
//! (only the informational minor version is outside the CRC).

use std::cell::RefCell;
use std::ops::Range;

use edgefleet_runtime::format::{CRC_START, IoRecord, OpRecord, TensorRecord, header};
use edgefleet_runtime::writer::reseal;
use edgefleet_runtime::{Interpreter, LoadError, Model, RunError};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, TestCaseError, TestCaseResult, TestRunner};

use crate::common::{aligned, get_u32, section_range, set_u32, valid_packages};

/// Cases per property (override with `PROPTEST_CASES`).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

/// Byte written past the arena to detect out-of-arena writes.
const CANARY: u8 = 0xA5;
/// Packages whose arena is larger than this are loaded but not run (a
/// mutation could make a valid plan of up to 4 GiB).
const MAX_RUN_ARENA: usize = 1 << 24;

/// Field layouts `(offset, width)` of the records, for targeted mutations.
const TENSOR_FIELDS: &[(usize, usize)] = &[
    (0, 1),
    (1, 1),
    (2, 1),
    (3, 1),
    (4, 4),
    (8, 4),
    (12, 4),
    (16, 4),
    (20, 4),
    (24, 4),
    (28, 4),
    (32, 4),
    (36, 4),
    (40, 4),
    (44, 1),
    (45, 1),
    (46, 2),
];
const OP_FIELDS: &[(usize, usize)] = &[
    (0, 2),
    (2, 1),
    (3, 1),
    (4, 2),
    (6, 2),
    (8, 2),
    (10, 2),
    (12, 4),
    (16, 4),
    (20, 4),
    (24, 4),
    (28, 4),
    (32, 4),
    (36, 4),
    (40, 4),
    (44, 4),
    (48, 4),
    (52, 4),
    (56, 4),
    (60, 4),
];
const IO_FIELDS: &[(usize, usize)] = &[(0, 4), (4, 4), (8, 4), (12, 4)];

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit {
        at: Index,
        bit: u8,
    },
    Byte {
        at: Index,
        value: u8,
    },
    /// A `u32` anywhere (not necessarily aligned).
    Word {
        at: Index,
        value: u32,
    },
    /// A header field.
    HeaderWord {
        field: usize,
        value: u32,
    },
    /// An aligned word inside a section of the original package.
    SectionWord {
        kind: u16,
        at: Index,
        value: u32,
    },
    /// A byte inside a section.
    SectionByte {
        kind: u16,
        at: Index,
        value: u8,
    },
    /// A field of a tensor (1), op (2) or IO (3) record.
    Field {
        kind: u16,
        record: Index,
        field: Index,
        value: u32,
    },
    /// Copies a word over another one (e.g. a valid tensor index, offset or scale).
    CopyWord {
        from: Index,
        to: Index,
    },
    Truncate {
        keep: Index,
    },
    Extend {
        bytes: Vec<u8>,
    },
    /// Makes the header's file size match the current length.
    FixFileSize,
}

fn interesting_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 0u32..20,
        2 => any::<u32>(),
        1 => (0u32..31).prop_map(|k| 1u32 << k),
        1 => (0u32..31).prop_map(|k| (1u32 << k).wrapping_sub(1)),
        1 => (1u32..31).prop_map(|k| (1u32 << k) + 1),
        1 => select(vec![
            0xFFFF,
            0xFFFE,
            0x1_0000,
            0xFFFF_FFFF,
            0xFFFF_FFF0,
            0x8000_0000,
            0x7FFF_FFFF,
            1 << 24,
            (1 << 24) + 1,
            (1 << 16) + 1,
            (-31i32) as u32,
            (-32i32) as u32,
            (-128i32) as u32,
            (-129i32) as u32,
            127,
            128,
            1.0f32.to_bits(),
            (-1.0f32).to_bits(),
            0.5f32.to_bits(),
            (1.0f32 / 256.0).to_bits(),
            f32::NAN.to_bits(),
            f32::INFINITY.to_bits(),
            f32::MIN_POSITIVE.to_bits(),
            1, // subnormal
        ]),
        1 => (0u32..2048).prop_map(|v| v & !15),
    ]
}

fn section_kind() -> impl Strategy<Value = u16> {
    select(vec![1u16, 1, 1, 2, 2, 2, 3, 3, 4, 5, 5, 6])
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let header_fields = select(vec![
        header::MAJOR,
        header::HEADER_SIZE,
        header::FILE_SIZE,
        header::CRC32,
        header::SECTION_COUNT,
        header::ARENA_SIZE,
        header::FLAGS,
        header::RESERVED,
        64 + 4,  // section 0 offset
        64 + 8,  // section 0 size
        64 + 20, // section 1 offset
        64 + 24, // section 1 size
        64 + 36,
        64 + 40,
        64 + 52,
        64 + 56,
        64 + 68,
        64 + 72,
        64 + 16, // section 1 kind and flags
        64 + 48,
    ]);
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, value)| Mutation::Byte { at, value }),
        2 => (any::<Index>(), interesting_u32()).prop_map(|(at, value)| Mutation::Word { at, value }),
        1 => (header_fields, interesting_u32()).prop_map(|(field, value)| Mutation::HeaderWord { field, value }),
        4 => (section_kind(), any::<Index>(), interesting_u32())
            .prop_map(|(kind, at, value)| Mutation::SectionWord { kind, at, value }),
        2 => (section_kind(), any::<Index>(), any::<u8>())
            .prop_map(|(kind, at, value)| Mutation::SectionByte { kind, at, value }),
        6 => (select(vec![1u16, 1, 2, 2, 3]), any::<Index>(), any::<Index>(), interesting_u32())
            .prop_map(|(kind, record, field, value)| Mutation::Field { kind, record, field, value }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(from, to)| Mutation::CopyWord { from, to }),
        1 => any::<Index>().prop_map(|keep| Mutation::Truncate { keep }),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(|bytes| Mutation::Extend { bytes }),
        1 => Just(Mutation::FixFileSize),
    ]
}

/// Section ranges of the original package, by kind.
fn layout_of(package: &[u8]) -> Vec<(u16, Range<usize>)> {
    (1..=6).filter_map(|k| section_range(package, k).map(|r| (k, r))).collect()
}

fn apply(bytes: &mut Vec<u8>, layout: &[(u16, Range<usize>)], m: &Mutation) {
    let len = bytes.len();
    let section = |kind: u16| layout.iter().find(|(k, _)| *k == kind).map(|(_, r)| r.clone());
    let put = |bytes: &mut Vec<u8>, at: usize, value: u32, width: usize| {
        if at + width <= bytes.len() {
            bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
        }
    };
    match m {
        Mutation::FlipBit { at, bit } if len > 0 => bytes[at.index(len)] ^= 1 << bit,
        Mutation::Byte { at, value } if len > 0 => bytes[at.index(len)] = *value,
        Mutation::Word { at, value } if len >= 4 => put(bytes, at.index(len - 3), *value, 4),
        Mutation::HeaderWord { field, value } => put(bytes, *field, *value, 4),
        Mutation::SectionWord { kind, at, value } => {
            if let Some(r) = section(*kind).filter(|r| r.len() >= 4) {
                put(bytes, r.start + 4 * at.index(r.len() / 4), *value, 4);
            }
        }
        Mutation::SectionByte { kind, at, value } => {
            if let Some(r) = section(*kind).filter(|r| !r.is_empty()) {
                put(bytes, r.start + at.index(r.len()), u32::from(*value), 1);
            }
        }
        Mutation::Field { kind, record, field, value } => {
            let (base, size, fields) = match kind {
                1 => (0, TensorRecord::SIZE, TENSOR_FIELDS),
                2 => (0, OpRecord::SIZE, OP_FIELDS),
                _ => (8, IoRecord::SIZE, IO_FIELDS),
            };
            if let Some(r) = section(*kind) {
                let records = r.len().saturating_sub(base) / size;
                let (off, width) = fields[field.index(fields.len())];
                if *kind == 3 && record.index(records + 1) == records {
                    // The IO counts.
                    put(bytes, r.start + (off % 8), *value, 4);
                } else if records > 0 {
                    put(bytes, r.start + base + record.index(records) * size + off, *value, width);
                }
            }
        }
        Mutation::CopyWord { from, to } if len >= 4 => {
            let v = get_u32(bytes, from.index(len - 3));
            put(bytes, to.index(len - 3), v, 4);
        }
        Mutation::Truncate { keep } if len > 0 => bytes.truncate(keep.index(len)),
        Mutation::Extend { bytes: extra } => bytes.extend_from_slice(extra),
        Mutation::FixFileSize if len >= 20 => set_u32(bytes, header::FILE_SIZE, len as u32),
        _ => {}
    }
}

/// The differences between a package and its mutant, located by section.
fn diff(original: &[u8], mutant: &[u8]) -> String {
    let layout = layout_of(original);
    let mut out = format!("len {} -> {}", original.len(), mutant.len());
    for (i, (a, b)) in original.iter().zip(mutant).enumerate() {
        if a != b {
            let place = layout
                .iter()
                .find(|(_, r)| r.contains(&i))
                .map_or(String::from("header/table"), |(k, r)| format!("section {k} +{}", i - r.start));
            out += &format!("; byte {i} ({place}): {a:#04x} -> {b:#04x}");
        }
    }
    out
}

/// What happened to one mutant.
#[derive(Default, Debug)]
struct Tally {
    rejected: usize,
    loaded: usize,
    ran_ok: usize,
    too_big: usize,
}

type RunOutcome = (Result<(), RunError>, Vec<Vec<i8>>);

/// Runs `model` in `arena`, with inputs derived from `fill`.
fn run(model: &Model<'_>, arena: &mut [u8], fill: u8) -> Result<RunOutcome, TestCaseError> {
    let mut interp =
        Interpreter::new(model, arena).map_err(|e| TestCaseError::fail(format!("Interpreter::new: {e}")))?;
    prop_assert_eq!(interp.arena_used_bytes(), model.arena_size());
    for i in 0..model.input_count() {
        let buf = interp.input_mut(i).map_err(|e| TestCaseError::fail(format!("input {i}: {e}")))?;
        for (k, v) in buf.iter_mut().enumerate() {
            *v = (k as u8).wrapping_mul(37).wrapping_add(fill) as i8;
        }
    }
    let result = interp.invoke();
    let mut outputs = Vec::new();
    for k in 0..model.output_count() {
        let out = interp.output(k).map_err(|e| TestCaseError::fail(format!("output {k}: {e}")))?.to_vec();
        let mut f = vec![0f32; out.len()];
        prop_assert_eq!(interp.output_f32(k, &mut f), Ok(()));
        outputs.push(out);
    }
    Ok((result, outputs))
}

/// The property, for one mutant.
fn check_mutant(original: &[u8], mutant: &[u8], resealed: bool, fill: u8, tally: &RefCell<Tally>) -> TestCaseResult {
    let buf = aligned(mutant);
    let model = match Model::load(&buf) {
        Err(e) => {
            let _ = e.to_string();
            if !resealed && mutant.len() == original.len() && mutant[..CRC_START] == original[..CRC_START] {
                prop_assert!(matches!(e, LoadError::ChecksumMismatch { .. }), "unsealed corruption gave {:?}", e);
            }
            tally.borrow_mut().rejected += 1;
            return Ok(());
        }
        Ok(model) => model,
    };
    // Without a reseal, only the informational minor version (outside the CRC) may change.
    if !resealed {
        let same_except_minor = mutant.len() == original.len()
            && mutant
                .iter()
                .zip(original)
                .enumerate()
                .all(|(i, (a, b))| a == b || (header::MINOR..header::MINOR + 2).contains(&i));
        prop_assert!(same_except_minor, "a corrupted package without a valid CRC loaded");
    }
    tally.borrow_mut().loaded += 1;

    // Everything the loader validated is readable.
    for i in 0..model.tensor_count() {
        prop_assert!(model.tensor(i as u16).is_some(), "tensor {} unreadable", i);
    }
    for i in 0..model.op_count() {
        prop_assert!(model.op(i).is_some(), "op {} unreadable", i);
    }
    for i in 0..model.input_count() {
        prop_assert!(model.input(i).is_some(), "input {} unreadable", i);
    }
    for k in 0..model.output_count() {
        let io = model.output(k);
        prop_assert!(io.is_some(), "output {} unreadable", k);
        let io = io.unwrap();
        for l in 0..io.label_count() {
            prop_assert!(io.label(l).is_some(), "label {} of output {} unreadable", l, k);
        }
    }

    let n = model.arena_size();
    if n > MAX_RUN_ARENA {
        tally.borrow_mut().too_big += 1;
        return Ok(());
    }
    // Exactly the arena the plan needs, zeroed.
    let mut exact = vec![0u8; n];
    let (r1, out1) = run(&model, &mut exact, fill)?;
    // A larger buffer holding garbage, with a canary tail.
    let mut big = vec![CANARY; n + 256];
    let (r2, out2) = run(&model, &mut big, fill)?;
    prop_assert!(big[n..].iter().all(|&b| b == CANARY), "the interpreter wrote past arena_size() = {}", n);
    // A validated model only fails on caller mistakes (`Interpreter` docs):
    // a kernel refusing its arguments means the loader let something through.
    prop_assert_eq!(r1, Ok(()), "a loaded package failed to run: {}", diff(original, mutant));
    prop_assert_eq!(r2, Ok(()));
    // The plan is proven: every byte read was written first, so the initial
    // arena contents (zeros or garbage) cannot leak into the outputs.
    prop_assert_eq!(out1, out2, "outputs depend on the initial arena contents: {}", diff(original, mutant));
    tally.borrow_mut().ran_ok += 1;
    Ok(())
}

fn mutate_and_check(muts_per_case: Range<usize>, reseal_weight: u32, cases: u32) -> Tally {
    let packages = valid_packages();
    let layouts: Vec<_> = packages.iter().map(|(_, p)| layout_of(p)).collect();
    let tally = RefCell::new(Tally::default());
    let strategy = (
        0..packages.len(),
        prop::collection::vec(mutation(), muts_per_case),
        prop::bool::weighted(f64::from(reseal_weight) / 100.0),
        any::<u8>(),
    );
    let result = runner(cases).run(&strategy, |(p, muts, resealed, fill)| {
        let original = &packages[p].1;
        let mut bytes = original.clone();
        for m in &muts {
            apply(&mut bytes, &layouts[p], m);
        }
        if resealed {
            reseal(&mut bytes);
        }
        check_mutant(original, &bytes, resealed, fill, &tally)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    tally.into_inner()
}

#[test]
fn prop_random_mutations_never_panic_and_stay_in_the_arena() {
    let n = cases(10_000);
    let t = mutate_and_check(1..4, 85, n);
    let total = t.rejected + t.loaded;
    assert!(total >= n as usize, "{t:?}");
    // The mutations must reach both outcomes often enough to mean something
    // (typically ~90% rejected, ~10% load and run).
    if n >= 1000 {
        assert!(t.rejected * 2 > total, "{t:?}");
        assert!(t.ran_ok * 20 > total, "too few mutants load and run: {t:?}");
    }
    eprintln!("random mutations: {t:?}");
}

#[test]
fn prop_single_field_mutations_resealed() {
    // One targeted change at a time, always resealed: exercises each check of
    // the structural validator in isolation.
    let n = cases(10_000);
    let t = mutate_and_check(1..2, 100, n);
    assert!(t.rejected + t.loaded >= n as usize, "{t:?}");
    // Typically ~75% rejected, ~25% load and run.
    if n >= 1000 {
        assert!(t.ran_ok * 10 > t.rejected + t.loaded, "too few mutants load and run: {t:?}");
        assert!(t.rejected * 4 > t.rejected + t.loaded, "{t:?}");
    }
    eprintln!("single resealed mutations: {t:?}");
}

#[test]
fn prop_truncation_and_extension_are_size_errors() {
    let packages = valid_packages();
    let strategy = (0..packages.len(), any::<Index>(), prop::collection::vec(any::<u8>(), 0..40), any::<bool>());
    runner(cases(3000))
        .run(&strategy, |(p, cut, extra, resealed)| {
            let original = &packages[p].1;
            let len = original.len();
            // A strict prefix, possibly with other bytes appended, never of the original length.
            let mut bytes = original[..cut.index(len)].to_vec();
            bytes.extend_from_slice(&extra);
            if bytes.len() == len {
                bytes.push(0);
            }
            if resealed {
                reseal(&mut bytes);
            }
            if bytes.len() >= 64 && get_u32(&bytes, header::FILE_SIZE) as usize == bytes.len() {
                // Appended bytes forged a matching size field: not this property's case.
                return Ok(());
            }
            let buf = aligned(&bytes);
            let got = Model::load(&buf).map(|_| ());
            let want = if bytes.len() < 64 {
                LoadError::Truncated { len: bytes.len() }
            } else if bytes[..8] != original[..8] {
                LoadError::BadMagic
            } else if bytes[8..10] != original[8..10] {
                LoadError::UnsupportedVersion { major: u16::from_le_bytes([bytes[8], bytes[9]]), minor: 0 }
            } else if bytes[12..16] != original[12..16] {
                LoadError::BadHeader { problem: "header size is not 64" }
            } else {
                LoadError::SizeMismatch { declared: get_u32(&bytes, header::FILE_SIZE), actual: bytes.len() }
            };
            match want {
                LoadError::UnsupportedVersion { .. } => {
                    let ok = matches!(got, Err(LoadError::UnsupportedVersion { .. }));
                    prop_assert!(ok, "{:?}", got)
                }
                want => prop_assert_eq!(got, Err(want)),
            }
            Ok(())
        })
        .unwrap();
}

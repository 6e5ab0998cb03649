//! [`PackageBuilder`]: assembles a package from records. Used by the compiler
//! and by tests that need hand-made (or deliberately broken) packages; the
//! builder does not validate, [`crate::Model::load`] does.

use alloc::vec;
use alloc::vec::Vec;

use crate::format::{
    self, ALIGN, HEADER_SIZE, IoRecord, OpRecord, SECTION_ENTRY_SIZE, SECTION_REQUIRED, SectionEntry, SectionKind,
    TensorRecord, header, wr_u16, wr_u32,
};

/// Collects records, strings, constants and metadata, then lays them out.
#[derive(Clone, Debug, Default)]
pub struct PackageBuilder {
    tensors: Vec<TensorRecord>,
    ops: Vec<OpRecord>,
    inputs: Vec<IoRecord>,
    outputs: Vec<IoRecord>,
    strings: Vec<u8>,
    consts: Vec<u8>,
    labels: Vec<(u32, u32)>,
    extra: Vec<(u16, bool, Vec<u8>)>,
    arena_size: u32,
}

fn pad_to(v: &mut Vec<u8>, align: usize) {
    while !v.len().is_multiple_of(align) {
        v.push(0);
    }
}

impl PackageBuilder {
    /// An empty package.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a string to the pool; returns `(offset, length)`.
    pub fn string(&mut self, s: &str) -> (u32, u32) {
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        (off, s.len() as u32)
    }

    /// Adds constant bytes at the next 16-aligned offset; returns the offset.
    pub fn constant(&mut self, bytes: &[u8]) -> u32 {
        pad_to(&mut self.consts, ALIGN);
        let off = self.consts.len() as u32;
        self.consts.extend_from_slice(bytes);
        off
    }

    /// Adds a requantization table (multipliers then shifts); returns its offset.
    pub fn requant_table(&mut self, multipliers: &[i32], shifts: &[i32]) -> u32 {
        let mut bytes = Vec::with_capacity(8 * multipliers.len());
        for v in multipliers.iter().chain(shifts) {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        self.constant(&bytes)
    }

    /// Adds a tensor record; returns its index.
    pub fn tensor(&mut self, record: TensorRecord) -> u16 {
        self.tensors.push(record);
        (self.tensors.len() - 1) as u16
    }

    /// Appends an op record (ops run in the order they are added).
    pub fn op(&mut self, record: OpRecord) {
        self.ops.push(record);
    }

    /// Declares a graph input.
    pub fn input(&mut self, tensor: u16) {
        self.inputs.push(IoRecord { tensor: tensor as u32, label_first: 0, label_count: 0 });
    }

    /// Declares a graph output with optional class labels.
    pub fn output(&mut self, tensor: u16, labels: &[&str]) {
        let first = self.labels.len() as u32;
        for l in labels {
            let r = self.string(l);
            self.labels.push(r);
        }
        self.outputs.push(IoRecord { tensor: tensor as u32, label_first: first, label_count: labels.len() as u32 });
    }

    /// Adds a metadata (or any other) section.
    pub fn section(&mut self, kind: u16, required: bool, bytes: Vec<u8>) {
        self.extra.push((kind, required, bytes));
    }

    /// Sets the arena size the plan needs.
    pub fn arena_size(&mut self, bytes: u32) {
        self.arena_size = bytes;
    }

    /// Lays the package out and seals it with its CRC-32.
    pub fn finish(self) -> Vec<u8> {
        let mut tensors = vec![0u8; self.tensors.len() * TensorRecord::SIZE];
        for (i, t) in self.tensors.iter().enumerate() {
            t.encode(&mut tensors[i * TensorRecord::SIZE..]);
        }
        let mut ops = vec![0u8; self.ops.len() * OpRecord::SIZE];
        for (i, o) in self.ops.iter().enumerate() {
            o.encode(&mut ops[i * OpRecord::SIZE..]);
        }
        let ios: Vec<&IoRecord> = self.inputs.iter().chain(&self.outputs).collect();
        let mut io = vec![0u8; 8 + ios.len() * IoRecord::SIZE];
        wr_u32(&mut io, 0, self.inputs.len() as u32);
        wr_u32(&mut io, 4, self.outputs.len() as u32);
        for (i, r) in ios.iter().enumerate() {
            r.encode(&mut io[8 + i * IoRecord::SIZE..]);
        }
        let mut labels = Vec::with_capacity(self.labels.len() * 8);
        for (o, l) in &self.labels {
            labels.extend_from_slice(&o.to_le_bytes());
            labels.extend_from_slice(&l.to_le_bytes());
        }
        let mut sections: Vec<(u16, bool, Vec<u8>)> = vec![
            (SectionKind::Tensors as u16, true, tensors),
            (SectionKind::Ops as u16, true, ops),
            (SectionKind::Io as u16, true, io),
            (SectionKind::Strings as u16, true, self.strings),
            (SectionKind::Const as u16, true, self.consts),
        ];
        if !labels.is_empty() {
            sections.push((SectionKind::Labels as u16, true, labels));
        }
        sections.extend(self.extra);

        let mut out = vec![0u8; HEADER_SIZE + sections.len() * SECTION_ENTRY_SIZE];
        pad_to(&mut out, ALIGN);
        let mut entries = Vec::with_capacity(sections.len());
        for (kind, required, bytes) in &sections {
            pad_to(&mut out, ALIGN);
            entries.push(SectionEntry {
                kind: *kind,
                flags: if *required { SECTION_REQUIRED } else { 0 },
                offset: out.len() as u32,
                size: bytes.len() as u32,
            });
            out.extend_from_slice(bytes);
        }
        for (i, e) in entries.iter().enumerate() {
            e.encode(&mut out[HEADER_SIZE + i * SECTION_ENTRY_SIZE..]);
        }
        out[..8].copy_from_slice(&format::MAGIC);
        wr_u16(&mut out, header::MAJOR, format::VERSION_MAJOR);
        wr_u16(&mut out, header::MINOR, format::VERSION_MINOR);
        wr_u32(&mut out, header::HEADER_SIZE, HEADER_SIZE as u32);
        let len = out.len() as u32;
        wr_u32(&mut out, header::FILE_SIZE, len);
        wr_u32(&mut out, header::SECTION_COUNT, sections.len() as u32);
        wr_u32(&mut out, header::ARENA_SIZE, self.arena_size);
        reseal(&mut out);
        out
    }
}

/// Recomputes the CRC-32 of a package in place (tests use it to reach the
/// structural checks behind the checksum after mutating bytes).
pub fn reseal(package: &mut [u8]) {
    if package.len() >= HEADER_SIZE {
        let crc = format::crc32(&package[format::CRC_START..]);
        wr_u32(package, header::CRC32, crc);
    }
}

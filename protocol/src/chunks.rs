//! Resumable package download over MQTT: the device asks for chunk `i` of the
//! package with a given SHA-256; the server answers with that chunk. The
//! device verifies as it goes ([`crate::PackageVerifier`]) and, after a
//! disconnect or restart, asks again from the first chunk it has not yet
//! stored.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

/// Default chunk size: 16 KiB, under the 20 KB maximum payload some brokers
/// default to (rumqttd), with room for the topic and headers.
pub const DEFAULT_CHUNK_SIZE: u32 = 16 * 1024;
/// Largest chunk a device may ask for.
pub const MAX_CHUNK_SIZE: u32 = 256 * 1024;

/// A device asks for one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// The package (by SHA-256).
    pub package_sha256: [u8; 32],
    /// Chunk index.
    pub index: u32,
    /// Chunk size the device uses for the whole download.
    pub chunk_size: u32,
}

/// Outcome of a chunk request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkStatus {
    /// `data` holds the chunk.
    Ok,
    /// The server has no package with that hash.
    NotFound,
    /// Bad index or chunk size.
    BadRequest,
}

/// The server's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkResponse {
    /// The package (by SHA-256).
    pub package_sha256: [u8; 32],
    /// Chunk index.
    pub index: u32,
    /// Outcome.
    pub status: ChunkStatus,
    /// The chunk's bytes (empty unless `status` is `Ok`).
    pub data: Vec<u8>,
}

/// Number of chunks of `size` bytes in `len` bytes.
pub fn chunk_count(len: u64, size: u32) -> u64 {
    if size == 0 { 0 } else { len.div_ceil(size as u64) }
}

/// Serves a chunk request from a package held in memory.
pub fn serve(package: &[u8], sha256: &[u8; 32], req: &ChunkRequest) -> ChunkResponse {
    let answer = |status, data| ChunkResponse { package_sha256: req.package_sha256, index: req.index, status, data };
    if &req.package_sha256 != sha256 {
        return answer(ChunkStatus::NotFound, Vec::new());
    }
    if req.chunk_size == 0 || req.chunk_size > MAX_CHUNK_SIZE {
        return answer(ChunkStatus::BadRequest, Vec::new());
    }
    let start = req.index as u64 * req.chunk_size as u64;
    if start >= package.len() as u64 {
        return answer(ChunkStatus::BadRequest, Vec::new());
    }
    let end = (start + req.chunk_size as u64).min(package.len() as u64);
    answer(ChunkStatus::Ok, package[start as usize..end as usize].to_vec())
}

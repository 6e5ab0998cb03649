//! Crash-safe on-disk state: A/B model slots, the boot record that says which
//! slot is live, download progress, the device key, the trusted root, the
//! uplink sequence counter and the telemetry spool.
//!
//! Every file that must never be seen half-written is replaced atomically:
//! write a temporary file, fsync it, rename it over the old one, fsync the
//! directory. A `kill -9` at any instant therefore leaves either the old or
//! the new version of each file. The swap protocol built on that:
//!
//! 1. the verified package is written to the *inactive* slot (atomic);
//! 2. `boot.json` is replaced with `{active: new, previous: old, trial: true}`;
//! 3. the health check runs; on success `boot.json` gets `trial: false`, on
//!    failure `{active: old}` again;
//! 4. an agent that starts and finds `trial: true` was interrupted during the
//!    health check: it rolls back to `previous` before serving anything.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgefleet_protocol::{ModelRef, SecretKey};
use serde::{Deserialize, Serialize};

/// A model installed in a slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// Slot name: `a`, `b` or `shadow`.
    pub slot: String,
    /// What it is.
    pub model: ModelRef,
    /// The signed manifest it was installed with.
    pub manifest: Vec<u8>,
}

/// The boot record (`boot.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootState {
    /// The live model.
    pub active: Option<Installed>,
    /// The model before it (rollback target).
    pub previous: Option<Installed>,
    /// `active` has not passed its health check yet.
    pub trial: bool,
    /// Release counter of the newest model that passed its health check.
    pub installed_counter: u64,
    /// Packages (SHA-256, hex) that failed their health check: never retried.
    pub failed: Vec<String>,
    /// Interrupted health checks per package (hex SHA-256, count).
    pub trial_attempts: Vec<(String, u32)>,
    /// The shadow candidate.
    pub shadow: Option<Installed>,
}

/// Download progress record (`download/manifest.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadRecord {
    /// The signed manifest bytes.
    pub manifest: Vec<u8>,
    /// Chunk size the download uses.
    pub chunk_size: u32,
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync dir).
///
/// # Errors
/// I/O errors; the previous file is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("path without a directory")?;
    let tmp = path.with_extension("tmp");
    let result = (|| -> Result<()> {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing directory {}", dir.display()))
}

impl Store {
    /// Opens (creating) the state directory.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn open(dir: &Path) -> Result<Store> {
        for sub in ["", "download", "spool"] {
            fs::create_dir_all(dir.join(sub)).with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        // Leftovers of writes interrupted before their rename.
        for sub in ["", "download", "spool"] {
            if let Ok(entries) = fs::read_dir(dir.join(sub)) {
                for e in entries.flatten() {
                    if e.path().extension().is_some_and(|x| x == "tmp") {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        Ok(Store { dir: dir.to_path_buf() })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The boot record (default if none was written yet).
    ///
    /// # Errors
    /// Unreadable or corrupt record.
    pub fn boot(&self) -> Result<BootState> {
        let p = self.dir.join("boot.json");
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| format!("corrupt {}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BootState::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// Replaces the boot record atomically.
    ///
    /// # Errors
    /// I/O.
    pub fn write_boot(&self, b: &BootState) -> Result<()> {
        write_atomic(&self.dir.join("boot.json"), &serde_json::to_vec_pretty(b)?)
    }

    fn slot_path(&self, slot: &str) -> PathBuf {
        self.dir.join(format!("slot-{slot}.efm"))
    }

    /// Writes a package into a slot atomically.
    ///
    /// # Errors
    /// I/O.
    pub fn write_slot(&self, slot: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.slot_path(slot), bytes)
    }

    /// Reads a slot.
    ///
    /// # Errors
    /// I/O.
    pub fn read_slot(&self, slot: &str) -> Result<Vec<u8>> {
        let p = self.slot_path(slot);
        fs::read(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// The slot a new live model goes to.
    pub fn inactive_slot(b: &BootState) -> &'static str {
        match b.active.as_ref().map(|i| i.slot.as_str()) {
            Some("a") => "b",
            _ => "a",
        }
    }

    /// The download in progress: its record and the bytes stored so far,
    /// cut to whole chunks (a chunk half-appended at a crash is dropped).
    ///
    /// # Errors
    /// I/O.
    pub fn download(&self) -> Result<Option<(DownloadRecord, Vec<u8>)>> {
        let rec = self.dir.join("download/manifest.json");
        let rec: DownloadRecord = match fs::read(&rec) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(r) => r,
                Err(_) => return Ok(None),
            },
            Err(_) => return Ok(None),
        };
        let data_path = self.dir.join("download/data.part");
        let mut data = Vec::new();
        if let Ok(mut f) = File::open(&data_path) {
            f.read_to_end(&mut data).with_context(|| format!("reading {}", data_path.display()))?;
        }
        let whole = data.len() / rec.chunk_size.max(1) as usize * rec.chunk_size.max(1) as usize;
        let manifest_len = edgefleet_protocol::Signed::from_bytes(&rec.manifest)
            .ok()
            .and_then(|s| s.decode::<edgefleet_protocol::Manifest>(edgefleet_protocol::Kind::Manifest).ok())
            .map(|m| m.package_len as usize);
        // A complete download may end in a short last chunk.
        let keep = if manifest_len == Some(data.len()) { data.len() } else { whole };
        if keep != data.len() {
            data.truncate(keep);
            let f = OpenOptions::new().write(true).open(&data_path)?;
            f.set_len(keep as u64)?;
            f.sync_all()?;
        }
        Ok(Some((rec, data)))
    }

    /// Starts a download: records the manifest, empties the data file.
    ///
    /// # Errors
    /// I/O.
    pub fn start_download(&self, rec: &DownloadRecord) -> Result<()> {
        let data = self.dir.join("download/data.part");
        let f = File::create(&data).with_context(|| format!("creating {}", data.display()))?;
        f.sync_all()?;
        write_atomic(&self.dir.join("download/manifest.json"), &serde_json::to_vec(rec)?)
    }

    /// Appends verified bytes to the download and makes them durable.
    ///
    /// # Errors
    /// I/O (a full disk among them): the download stops, nothing else changes.
    pub fn append_chunk(&self, bytes: &[u8]) -> Result<()> {
        let p = self.dir.join("download/data.part");
        let mut f = OpenOptions::new().append(true).open(&p).with_context(|| format!("opening {}", p.display()))?;
        f.write_all(bytes).with_context(|| format!("appending to {}", p.display()))?;
        f.sync_data().with_context(|| format!("syncing {}", p.display()))
    }

    /// Forgets the download.
    ///
    /// # Errors
    /// I/O.
    pub fn clear_download(&self) -> Result<()> {
        for f in ["download/manifest.json", "download/data.part"] {
            match fs::remove_file(self.dir.join(f)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {f}")),
            }
        }
        sync_dir(&self.dir.join("download"))
    }

    /// The device key, created on first use.
    ///
    /// # Errors
    /// I/O or no OS randomness.
    pub fn device_key(&self) -> Result<SecretKey> {
        let p = self.dir.join("device.key");
        if let Ok(hex) = fs::read_to_string(&p)
            && let Some(seed) = edgefleet_protocol::parse_hex32(&hex)
        {
            return Ok(SecretKey::from_bytes(&seed));
        }
        let key = SecretKey::generate().map_err(|e| anyhow::anyhow!("no OS randomness for the device key: {e}"))?;
        write_atomic(&p, edgefleet_protocol::hex32(&key.to_bytes()).as_bytes())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600))?;
        }
        Ok(key)
    }

    /// The trusted root saved after a rotation, if any.
    pub fn trusted_root(&self) -> Option<Vec<u8>> {
        fs::read(self.dir.join("root.signed")).ok()
    }

    /// Saves a rotated root.
    ///
    /// # Errors
    /// I/O.
    pub fn save_root(&self, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.dir.join("root.signed"), bytes)
    }

    /// Reserves the next uplink sequence number (durably: never reused).
    ///
    /// # Errors
    /// I/O.
    pub fn next_seq(&self) -> Result<u64> {
        let next = self.last_seq()? + 1;
        self.set_seq(next)?;
        Ok(next)
    }

    /// The last sequence number reserved (0: none yet).
    ///
    /// # Errors
    /// I/O.
    pub fn last_seq(&self) -> Result<u64> {
        let cur: u64 = fs::read_to_string(self.dir.join("seq")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        // A spooled message from before a lost seq file still bounds it.
        let spooled = self.spooled_seqs()?.last().copied().unwrap_or(0);
        Ok(cur.max(spooled))
    }

    /// Records `seq` as reserved (durably, before it is used).
    ///
    /// # Errors
    /// I/O.
    pub fn set_seq(&self, seq: u64) -> Result<()> {
        write_atomic(&self.dir.join("seq"), seq.to_string().as_bytes())
    }

    fn spool_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("spool/{seq:020}.up"))
    }

    /// Keeps an uplink until the broker acknowledges it.
    ///
    /// # Errors
    /// I/O.
    pub fn spool(&self, seq: u64, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.spool_path(seq), bytes)
    }

    /// Sequence numbers waiting in the spool, oldest first.
    ///
    /// # Errors
    /// I/O.
    pub fn spooled_seqs(&self) -> Result<Vec<u64>> {
        let mut v: Vec<u64> = fs::read_dir(self.dir.join("spool"))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".up")?.parse().ok()
            })
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// A spooled uplink.
    ///
    /// # Errors
    /// I/O.
    pub fn spooled(&self, seq: u64) -> Result<Vec<u8>> {
        Ok(fs::read(self.spool_path(seq))?)
    }

    /// Removes an acknowledged uplink.
    pub fn unspool(&self, seq: u64) {
        let _ = fs::remove_file(self.spool_path(seq));
    }

    /// Writes the API's bound address for tools and tests.
    ///
    /// # Errors
    /// I/O.
    pub fn write_api_addr(&self, addr: &str) -> Result<()> {
        write_atomic(&self.dir.join("api.addr"), addr.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("edgefleet-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn half_appended_chunks_are_dropped_on_resume() {
        let s = Store::open(&tmp("resume")).unwrap();
        s.start_download(&DownloadRecord { manifest: vec![1, 2, 3], chunk_size: 4 }).unwrap();
        s.append_chunk(&[1, 2, 3, 4]).unwrap();
        s.append_chunk(&[5, 6]).unwrap(); // a crash in the middle of chunk 2
        let (rec, data) = s.download().unwrap().unwrap();
        assert_eq!((rec.chunk_size, data), (4, vec![1, 2, 3, 4]));
        s.clear_download().unwrap();
        assert!(s.download().unwrap().is_none());
    }

    #[test]
    fn sequence_numbers_survive_and_never_repeat() {
        let d = tmp("seq");
        let s = Store::open(&d).unwrap();
        let a = s.next_seq().unwrap();
        s.spool(a, b"x").unwrap();
        let b = Store::open(&d).unwrap().next_seq().unwrap();
        assert!(b > a);
        fs::remove_file(d.join("seq")).unwrap(); // lost counter: the spool still bounds it
        s.spool(b, b"y").unwrap();
        assert!(s.next_seq().unwrap() > b);
        assert_eq!(s.spooled_seqs().unwrap(), vec![a, b]);
        s.unspool(a);
        assert_eq!(s.spooled_seqs().unwrap(), vec![b]);
    }

    #[test]
    fn device_key_is_stable_and_private() {
        let d = tmp("key");
        let k1 = Store::open(&d).unwrap().device_key().unwrap();
        let k2 = Store::open(&d).unwrap().device_key().unwrap();
        assert_eq!(k1.public(), k2.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(d.join("device.key")).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}

//! One module per subcommand, plus what they share.

#[cfg(feature = "agent")]
pub mod agent;
pub mod bench;
#[cfg(feature = "compiler")]
pub mod compile;
#[cfg(all(feature = "simulate", feature = "server", feature = "compiler"))]
pub mod demo;
#[cfg(feature = "client")]
pub mod fleet;
pub mod inspect;
pub mod keys;
pub mod run;
#[cfg(feature = "server")]
pub mod server;
pub mod sign;
#[cfg(feature = "simulate")]
pub mod simulate;

use std::path::Path;

use anyhow::{Context, Result};
use edgefleet_runtime::{AlignedBytes, Model};

/// Reads a package file into an aligned buffer.
pub fn read_package(path: &Path) -> Result<AlignedBytes> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(AlignedBytes::from(bytes))
}

/// Loads (validates) a package read by [`read_package`].
pub fn load<'a>(path: &Path, bytes: &'a AlignedBytes) -> Result<Model<'a>> {
    Model::load(bytes).map_err(|e| anyhow::anyhow!("{}: invalid package: {e}", path.display()))
}

/// Writes a file atomically: a temporary file in the same directory, fsync, rename.
/// A failure leaves any previous file untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().context("output path has no file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `[1, 49, 10, 1]` → `1x49x10x1`.
pub fn shape_str(dims: &[usize]) -> String {
    if dims.is_empty() {
        return "scalar".into();
    }
    dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}

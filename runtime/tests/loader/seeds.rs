//! The fuzzer's seed corpus, `fuzz/seeds/load_package/`, holds the hand-built
//! valid packages, each prefixed with the fuzz target's control byte (0:
//! recompute the CRC). `EDGEFLEET_WRITE_SEEDS=1 cargo test -p
//! edgefleet-runtime --test loader seeds` rewrites them; otherwise this test
//! checks that the committed seeds are exactly today's packages, so a format
//! change cannot leave the fuzzer starting from stale inputs.

use std::path::PathBuf;

use edgefleet_runtime::Model;

use crate::common::{aligned, valid_packages};

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/load_package")
}

/// The fuzz input for a package: control byte 0 (reseal), then the package.
fn seed(package: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(package);
    v
}

#[test]
fn fuzz_seeds_are_the_valid_packages() {
    let dir = seed_dir();
    let write = std::env::var_os("EDGEFLEET_WRITE_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).expect("create the seed directory");
    }
    for (name, package) in valid_packages() {
        let path = dir.join(format!("{name}.efm"));
        let want = seed(&package);
        // The seed's package part is itself a valid package.
        let buf = aligned(&want[1..]);
        Model::load(&buf).unwrap_or_else(|e| panic!("{name}: {e}"));
        if write {
            std::fs::write(&path, &want).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        let got = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (run with EDGEFLEET_WRITE_SEEDS=1 to write the seeds)", path.display())
        });
        assert!(got == want, "{} is stale: run with EDGEFLEET_WRITE_SEEDS=1", path.display());
    }
}

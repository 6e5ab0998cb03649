//! Criterion benches of our runtime on the four MLPerf Tiny models: each
//! model's `*_int8_from_tflite.onnx` is compiled once in-process, loaded with
//! `OwnedModel::load`, and one iteration is "write the input, invoke", through
//! the same `ours_session` that `compare` uses.
//!
//! `cargo bench -p edgefleet-benches` (data folders as for `compare`:
//! `EDGEFLEET_MLPERF_TINY`, else `testdata/mlperf-tiny`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use edgefleet_benches::models::{DataDirs, ModelKey};
use edgefleet_benches::ours::{Ours, ours_session};

fn models(c: &mut Criterion) {
    let dirs = DataDirs::new(&[]);
    let mut group = c.benchmark_group("edgefleet");
    for key in ModelKey::ALL {
        let ours = match Ours::load(&dirs, key) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("skipping {key}: {e:#}");
                continue;
            }
        };
        let result = ours_session(&ours.owned, &ours.input, |s| {
            // One checked run first: a failure is reported, not benchmarked.
            s.set_input()?;
            s.invoke()?;
            let mut failed = None;
            group.bench_function(key.key(), |b| {
                b.iter(|| {
                    let r = s.set_input().and_then(|()| s.invoke());
                    if let Err(e) = black_box(r) {
                        failed.get_or_insert(e);
                    }
                })
            });
            failed.map_or(Ok(()), Err)
        });
        if let Err(e) = result {
            eprintln!("{key}: {e:#}");
        }
    }
    group.finish();
}

criterion_group!(benches, models);
criterion_main!(benches);

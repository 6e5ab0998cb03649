//! Regression tests for bugs found by the property tests and the fuzzer.

use edgefleet_runtime::format::param;
use edgefleet_runtime::{Interpreter, LoadError, Model};

use crate::common::{Layout, TinyCnn, aligned, mutated, patch_op};

/// Op 2 of the tiny CNN: AveragePool2D, window 8×8 over the 8×8 image, stride 8, no padding.
const OP_POOL: usize = 2;

/// Found by `prop_single_field_mutations_resealed`: the average pool's top
/// padding set to 8 (one op parameter word; CRC resealed). The loader
/// accepted the package, then `invoke()` failed with
/// `RunError::Kernel { op: 2, error: InvalidParameter }` because the only
/// output window lies entirely in the padding, which the kernel refuses.
/// Validated models must not produce kernel errors; the loader now rejects it.
#[test]
fn regression_average_pool_window_in_padding() {
    let b = TinyCnn::new().package(Layout::Reuse);
    for (word, value) in [(param::PAD_TOP, 8), (param::PAD_LEFT, 9), (param::PAD_TOP, 1 << 16)] {
        let m = mutated(&b, |m| patch_op(m, OP_POOL, |r| r.params[word] = value));
        let buf = aligned(&m);
        assert_eq!(
            Model::load(&buf).map(|_| ()),
            Err(LoadError::BadOp {
                index: OP_POOL as u32,
                problem: "average pool window lies entirely in the padding"
            })
        );
    }
    // A window that still sees one row of the image is fine and runs.
    let m = mutated(&b, |m| patch_op(m, OP_POOL, |r| r.params[param::PAD_TOP] = 7));
    let buf = aligned(&m);
    let model = Model::load(&buf).expect("window overlapping the image");
    let mut arena = vec![0u8; model.arena_size()];
    Interpreter::new(&model, &mut arena).unwrap().invoke().expect("runs");
}

/// Same root cause, other kernel limit: a 4096×4096 window (each side within
/// the format's 2^16 limit) exceeds the kernel's 2^23-tap maximum, which
/// also surfaced only as `RunError::Kernel` from `invoke()`.
#[test]
fn regression_average_pool_window_too_large() {
    let b = TinyCnn::new().package(Layout::Reuse);
    let m = mutated(&b, |m| {
        patch_op(m, OP_POOL, |r| {
            r.params[param::FILTER_H] = 4096;
            r.params[param::FILTER_W] = 4096;
        })
    });
    let buf = aligned(&m);
    assert_eq!(
        Model::load(&buf).map(|_| ()),
        Err(LoadError::BadOp { index: OP_POOL as u32, problem: "average pool window too large" })
    );
    // Larger than the image but within the kernel's limit: fine (padding is not averaged in).
    let m = mutated(&b, |m| {
        patch_op(m, OP_POOL, |r| {
            r.params[param::FILTER_H] = 2048;
            r.params[param::FILTER_W] = 4096;
        })
    });
    let buf = aligned(&m);
    let model = Model::load(&buf).expect("large window within the kernel's limit");
    let mut arena = vec![0u8; model.arena_size()];
    Interpreter::new(&model, &mut arena).unwrap().invoke().expect("runs");
}

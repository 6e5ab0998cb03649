//! Fuzzes `Model::load` on untrusted bytes, and the interpreter on whatever
//! loads.
//!
//! Input: one control byte, then the package. Control bit 0 clear: the
//! package's CRC-32 is recomputed first, so that mutations reach the
//! structural validation behind the checksum; set: the bytes are loaded as
//! they are (exercising the checksum itself).
//!
//! Checks, beyond "no panic, no out-of-bounds access" (which libFuzzer and
//! the sanitizer report):
//! - a package that loads runs with an arena of exactly `arena_size()` bytes
//!   and `invoke()` succeeds (a validated model fails only on caller mistakes);
//! - run again in a larger buffer full of garbage, nothing past
//!   `arena_size()` is written, and the outputs are the same (the memory plan
//!   was proven: no op reads bytes nothing wrote);
//! - run with weights packed for the SIMD GEMM kernels (`PackedWeights`),
//!   the outputs are the same again (convolutions and fully connected layers
//!   over packed weights bit-identical to the reference ones, on whatever the
//!   loader accepts).
#![no_main]

use edgefleet_runtime::writer::reseal;
use edgefleet_runtime::{AlignedBytes, Interpreter, Model, PackedWeights};
use libfuzzer_sys::fuzz_target;

const CANARY: u8 = 0xA5;
/// Larger (valid) plans are loaded but not run, to keep the fuzzer's memory bounded.
const MAX_RUN_ARENA: usize = 1 << 24;

fn run(model: &Model<'_>, arena: &mut [u8], fill: u8, packed: Option<&PackedWeights>) -> Vec<Vec<i8>> {
    let mut interp = Interpreter::new(model, arena).expect("an arena of arena_size() bytes is enough");
    if let Some(p) = packed {
        interp = interp.with_packed(p);
    }
    assert_eq!(interp.arena_used_bytes(), model.arena_size());
    for i in 0..model.input_count() {
        let input = interp.input_mut(i).expect("validated input");
        for (k, v) in input.iter_mut().enumerate() {
            *v = (k as u8).wrapping_mul(37).wrapping_add(fill) as i8;
        }
    }
    if let Err(e) = interp.invoke() {
        panic!("a validated model failed to run: {e}");
    }
    (0..model.output_count())
        .map(|k| {
            let out = interp.output(k).expect("validated output").to_vec();
            let mut f = vec![0f32; out.len()];
            interp.output_f32(k, &mut f).expect("dequantize");
            out
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, package)) = data.split_first() else { return };
    let mut bytes = package.to_vec();
    if control & 1 == 0 {
        reseal(&mut bytes);
    }
    let buf = AlignedBytes::from(bytes);
    let model = match Model::load(&buf) {
        Ok(model) => model,
        Err(e) => {
            // Error messages are built from the package: format them too.
            let _ = e.to_string();
            return;
        }
    };
    // Everything validated is readable.
    for i in 0..model.tensor_count() {
        assert!(model.tensor(i as u16).is_some());
    }
    for i in 0..model.op_count() {
        assert!(model.op(i).is_some());
    }
    for i in 0..model.input_count() {
        assert!(model.input(i).is_some());
    }
    for k in 0..model.output_count() {
        let io = model.output(k).expect("validated output");
        for l in 0..io.label_count() {
            assert!(io.label(l).is_some());
        }
    }
    for kind in [16u16, 17, 18, 0x7FFF] {
        let _ = model.section(kind);
    }

    let n = model.arena_size();
    if n > MAX_RUN_ARENA {
        return;
    }
    let mut exact = vec![0u8; n];
    let first = run(&model, &mut exact, control, None);
    let mut big = vec![CANARY; n + 64];
    let second = run(&model, &mut big, control, None);
    assert!(big[n..].iter().all(|&b| b == CANARY), "wrote past arena_size()");
    assert_eq!(first, second, "outputs depend on the initial arena contents");
    let packed = PackedWeights::for_model(&model);
    let fast = run(&model, &mut exact, control, Some(&packed));
    assert_eq!(first, fast, "packed (SIMD) kernels differ from the reference");
});

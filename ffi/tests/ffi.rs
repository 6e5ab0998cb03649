//! The C ABI called as C calls it: the KWS package end to end (int8 and
//! float paths against TensorFlow Lite Micro's output), every misuse a C
//! caller can make answered by a status and a message, and the committed
//! header equal to what cbindgen generates.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::OnceLock;

use edgefleet_compiler::tensor::Data;
use edgefleet_ffi::*;

fn data(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/mlperf-tiny").join(p)
}

fn i8s(p: &str) -> Vec<i8> {
    match edgefleet_compiler::npy::read(&data(p)).expect("npy").data {
        Data::I8(v) => v,
        other => panic!("{p}: not int8: {other:?}"),
    }
}

/// The KWS package, compiled once per test binary.
fn kws() -> &'static [u8] {
    static PKG: OnceLock<Vec<u8>> = OnceLock::new();
    PKG.get_or_init(|| {
        let onnx = std::fs::read(data("onnx/kws_int8_from_tflite.onnx")).expect("model");
        edgefleet_compiler::compile(&onnx, &Default::default(), &mut |_| {}).expect("compiles").package
    })
}

fn last_error() -> Option<String> {
    let p = edgefleet_last_error();
    // SAFETY: non-null results are NUL-terminated strings valid until the next call.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// A model freed on drop, so failing assertions do not leak.
struct Handle(*mut EdgefleetModel);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `edgefleet_model_load` and is freed once.
        unsafe { edgefleet_model_free(self.0) };
    }
}

fn load(bytes: &[u8]) -> Result<Handle, (EdgefleetStatus, String)> {
    let mut m = ptr::null_mut();
    // SAFETY: `bytes` is a live slice and `m` a writable pointer.
    match unsafe { edgefleet_model_load(bytes.as_ptr(), bytes.len(), &mut m) } {
        EdgefleetStatus::Ok => Ok(Handle(m)),
        status => {
            assert!(m.is_null(), "a failed load wrote *out");
            Err((status, last_error().expect("a failure leaves a message")))
        }
    }
}

#[test]
fn kws_matches_tflite_micro_through_the_c_abi() {
    let input = i8s("ref/kws/real.input_i8.npy");
    let want = i8s("ref/kws/real.tflm_int8.npy");
    let m = load(kws()).expect("loads");
    // SAFETY (whole block): `m.0` is a live model; every buffer is a live
    // local of the length passed.
    unsafe {
        let (mut n_in, mut n_out, mut arena) = (0, 0, 0);
        assert_eq!(edgefleet_model_input_count(m.0, &mut n_in), EdgefleetStatus::Ok);
        assert_eq!(edgefleet_model_output_count(m.0, &mut n_out), EdgefleetStatus::Ok);
        assert_eq!(edgefleet_model_arena_size(m.0, &mut arena), EdgefleetStatus::Ok);
        assert_eq!((n_in, n_out, arena), (1, 1, 16_000));

        let mut info_in = EdgefleetTensorInfo::default();
        let mut info_out = EdgefleetTensorInfo::default();
        assert_eq!(edgefleet_model_input_info(m.0, 0, &mut info_in), EdgefleetStatus::Ok);
        assert_eq!(edgefleet_model_output_info(m.0, 0, &mut info_out), EdgefleetStatus::Ok);
        assert_eq!((info_in.rank, info_in.dims, info_in.elements), (4, [1, 49, 10, 1], 490));
        assert_eq!((info_in.scale, info_in.zero_point), (0.584_702_9, 83));
        assert_eq!((info_out.rank, info_out.dims, info_out.elements), (2, [1, 12, 0, 0], 12));
        assert_eq!((info_out.scale, info_out.zero_point), (1.0 / 256.0, -128));

        let mut out = [0i8; 12];
        assert_eq!(edgefleet_model_output_i8(m.0, 0, out.as_mut_ptr(), 12), EdgefleetStatus::NotRun);
        assert!(last_error().expect("message").contains("invoke first"));

        assert_eq!(edgefleet_model_set_input_i8(m.0, 0, input.as_ptr(), input.len()), EdgefleetStatus::Ok);
        assert_eq!(edgefleet_model_invoke(m.0), EdgefleetStatus::Ok);
        assert_eq!(last_error(), None);
        assert_eq!(edgefleet_model_output_i8(m.0, 0, out.as_mut_ptr(), 12), EdgefleetStatus::Ok);
        assert_eq!(out.to_vec(), want, "edgefleet (left) vs TFLite Micro (right)");

        // Inputs stay set: a second run without setting them gives the same answer.
        assert_eq!(edgefleet_model_invoke(m.0), EdgefleetStatus::Ok);
        let mut again = [0i8; 12];
        assert_eq!(edgefleet_model_output_i8(m.0, 0, again.as_mut_ptr(), 12), EdgefleetStatus::Ok);
        assert_eq!(again, out);

        // Two threads per inference: the same answer, bit for bit; 0 threads is refused.
        assert_eq!(edgefleet_model_set_threads(m.0, 0), EdgefleetStatus::InvalidArgument);
        assert!(last_error().expect("message").contains("threads must be 1 to 64"));
        assert_eq!(edgefleet_model_set_threads(m.0, 2), EdgefleetStatus::Ok);
        assert_eq!(edgefleet_model_invoke(m.0), EdgefleetStatus::Ok);
        assert_eq!(edgefleet_model_output_i8(m.0, 0, again.as_mut_ptr(), 12), EdgefleetStatus::Ok);
        assert_eq!(again, out);
        assert_eq!(edgefleet_model_set_threads(m.0, 1), EdgefleetStatus::Ok);

        // Float in: the dequantized input quantizes back to the same int8 values.
        let floats: Vec<f32> = input.iter().map(|&q| info_in.scale * (q as i32 - info_in.zero_point) as f32).collect();
        assert_eq!(edgefleet_model_set_input_f32(m.0, 0, floats.as_ptr(), floats.len()), EdgefleetStatus::Ok);
        assert_eq!(edgefleet_model_invoke(m.0), EdgefleetStatus::Ok);
        let mut scores = [0f32; 12];
        assert_eq!(edgefleet_model_output_f32(m.0, 0, scores.as_mut_ptr(), 12), EdgefleetStatus::Ok);
        let expected: Vec<f32> = want.iter().map(|&q| (q as i32 + 128) as f32 / 256.0).collect();
        assert_eq!(scores.to_vec(), expected);
    }
}

#[test]
fn bad_packages_are_rejected_with_the_reason() {
    let (status, msg) = load(&[0x42; 100]).err().expect("rejected");
    assert_eq!(status, EdgefleetStatus::InvalidPackage);
    assert!(msg.contains("invalid package") && msg.contains("magic"), "{msg}");

    let mut corrupt = kws().to_vec();
    let i = corrupt.len() / 2;
    corrupt[i] ^= 0x01;
    let (status, msg) = load(&corrupt).err().expect("rejected");
    assert_eq!(status, EdgefleetStatus::InvalidPackage);
    assert!(msg.contains("CRC-32"), "{msg}");

    let (status, msg) = load(&kws()[..100]).err().expect("rejected");
    assert_eq!(status, EdgefleetStatus::InvalidPackage);
    assert!(msg.contains("size mismatch"), "{msg}");
}

#[test]
fn the_package_is_copied_so_the_caller_may_free_it() {
    let mut bytes = kws().to_vec();
    let m = load(&bytes).expect("loads");
    bytes.iter_mut().for_each(|b| *b = 0xAA);
    drop(bytes);
    let input = i8s("ref/kws/seeded.input_i8.npy");
    let mut out = [0i8; 12];
    // SAFETY: live model and buffers of the lengths passed.
    unsafe {
        assert_eq!(edgefleet_model_set_input_i8(m.0, 0, input.as_ptr(), input.len()), EdgefleetStatus::Ok);
        assert_eq!(edgefleet_model_invoke(m.0), EdgefleetStatus::Ok);
        assert_eq!(edgefleet_model_output_i8(m.0, 0, out.as_mut_ptr(), 12), EdgefleetStatus::Ok);
    }
    assert_eq!(out.to_vec(), i8s("ref/kws/seeded.tflm_int8.npy"));
}

#[test]
fn misuse_is_an_invalid_argument_never_a_crash() {
    let m = load(kws()).expect("loads");
    let x = [0i8; 490];
    let mut n = 0usize;
    let mut info = EdgefleetTensorInfo::default();
    let mut out = [0i8; 12];
    let floats = [0f32; 491];
    let misaligned = floats.as_ptr().cast::<u8>().wrapping_add(1).cast::<f32>();
    let check = |status: EdgefleetStatus, needle: &str| {
        assert_eq!(status, EdgefleetStatus::InvalidArgument, "{needle}");
        let msg = last_error().expect("a failure leaves a message");
        assert!(msg.contains(needle), "expected '{needle}' in '{msg}'");
    };
    // SAFETY: every non-null pointer is live with at least the length passed
    // (the misaligned one is rejected before it is read).
    unsafe {
        check(edgefleet_model_load(ptr::null(), 10, &mut ptr::null_mut()), "bytes is NULL");
        check(edgefleet_model_load(kws().as_ptr(), kws().len(), ptr::null_mut()), "out is NULL");
        check(edgefleet_model_arena_size(ptr::null(), &mut n), "model is NULL");
        check(edgefleet_model_input_count(m.0, ptr::null_mut()), "out is NULL");
        check(edgefleet_model_input_info(m.0, 1, &mut info), "no input 1: the model has 1");
        check(edgefleet_model_output_info(m.0, 3, &mut info), "no output 3: the model has 1");
        check(edgefleet_model_set_input_i8(m.0, 0, x.as_ptr(), 489), "input 0 has 490 elements, got 489");
        check(edgefleet_model_set_input_i8(m.0, 0, ptr::null(), 490), "data is NULL");
        check(edgefleet_model_set_input_f32(m.0, 0, floats.as_ptr(), 491), "input 0 has 490 elements, got 491");
        check(edgefleet_model_set_input_f32(m.0, 0, misaligned, 490), "data is not aligned");
        check(edgefleet_model_set_input_f32(m.0, 0, floats.as_ptr(), usize::MAX / 2), "beyond any buffer");
        check(edgefleet_model_invoke(ptr::null_mut()), "model is NULL");
        check(edgefleet_model_output_i8(m.0, 1, out.as_mut_ptr(), 12), "no output 1");
        check(edgefleet_model_output_f32(m.0, 0, ptr::null_mut(), 12), "out is NULL");
        // Freeing NULL is allowed and does nothing.
        edgefleet_model_free(ptr::null_mut());
    }
    // SAFETY: a static NUL-terminated string.
    assert_eq!(unsafe { CStr::from_ptr(edgefleet_version()) }.to_str(), Ok(env!("CARGO_PKG_VERSION")));
}

/// `include/edgefleet.h` is what cbindgen makes of the sources today.
/// `EDGEFLEET_BLESS=1` rewrites it instead of failing.
#[test]
fn header_is_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let path = dir.join("include/edgefleet.h");
    if std::env::var_os("EDGEFLEET_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("writing the header");
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date; run `EDGEFLEET_BLESS=1 cargo test -p edgefleet-ffi --test ffi header` and commit it.\n\
         generated:\n{}",
        path.display(),
        String::from_utf8_lossy(&generated)
    );
}

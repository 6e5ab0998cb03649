//! [`EdgefleetModel`] and the entry points that load, describe, run and free it.
//!
//! A model is a [`Session`]: it owns an aligned copy of the package, its
//! arena, staged inputs and the outputs of the last run, so the caller's
//! buffers are never borrowed past a call.

use std::ffi::c_char;

use edgefleet_runtime::IoInfo;
use edgefleet_session::{Session, SessionError};

use crate::error::{EdgefleetStatus, Error, guard};

/// Largest tensor rank a package holds; the length of [`EdgefleetTensorInfo::dims`].
pub const EDGEFLEET_MAX_RANK: usize = 4;
// A literal for cbindgen; the build fails if the format's rank limit changes.
const _: () = assert!(EDGEFLEET_MAX_RANK == edgefleet_runtime::format::MAX_RANK);

/// A loaded, validated package with its arena. Opaque to C.
///
/// One model may be used from any thread, but from one thread at a time.
/// Several models (even of the same package) are independent.
pub struct EdgefleetModel(Session);

/// Shape and quantization of an input or output (`real = scale * (q - zero_point)`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EdgefleetTensorInfo {
    /// Number of dimensions (0 to [`EDGEFLEET_MAX_RANK`]).
    pub rank: usize,
    /// The dimensions; entries past `rank` are 0.
    pub dims: [usize; EDGEFLEET_MAX_RANK],
    /// Number of int8 elements (product of the dimensions).
    pub elements: usize,
    /// Quantization scale.
    pub scale: f32,
    /// Quantization zero point.
    pub zero_point: i32,
}

impl From<SessionError> for Error {
    fn from(e: SessionError) -> Self {
        let status = match e {
            SessionError::InvalidPackage(_) => EdgefleetStatus::InvalidPackage,
            SessionError::InvalidArgument(_) => EdgefleetStatus::InvalidArgument,
            SessionError::NotRun => EdgefleetStatus::NotRun,
            // `Run`, and variants added later.
            _ => EdgefleetStatus::RunFailed,
        };
        Error { status, message: e.to_string() }
    }
}

fn info(io: IoInfo<'_>) -> EdgefleetTensorInfo {
    let dims = io.tensor.shape.dims();
    let mut out = EdgefleetTensorInfo { rank: dims.len(), elements: io.tensor.shape.elements(), ..Default::default() };
    out.dims[..dims.len()].copy_from_slice(dims);
    (out.scale, out.zero_point) = io.quantization();
    out
}

/// `&T` from a C pointer, or `InvalidArgument` naming the parameter.
///
/// # Safety
/// `p` is null or points to a valid, properly aligned `T` not mutated for `'a`.
unsafe fn as_ref<'a, T>(p: *const T, what: &str) -> Result<&'a T, Error> {
    // SAFETY: the caller's contract; null is checked by `as_ref`.
    unsafe { p.as_ref() }.ok_or_else(|| Error::invalid_argument(format!("{what} is NULL")))
}

/// `&mut T` from a C pointer, or `InvalidArgument`.
///
/// # Safety
/// `p` is null or points to a valid, properly aligned `T` not aliased for `'a`.
unsafe fn as_mut<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, Error> {
    // SAFETY: the caller's contract; null is checked by `as_mut`.
    unsafe { p.as_mut() }.ok_or_else(|| Error::invalid_argument(format!("{what} is NULL")))
}

fn check_buffer<T>(p: *const T, len: usize, what: &str) -> Result<(), Error> {
    if len > isize::MAX as usize / size_of::<T>().max(1) {
        return Err(Error::invalid_argument(format!("{what}: length {len} is beyond any buffer")));
    }
    if p.is_null() {
        return Err(Error::invalid_argument(format!("{what} is NULL")));
    }
    if !p.is_aligned() {
        return Err(Error::invalid_argument(format!("{what} is not aligned for its element type")));
    }
    Ok(())
}

/// `&[T]` of `len` elements from a C pointer.
///
/// # Safety
/// Unless null, `p` points to `len` initialized `T`s not mutated for `'a`.
unsafe fn as_slice<'a, T>(p: *const T, len: usize, what: &str) -> Result<&'a [T], Error> {
    check_buffer(p, len, what)?;
    // SAFETY: non-null, aligned, at most isize::MAX bytes (checked above);
    // that `len` values are there is the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// `&mut [T]` of `len` elements from a C pointer.
///
/// # Safety
/// Unless null, `p` points to `len` writable `T`s not aliased for `'a`.
unsafe fn as_mut_slice<'a, T>(p: *mut T, len: usize, what: &str) -> Result<&'a mut [T], Error> {
    check_buffer(p, len, what)?;
    // SAFETY: non-null, aligned, at most isize::MAX bytes (checked above);
    // that `len` values are there and not aliased is the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// Validates a package and creates a model that owns a copy of it.
///
/// `bytes` may be freed after the call (the package is copied into an aligned
/// buffer). On success `*out` is a model to release with
/// [`edgefleet_model_free`]; on failure `*out` is left unchanged.
///
/// Returns `EDGEFLEET_STATUS_INVALID_PACKAGE` if the bytes are not a valid
/// package (corrupt, truncated, unknown version or op), with the reason in
/// `edgefleet_last_error()`.
///
/// # Safety
/// `bytes` points to `len` readable bytes; `out` to a writable pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgefleet_model_load(
    bytes: *const u8,
    len: usize,
    out: *mut *mut EdgefleetModel,
) -> EdgefleetStatus {
    guard(|| {
        // SAFETY: the caller guarantees `bytes` holds `len` readable bytes.
        let bytes = unsafe { as_slice(bytes, len, "bytes") }?;
        // SAFETY: the caller guarantees `out` is writable.
        let out = unsafe { as_mut(out, "out") }?;
        *out = Box::into_raw(Box::new(EdgefleetModel(Session::load(bytes)?)));
        Ok(())
    })
}

/// Frees a model. NULL is ignored. Cannot fail, so returns nothing.
///
/// # Safety
/// `model` is NULL or came from [`edgefleet_model_load`] and is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgefleet_model_free(model: *mut EdgefleetModel) {
    guard(|| {
        if !model.is_null() {
            // SAFETY: a non-null `model` is a `Box` from `edgefleet_model_load`
            // that the caller hands back exactly once.
            drop(unsafe { Box::from_raw(model) });
        }
        Ok(())
    });
}

/// Bytes of the arena the model uses (the exact size of its memory plan),
/// already allocated by [`edgefleet_model_load`].
///
/// # Safety
/// `model` came from [`edgefleet_model_load`]; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgefleet_model_arena_size(model: *const EdgefleetModel, out: *mut usize) -> EdgefleetStatus {
    guard(|| {
        // SAFETY: the caller guarantees both pointers (null is checked).
        let (model, out) = unsafe { (as_ref(model, "model")?, as_mut(out, "out")?) };
        *out = model.0.model().arena_size();
        Ok(())
    })
}

/// Number of inputs.
///
/// # Safety
/// `model` came from [`edgefleet_model_load`]; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgefleet_model_input_count(model: *const EdgefleetModel, out: *mut usize) -> EdgefleetStatus {
    guard(|| {
        // SAFETY: the caller guarantees both pointers (null is checked).
        let (model, out) = unsafe { (as_ref(model, "model")?, as_mut(out, "out")?) };
        *out = model.0.model().input_count();
        Ok(())
    })
}

/// Number of outputs.
///
/// # Safety
/// `model` came from [`edgefleet_model_load`]; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgefleet_model_output_count(
    model: *const EdgefleetModel,
    out: *mut usize,
) -> EdgefleetStatus {
    guard(|| {
        // SAFETY: the caller guarantees both pointers (null is checked).
        let (model, out) = unsafe { (as_ref(model, "model")?, as_mut(out, "out")?) };
        *out = model.0.model().output_count();
        Ok(())
    })
}

/// Shape and quantization of input `index`.
///
/// # Safety
/// `model` came from [`edgefleet_model_load`]; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgefleet_model_input_info(
    model: *const EdgefleetModel,
    index: usize,
    out: *mut EdgefleetTensorInfo,
) -> EdgefleetStatus {
    guard(|| {
        // SAFETY: the caller guarantees both pointers (null is checked).
        let (model, out) = unsafe { (as_ref(model, "model")?, as_mut(out, "out")?) };
        *out = info(model.0.input(index)?);
        Ok(())
    })
}

/// Shape and quantization of output `index`.
///
/// # Safety
/// `model` came from [`edgefleet_model_load`]; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgefleet_model_output_info(
    model: *const EdgefleetModel,
    index: usize,
    out: *mut EdgefleetTensorInfo,
) -> EdgefleetStatus {
    guard(|| {
        // SAFETY: the caller guarantees both pointers (null is checked).
        let (model, out) = unsafe { (as_ref(model, "model")?, as_mut(out, "out")?) };
        *out = info(model.0.output(index)?);
        Ok(())
    })
}

/// Sets input `index` from `len` int8 values (exactly the input's element
/// count), used as they are. The values are copied; they stay set for later runs.
///
/// # Safety
/// `model` came from [`edgefleet_model_load`]; `data` points to `len` values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgefleet_model_set_input_i8(
    model: *mut EdgefleetModel,
    index: usize,
    data: *const i8,
    len: usize,
) -> EdgefleetStatus {
    guard(|| {
        // SAFETY: the caller guarantees both pointers and `len` (null and alignment are checked).
        let (model, data) = unsafe { (as_mut(model, "model")?, as_slice(data, len, "data")?) };
        Ok(model.0.set_input_i8(index, data)?)
    })
}

/// Sets input `index` from `len` float values, quantized with the input's
/// scale and zero point (round to nearest, saturating), as the runtime's
/// `set_input_f32` does.
///
/// # Safety
/// `model` came from [`edgefleet_model_load`]; `data` points to `len` values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgefleet_model_set_input_f32(
    model: *mut EdgefleetModel,
    index: usize,
    data: *const f32,
    len: usize,
) -> EdgefleetStatus {
    guard(|| {
        // SAFETY: the caller guarantees both pointers and `len` (null and alignment are checked).
        let (model, data) = unsafe { (as_mut(model, "model")?, as_slice(data, len, "data")?) };
        Ok(model.0.set_input_f32(index, data)?)
    })
}

/// Runs each later inference on `threads` threads (the caller's included;
/// 1, the default, runs on the calling thread only). Convolutions, depthwise
/// convolutions, pooling and adds are split by output rows; results are
/// bit-identical. Worth it for larger models on multi-core phones.
/// `EDGEFLEET_INVALID_ARGUMENT` for 0 or more than 64.
///
/// # Safety
/// `model` came from [`edgefleet_model_load`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgefleet_model_set_threads(model: *mut EdgefleetModel, threads: usize) -> EdgefleetStatus {
    guard(|| {
        // SAFETY: the caller guarantees `model` (null is checked).
        Ok(unsafe { as_mut(model, "model") }?.0.set_threads(threads)?)
    })
}

/// Runs the model once on the inputs set so far (never-set inputs are zeros).
/// The outputs stay readable until the next run.
///
/// # Safety
/// `model` came from [`edgefleet_model_load`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgefleet_model_invoke(model: *mut EdgefleetModel) -> EdgefleetStatus {
    guard(|| {
        // SAFETY: the caller guarantees `model` (null is checked).
        Ok(unsafe { as_mut(model, "model") }?.0.invoke()?)
    })
}

/// Copies output `index` of the last run as int8 into `out`, `len` values
/// (exactly the output's element count).
///
/// # Safety
/// `model` came from [`edgefleet_model_load`]; `out` points to `len` writable values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgefleet_model_output_i8(
    model: *const EdgefleetModel,
    index: usize,
    out: *mut i8,
    len: usize,
) -> EdgefleetStatus {
    guard(|| {
        // SAFETY: the caller guarantees both pointers and `len` (null and alignment are checked).
        let (model, out) = unsafe { (as_ref(model, "model")?, as_mut_slice(out, len, "out")?) };
        let q = model.0.output_i8(index)?;
        if q.len() != len {
            return Err(Error::invalid_argument(format!("output {index} has {} elements, got {len}", q.len())));
        }
        out.copy_from_slice(q);
        Ok(())
    })
}

/// Copies output `index` of the last run, dequantized to float, into `out`,
/// `len` values (exactly the output's element count).
///
/// # Safety
/// `model` came from [`edgefleet_model_load`]; `out` points to `len` writable values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgefleet_model_output_f32(
    model: *const EdgefleetModel,
    index: usize,
    out: *mut f32,
    len: usize,
) -> EdgefleetStatus {
    guard(|| {
        // SAFETY: the caller guarantees both pointers and `len` (null and alignment are checked).
        let (model, out) = unsafe { (as_ref(model, "model")?, as_mut_slice(out, len, "out")?) };
        Ok(model.0.output_f32(index, out)?)
    })
}

/// The library version (`"0.1.0"`), a static NUL-terminated string.
#[unsafe(no_mangle)]
pub extern "C" fn edgefleet_version() -> *const c_char {
    // Cannot panic; inside catch_unwind anyway, like every entry point.
    std::panic::catch_unwind(|| concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()).unwrap_or(std::ptr::null())
}

//! Status codes, the thread-local last error, and [`guard`], which every
//! entry point runs its body in: panics are caught there and never unwind
//! into C.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What an `edgefleet_*` call returns. Anything but `EDGEFLEET_STATUS_OK`
/// leaves a message for [`edgefleet_last_error`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgefleetStatus {
    /// Success.
    Ok = 0,
    /// A null pointer, a misaligned buffer, an index out of range or a buffer
    /// of the wrong length. Nothing was changed.
    InvalidArgument = 1,
    /// The bytes are not a valid package; the message says what is wrong and where.
    InvalidPackage = 2,
    /// Inference failed (a runtime bug if it happens on a loaded package).
    RunFailed = 3,
    /// Outputs were read before a successful `edgefleet_model_invoke`.
    NotRun = 4,
    /// A panic inside the library was caught. The library is still usable;
    /// free the model the call was about and report the message as a bug.
    Panic = 5,
}

/// A failed call: its status and the message for [`edgefleet_last_error`].
#[derive(Debug)]
pub(crate) struct Error {
    pub status: EdgefleetStatus,
    pub message: String,
}

impl Error {
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Error { status: EdgefleetStatus::InvalidArgument, message: message.into() }
    }
}

thread_local! {
    /// The message of this thread's last failed call; `None` after a success.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: Option<String>) {
    // A C string cannot hold NUL; the messages never contain one, but model
    // names inside them come from untrusted bytes.
    let c = message.map(|m| CString::new(m.replace('\0', "\\0")).unwrap_or_default());
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Runs an entry point's body: clears the last error, catches any panic, and
/// turns the result into a status, recording the message of a failure.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Error>) -> EdgefleetStatus {
    set_last_error(None);
    // Unwind safety: a panic can at worst leave a model's staged inputs or
    // outputs half written, which is not memory-unsafe, and the status tells
    // the caller to drop the model.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => EdgefleetStatus::Ok,
        Ok(Err(e)) => {
            set_last_error(Some(e.message));
            e.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".into());
            set_last_error(Some(format!("internal error (panic caught at the C boundary): {what}")));
            EdgefleetStatus::Panic
        }
    }
}

/// The message of the last failed `edgefleet_*` call on this thread, or NULL
/// if the last call succeeded (or none was made).
///
/// The string is UTF-8, owned by the library, and valid until the next
/// `edgefleet_*` call on the same thread; copy it to keep it. This call never
/// fails and does not change the last error.
#[unsafe(no_mangle)]
pub extern "C" fn edgefleet_last_error() -> *const c_char {
    catch_unwind(|| LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr())))
        .unwrap_or(std::ptr::null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last_error() -> Option<String> {
        let p = edgefleet_last_error();
        // SAFETY: a non-null pointer from `edgefleet_last_error` is a NUL-terminated
        // string owned by this thread's LAST_ERROR, unchanged until the next call.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let status = guard(|| panic!("kernel exploded at op {}", 7));
        assert_eq!(status, EdgefleetStatus::Panic);
        let msg = last_error().expect("message");
        assert!(msg.contains("panic") && msg.contains("kernel exploded at op 7"), "{msg}");
        assert_eq!(guard(|| Err(Error::invalid_argument("nope"))), EdgefleetStatus::InvalidArgument);
        assert_eq!(last_error().as_deref(), Some("nope"));
    }

    #[test]
    fn success_clears_the_last_error_and_errors_stay_per_thread() {
        guard(|| Err(Error::invalid_argument("here")));
        std::thread::spawn(|| assert_eq!(last_error(), None)).join().expect("thread");
        assert_eq!(last_error().as_deref(), Some("here"));
        assert_eq!(guard(|| Ok(())), EdgefleetStatus::Ok);
        assert_eq!(last_error(), None);
    }

    #[test]
    fn interior_nul_does_not_lose_the_message() {
        guard(|| Err(Error::invalid_argument("name a\0b")));
        assert_eq!(last_error().as_deref(), Some("name a\\0b"));
    }
}

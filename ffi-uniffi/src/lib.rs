#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use std::sync::{Arc, Mutex, MutexGuard};

use edgefleet_session::{Session, SessionError};

uniffi::setup_scaffolding!();

/// Why a call failed; a Kotlin/Swift/Python exception.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum EdgefleetError {
    /// The bytes are not a valid package.
    #[error("invalid package: {reason}")]
    InvalidPackage {
        /// What is wrong and where.
        reason: String,
    },
    /// Wrong number of inputs, or an input of the wrong length.
    #[error("{reason}")]
    InvalidArgument {
        /// Which argument and why.
        reason: String,
    },
    /// The runtime failed (a bug if it happens on a loaded package).
    #[error("inference failed: {reason}")]
    RunFailed {
        /// The runtime's error.
        reason: String,
    },
}

impl From<SessionError> for EdgefleetError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::InvalidPackage(e) => EdgefleetError::InvalidPackage { reason: e.to_string() },
            SessionError::InvalidArgument(reason) => EdgefleetError::InvalidArgument { reason },
            other => EdgefleetError::RunFailed { reason: other.to_string() },
        }
    }
}

/// An input or output of a model.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct TensorInfo {
    /// Name from the source model.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<u32>,
    /// Quantization scale: `real = scale * (q - zero_point)`.
    pub scale: f32,
    /// Quantization zero point.
    pub zero_point: i32,
    /// Class labels (outputs of classifiers), else empty.
    pub labels: Vec<String>,
}

/// A loaded, validated package, ready to run. Thread-safe: calls from
/// several threads take turns.
#[derive(Debug, uniffi::Object)]
pub struct EdgefleetModel {
    session: Mutex<Session>,
}

impl EdgefleetModel {
    fn session(&self) -> MutexGuard<'_, Session> {
        // A panic while locked can only leave staged inputs half written,
        // which the next run overwrites: the session stays usable.
        self.session.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn run_with<T, U>(
        &self,
        inputs: Vec<Vec<T>>,
        set: impl Fn(&mut Session, usize, &[T]) -> Result<(), SessionError>,
        get: impl Fn(&Session, usize) -> Result<Vec<U>, SessionError>,
    ) -> Result<Vec<Vec<U>>, EdgefleetError> {
        let mut s = self.session();
        let expected = s.model().input_count();
        if inputs.len() != expected {
            return Err(EdgefleetError::InvalidArgument {
                reason: format!("the model has {expected} inputs, got {}", inputs.len()),
            });
        }
        for (i, x) in inputs.iter().enumerate() {
            set(&mut s, i, x)?;
        }
        s.invoke()?;
        Ok((0..s.model().output_count()).map(|i| get(&s, i)).collect::<Result<_, _>>()?)
    }
}

#[uniffi::export]
impl EdgefleetModel {
    /// Validates `package` (an `.efm` file's bytes, copied) and prepares its arena.
    ///
    /// # Errors
    /// [`EdgefleetError::InvalidPackage`] says what is wrong and where.
    #[uniffi::constructor]
    pub fn new(package: Vec<u8>) -> Result<Arc<Self>, EdgefleetError> {
        Ok(Arc::new(EdgefleetModel { session: Mutex::new(Session::load(&package)?) }))
    }

    /// Runs later inferences on `threads` threads (the caller's included; 1,
    /// the default, runs on the calling thread only): convolutions, pooling
    /// and adds are split by output rows, with bit-identical results. Worth
    /// it for larger models on multi-core phones.
    ///
    /// # Errors
    /// [`EdgefleetError::InvalidArgument`] for 0 or more than 64.
    pub fn set_threads(&self, threads: u32) -> Result<(), EdgefleetError> {
        Ok(self.session().set_threads(threads as usize)?)
    }

    /// Bytes of activation memory the model uses (its memory plan).
    pub fn arena_size(&self) -> u64 {
        self.session().model().arena_size() as u64
    }

    /// The inputs, in order.
    pub fn inputs(&self) -> Vec<TensorInfo> {
        let s = self.session();
        (0..s.model().input_count()).filter_map(|i| s.model().input(i)).map(info).collect()
    }

    /// The outputs, in order.
    pub fn outputs(&self) -> Vec<TensorInfo> {
        let s = self.session();
        (0..s.model().output_count()).filter_map(|i| s.model().output(i)).map(info).collect()
    }

    /// Runs the model on int8 inputs (one list per input, each exactly the
    /// input's element count) and returns the int8 outputs.
    ///
    /// # Errors
    /// [`EdgefleetError::InvalidArgument`] for a wrong count or length.
    pub fn run_i8(&self, inputs: Vec<Vec<i8>>) -> Result<Vec<Vec<i8>>, EdgefleetError> {
        self.run_with(inputs, |s, i, x| s.set_input_i8(i, x), |s, i| s.output_i8(i).map(<[i8]>::to_vec))
    }

    /// Runs the model on float inputs (quantized with each input's scale and
    /// zero point) and returns the dequantized outputs.
    ///
    /// # Errors
    /// [`EdgefleetError::InvalidArgument`] for a wrong count or length.
    pub fn run_f32(&self, inputs: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>, EdgefleetError> {
        self.run_with(
            inputs,
            |s, i, x| s.set_input_f32(i, x),
            |s, i| {
                let mut out = vec![0.0; s.output(i)?.tensor.shape.elements()];
                s.output_f32(i, &mut out)?;
                Ok(out)
            },
        )
    }
}

fn info(io: edgefleet_runtime::IoInfo<'_>) -> TensorInfo {
    let (scale, zero_point) = io.quantization();
    TensorInfo {
        name: io.name().to_string(),
        shape: io.tensor.shape.dims().iter().map(|&d| d as u32).collect(),
        scale,
        zero_point,
        labels: (0..io.label_count()).filter_map(|i| io.label(i)).map(String::from).collect(),
    }
}

#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use core::fmt;

use edgefleet_kernels::reference::{dequantize_i8, quantize_f32};
use edgefleet_runtime::{Interpreter, IoInfo, LoadError, Model, OwnedModel, RunError, ThreadPool};

/// Why a [`Session`] call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// The bytes are not a valid package.
    InvalidPackage(LoadError),
    /// An index out of range or a buffer of the wrong length; says which.
    InvalidArgument(String),
    /// Outputs were read before a successful [`Session::invoke`].
    NotRun,
    /// The runtime failed (a bug if it happens on a loaded package).
    Run(RunError),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::InvalidPackage(e) => write!(f, "invalid package: {e}"),
            SessionError::InvalidArgument(m) => f.write_str(m),
            SessionError::NotRun => f.write_str("no output yet: call invoke first"),
            SessionError::Run(e) => write!(f, "inference failed: {e}"),
        }
    }
}

impl std::error::Error for SessionError {}

/// A loaded, validated package with everything needed to run it.
pub struct Session {
    owned: OwnedModel,
    arena: Vec<u8>,
    inputs: Vec<Vec<i8>>,
    outputs: Vec<Vec<i8>>,
    has_run: bool,
    threads: Option<ThreadPool>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("package_bytes", &self.owned.as_bytes().len())
            .field("arena_bytes", &self.arena.len())
            .field("has_run", &self.has_run)
            .field("threads", &self.threads())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Copies `bytes` into an aligned buffer and validates it as a package.
    ///
    /// # Errors
    /// [`SessionError::InvalidPackage`] says what is wrong and where.
    pub fn load(bytes: &[u8]) -> Result<Session, SessionError> {
        let owned = OwnedModel::load(bytes).map_err(SessionError::InvalidPackage)?;
        let model = owned.model();
        let size = |io: Option<IoInfo>| io.map_or(0, |io| io.tensor.shape.elements());
        let inputs = (0..model.input_count()).map(|i| vec![0; size(model.input(i))]).collect();
        let outputs = (0..model.output_count()).map(|i| vec![0; size(model.output(i))]).collect();
        let arena = vec![0; model.arena_size()];
        Ok(Session { owned, arena, inputs, outputs, has_run: false, threads: None })
    }

    /// Runs each inference on `threads` threads (the caller's included):
    /// convolutions, depthwise convolutions, pooling and adds are split by
    /// output rows, with bit-identical results. 1 (the default) runs on the
    /// calling thread only. Worth it for larger models on multi-core hosts;
    /// small models gain little, since each split wakes the other threads.
    ///
    /// # Errors
    /// `InvalidArgument` for 0 or more than 64 threads, or if the threads cannot be started.
    pub fn set_threads(&mut self, threads: usize) -> Result<(), SessionError> {
        if !(1..=64).contains(&threads) {
            return Err(invalid(format!("threads must be 1 to 64, got {threads}")));
        }
        self.threads = if threads == 1 {
            None
        } else {
            Some(ThreadPool::new(threads).map_err(|e| invalid(format!("cannot start {threads} threads: {e}")))?)
        };
        Ok(())
    }

    /// Threads each inference runs on.
    pub fn threads(&self) -> usize {
        self.threads.as_ref().map_or(1, edgefleet_runtime::Parallel::threads)
    }

    /// The validated package (inputs, outputs, arena size, labels).
    pub fn model(&self) -> Model<'_> {
        self.owned.model()
    }

    /// Input `index`, or `InvalidArgument` naming it.
    ///
    /// # Errors
    /// `index` is out of range.
    pub fn input(&self, index: usize) -> Result<IoInfo<'_>, SessionError> {
        let count = self.model().input_count();
        self.model().input(index).ok_or_else(|| invalid(format!("no input {index}: the model has {count}")))
    }

    /// Output `index`, or `InvalidArgument` naming it.
    ///
    /// # Errors
    /// `index` is out of range.
    pub fn output(&self, index: usize) -> Result<IoInfo<'_>, SessionError> {
        let count = self.model().output_count();
        self.model().output(index).ok_or_else(|| invalid(format!("no output {index}: the model has {count}")))
    }

    fn staged(&mut self, index: usize, len: usize) -> Result<(&mut [i8], (f32, i32)), SessionError> {
        let quant = self.input(index)?.quantization();
        let buf = &mut self.inputs[index];
        if buf.len() != len {
            return Err(invalid(format!("input {index} has {} elements, got {len}", buf.len())));
        }
        Ok((buf, quant))
    }

    /// Sets input `index` to int8 `data` (exactly the input's element count).
    ///
    /// # Errors
    /// `InvalidArgument` for a wrong index or length.
    pub fn set_input_i8(&mut self, index: usize, data: &[i8]) -> Result<(), SessionError> {
        self.staged(index, data.len())?.0.copy_from_slice(data);
        Ok(())
    }

    /// Sets input `index` from floats, quantized with the input's scale and
    /// zero point (round to nearest, saturating) as the runtime does.
    ///
    /// # Errors
    /// `InvalidArgument` for a wrong index or length.
    pub fn set_input_f32(&mut self, index: usize, data: &[f32]) -> Result<(), SessionError> {
        let (buf, (scale, zero_point)) = self.staged(index, data.len())?;
        quantize_f32(scale, zero_point, data, buf).map_err(|e| invalid(e.to_string()))
    }

    /// Runs the model once on the inputs set so far (never-set inputs are zeros).
    ///
    /// # Errors
    /// [`SessionError::Run`], which a validated package does not produce.
    pub fn invoke(&mut self) -> Result<(), SessionError> {
        self.has_run = false;
        let model = self.owned.model();
        let mut it = Interpreter::new(&model, &mut self.arena).map_err(SessionError::Run)?.with_owned(&self.owned);
        if let Some(pool) = &self.threads {
            it = it.with_parallel(pool);
        }
        for (i, x) in self.inputs.iter().enumerate() {
            it.input_mut(i).map_err(SessionError::Run)?.copy_from_slice(x);
        }
        it.invoke().map_err(SessionError::Run)?;
        for (i, y) in self.outputs.iter_mut().enumerate() {
            y.copy_from_slice(it.output(i).map_err(SessionError::Run)?);
        }
        self.has_run = true;
        Ok(())
    }

    /// Output `index` of the last run, int8.
    ///
    /// # Errors
    /// `InvalidArgument` for a wrong index, [`SessionError::NotRun`] before a run.
    pub fn output_i8(&self, index: usize) -> Result<&[i8], SessionError> {
        self.output(index)?;
        if !self.has_run {
            return Err(SessionError::NotRun);
        }
        Ok(&self.outputs[index])
    }

    /// Output `index` of the last run, dequantized into `out` (exactly the
    /// output's element count).
    ///
    /// # Errors
    /// As [`Session::output_i8`], and `InvalidArgument` for a wrong length.
    pub fn output_f32(&self, index: usize, out: &mut [f32]) -> Result<(), SessionError> {
        let (scale, zero_point) = self.output(index)?.quantization();
        let q = self.output_i8(index)?;
        if q.len() != out.len() {
            return Err(invalid(format!("output {index} has {} elements, got {}", q.len(), out.len())));
        }
        dequantize_i8(scale, zero_point, q, out).map_err(|e| invalid(e.to_string()))
    }
}

fn invalid(message: String) -> SessionError {
    SessionError::InvalidArgument(message)
}

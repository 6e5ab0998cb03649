//! Our engine: the `*_int8_from_tflite.onnx` models compiled in-process into
//! `.efm` packages (as `edgefleet compile` does), loaded with
//! [`OwnedModel::load`] and run by the runtime's [`Interpreter`].
//!
//! Kernel choice is the runtime's own (whatever it picks on this CPU, or what
//! `EDGEFLEET_KERNELS` forces): this crate only uses the public API.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use edgefleet_runtime::{Interpreter, OwnedModel};

use crate::models::{DataDirs, ModelKey};

/// Compiles an ONNX model into a loaded package, in-process.
///
/// # Errors
/// The file cannot be read, or the compiler or the loader rejects it.
pub fn compile_path(path: &Path) -> Result<OwnedModel> {
    let onnx = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let source = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let opts = edgefleet_compiler::Options { source, ..Default::default() };
    let compiled = edgefleet_compiler::compile(&onnx, &opts, &mut |_| {})
        .with_context(|| format!("compiling {}", path.display()))?;
    OwnedModel::load(&compiled.package).with_context(|| format!("loading the package compiled from {}", path.display()))
}

/// Our model for `key`, with its int8 input.
pub struct Ours {
    /// The compiled, validated package.
    pub owned: OwnedModel,
    /// The int8 input written before every run.
    pub input: Vec<i8>,
    /// Where the input came from.
    pub input_source: String,
    /// TFLite Micro's output for that input, when the reference file is there
    /// (our kernels are meant to match it bit for bit).
    pub reference_output: Option<Vec<i8>>,
}

impl Ours {
    /// Compiles `key`'s `*_int8_from_tflite.onnx` and reads its input
    /// (`ref/<key>/real.input_i8.npy`, or pseudo-random values without it).
    ///
    /// # Errors
    /// The model is missing or does not compile; the input file is unreadable.
    pub fn load(dirs: &DataDirs, key: ModelKey) -> Result<Ours> {
        let owned = compile_path(&dirs.find(&key.onnx_int8_from_tflite())?)?;
        let model = owned.model();
        anyhow::ensure!(model.input_count() == 1, "{key}: expected one input, the package has {}", model.input_count());
        let n = model.input(0).map_or(0, |i| i.tensor.shape.elements());
        let (input, input_source) = match dirs.find_optional(&key.input_i8()) {
            Some(p) => match crate::models::read_i8(&p, n)? {
                Some(v) => (v, p.display().to_string()),
                None => {
                    (crate::models::pseudo_random_i8(n, 1), format!("pseudo-random ({} does not fit)", p.display()))
                }
            },
            None => (crate::models::pseudo_random_i8(n, 1), "pseudo-random".into()),
        };
        let out_n = model.output(0).map_or(0, |o| o.tensor.shape.elements());
        let reference_output = match dirs.find_optional(&format!("ref/{key}/real.tflm_int8.npy")) {
            Some(p) if input_source != "pseudo-random" => crate::models::read_i8(&p, out_n)?,
            _ => None,
        };
        Ok(Ours { owned, input, input_source, reference_output })
    }
}

/// A set-up inference session: an interpreter over an arena, and the input
/// it is given before every run.
pub struct OursRun<'m, 'p, 'a, 'i> {
    it: Interpreter<'m, 'p, 'a>,
    input: &'i [i8],
}

impl OursRun<'_, '_, '_, '_> {
    /// Writes the input (the arena is reused, so a run may overwrite it).
    ///
    /// # Errors
    /// The input does not fit the model's input tensor.
    pub fn set_input(&mut self) -> Result<()> {
        let buf = self.it.input_mut(0)?;
        anyhow::ensure!(
            buf.len() == self.input.len(),
            "input has {} values, the model needs {}",
            self.input.len(),
            buf.len()
        );
        buf.copy_from_slice(self.input);
        Ok(())
    }

    /// Runs the model once.
    ///
    /// # Errors
    /// A kernel error (a validated model does not produce one).
    pub fn invoke(&mut self) -> Result<()> {
        self.it.invoke()?;
        Ok(())
    }

    /// Writes the input, then times one `invoke` alone.
    ///
    /// # Errors
    /// As [`Self::set_input`] and [`Self::invoke`].
    pub fn timed_run(&mut self) -> Result<Duration> {
        self.set_input()?;
        let t = Instant::now();
        self.it.invoke()?;
        Ok(t.elapsed())
    }

    /// The kernels the runtime runs this model with (its ISA probe, or what
    /// `EDGEFLEET_KERNELS` forces).
    pub fn kernels(&self) -> &'static str {
        self.it.kernels().name()
    }

    /// The int8 output of the last run.
    ///
    /// # Errors
    /// Never for a validated model.
    pub fn output(&self) -> Result<&[i8]> {
        Ok(self.it.output(0)?)
    }
}

/// Sets up one inference session of `owned` fed with `input` and hands it to
/// `body`: the one place where the per-inference setup lives, shared by the
/// criterion benches and `compare`. The arena is 64-byte aligned.
///
/// # Errors
/// The arena is refused, or `body` fails.
pub fn ours_session<R>(
    owned: &OwnedModel,
    input: &[i8],
    body: impl FnOnce(&mut OursRun<'_, '_, '_, '_>) -> Result<R>,
) -> Result<R> {
    let model = owned.model();
    let size = model.arena_size();
    let mut buf = vec![0u8; size + 64];
    let offset = buf.as_ptr().align_offset(64).min(64);
    let arena = &mut buf[offset..offset + size];
    // Weights packed at load for the SIMD GEMM kernels, as every host does.
    let it = Interpreter::new(&model, arena)?.with_owned(owned);
    let mut run = OursRun { it, input };
    body(&mut run)
}

/// Which kernels the runtime runs `owned` with.
///
/// # Errors
/// As [`ours_session`].
pub fn kernels_in_use(owned: &OwnedModel, input: &[i8]) -> Result<&'static str> {
    ours_session(owned, input, |s| Ok(s.kernels()))
}

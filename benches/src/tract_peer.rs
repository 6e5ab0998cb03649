//! tract as a peer: an ONNX graph loaded with `tract-onnx`, optimized
//! (`into_optimized`) and run single-threaded; the fp32 graphs, and the
//! onnxruntime-quantized int8 QDQ graphs where tract runs them.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tract_onnx::prelude::*;

/// A loaded tract model with its input.
pub struct TractSession {
    state: TypedSimpleState,
    input: Tensor,
}

impl TractSession {
    /// Loads `path`, optimizes it and builds a single-threaded plan; the
    /// input is `input` when it has the input's size, else pseudo-random.
    ///
    /// # Errors
    /// tract cannot load, type, optimize or plan the model, or its input is
    /// not a static float tensor.
    pub fn load(path: &Path, input: Option<&[f32]>) -> Result<TractSession> {
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| anyhow!("{e:#}"))
            .with_context(|| format!("tract: loading {}", path.display()))?;
        let typed = model.into_typed().map_err(|e| anyhow!("{e:#}")).context("tract: typing the model")?;
        let fact = typed.input_fact(0).map_err(|e| anyhow!("{e:#}"))?.clone();
        anyhow::ensure!(fact.datum_type == f32::datum_type(), "tract: input is {:?}, not f32", fact.datum_type);
        let shape: Vec<usize> = fact
            .shape
            .as_concrete()
            .ok_or_else(|| anyhow!("tract: input shape {:?} is not static", fact.shape))?
            .to_vec();
        let n: usize = shape.iter().product();
        let values: Vec<f32> = match input {
            Some(v) if v.len() == n => v.to_vec(),
            _ => crate::models::pseudo_random_i8(n, 2).iter().map(|&x| f32::from(x) / 128.0).collect(),
        };
        let tensor = Tensor::from_shape(&shape, &values).map_err(|e| anyhow!("{e:#}"))?;
        let optimized = typed.into_optimized().map_err(|e| anyhow!("{e:#}")).context("tract: optimizing the model")?;
        let options = RunOptions { executor: Some(multithread::Executor::SingleThread), ..RunOptions::default() };
        let plan =
            optimized.into_runnable_with_options(&options).map_err(|e| anyhow!("{e:#}")).context("tract: planning")?;
        let state = plan.spawn().map_err(|e| anyhow!("{e:#}"))?;
        let mut s = TractSession { state, input: tensor };
        s.timed_run().context("tract: first run")?;
        Ok(s)
    }

    /// Times one run (the input value is cloned before the clock starts).
    ///
    /// # Errors
    /// tract fails to run the model.
    pub fn timed_run(&mut self) -> Result<Duration> {
        let inputs = tvec!(self.input.clone().into_tvalue());
        let t = Instant::now();
        let out = self.state.run(inputs).map_err(|e| anyhow!("{e:#}"))?;
        let d = t.elapsed();
        drop(out);
        Ok(d)
    }
}

//! The models a device runs: the live one, optionally a shadow candidate,
//! each validated once ([`OwnedModel`]) with its own arena, and the
//! [`Monitor`] that measures every inference. Also the health check a new
//! package must pass before it goes live.

use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use edgefleet_protocol::profile::ReferenceProfile;
use edgefleet_protocol::{Health, ModelRef, Telemetry};
use edgefleet_runtime::{Interpreter, OwnedModel, SectionKind};
use serde::Serialize;

use crate::monitor::Monitor;

/// An inference request's input (single-input models).
#[derive(Clone, Debug, PartialEq)]
pub enum InferInput {
    /// Real values, quantized with the input's scale and zero point.
    F32(Vec<f32>),
    /// Already-quantized values.
    I8(Vec<i8>),
}

/// A loaded model with its arena.
pub struct Loaded {
    model: OwnedModel,
    arena: Vec<u8>,
    /// What it is.
    pub info: ModelRef,
    /// Its reference profile.
    pub profile: Option<ReferenceProfile>,
    /// Output-0 classes (0 if not a classifier).
    pub classes: usize,
    /// Output-0 labels.
    pub labels: Vec<String>,
}

/// One run's result.
#[derive(Clone, Debug)]
pub struct Run {
    /// The int8 input as the model saw it.
    pub input: Vec<i8>,
    /// Output 0, int8.
    pub output_i8: Vec<i8>,
    /// Output 0, dequantized.
    pub output: Vec<f32>,
    /// Wall time of the inference (quantization included), microseconds.
    pub latency_us: u64,
}

impl Loaded {
    /// Validates and loads a package.
    ///
    /// # Errors
    /// The package does not load, or has several inputs.
    pub fn open(bytes: &[u8], info: ModelRef) -> Result<Loaded> {
        let model = OwnedModel::load(bytes).map_err(|e| anyhow!("package does not load: {e}"))?;
        let m = model.model();
        if m.input_count() != 1 {
            bail!("the agent serves single-input models; this one has {}", m.input_count());
        }
        let profile = m
            .section(SectionKind::ReferenceProfile as u16)
            .map(ReferenceProfile::from_bytes)
            .transpose()
            .map_err(|e| anyhow!("reference profile does not parse: {e}"))?;
        let out = m.output(0).context("no output")?;
        let labels: Vec<String> = (0..out.label_count()).filter_map(|i| out.label(i).map(String::from)).collect();
        let classes =
            profile.as_ref().and_then(|p| p.output.as_ref()).map(|o| o.classes as usize).unwrap_or(labels.len());
        let arena = vec![0; m.arena_size()];
        Ok(Loaded { model, arena, info, profile, classes, labels })
    }

    /// Runs one input.
    ///
    /// # Errors
    /// Wrong input length.
    pub fn run(&mut self, input: &InferInput) -> Result<Run> {
        let m = self.model.model();
        let n_out = m.output(0).context("no output")?.tensor.shape.elements();
        let t = Instant::now();
        let mut it = Interpreter::new(&m, &mut self.arena)?.with_owned(&self.model);
        match input {
            InferInput::F32(x) => it.set_input_f32(0, x)?,
            InferInput::I8(x) => {
                let buf = it.input_mut(0)?;
                if buf.len() != x.len() {
                    bail!("input has {} values, the model needs {}", x.len(), buf.len());
                }
                buf.copy_from_slice(x);
            }
        }
        let quantized = it.input_mut(0)?.to_vec();
        it.invoke()?;
        let output_i8 = it.output(0)?.to_vec();
        let mut output = vec![0f32; n_out];
        it.output_f32(0, &mut output)?;
        let latency_us = t.elapsed().as_micros() as u64;
        Ok(Run { input: quantized, output_i8, output, latency_us })
    }

    /// Health check: the self-test in the package's profile gives exactly its
    /// recorded output, and its median latency is within `budget_us`.
    /// Returns the median self-test latency.
    ///
    /// # Errors
    /// Why the package is not healthy.
    pub fn health_check(&mut self, budget_us: u64) -> Result<u64, String> {
        let selftest = self.profile.as_ref().and_then(|p| p.selftest.clone());
        let (input, expected) = match &selftest {
            Some(s) => (
                s.inputs.first().cloned().ok_or("self-test without input")?,
                Some(s.outputs.first().cloned().ok_or("self-test without output")?),
            ),
            None => (vec![0; self.model.model().input(0).map_or(0, |i| i.tensor.shape.elements())], None),
        };
        let mut times = Vec::with_capacity(3);
        for _ in 0..3 {
            let r = self.run(&InferInput::I8(input.clone())).map_err(|e| format!("self-test does not run: {e}"))?;
            if let Some(want) = &expected
                && &r.output_i8 != want
            {
                return Err("self-test output differs from the one recorded at compile time".into());
            }
            times.push(r.latency_us);
        }
        times.sort_unstable();
        let median = times[1];
        if median > budget_us {
            return Err(format!("self-test takes {median} us, over the {budget_us} us budget"));
        }
        Ok(median)
    }
}

/// A prediction, as the local API returns it.
#[derive(Clone, Debug, Serialize)]
pub struct Prediction {
    /// Id to attach a delayed label to.
    pub prediction_id: u64,
    /// Output 0, dequantized.
    pub output: Vec<f32>,
    /// Top class (classifiers).
    pub class: Option<usize>,
    /// Its label, if the package has labels.
    pub label: Option<String>,
    /// Its probability.
    pub confidence: Option<f32>,
    /// Inference latency, microseconds.
    pub latency_us: u64,
    /// The model that answered.
    pub model: ModelRef,
}

/// Live model, shadow candidate and the monitor.
pub struct Engine {
    live: Option<Loaded>,
    shadow: Option<Loaded>,
    monitor: Monitor,
    next_id: u64,
    min_drift_inferences: u64,
}

fn top(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

impl Engine {
    /// An engine with no model yet.
    pub fn new(min_drift_inferences: u64, now_ms: u64) -> Engine {
        Engine {
            live: None,
            shadow: None,
            monitor: Monitor::new(None, 0, min_drift_inferences, now_ms),
            next_id: 1,
            min_drift_inferences,
        }
    }

    /// The live model.
    pub fn live(&self) -> Option<&ModelRef> {
        self.live.as_ref().map(|l| &l.info)
    }

    /// The shadow candidate.
    pub fn shadow(&self) -> Option<&ModelRef> {
        self.shadow.as_ref().map(|l| &l.info)
    }

    /// Replaces the live model (monitoring restarts for it).
    pub fn set_live(&mut self, m: Loaded, now_ms: u64) {
        self.monitor = Monitor::new(m.profile.clone(), m.classes, self.min_drift_inferences, now_ms);
        self.monitor.set_shadow(self.shadow.as_ref().map(|s| s.info.clone()));
        self.live = Some(m);
    }

    /// Renames the live model (same package, newer manifest).
    pub fn relabel_live(&mut self, info: ModelRef) {
        if let Some(l) = self.live.as_mut() {
            l.info = info;
        }
    }

    /// Sets or clears the shadow candidate.
    pub fn set_shadow(&mut self, m: Option<Loaded>) {
        self.monitor.set_shadow(m.as_ref().map(|s| s.info.clone()));
        self.shadow = m;
    }

    /// Runs the live model (and the shadow candidate on the same input).
    ///
    /// # Errors
    /// No model, or a bad input.
    pub fn infer(&mut self, input: &InferInput) -> Result<Prediction> {
        let Some(live) = self.live.as_mut() else { bail!("no model is installed yet") };
        let run = match live.run(input) {
            Ok(r) => r,
            Err(e) => {
                self.monitor.record_error();
                return Err(e);
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let classes = live.classes;
        let is_classifier = classes > 1 && run.output.len() == classes;
        let class = is_classifier.then(|| top(&run.output));
        self.monitor.record(id, &[&run.input], is_classifier.then_some(run.output.as_slice()), run.latency_us);
        let prediction = Prediction {
            prediction_id: id,
            class,
            label: class.and_then(|c| live.labels.get(c).cloned()),
            confidence: class.map(|c| run.output[c]),
            latency_us: run.latency_us,
            model: live.info.clone(),
            output: run.output,
        };
        if let Some(s) = self.shadow.as_mut()
            && let Ok(r) = s.run(&InferInput::I8(run.input.clone()))
        {
            let agree = match class {
                Some(c) => r.output.len() == prediction.output.len() && top(&r.output) == c,
                None => r.output_i8.iter().zip(&run.output_i8).all(|(a, b)| (*a as i16 - *b as i16).abs() <= 1),
            };
            self.monitor.record_shadow(agree, run.latency_us, r.latency_us);
        }
        Ok(prediction)
    }

    /// A delayed label.
    pub fn label(&mut self, id: u64, label: usize) -> bool {
        self.monitor.label(id, label)
    }

    /// Closes the telemetry window.
    pub fn telemetry(&mut self, now_ms: u64, health: Health) -> Telemetry {
        let live = self.live.as_ref().map(|l| l.info.clone());
        self.monitor.window(now_ms, live, health)
    }
}

//! The package's reference data profile (see `edgefleet_protocol::profile`):
//! per-feature histograms of the quantized calibration inputs, the class
//! distribution and mean confidence of a classifier on them, and a
//! self-test sample with the output this package produces for it. Devices
//! compare what they see against the histograms (drift) and run the
//! self-test before they trust a new package.

use anyhow::{Context, Result};
use edgefleet_protocol::profile::{
    DEFAULT_BINS, FeatureProfile, OutputProfile, PROFILE_VERSION, ReferenceProfile, SelfTest,
};
use edgefleet_runtime::{AlignedBytes, Interpreter, Model, OpCode};

use crate::CalibrationSet;

/// Builds the profile of a compiled, valid package. Without calibration data
/// only the self-test is filled (on a fixed pseudo-random input).
///
/// # Errors
/// The package does not load or run (a compiler bug).
pub fn build(package: &[u8], calibration: Option<&CalibrationSet>) -> Result<ReferenceProfile> {
    let bytes = AlignedBytes::from_slice(package);
    let model = Model::load(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut arena = vec![0u8; model.arena_size()];
    let n_in = model.input_count();
    let n_out = model.output_count();

    // Quantized inputs, as the device will see them.
    let samples: Vec<Vec<Vec<i8>>> = match calibration {
        Some(c) => c
            .samples
            .iter()
            .map(|s| {
                let mut it = Interpreter::new(&model, &mut arena).map_err(|e| anyhow::anyhow!("{e}"))?;
                (0..n_in)
                    .map(|k| {
                        it.set_input_f32(k, s.get(k).context("sample lacks an input")?)
                            .map_err(|e| anyhow::anyhow!("{e}"))?;
                        Ok(it.input_mut(k).map_err(|e| anyhow::anyhow!("{e}"))?.to_vec())
                    })
                    .collect::<Result<Vec<Vec<i8>>>>()
            })
            .collect::<Result<_>>()?,
        None => {
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            vec![
                (0..n_in)
                    .map(|k| {
                        let n = model.input(k).map_or(0, |io| io.tensor.shape.elements());
                        (0..n)
                            .map(|_| {
                                state ^= state << 13;
                                state ^= state >> 7;
                                state ^= state << 17;
                                (state >> 56) as u8 as i8
                            })
                            .collect()
                    })
                    .collect(),
            ]
        }
    };
    let run = |arena: &mut [u8], inputs: &[Vec<i8>]| -> Result<Vec<Vec<i8>>> {
        let mut it = Interpreter::new(&model, arena).map_err(|e| anyhow::anyhow!("{e}"))?;
        for (k, x) in inputs.iter().enumerate() {
            it.input_mut(k).map_err(|e| anyhow::anyhow!("{e}"))?.copy_from_slice(x);
        }
        it.invoke().map_err(|e| anyhow::anyhow!("{e}"))?;
        (0..n_out).map(|k| Ok(it.output(k).map_err(|e| anyhow::anyhow!("{e}"))?.to_vec())).collect()
    };
    let first = samples.first().context("no samples")?;
    let selftest = SelfTest { inputs: first.clone(), outputs: run(&mut arena, first)? };

    let mut profile = ReferenceProfile {
        version: PROFILE_VERSION,
        samples: 0,
        inputs: Vec::new(),
        output: None,
        selftest: Some(selftest),
    };
    if calibration.is_none() {
        return Ok(profile);
    }
    profile.samples = samples.len() as u32;
    for k in 0..n_in {
        let shape: Vec<u32> =
            model.input(k).map(|io| io.tensor.shape.dims().iter().map(|&d| d as u32).collect()).unwrap_or_default();
        let refs: Vec<&[i8]> = samples.iter().map(|s| s[k].as_slice()).collect();
        profile.inputs.push(FeatureProfile::build(&shape, &refs, DEFAULT_BINS));
    }
    // Classifier: output 0 comes from a softmax.
    let out = model.output(0).context("no output")?;
    let classes = out.tensor.shape.last();
    let softmax_out = (0..model.op_count()).filter_map(|i| model.op(i)).any(|op| {
        op.code() == OpCode::Softmax && model.tensor(op.output()).map(|t| t.root()) == Some(out.tensor.root())
    });
    if softmax_out && classes > 1 {
        let (scale, zp) = out.quantization();
        let mut freq = vec![0f32; classes];
        let mut conf = 0f32;
        let mut rows = 0usize;
        for s in &samples {
            let y = run(&mut arena, s)?;
            for row in y[0].chunks_exact(classes) {
                let probs: Vec<f32> = row.iter().map(|&q| scale * (q as i32 - zp) as f32).collect();
                let top = (0..classes).fold(0, |b, i| if probs[i] > probs[b] { i } else { b });
                freq[top] += 1.0;
                conf += probs[top];
                rows += 1;
            }
        }
        let n = rows.max(1) as f32;
        profile.output = Some(OutputProfile {
            classes: classes as u32,
            class_freq: freq.iter().map(|f| f / n).collect(),
            mean_confidence: conf / n,
        });
    }
    Ok(profile)
}

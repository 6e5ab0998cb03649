//! The hand-built packages load and run; every op's output is checked against
//! a float reference (within 1 LSB) computed from the op's actual int8
//! inputs; the tight memory plan gives bit-identical results; caller mistakes
//! give the documented `RunError`s.

use edgefleet_runtime::{Interpreter, Model, RunError};

use crate::common::{
    ADD_DIMS, AddPool, CNN_C, CNN_CLASSES, CNN_HW, CNN_IN_C, Layout, PERM, POOL_DIMS, Q, Rng, TinyCnn, aligned,
};

/// `round(real / scale) + zero_point`, clamped, as an integer (not yet i8).
fn quantize(real: f64, (scale, zp): Q, min: i8, max: i8) -> i32 {
    ((real / f64::from(scale)).round() as i32 + zp).clamp(i32::from(min), i32::from(max))
}

fn real(q: i8, (scale, zp): Q) -> f64 {
    f64::from(scale) * f64::from(i32::from(q) - zp)
}

#[track_caller]
fn assert_within_1_lsb(what: &str, got: &[i8], want: &[i32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((i32::from(g) - w).abs() <= 1, "{what}[{i}]: got {g}, reference {w}");
    }
}

fn cnn_input() -> Vec<f32> {
    let mut rng = Rng::new(77);
    (0..CNN_HW * CNN_HW * CNN_IN_C).map(|_| rng.float(-2.5, 2.5)).collect()
}

/// Runs the CNN; returns the quantized input and every graph output.
fn run_cnn(layout: Layout, input: &[f32]) -> (Vec<i8>, Vec<Vec<i8>>, usize) {
    let bytes = aligned(&TinyCnn::new().package(layout));
    let model = Model::load(&bytes).expect("tiny CNN loads");
    let mut arena = vec![0u8; model.arena_size()];
    let mut interp = Interpreter::new(&model, &mut arena).expect("exact arena");
    interp.set_input_f32(0, input).unwrap();
    let x = interp.input_mut(0).unwrap().to_vec();
    interp.invoke().expect("invoke");
    let outs = (0..model.output_count()).map(|k| interp.output(k).unwrap().to_vec()).collect();
    (x, outs, interp.arena_used_bytes())
}

#[test]
fn tiny_cnn_metadata() {
    let cnn = TinyCnn::new();
    for (layout, arena, outputs) in [(Layout::Reuse, 1024, 1), (Layout::Probe, 1252, 5)] {
        let bytes = aligned(&cnn.package(layout));
        let model = Model::load(&bytes).unwrap();
        assert_eq!(model.version(), (1, 0));
        assert_eq!(model.arena_size(), arena);
        assert_eq!((model.input_count(), model.output_count()), (1, outputs));
        assert_eq!((model.tensor_count(), model.op_count()), (13, 5));
        let input = model.input(0).unwrap();
        assert_eq!(input.name(), "input");
        assert_eq!(input.tensor.shape.dims(), &[1, CNN_HW, CNN_HW, CNN_IN_C]);
        assert_eq!(input.quantization(), cnn.input);
        let probs = model.output(0).unwrap();
        assert_eq!(probs.name(), "probabilities");
        assert_eq!(probs.quantization(), (1.0 / 256.0, -128));
        assert_eq!(probs.label_count(), CNN_CLASSES);
        let labels: Vec<&str> = (0..CNN_CLASSES).map(|i| probs.label(i).unwrap()).collect();
        assert_eq!(labels, cnn.labels);
        assert_eq!(probs.label(CNN_CLASSES), None);
        assert!(model.input(1).is_none() && model.output(outputs).is_none());
        // The view shares the pool's bytes.
        let (pool, flat) = (model.tensor(7).unwrap(), model.tensor(8).unwrap());
        assert_eq!(flat.view_of, Some(7));
        assert_eq!((flat.offset, flat.size), (pool.offset, pool.size));
        assert_eq!(flat.shape.dims(), &[1, CNN_C]);
        let mut arena_buf = vec![0u8; arena];
        let interp = Interpreter::new(&model, &mut arena_buf).unwrap();
        assert_eq!(interp.arena_used_bytes(), arena);
    }
}

#[test]
fn tiny_cnn_every_op_matches_float_reference() {
    let cnn = TinyCnn::new();
    let (x, outs, used) = run_cnn(Layout::Probe, &cnn_input());
    assert_eq!(used, 1252);
    let (probs, conv, dw, pool, logits) = (&outs[0], &outs[1], &outs[2], &outs[3], &outs[4]);
    let (hw, ci, c) = (CNN_HW as i32, CNN_IN_C, CNN_C);
    let at = |y: i32, xx: i32, ch: usize, depth: usize| ((y * hw + xx) as usize) * depth + ch;
    let inside = |v: i32| (0..hw).contains(&v);

    // Conv2D 3x3, stride 1, pad 1, per-channel, bias, ReLU.
    let mut want = vec![0; conv.len()];
    for y in 0..hw {
        for xx in 0..hw {
            for oc in 0..c {
                let mut acc = 0f64;
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) = (y + ky - 1, xx + kx - 1);
                        if !(inside(iy) && inside(ix)) {
                            continue;
                        }
                        for ic in 0..ci {
                            let w = cnn.conv_w[((oc * 3 + ky as usize) * 3 + kx as usize) * ci + ic];
                            acc +=
                                f64::from(w) * f64::from(cnn.conv_scales[oc]) * real(x[at(iy, ix, ic, ci)], cnn.input);
                        }
                    }
                }
                acc += f64::from(cnn.conv_bias[oc]) * f64::from(cnn.input.0) * f64::from(cnn.conv_scales[oc]);
                want[at(y, xx, oc, c)] = quantize(acc, cnn.conv_out, cnn.conv_out.1 as i8, 127);
            }
        }
    }
    assert_within_1_lsb("conv", conv, &want);
    assert!(conv.iter().any(|&v| i32::from(v) == cnn.conv_out.1), "ReLU clamps something");
    assert!(conv.iter().any(|&v| v > 0), "conv output is not trivial");

    // Depthwise 3x3, multiplier 1, per-tensor.
    let mut want = vec![0; dw.len()];
    for y in 0..hw {
        for xx in 0..hw {
            for ch in 0..c {
                let mut acc = f64::from(cnn.dw_bias[ch]) * f64::from(cnn.conv_out.0) * f64::from(cnn.dw_scale);
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) = (y + ky - 1, xx + kx - 1);
                        if inside(iy) && inside(ix) {
                            let w = cnn.dw_w[(ky as usize * 3 + kx as usize) * c + ch];
                            acc += f64::from(w) * f64::from(cnn.dw_scale) * real(conv[at(iy, ix, ch, c)], cnn.conv_out);
                        }
                    }
                }
                want[at(y, xx, ch, c)] = quantize(acc, cnn.dw_out, i8::MIN, i8::MAX);
            }
        }
    }
    assert_within_1_lsb("depthwise", dw, &want);

    // Average pool over the whole image: integer mean, rounded half away from zero (exact).
    for ch in 0..c {
        let sum: i32 = (0..(hw * hw) as usize).map(|p| i32::from(dw[p * c + ch])).sum();
        let mean = (f64::from(sum) / f64::from(hw * hw)).round() as i32;
        assert_eq!(i32::from(pool[ch]), mean, "pool[{ch}]");
    }

    // Fully connected (per-channel) on the pooled, flattened vector.
    let want: Vec<i32> = (0..CNN_CLASSES)
        .map(|o| {
            let mut acc = f64::from(cnn.fc_bias[o]) * f64::from(cnn.dw_out.0) * f64::from(cnn.fc_scales[o]);
            for (i, &p) in pool.iter().enumerate() {
                acc += f64::from(cnn.fc_w[o * c + i]) * f64::from(cnn.fc_scales[o]) * real(p, cnn.dw_out);
            }
            quantize(acc, cnn.fc_out, i8::MIN, i8::MAX)
        })
        .collect();
    assert_within_1_lsb("logits", logits, &want);
    assert!(logits.iter().any(|&v| v != logits[0]), "logits differ: {logits:?}");

    // Softmax, output 1/256 - 128.
    let l: Vec<f64> = logits.iter().map(|&v| real(v, cnn.fc_out)).collect();
    let max = l.iter().copied().fold(f64::MIN, f64::max);
    let sum: f64 = l.iter().map(|v| (v - max).exp()).sum();
    let want: Vec<i32> = l.iter().map(|v| quantize((v - max).exp() / sum, (1.0 / 256.0, -128), -128, 127)).collect();
    assert_within_1_lsb("probabilities", probs, &want);
    let total: i32 = probs.iter().map(|&p| i32::from(p) + 128).sum();
    assert!((total - 256).abs() <= CNN_CLASSES as i32, "probabilities sum to {total}/256");
}

#[test]
fn tiny_cnn_reused_arena_gives_identical_outputs() {
    let input = cnn_input();
    let (_, probe, _) = run_cnn(Layout::Probe, &input);
    let (_, reuse, used) = run_cnn(Layout::Reuse, &input);
    assert_eq!(used, 1024);
    assert_eq!(reuse.len(), 1);
    assert_eq!(reuse[0], probe[0]);
}

#[test]
fn tiny_cnn_runs_repeatedly_and_dequantizes() {
    let bytes = aligned(&TinyCnn::new().package(Layout::Reuse));
    let model = Model::load(&bytes).unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    let mut interp = Interpreter::new(&model, &mut arena).unwrap();
    let input = cnn_input();
    interp.set_input_f32(0, &input).unwrap();
    interp.invoke().unwrap();
    let first = interp.output(0).unwrap().to_vec();
    // The input bytes were reused by the plan: write the input again.
    interp.set_input_f32(0, &input).unwrap();
    for op in 0..model.op_count() {
        interp.invoke_op(op).unwrap();
    }
    assert_eq!(interp.output(0).unwrap(), &first[..]);
    let mut probs = [0f32; CNN_CLASSES];
    interp.output_f32(0, &mut probs).unwrap();
    for (p, q) in probs.iter().zip(&first) {
        assert_eq!(*p, (f32::from(*q) + 128.0) / 256.0);
    }
    assert!((probs.iter().sum::<f32>() - 1.0).abs() < 0.02, "{probs:?}");
}

fn add_pool_inputs() -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(99);
    let n: usize = ADD_DIMS.iter().product();
    let a = (0..n).map(|_| rng.float(-6.0, 6.0)).collect();
    let b = (0..n).map(|_| rng.float(-12.0, 12.0)).collect();
    (a, b)
}

fn run_add_pool(layout: Layout) -> (Vec<i8>, Vec<i8>, Vec<Vec<i8>>) {
    let bytes = aligned(&AddPool::new().package(layout));
    let model = Model::load(&bytes).expect("add/pool package loads");
    let mut arena = vec![0u8; model.arena_size()];
    let mut interp = Interpreter::new(&model, &mut arena).unwrap();
    let (a, b) = add_pool_inputs();
    interp.set_input_f32(0, &a).unwrap();
    interp.set_input_f32(1, &b).unwrap();
    let x1 = interp.input_mut(0).unwrap().to_vec();
    let x2 = interp.input_mut(1).unwrap().to_vec();
    interp.invoke().unwrap();
    let outs = (0..model.output_count()).map(|k| interp.output(k).unwrap().to_vec()).collect();
    (x1, x2, outs)
}

#[test]
fn add_pool_every_op_matches_reference() {
    let m = AddPool::new();
    let (x1, x2, outs) = run_add_pool(Layout::Probe);
    let (t, pooled, r, a) = (&outs[0], &outs[1], &outs[2], &outs[3]);

    let want: Vec<i32> = x1.iter().map(|&v| quantize(real(v, m.x1), m.r, m.r_clamp.min, m.r_clamp.max)).collect();
    assert_within_1_lsb("requantize", r, &want);
    assert!(r.iter().any(|&v| v == m.r_clamp.min || v == m.r_clamp.max), "requantize clamp is exercised");

    let want: Vec<i32> = r
        .iter()
        .zip(&x2)
        .map(|(&p, &q)| quantize(real(p, m.r) + real(q, m.x2), m.a, m.a_clamp.min, m.a_clamp.max))
        .collect();
    assert_within_1_lsb("add", a, &want);

    // Max pool 2x2 / 2 and the transpose are exact.
    let [_, h, w, c] = ADD_DIMS;
    let [_, ph, pw, _] = POOL_DIMS;
    for y in 0..ph {
        for x in 0..pw {
            for ch in 0..c {
                let taps = [(0, 0), (0, 1), (1, 0), (1, 1)].map(|(dy, dx)| a[((2 * y + dy) * w + 2 * x + dx) * c + ch]);
                assert_eq!(pooled[(y * pw + x) * c + ch], *taps.iter().max().unwrap());
            }
        }
    }
    assert_eq!(h, 2 * ph);
    let td = PERM.map(|i| POOL_DIMS[i]);
    for i0 in 0..td[0] {
        for i1 in 0..td[1] {
            for i2 in 0..td[2] {
                for i3 in 0..td[3] {
                    let out = [i0, i1, i2, i3];
                    let mut inp = [0; 4];
                    for (k, &p) in PERM.iter().enumerate() {
                        inp[p] = out[k];
                    }
                    let src = ((inp[0] * POOL_DIMS[1] + inp[1]) * POOL_DIMS[2] + inp[2]) * POOL_DIMS[3] + inp[3];
                    let dst = ((i0 * td[1] + i1) * td[2] + i2) * td[3] + i3;
                    assert_eq!(t[dst], pooled[src]);
                }
            }
        }
    }
}

#[test]
fn add_pool_reused_arena_gives_identical_outputs() {
    let (_, _, probe) = run_add_pool(Layout::Probe);
    let (_, _, reuse) = run_add_pool(Layout::Reuse);
    assert_eq!(reuse.len(), 2);
    assert_eq!(reuse[..], probe[..2]);
    let bytes = aligned(&AddPool::new().package(Layout::Reuse));
    let model = Model::load(&bytes).unwrap();
    assert_eq!(model.arena_size(), 144);
    let mut arena = vec![0u8; 144];
    assert_eq!(Interpreter::new(&model, &mut arena).unwrap().arena_used_bytes(), 144);
}

#[test]
fn arena_too_small() {
    let bytes = aligned(&TinyCnn::new().package(Layout::Reuse));
    let model = Model::load(&bytes).unwrap();
    for given in [0, 1, 1023] {
        let mut arena = vec![0u8; given];
        assert_eq!(Interpreter::new(&model, &mut arena).unwrap_err(), RunError::ArenaTooSmall { needed: 1024, given });
    }
}

#[test]
fn larger_arena_uses_only_the_plan() {
    let bytes = aligned(&TinyCnn::new().package(Layout::Reuse));
    let model = Model::load(&bytes).unwrap();
    let mut arena = vec![0x5Au8; 1024 + 100];
    {
        let mut interp = Interpreter::new(&model, &mut arena).unwrap();
        assert_eq!(interp.arena_used_bytes(), 1024);
        interp.set_input_f32(0, &cnn_input()).unwrap();
        interp.invoke().unwrap();
    }
    assert!(arena[1024..].iter().all(|&b| b == 0x5A));
}

#[test]
fn set_input_wrong_length() {
    let bytes = aligned(&TinyCnn::new().package(Layout::Reuse));
    let model = Model::load(&bytes).unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    let mut interp = Interpreter::new(&model, &mut arena).unwrap();
    let n = CNN_HW * CNN_HW * CNN_IN_C;
    for given in [0, n - 1, n + 1] {
        assert_eq!(interp.set_input_f32(0, &vec![0.0; given]), Err(RunError::LengthMismatch { expected: n, given }));
    }
    let mut out = [0f32; CNN_CLASSES + 1];
    assert_eq!(
        interp.output_f32(0, &mut out),
        Err(RunError::LengthMismatch { expected: CNN_CLASSES, given: CNN_CLASSES + 1 })
    );
}

#[test]
fn wrong_input_or_output_index() {
    let bytes = aligned(&AddPool::new().package(Layout::Reuse));
    let model = Model::load(&bytes).unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    let mut interp = Interpreter::new(&model, &mut arena).unwrap();
    let n: usize = ADD_DIMS.iter().product();
    assert_eq!(interp.set_input_f32(2, &vec![0.0; n]), Err(RunError::NoSuchTensor { index: 2 }));
    assert_eq!(interp.set_input_f32(usize::MAX, &[]), Err(RunError::NoSuchTensor { index: usize::MAX }));
    assert_eq!(interp.input_mut(2).unwrap_err(), RunError::NoSuchTensor { index: 2 });
    assert_eq!(interp.output(2).unwrap_err(), RunError::NoSuchTensor { index: 2 });
    assert_eq!(interp.output_f32(7, &mut []), Err(RunError::NoSuchTensor { index: 7 }));
    // The valid indices work.
    interp.set_input_f32(1, &vec![0.0; n]).unwrap();
    assert_eq!(interp.output(1).unwrap().len(), POOL_DIMS.iter().product::<usize>());
}

/// An owned model hands out the same validated view as `Model::load`, and
/// runs the same.
#[test]
fn owned_model_matches_a_borrowed_one() {
    for (name, pkg) in crate::common::valid_packages() {
        let owned = edgefleet_runtime::OwnedModel::load(&pkg).expect("valid package");
        let borrowed_bytes = edgefleet_runtime::AlignedBytes::from_slice(&pkg);
        let borrowed = edgefleet_runtime::Model::load(&borrowed_bytes).expect("valid package");
        let m = owned.model();
        assert_eq!(
            (m.arena_size(), m.op_count(), m.tensor_count()),
            (borrowed.arena_size(), borrowed.op_count(), borrowed.tensor_count()),
            "{name}"
        );
        for i in 0..m.tensor_count() as u16 {
            assert_eq!(m.tensor(i), borrowed.tensor(i), "{name} tensor {i}");
        }
        let run = |model: &edgefleet_runtime::Model<'_>| {
            let mut arena = vec![0u8; model.arena_size()];
            let packed = edgefleet_runtime::PackedWeights::for_model(model);
            let mut it = edgefleet_runtime::Interpreter::new(model, &mut arena).expect("arena").with_packed(&packed);
            for k in 0..model.input_count() {
                it.input_mut(k)
                    .expect("input")
                    .iter_mut()
                    .enumerate()
                    .for_each(|(j, v)| *v = (j as i8).wrapping_mul(3));
            }
            it.invoke().expect("runs");
            (0..model.output_count()).map(|k| it.output(k).expect("output").to_vec()).collect::<Vec<_>>()
        };
        assert_eq!(run(&m), run(&borrowed), "{name}");
    }
}

/// Fills every input with a fixed pattern, runs, and returns the outputs.
fn run_pattern(it: &mut edgefleet_runtime::Interpreter<'_, '_, '_>) -> Vec<Vec<i8>> {
    let model = it.model();
    for k in 0..model.input_count() {
        it.input_mut(k).expect("input").iter_mut().enumerate().for_each(|(j, v)| *v = (j as i8).wrapping_mul(7));
    }
    it.invoke().expect("runs");
    (0..model.output_count()).map(|k| it.output(k).expect("output").to_vec()).collect()
}

/// An interpreter given another model's `PackedWeights` (or `OwnedModel`)
/// runs its own model: the other model's decoded ops and tensor slots are
/// not used (they would point into the wrong arena offsets), nor are packed
/// weights whose shapes do not match, so the outputs equal those of a run
/// without packed weights. Its own `OwnedModel` gives the same outputs.
#[test]
fn packed_weights_of_another_model_are_not_used() {
    use edgefleet_runtime::{AlignedBytes, Interpreter, Model, OwnedModel, PackedWeights};
    let packages = crate::common::valid_packages();
    let mut pairs = 0;
    for (a_name, a) in &packages {
        let a_owned = OwnedModel::load(a).expect("valid package");
        let model = a_owned.model();
        let mut arena = vec![0u8; model.arena_size()];
        let want = run_pattern(&mut Interpreter::new(&model, &mut arena).expect("arena"));
        let own = PackedWeights::for_model(&model);
        let packed = run_pattern(&mut Interpreter::new(&model, &mut arena).expect("arena").with_packed(&own));
        assert_eq!(packed, want, "{a_name}: packed and unpacked runs differ");
        // Its own OwnedModel: the decoded records taken without comparison.
        let owned = run_pattern(&mut Interpreter::new(&model, &mut arena).expect("arena").with_owned(&a_owned));
        assert_eq!(owned, want, "{a_name} run with its own OwnedModel");
        for (b_name, b) in &packages {
            if a == b {
                continue;
            }
            let b_bytes = AlignedBytes::from_slice(b);
            let foreign = PackedWeights::for_model(&Model::load(&b_bytes).expect("valid package"));
            let got = run_pattern(&mut Interpreter::new(&model, &mut arena).expect("arena").with_packed(&foreign));
            assert_eq!(got, want, "{a_name} run with {b_name}'s packed weights");
            let b_owned = OwnedModel::load(b).expect("valid package");
            let got = run_pattern(&mut Interpreter::new(&model, &mut arena).expect("arena").with_owned(&b_owned));
            assert_eq!(got, want, "{a_name} run with {b_name}'s OwnedModel");
            pairs += 1;
        }
    }
    assert!(pairs >= 2, "needs at least two different packages, had {pairs} pairs");
}

//! Shared helpers: test data paths, .npy access, running packages, and a
//! small ONNX builder for generated models.

use std::path::PathBuf;

use edgefleet_compiler::npy;
use edgefleet_compiler::tensor::{Data, Tensor};
use edgefleet_runtime::{AlignedBytes, Interpreter, Model};
use prost::Message;
use tract_onnx::pb;

/// A file under testdata/mlperf-tiny.
pub fn data(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/mlperf-tiny").join(p)
}

/// Reads an .npy under testdata/mlperf-tiny.
pub fn read(p: &str) -> Tensor {
    npy::read(&data(p)).unwrap_or_else(|e| panic!("{p}: {e:#}"))
}

/// The int8 values of a tensor.
pub fn i8s(t: &Tensor) -> Vec<i8> {
    match &t.data {
        Data::I8(v) => v.clone(),
        other => panic!("expected int8, got {}", Tensor { shape: t.shape.clone(), data: other.clone() }.type_name()),
    }
}

/// Index of the largest value.
pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

/// A loaded package with an arena, for running many inputs.
pub struct Runner {
    bytes: AlignedBytes,
    arena: Vec<u8>,
}

impl Runner {
    pub fn new(package: &[u8]) -> Runner {
        let bytes = AlignedBytes::from_slice(package);
        let size = Model::load(&bytes).expect("package loads").arena_size();
        Runner { bytes, arena: vec![0; size] }
    }

    pub fn model(&self) -> Model<'_> {
        Model::load(&self.bytes).expect("package loads")
    }

    /// Runs on int8 input, returns int8 output 0.
    pub fn run_i8(&mut self, x: &[i8]) -> Vec<i8> {
        let model = Model::load(&self.bytes).expect("package loads");
        let packed = edgefleet_runtime::PackedWeights::for_model(&model);
        let mut it = Interpreter::new(&model, &mut self.arena).expect("arena").with_packed(&packed);
        it.input_mut(0).expect("input").copy_from_slice(x);
        it.invoke().expect("invoke");
        it.output(0).expect("output").to_vec()
    }

    /// As [`Self::run_i8`], each operator split among `threads`.
    pub fn run_i8_parallel(&mut self, x: &[i8], threads: &dyn edgefleet_runtime::Parallel) -> Vec<i8> {
        let model = Model::load(&self.bytes).expect("package loads");
        let packed = edgefleet_runtime::PackedWeights::for_model(&model);
        let mut it =
            Interpreter::new(&model, &mut self.arena).expect("arena").with_packed(&packed).with_parallel(threads);
        it.input_mut(0).expect("input").copy_from_slice(x);
        it.invoke().expect("invoke");
        it.output(0).expect("output").to_vec()
    }

    /// Runs on float input, returns dequantized output 0.
    pub fn run_f32(&mut self, x: &[f32]) -> Vec<f32> {
        let model = Model::load(&self.bytes).expect("package loads");
        let n = model.output(0).expect("output").tensor.shape.elements();
        let packed = edgefleet_runtime::PackedWeights::for_model(&model);
        let mut it = Interpreter::new(&model, &mut self.arena).expect("arena").with_packed(&packed);
        it.set_input_f32(0, x).expect("input");
        it.invoke().expect("invoke");
        let mut out = vec![0f32; n];
        it.output_f32(0, &mut out).expect("output");
        out
    }
}

/// Runs an ONNX model in float with tract (the independent reference).
pub fn tract_run(bytes: &[u8], input_shape: &[usize], x: &[f32]) -> Vec<f32> {
    use tract_onnx::prelude::*;
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .and_then(|m| m.with_input_fact(0, f32::fact(input_shape).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .expect("tract loads the model");
    let input = tract_ndarray::ArrayD::from_shape_vec(input_shape, x.to_vec()).expect("shape");
    let out = model.run(tvec!(Tensor::from(input).into())).expect("tract runs");
    out[0].to_plain_array_view::<f32>().expect("f32 output").iter().copied().collect()
}

/// A small ONNX graph builder (default domain, opset 13).
#[derive(Default)]
pub struct OnnxBuilder {
    graph: pb::GraphProto,
    counter: usize,
}

fn f32_tensor(name: &str, shape: &[usize], v: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: 1,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn value_info(name: &str, elem: i32, shape: &[usize]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension};
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem,
                shape: Some(pb::TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|&d| Dimension { value: Some(dimension::Value::DimValue(d as i64)), ..Default::default() })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An attribute.
pub enum A {
    I(i64),
    F(f32),
    Is(Vec<i64>),
}

impl OnnxBuilder {
    pub fn input(&mut self, name: &str, shape: &[usize]) -> String {
        self.graph.input.push(value_info(name, 1, shape));
        name.to_string()
    }

    pub fn output(&mut self, name: &str, shape: &[usize]) {
        self.graph.output.push(value_info(name, 1, shape));
    }

    pub fn constant(&mut self, shape: &[usize], v: &[f32]) -> String {
        self.counter += 1;
        let name = format!("c{}", self.counter);
        self.graph.initializer.push(f32_tensor(&name, shape, v));
        name
    }

    pub fn int64s(&mut self, v: &[i64]) -> String {
        self.counter += 1;
        let name = format!("c{}", self.counter);
        self.graph.initializer.push(pb::TensorProto {
            name: name.clone(),
            dims: vec![v.len() as i64],
            data_type: 7,
            raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// Adds a node; returns its (first) output name.
    pub fn node(&mut self, op: &str, name: &str, inputs: &[&str], attrs: &[(&str, A)]) -> String {
        let out = format!("{name}_out");
        let attribute = attrs
            .iter()
            .map(|(k, a)| {
                let mut p = pb::AttributeProto { name: k.to_string(), ..Default::default() };
                match a {
                    A::I(i) => {
                        p.r#type = 2;
                        p.i = *i;
                    }
                    A::F(f) => {
                        p.r#type = 1;
                        p.f = *f;
                    }
                    A::Is(v) => {
                        p.r#type = 7;
                        p.ints = v.clone();
                    }
                }
                p
            })
            .collect();
        self.graph.node.push(pb::NodeProto {
            op_type: op.to_string(),
            name: name.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute,
            ..Default::default()
        });
        out
    }

    /// Renames the last node's output (to make it a graph output).
    pub fn rename_last_output(&mut self, name: &str) {
        if let Some(n) = self.graph.node.last_mut() {
            n.output[0] = name.to_string();
        }
    }

    pub fn finish(self) -> Vec<u8> {
        let model = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
            producer_name: "edgefleet-tests".into(),
            graph: Some(self.graph),
            ..Default::default()
        };
        model.encode_to_vec()
    }
}

/// Deterministic pseudo-random floats in [lo, hi).
pub fn rand_f32(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

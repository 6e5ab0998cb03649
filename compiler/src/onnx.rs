//! ONNX import: `tract-onnx` parses the protobuf; this module turns the
//! `ModelProto` into the compiler's [`Graph`] of named values and nodes.
//!
//! Initializers and attributes are decoded here rather than through tract's
//! tensor loader: tract's loader panics on some element types and its
//! per-axis Q/DQ handling had a bug until late 2026, and the quantization
//! parameters are exactly what this compiler must get right, so they are read
//! from the raw protobuf fields and checked (see [`crate::qdq`]).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use tract_onnx::pb;
use tract_onnx::prelude::Framework;

use crate::tensor::{Data, Tensor};

/// ONNX element types the compiler understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    /// float32.
    F32,
    /// uint8.
    U8,
    /// int8.
    I8,
    /// int32.
    I32,
    /// int64.
    I64,
    /// Anything else (raw ONNX data type).
    Other(i32),
}

impl Elem {
    fn from_onnx(t: i32) -> Elem {
        match t {
            1 => Elem::F32,
            2 => Elem::U8,
            3 => Elem::I8,
            6 => Elem::I32,
            7 => Elem::I64,
            o => Elem::Other(o),
        }
    }
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// `i`.
    Int(i64),
    /// `f`.
    Float(f32),
    /// `ints`.
    Ints(Vec<i64>),
    /// `floats`.
    Floats(Vec<f32>),
    /// `s`.
    Str(String),
    /// `t`.
    Tensor(Tensor),
    /// A kind the compiler never reads (graphs, sparse tensors).
    Unsupported,
}

/// A named value: graph input, initializer, or node output.
#[derive(Clone, Debug)]
pub struct Value {
    /// ONNX name.
    pub name: String,
    /// Element type, if declared or known.
    pub elem: Option<Elem>,
    /// Static shape, once known (declared or inferred).
    pub shape: Option<Vec<usize>>,
    /// Constant data (initializers and folded values).
    pub konst: Option<Tensor>,
}

/// A node.
#[derive(Clone, Debug)]
pub struct Node {
    /// Node name (or a generated one if the model has none).
    pub name: String,
    /// Operator type.
    pub op: String,
    /// Operator domain ("" is the default ONNX domain).
    pub domain: String,
    /// Inputs; `None` for an omitted optional input.
    pub inputs: Vec<Option<usize>>,
    /// Outputs.
    pub outputs: Vec<usize>,
    /// Attributes by name.
    pub attrs: HashMap<String, Attr>,
}

impl Node {
    /// Integer attribute or default.
    pub fn int(&self, name: &str, default: i64) -> i64 {
        match self.attrs.get(name) {
            Some(Attr::Int(v)) => *v,
            _ => default,
        }
    }
    /// Float attribute or default.
    pub fn float(&self, name: &str, default: f32) -> f32 {
        match self.attrs.get(name) {
            Some(Attr::Float(v)) => *v,
            _ => default,
        }
    }
    /// Integer list attribute.
    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        match self.attrs.get(name) {
            Some(Attr::Ints(v)) => Some(v),
            _ => None,
        }
    }
    /// String attribute.
    pub fn string(&self, name: &str) -> Option<&str> {
        match self.attrs.get(name) {
            Some(Attr::Str(s)) => Some(s),
            _ => None,
        }
    }
    /// Input `i`, which must be present.
    pub fn input(&self, i: usize) -> Result<usize> {
        self.inputs
            .get(i)
            .copied()
            .flatten()
            .with_context(|| format!("node {} ({}) lacks input {i}", self.name, self.op))
    }
    /// Optional input `i`.
    pub fn opt_input(&self, i: usize) -> Option<usize> {
        self.inputs.get(i).copied().flatten()
    }
}

/// An imported ONNX graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Default-domain opset version.
    pub opset: i64,
    /// All values.
    pub values: Vec<Value>,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// Graph inputs (initializers excluded).
    pub inputs: Vec<usize>,
    /// Graph outputs.
    pub outputs: Vec<usize>,
    /// The graph outputs' names as declared (passes may re-point `outputs`
    /// at equivalent values, e.g. past a final `QuantizeLinear`).
    pub output_names: Vec<String>,
    /// `producer_name producer_version` of the ONNX file.
    pub producer: String,
}

impl Graph {
    /// Adds a value and returns its id.
    pub fn add_value(
        &mut self,
        name: String,
        elem: Option<Elem>,
        shape: Option<Vec<usize>>,
        konst: Option<Tensor>,
    ) -> usize {
        self.values.push(Value { name, elem, shape, konst });
        self.values.len() - 1
    }

    /// Nodes consuming value `v`.
    pub fn consumers(&self, v: usize) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&n| self.nodes[n].inputs.contains(&Some(v))).collect()
    }

    /// The node producing value `v`, if any.
    pub fn producer(&self, v: usize) -> Option<usize> {
        self.nodes.iter().position(|n| n.outputs.contains(&v))
    }

    /// Shape of `v`, which must be known by now.
    pub fn shape(&self, v: usize) -> Result<&[usize]> {
        self.values[v].shape.as_deref().with_context(|| format!("shape of '{}' is unknown", self.values[v].name))
    }
}

/// Parses an ONNX file.
///
/// # Errors
/// The file cannot be read, is not ONNX, or uses features the compiler does not read
/// (external data, subgraphs in the main graph's inputs).
pub fn load_path(path: &Path) -> Result<Graph> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    load_bytes(&bytes).with_context(|| format!("importing {}", path.display()))
}

/// Parses ONNX bytes.
///
/// # Errors
/// As [`load_path`].
pub fn load_bytes(bytes: &[u8]) -> Result<Graph> {
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .context("not a valid ONNX protobuf")?;
    from_proto(&proto)
}

fn from_proto(m: &pb::ModelProto) -> Result<Graph> {
    let g = m.graph.as_ref().context("ONNX model has no graph")?;
    let opset =
        m.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version).unwrap_or(1);
    let mut graph = Graph {
        opset,
        producer: format!("{} {}", m.producer_name, m.producer_version).trim().to_string(),
        ..Graph::default()
    };
    let mut by_name: HashMap<String, usize> = HashMap::new();

    for init in &g.initializer {
        let t = decode_tensor(init).with_context(|| format!("initializer '{}'", init.name))?;
        let elem = Elem::from_onnx(init.data_type);
        let id = graph.add_value(init.name.clone(), Some(elem), Some(t.shape.clone()), Some(t));
        by_name.insert(init.name.clone(), id);
    }
    for vi in &g.input {
        if by_name.contains_key(&vi.name) {
            continue; // an initializer also listed as input (old exporters): a constant
        }
        let (elem, shape) = value_info(vi)?;
        let id = graph.add_value(vi.name.clone(), elem, Some(shape), None);
        by_name.insert(vi.name.clone(), id);
        graph.inputs.push(id);
    }
    let declared: HashMap<&str, &pb::ValueInfoProto> =
        g.value_info.iter().chain(&g.output).map(|v| (v.name.as_str(), v)).collect();

    for (i, n) in g.node.iter().enumerate() {
        let name = if n.name.is_empty() { format!("{}_{i}", n.op_type) } else { n.name.clone() };
        let mut inputs = Vec::with_capacity(n.input.len());
        for input in &n.input {
            if input.is_empty() {
                inputs.push(None);
                continue;
            }
            let id = *by_name
                .get(input)
                .with_context(|| format!("node '{name}' ({}) reads '{input}', which nothing defines before it (graph not topologically sorted?)", n.op_type))?;
            inputs.push(Some(id));
        }
        let mut outputs = Vec::with_capacity(n.output.len());
        for out in &n.output {
            let (elem, shape) = match declared.get(out.as_str()) {
                Some(vi) => value_info(vi).map(|(e, s)| (e, Some(s))).unwrap_or((None, None)),
                None => (None, None),
            };
            let id = graph.add_value(out.clone(), elem, shape, None);
            if !out.is_empty() {
                by_name.insert(out.clone(), id);
            }
            outputs.push(id);
        }
        let mut attrs = HashMap::new();
        for a in &n.attribute {
            attrs.insert(
                a.name.clone(),
                decode_attr(a).with_context(|| format!("attribute '{}' of node '{name}'", a.name))?,
            );
        }
        graph.nodes.push(Node { name, op: n.op_type.clone(), domain: n.domain.clone(), inputs, outputs, attrs });
    }
    for o in &g.output {
        let id = *by_name.get(&o.name).with_context(|| format!("graph output '{}' is never produced", o.name))?;
        graph.outputs.push(id);
        graph.output_names.push(o.name.clone());
    }
    if graph.inputs.is_empty() {
        bail!("the graph has no inputs");
    }
    if graph.outputs.is_empty() {
        bail!("the graph has no outputs");
    }
    Ok(graph)
}

/// Element type and static shape of a declared value. Symbolic dimensions
/// (a named batch, say) become 1: the package runs batch 1.
fn value_info(vi: &pb::ValueInfoProto) -> Result<(Option<Elem>, Vec<usize>)> {
    use pb::tensor_shape_proto::dimension::Value as D;
    use pb::type_proto::Value as T;
    let Some(T::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        bail!("'{}' is not a tensor", vi.name);
    };
    let shape = match &t.shape {
        None => bail!("'{}' has no shape", vi.name),
        Some(s) => s
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(D::DimValue(v)) if *v > 0 => Ok(*v as usize),
                Some(D::DimValue(v)) if *v <= 0 => bail!("'{}' has dimension {v}", vi.name),
                _ => Ok(1),
            })
            .collect::<Result<Vec<_>>>()?,
    };
    Ok((Some(Elem::from_onnx(t.elem_type)), shape))
}

fn decode_attr(a: &pb::AttributeProto) -> Result<Attr> {
    use pb::attribute_proto::AttributeType as A;
    Ok(match A::try_from(a.r#type).unwrap_or(A::Undefined) {
        A::Int => Attr::Int(a.i),
        A::Float => Attr::Float(a.f),
        A::Ints => Attr::Ints(a.ints.clone()),
        A::Floats => Attr::Floats(a.floats.clone()),
        A::String => Attr::Str(String::from_utf8_lossy(&a.s).into_owned()),
        A::Tensor => Attr::Tensor(decode_tensor(a.t.as_ref().context("tensor attribute without tensor")?)?),
        _ => Attr::Unsupported,
    })
}

/// Decodes an initializer from `raw_data` (little-endian) or the typed fields.
pub fn decode_tensor(t: &pb::TensorProto) -> Result<Tensor> {
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) {
        bail!("external tensor data is not supported: save the model with its weights inside the .onnx file");
    }
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| anyhow::anyhow!("negative dimension {d}")))
        .collect::<Result<Vec<_>>>()?;
    let n: usize = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).context("tensor too large")?;
    let raw = &t.raw_data;
    let from_raw = !raw.is_empty();
    let check = |got: usize| -> Result<()> {
        if got != n {
            bail!("tensor has {got} elements, its shape {shape:?} needs {n}");
        }
        Ok(())
    };
    let data = match Elem::from_onnx(t.data_type) {
        Elem::F32 => {
            let v: Vec<f32> = if from_raw {
                check(raw.len() / 4)?;
                raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            } else {
                t.float_data.clone()
            };
            check(v.len())?;
            Data::F32(v)
        }
        Elem::I64 => {
            let v: Vec<i64> = if from_raw {
                check(raw.len() / 8)?;
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect()
            } else {
                t.int64_data.clone()
            };
            check(v.len())?;
            Data::I64(v)
        }
        Elem::I32 => {
            let v: Vec<i32> = if from_raw {
                check(raw.len() / 4)?;
                raw.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            } else {
                t.int32_data.clone()
            };
            check(v.len())?;
            Data::I32(v)
        }
        Elem::I8 => {
            let v: Vec<i8> = if from_raw {
                raw.iter().map(|&b| b as i8).collect()
            } else {
                t.int32_data.iter().map(|&x| x as i8).collect()
            };
            check(v.len())?;
            Data::I8(v)
        }
        Elem::U8 => {
            let v: Vec<u8> = if from_raw { raw.clone() } else { t.int32_data.iter().map(|&x| x as u8).collect() };
            check(v.len())?;
            Data::U8(v)
        }
        Elem::Other(dt) => {
            bail!("initializer element type {dt} is not supported (float32, int8, uint8, int32, int64 are)")
        }
    };
    Ok(Tensor { shape, data })
}

//! The lowered network: edgefleet's op set over physically laid out (NHWC)
//! float tensors, before quantization. Produced by [`crate::lower`], run in
//! float by [`crate::calibrate`], quantized by [`crate::quantize`].

/// A fused activation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    /// None.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `clamp(x, lo, hi)` (ReLU6 is `Clip(0, 6)`).
    Clip(f32, f32),
}

impl Act {
    /// Applies the activation to a float.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Act::None => x,
            Act::Relu => x.max(0.0),
            Act::Clip(lo, hi) => x.clamp(lo, hi),
        }
    }
    /// Composes `self` then `next`.
    pub fn then(self, next: Act) -> Act {
        let (a_lo, a_hi) = self.range();
        let (b_lo, b_hi) = next.range();
        let (lo, hi) = (a_lo.max(b_lo), a_hi.min(b_hi));
        match (lo, hi) {
            (l, h) if l == f32::NEG_INFINITY && h == f32::INFINITY => Act::None,
            (l, h) if l == 0.0 && h == f32::INFINITY => Act::Relu,
            (l, h) => Act::Clip(l, h.max(l)),
        }
    }
    /// The output interval.
    pub fn range(self) -> (f32, f32) {
        match self {
            Act::None => (f32::NEG_INFINITY, f32::INFINITY),
            Act::Relu => (0.0, f32::INFINITY),
            Act::Clip(lo, hi) => (lo, hi),
        }
    }
}

/// Integers and scales a QDQ model stored for a weight or bias.
#[derive(Clone, Debug, PartialEq)]
pub struct ExactInts {
    /// Values in the constant's physical layout.
    pub ints: Vec<i32>,
    /// One scale, or one per output channel.
    pub scales: Vec<f32>,
}

/// A constant weight tensor in physical layout (conv OHWI, depthwise
/// `[1, kh, kw, c * m]`, fully connected `[out, in]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    /// Physical shape.
    pub shape: Vec<usize>,
    /// Float values (dequantized, for QDQ models).
    pub data: Vec<f32>,
    /// The stored int8 values and scales, if the model had them.
    pub exact: Option<ExactInts>,
    /// The output-channel axis in `shape`.
    pub channel_axis: usize,
}

/// A bias vector, one value per output channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Bias {
    /// Float values.
    pub data: Vec<f32>,
    /// The stored int32 values and scales, if the model had them.
    pub exact: Option<ExactInts>,
}

/// A value (activation tensor).
#[derive(Clone, Debug, PartialEq)]
pub struct NValue {
    /// Name (of the ONNX value it stands for).
    pub name: String,
    /// Physical shape.
    pub shape: Vec<usize>,
    /// The ONNX value whose quantization annotation applies.
    pub onnx: Option<usize>,
}

/// Convolution geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Kernel (h, w).
    pub kernel: [usize; 2],
    /// Stride (h, w).
    pub stride: [usize; 2],
    /// Dilation (h, w).
    pub dilation: [usize; 2],
    /// Pads (top, left, bottom, right).
    pub pads: [usize; 4],
}

/// An op. Value fields index [`Net::values`].
#[derive(Clone, Debug, PartialEq)]
pub enum NOp {
    /// Convolution (groups ≥ 1).
    Conv {
        /// Input (NHWC).
        x: usize,
        /// Output (NHWC).
        y: usize,
        /// `[out_c, kh, kw, in_c / groups]`.
        w: Weights,
        /// Bias.
        b: Option<Bias>,
        /// Geometry.
        win: Window,
        /// Groups.
        groups: usize,
        /// Fused activation.
        act: Act,
    },
    /// Depthwise convolution.
    Depthwise {
        /// Input.
        x: usize,
        /// Output.
        y: usize,
        /// `[1, kh, kw, c * m]`.
        w: Weights,
        /// Bias.
        b: Option<Bias>,
        /// Geometry.
        win: Window,
        /// Channel multiplier.
        mult: usize,
        /// Fused activation.
        act: Act,
    },
    /// Fully connected over the last axis.
    Fc {
        /// Input `[.., in]`.
        x: usize,
        /// Output `[.., out]`.
        y: usize,
        /// `[out, in]`.
        w: Weights,
        /// Bias.
        b: Option<Bias>,
        /// Fused activation.
        act: Act,
    },
    /// Elementwise add (same shapes).
    Add {
        /// First input.
        a: usize,
        /// Second input.
        b: usize,
        /// Output.
        y: usize,
        /// Fused activation.
        act: Act,
    },
    /// Average pooling (NHWC, only in-image taps counted).
    AvgPool {
        /// Input.
        x: usize,
        /// Output.
        y: usize,
        /// Geometry (dilation 1).
        win: Window,
        /// Fused activation.
        act: Act,
    },
    /// Max pooling.
    MaxPool {
        /// Input.
        x: usize,
        /// Output.
        y: usize,
        /// Geometry.
        win: Window,
        /// Fused activation.
        act: Act,
    },
    /// Softmax over the last physical axis.
    Softmax {
        /// Input.
        x: usize,
        /// Output.
        y: usize,
    },
    /// Same bytes, new shape.
    Reshape {
        /// Input.
        x: usize,
        /// Output.
        y: usize,
    },
    /// Physical transpose (output dim `i` = input dim `perm[i]`).
    Transpose {
        /// Input.
        x: usize,
        /// Output.
        y: usize,
        /// Permutation.
        perm: Vec<usize>,
    },
    /// Standalone activation, or a pure requantization (`Act::None`).
    Act {
        /// Input.
        x: usize,
        /// Output.
        y: usize,
        /// Activation.
        act: Act,
    },
}

impl NOp {
    /// Output value.
    pub fn output(&self) -> usize {
        match self {
            NOp::Conv { y, .. }
            | NOp::Depthwise { y, .. }
            | NOp::Fc { y, .. }
            | NOp::Add { y, .. }
            | NOp::AvgPool { y, .. }
            | NOp::MaxPool { y, .. }
            | NOp::Softmax { y, .. }
            | NOp::Reshape { y, .. }
            | NOp::Transpose { y, .. }
            | NOp::Act { y, .. } => *y,
        }
    }
    /// Activation inputs.
    pub fn inputs(&self) -> Vec<usize> {
        match self {
            NOp::Add { a, b, .. } => vec![*a, *b],
            NOp::Conv { x, .. }
            | NOp::Depthwise { x, .. }
            | NOp::Fc { x, .. }
            | NOp::AvgPool { x, .. }
            | NOp::MaxPool { x, .. }
            | NOp::Softmax { x, .. }
            | NOp::Reshape { x, .. }
            | NOp::Transpose { x, .. }
            | NOp::Act { x, .. } => vec![*x],
        }
    }
    /// Short name for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            NOp::Conv { .. } => "Conv2D",
            NOp::Depthwise { .. } => "DepthwiseConv2D",
            NOp::Fc { .. } => "FullyConnected",
            NOp::Add { .. } => "Add",
            NOp::AvgPool { .. } => "AveragePool2D",
            NOp::MaxPool { .. } => "MaxPool2D",
            NOp::Softmax { .. } => "Softmax",
            NOp::Reshape { .. } => "Reshape",
            NOp::Transpose { .. } => "Transpose",
            NOp::Act { .. } => "Activation",
        }
    }
    /// Multiply-accumulates per inference.
    pub fn macs(&self, values: &[NValue]) -> u64 {
        let el = |v: usize| values[v].shape.iter().product::<usize>() as u64;
        match self {
            NOp::Conv { y, w, .. } => el(*y) * (w.shape[1] * w.shape[2] * w.shape[3]) as u64,
            NOp::Depthwise { y, w, .. } => el(*y) * (w.shape[1] * w.shape[2]) as u64,
            NOp::Fc { y, w, .. } => el(*y) * w.shape[1] as u64,
            _ => 0,
        }
    }
}

/// The lowered network.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Net {
    /// Values.
    pub values: Vec<NValue>,
    /// Ops in execution order.
    pub ops: Vec<NOp>,
    /// Graph inputs.
    pub inputs: Vec<usize>,
    /// Graph outputs.
    pub outputs: Vec<usize>,
}

impl Net {
    /// Adds a value.
    pub fn value(&mut self, name: impl Into<String>, shape: Vec<usize>, onnx: Option<usize>) -> usize {
        self.values.push(NValue { name: name.into(), shape, onnx });
        self.values.len() - 1
    }
    /// The op producing `v`.
    pub fn producer(&self, v: usize) -> Option<usize> {
        self.ops.iter().position(|o| o.output() == v)
    }
    /// Number of ops reading `v` (graph outputs count as readers).
    pub fn readers(&self, v: usize) -> usize {
        self.ops.iter().filter(|o| o.inputs().contains(&v)).count() + self.outputs.iter().filter(|&&o| o == v).count()
    }
    /// Number of elements of `v`.
    pub fn elements(&self, v: usize) -> usize {
        self.values[v].shape.iter().product()
    }
}

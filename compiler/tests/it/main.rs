//! Integration tests of the compiler: MLPerf Tiny conformance against
//! TensorFlow Lite Micro and ONNX Runtime references, and op-level checks of
//! the lowering against tract on generated ONNX models. One test binary
//! (link time on 2 cores).

mod mlperf_tiny;
mod ops;
mod support;

//! A plain host tensor for constants and calibration data: a shape and a
//! typed vector. The compiler only needs a handful of element types and
//! simple indexing, so this stays small instead of pulling in an array crate.

use anyhow::{Result, bail};

/// Element data of a [`Tensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// 32-bit float.
    F32(Vec<f32>),
    /// 64-bit signed (shapes, axes).
    I64(Vec<i64>),
    /// 32-bit signed (biases).
    I32(Vec<i32>),
    /// 8-bit signed (weights, activations).
    I8(Vec<i8>),
    /// 8-bit unsigned.
    U8(Vec<u8>),
}

/// A dense row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Elements, `shape.iter().product()` of them.
    pub data: Data,
}

impl Tensor {
    /// A float tensor.
    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), v.len());
        Tensor { shape, data: Data::F32(v) }
    }

    /// A 1-D int64 tensor.
    pub fn i64_vec(v: Vec<i64>) -> Tensor {
        Tensor { shape: vec![v.len()], data: Data::I64(v) }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I8(v) => v.len(),
            Data::U8(v) => v.len(),
        }
    }

    /// True if there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element type name.
    pub fn type_name(&self) -> &'static str {
        match &self.data {
            Data::F32(_) => "float32",
            Data::I64(_) => "int64",
            Data::I32(_) => "int32",
            Data::I8(_) => "int8",
            Data::U8(_) => "uint8",
        }
    }

    /// All elements as f32 (integers converted exactly where possible).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
            Data::I32(v) => v.iter().map(|&x| x as f32).collect(),
            Data::I8(v) => v.iter().map(|&x| x as f32).collect(),
            Data::U8(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// All elements as i64, for integer tensors (shapes, axes, zero points).
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        Ok(match &self.data {
            Data::I64(v) => v.clone(),
            Data::I32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I8(v) => v.iter().map(|&x| x as i64).collect(),
            Data::U8(v) => v.iter().map(|&x| x as i64).collect(),
            Data::F32(_) => bail!("expected an integer tensor, found float32"),
        })
    }

    /// Same data, new shape (element count must match).
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Tensor> {
        if shape.iter().product::<usize>() != self.len() {
            bail!("cannot reshape {:?} into {:?}", self.shape, shape);
        }
        Ok(Tensor { shape, data: self.data.clone() })
    }

    /// Transposes: output dim `i` is input dim `perm[i]`.
    pub fn transposed(&self, perm: &[usize]) -> Result<Tensor> {
        if perm.len() != self.shape.len() {
            bail!("permutation {perm:?} does not fit shape {:?}", self.shape);
        }
        let out_shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        let in_strides = strides(&self.shape);
        let n = self.len();
        let mut src_index = Vec::with_capacity(n);
        let mut idx = vec![0usize; perm.len()];
        for _ in 0..n {
            src_index.push(idx.iter().zip(perm).map(|(&i, &p)| i * in_strides[p]).sum::<usize>());
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < out_shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        fn gather<T: Copy>(v: &[T], ix: &[usize]) -> Vec<T> {
            ix.iter().map(|&i| v[i]).collect()
        }
        let data = match &self.data {
            Data::F32(v) => Data::F32(gather(v, &src_index)),
            Data::I64(v) => Data::I64(gather(v, &src_index)),
            Data::I32(v) => Data::I32(gather(v, &src_index)),
            Data::I8(v) => Data::I8(gather(v, &src_index)),
            Data::U8(v) => Data::U8(gather(v, &src_index)),
        };
        Ok(Tensor { shape: out_shape, data })
    }
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_nchw_to_nhwc() {
        // [1, 2, 2, 3] NCHW? use [1, C=2, H=1, W=3] -> NHWC [1, 1, 3, 2]
        let t = Tensor::f32(vec![1, 2, 1, 3], vec![0., 1., 2., 10., 11., 12.]);
        let n = t.transposed(&[0, 2, 3, 1]).unwrap();
        assert_eq!(n.shape, vec![1, 1, 3, 2]);
        assert_eq!(n.data, Data::F32(vec![0., 10., 1., 11., 2., 12.]));
    }

    #[test]
    fn reshape_checks_count() {
        let t = Tensor::f32(vec![2, 3], vec![0.; 6]);
        assert!(t.reshaped(vec![3, 2]).is_ok());
        assert!(t.reshaped(vec![4, 2]).is_err());
    }
}

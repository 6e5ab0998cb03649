//! `.npy` samples in and outputs out for `run` and `bench`, through `npyz`.
//!
//! The tool reads its own arrays rather than the compiler's `npy` module so
//! that a build without the `compiler` feature (the one cross-compiled for
//! devices) can still run packages on `.npy` inputs.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use npyz::WriterBuilder;

/// Element values of an [`Array`]: int8 is used as it is, every other numeric
/// type is converted to `f32` and quantized at the model's boundary.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// int8 values.
    I8(Vec<i8>),
    /// Any other numeric type, converted to f32.
    F32(Vec<f32>),
}

/// A C-order array read from an `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Elements.
    pub values: Values,
}

impl Array {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.values {
            Values::I8(v) => v.len(),
            Values::F32(v) => v.len(),
        }
    }

    /// True if there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as `f32` (int8 values converted as they are).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.values {
            Values::I8(v) => v.iter().map(|&x| f32::from(x)).collect(),
            Values::F32(v) => v.clone(),
        }
    }
}

/// Reads a C-order `.npy` array of float32/64, (u)int8 or int16/32/64.
///
/// # Errors
/// Unreadable file, Fortran order, an unsupported dtype, or data shorter than the shape.
pub fn read(path: &Path) -> Result<Array> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    read_from(std::io::BufReader::new(f)).with_context(|| format!("reading {}", path.display()))
}

fn read_from(r: impl std::io::Read) -> Result<Array> {
    let npy = npyz::NpyFile::new(r).context("not a .npy file")?;
    if npy.order() == npyz::Order::Fortran {
        bail!("Fortran-order arrays are not supported; save with numpy.ascontiguousarray");
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let ts = match npy.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => bail!("structured dtype {other:?} is not supported"),
    };
    let values = match ts.trim_start_matches(['<', '|', '=']) {
        "i1" => Values::I8(npy.into_vec::<i8>()?),
        "f4" => Values::F32(npy.into_vec::<f32>()?),
        "f8" => Values::F32(npy.into_vec::<f64>()?.into_iter().map(|v| v as f32).collect()),
        "u1" => Values::F32(npy.into_vec::<u8>()?.into_iter().map(f32::from).collect()),
        "i2" => Values::F32(npy.into_vec::<i16>()?.into_iter().map(f32::from).collect()),
        "i4" => Values::F32(npy.into_vec::<i32>()?.into_iter().map(|v| v as f32).collect()),
        "i8" => Values::F32(npy.into_vec::<i64>()?.into_iter().map(|v| v as f32).collect()),
        other => bail!("dtype '{other}' is not supported (float32/64, int8, uint8, int16/32/64 are)"),
    };
    let a = Array { shape, values };
    if a.len() != a.shape.iter().product::<usize>() {
        bail!("array data is shorter than its shape");
    }
    Ok(a)
}

/// Writes an int8 array.
///
/// # Errors
/// I/O errors.
pub fn write_i8(path: &Path, shape: &[usize], data: &[i8]) -> Result<()> {
    write(path, shape, data)
}

/// Writes a float32 array.
///
/// # Errors
/// I/O errors.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write(path, shape, data)
}

fn write<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut buf = std::io::BufWriter::new(f);
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(&mut buf).begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()?;
    buf.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy<T: npyz::AutoSerialize + Copy>(shape: &[u64], data: &[T]) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut w = npyz::WriteOptions::new().default_dtype().shape(shape).writer(&mut bytes).begin_nd().unwrap();
        w.extend(data.iter().copied()).unwrap();
        w.finish().unwrap();
        bytes
    }

    #[test]
    fn int8_stays_int8_and_other_types_become_f32() {
        let a = read_from(&npy(&[2, 2], &[1i8, -2, 3, -128])[..]).unwrap();
        assert_eq!(a, Array { shape: vec![2, 2], values: Values::I8(vec![1, -2, 3, -128]) });
        let a = read_from(&npy(&[3], &[0u8, 7, 255])[..]).unwrap();
        assert_eq!(a.values, Values::F32(vec![0.0, 7.0, 255.0]));
        let a = read_from(&npy(&[2], &[-1.5f64, 2.25])[..]).unwrap();
        assert_eq!(a.values, Values::F32(vec![-1.5, 2.25]));
        let a = read_from(&npy(&[1], &[-40_000i32])[..]).unwrap();
        assert_eq!(a.values, Values::F32(vec![-40_000.0]));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        let e = read_from(&b"not numpy"[..]).unwrap_err();
        assert!(format!("{e:#}").contains("not a .npy file"), "{e:#}");
        let e = read_from(&npy(&[2], &[true, false])[..]).unwrap_err();
        assert!(format!("{e:#}").contains("not supported"), "{e:#}");
    }
}

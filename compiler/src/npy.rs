//! `.npy` reading and writing (through `npyz`) for calibration data, inputs
//! and outputs.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use npyz::WriterBuilder;

use crate::tensor::{Data, Tensor};

/// Reads a C-order `.npy` array of float32/64, (u)int8, int16/32/64.
///
/// # Errors
/// Unreadable file, Fortran order, or an unsupported dtype.
pub fn read(path: &Path) -> Result<Tensor> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    read_from(std::io::BufReader::new(f)).with_context(|| format!("reading {}", path.display()))
}

/// Reads an `.npy` array from any reader.
///
/// # Errors
/// As [`read`].
pub fn read_from(r: impl Read) -> Result<Tensor> {
    let npy = npyz::NpyFile::new(r).context("not a .npy file")?;
    if npy.order() == npyz::Order::Fortran {
        bail!("Fortran-order arrays are not supported; save with numpy.ascontiguousarray");
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let ts = match npy.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => bail!("structured dtype {other:?} is not supported"),
    };
    let data = match ts.trim_start_matches(['<', '|', '=']) {
        "f4" => Data::F32(npy.into_vec::<f32>()?),
        "f8" => Data::F32(npy.into_vec::<f64>()?.into_iter().map(|v| v as f32).collect()),
        "i1" => Data::I8(npy.into_vec::<i8>()?),
        "u1" => Data::U8(npy.into_vec::<u8>()?),
        "i2" => Data::F32(npy.into_vec::<i16>()?.into_iter().map(f32::from).collect()),
        "i4" => Data::I32(npy.into_vec::<i32>()?),
        "i8" => Data::I64(npy.into_vec::<i64>()?),
        other => bail!("dtype '{other}' is not supported (float32/64, int8, uint8, int16/32/64 are)"),
    };
    let t = Tensor { shape, data };
    if t.len() != t.shape.iter().product::<usize>() {
        bail!("array data is shorter than its shape");
    }
    Ok(t)
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

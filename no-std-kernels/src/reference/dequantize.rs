//! DEQUANTIZE int8 → f32: TFLite `reference_ops::Dequantize`
//! (`tensorflow/lite/kernels/internal/reference/dequantize.h`).

use super::common::check_zero_point;
use crate::KernelError;

/// `output = scale * (q - zero_point)`, in f32 as TFLite computes it.
///
/// # Errors
/// [`KernelError::ShapeMismatch`] if the lengths differ;
/// [`KernelError::InvalidParameter`] for a scale that is not finite and
/// positive or a zero point outside int8.
pub fn dequantize_i8(scale: f32, zero_point: i32, input: &[i8], output: &mut [f32]) -> Result<(), KernelError> {
    if input.len() != output.len() {
        return Err(KernelError::ShapeMismatch);
    }
    check_zero_point(zero_point)?;
    if !(scale > 0.0 && scale < f32::INFINITY) {
        return Err(KernelError::InvalidParameter);
    }
    for (o, &q) in output.iter_mut().zip(input) {
        // |q - zero_point| <= 255: exact in f32.
        *o = scale * (i32::from(q) - zero_point) as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        let mut out = [0f32; 3];
        dequantize_i8(0.5, -128, &[-128, 127, 0], &mut out).unwrap();
        assert_eq!(out, [0.0, 127.5, 64.0]);
    }
}

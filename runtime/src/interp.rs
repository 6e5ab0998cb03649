//! [`Interpreter`]: runs a validated [`Model`] in a caller-provided arena.
//!
//! The arena holds only the planned activations (graph inputs and outputs
//! included); weights, biases and requantization tables are read in place from
//! the package. Nothing is allocated, before or during a run.

use edgefleet_kernels::fast::{self, Isa, PackedFilter, PreparedEpilogue};
use edgefleet_kernels::reference::{
    self, ConvParams, DepthwiseParams, FullyConnectedParams, PoolParams, RequantizeParams, SoftmaxOutput, SoftmaxParams,
};
use edgefleet_kernels::{KernelError, Requant};

use crate::error::RunError;
use crate::format::{DType, Storage};
use crate::model::{Model, Slot};
use crate::op::Op;
use crate::parallel::{self, Parallel};

/// Runs a model. Borrow the model and an arena of at least
/// [`Model::arena_size`] bytes; write inputs, [`Interpreter::invoke`], read outputs.
///
/// The arena is reused between tensors: after `invoke`, input buffers may
/// have been overwritten, so write the inputs again before the next run.
#[derive(Debug)]
pub struct Interpreter<'m, 'p, 'a> {
    model: &'m Model<'p>,
    arena: &'a mut [u8],
    #[cfg(feature = "alloc")]
    packed: Option<&'m crate::PackedWeights>,
    #[cfg(feature = "alloc")]
    decoded: Option<&'m crate::packed::Decoded>,
    parallel: Option<&'m dyn Parallel>,
}

impl core::fmt::Debug for dyn Parallel + '_ {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Parallel({} threads)", self.threads())
    }
}

impl<'m, 'p, 'a> Interpreter<'m, 'p, 'a> {
    /// An interpreter for `model` using `arena` (only its first
    /// [`Model::arena_size`] bytes are touched).
    ///
    /// # Errors
    /// [`RunError::ArenaTooSmall`] if the arena is shorter than the plan.
    pub fn new(model: &'m Model<'p>, arena: &'a mut [u8]) -> Result<Self, RunError> {
        let needed = model.arena_size();
        if arena.len() < needed {
            return Err(RunError::ArenaTooSmall { needed, given: arena.len() });
        }
        Ok(Interpreter {
            model,
            arena: &mut arena[..needed],
            #[cfg(feature = "alloc")]
            packed: None,
            #[cfg(feature = "alloc")]
            decoded: None,
            parallel: None,
        })
    }

    /// Splits convolutions, depthwise convolutions, pooling and adds into
    /// parts run by `threads` (see [`crate::parallel`]; results are
    /// bit-identical to a single-threaded run).
    #[must_use]
    pub fn with_parallel(mut self, threads: &'m dyn Parallel) -> Self {
        self.parallel = Some(threads);
        self
    }

    /// Uses weights packed for the fast GEMM kernels (see
    /// [`crate::PackedWeights`]; [`crate::OwnedModel::packed`] has them).
    /// Without packed weights, convolutions and fully connected layers run
    /// the reference kernels. Packed weights of another model are ignored
    /// op by op (their shapes do not match), and their decoded op and
    /// tensor records are used only if they are this model's.
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn with_packed(mut self, packed: &'m crate::PackedWeights) -> Self {
        self.packed = Some(packed);
        self.decoded = packed.decoded_for(self.model);
        self
    }

    /// [`Self::with_packed`] with `owned`'s packed weights, for an
    /// interpreter of `owned.model()`: then the decoded records are taken
    /// without comparing them with the model's (the same immutable bytes,
    /// borrowed as long as the interpreter lives), which saves that
    /// comparison on every interpreter a host makes per inference.
    #[cfg(feature = "alloc")]
    #[must_use]
    pub fn with_owned(mut self, owned: &'m crate::OwnedModel) -> Self {
        let ours = self.model.package_bytes();
        let theirs = owned.as_bytes();
        if core::ptr::eq(ours.as_ptr(), theirs.as_ptr()) && ours.len() == theirs.len() {
            self.packed = Some(owned.packed());
            self.decoded = Some(owned.packed().decoded());
            self
        } else {
            self.with_packed(owned.packed())
        }
    }

    /// The instruction set the kernels use in this process
    /// (`edgefleet_kernels::fast::active`; `EDGEFLEET_KERNELS=reference`
    /// forces the portable kernels).
    pub fn kernels(&self) -> Isa {
        fast::active()
    }

    fn add_table_for(&self, i: usize) -> Option<&'m [i8]> {
        #[cfg(feature = "alloc")]
        {
            self.packed.and_then(|p| p.add_table(i))
        }
        #[cfg(not(feature = "alloc"))]
        {
            let _ = i;
            None
        }
    }

    fn packed_for(&self, i: usize) -> (Option<PackedFilter<'m>>, Option<PreparedEpilogue<'m>>) {
        #[cfg(feature = "alloc")]
        {
            (self.packed.and_then(|p| p.get(i)), self.packed.and_then(|p| p.prepared(i)))
        }
        #[cfg(not(feature = "alloc"))]
        {
            let _ = i;
            (None, None)
        }
    }

    /// The model being run.
    pub fn model(&self) -> &'m Model<'p> {
        self.model
    }

    /// Exact arena bytes in use (the extent of the memory plan).
    pub fn arena_used_bytes(&self) -> usize {
        self.arena.len()
    }

    fn io(&self, index: usize, output: bool) -> Result<Slot, RunError> {
        self.model.io_slot(index, output).ok_or(RunError::NoSuchTensor { index })
    }

    /// The int8 buffer of input `index`, to fill before [`Self::invoke`].
    pub fn input_mut(&mut self, index: usize) -> Result<&mut [i8], RunError> {
        let t = self.io(index, false)?;
        let bytes = self.arena.get_mut(t.offset..t.offset + t.size).ok_or(RunError::NoSuchTensor { index })?;
        Ok(bytemuck::cast_slice_mut(bytes))
    }

    /// The int8 buffer of output `index`, valid after [`Self::invoke`].
    pub fn output(&self, index: usize) -> Result<&[i8], RunError> {
        let t = self.io(index, true)?;
        let bytes = self.arena.get(t.offset..t.offset + t.size).ok_or(RunError::NoSuchTensor { index })?;
        Ok(bytemuck::cast_slice(bytes))
    }

    /// Quantizes `data` into input `index` with the input's scale and zero point.
    ///
    /// # Errors
    /// [`RunError::LengthMismatch`] if `data` has the wrong element count.
    pub fn set_input_f32(&mut self, index: usize, data: &[f32]) -> Result<(), RunError> {
        let (scale, zero_point) = self.model.input(index).ok_or(RunError::NoSuchTensor { index })?.quantization();
        let buf = self.input_mut(index)?;
        if buf.len() != data.len() {
            return Err(RunError::LengthMismatch { expected: buf.len(), given: data.len() });
        }
        reference::quantize_f32(scale, zero_point, data, buf).map_err(|error| RunError::Kernel { op: u32::MAX, error })
    }

    /// Dequantizes output `index` into `out`.
    ///
    /// # Errors
    /// [`RunError::LengthMismatch`] if `out` has the wrong element count.
    pub fn output_f32(&self, index: usize, out: &mut [f32]) -> Result<(), RunError> {
        let (scale, zero_point) = self.model.output(index).ok_or(RunError::NoSuchTensor { index })?.quantization();
        let buf = self.output(index)?;
        if buf.len() != out.len() {
            return Err(RunError::LengthMismatch { expected: buf.len(), given: out.len() });
        }
        reference::dequantize_i8(scale, zero_point, buf, out).map_err(|error| RunError::Kernel { op: u32::MAX, error })
    }

    /// Runs every op once, in order.
    ///
    /// # Errors
    /// Only [`RunError::Kernel`], which a validated model does not produce.
    pub fn invoke(&mut self) -> Result<(), RunError> {
        for i in 0..self.model.op_count() {
            self.run_op(i).map_err(|error| RunError::Kernel { op: i as u32, error })?;
        }
        Ok(())
    }

    /// Runs op `i` alone (for per-op profiling); ops must run in order.
    ///
    /// # Errors
    /// As [`Self::invoke`].
    pub fn invoke_op(&mut self, i: usize) -> Result<(), RunError> {
        self.run_op(i).map_err(|error| RunError::Kernel { op: i as u32, error })
    }

    fn run_op(&mut self, i: usize) -> Result<(), KernelError> {
        let model = self.model;
        let par = self.parallel;
        let (packed, prepared) = self.packed_for(i);
        let add_table = self.add_table_for(i);
        let records = Records {
            model,
            #[cfg(feature = "alloc")]
            decoded: self.decoded,
        };
        let op = records.op(i).ok_or(KernelError::InvalidParameter)?;
        let tensor = |t: u16| records.slot(t).ok_or(KernelError::InvalidParameter);
        let out = tensor(op.output())?;
        // The loader proved that no arena input overlaps the output, so the
        // arena splits into [before | output | after] and each input lies in
        // `before` or `after`, or in the package's constants.
        let (before, rest) = self.arena.split_at_mut(out.offset);
        let (out_bytes, after) = rest.split_at_mut(out.size);
        let out_end = out.offset + out.size;
        let read = |t: &Slot| -> Result<&[u8], KernelError> {
            match t.storage {
                Storage::Const => model.const_bytes(t).ok_or(KernelError::ShapeMismatch),
                Storage::Arena if t.offset + t.size <= out.offset => Ok(&before[t.offset..t.offset + t.size]),
                Storage::Arena => after
                    .get(t.offset.wrapping_sub(out_end)..t.offset.wrapping_sub(out_end).wrapping_add(t.size))
                    .ok_or(KernelError::ShapeMismatch),
            }
        };
        let act = |t: u16| -> Result<(&[i8], Slot), KernelError> {
            let info = tensor(t)?;
            Ok((bytemuck::cast_slice(read(&info)?), info))
        };
        let ints = |t: Option<u16>| -> Result<Option<&[i32]>, KernelError> {
            match t {
                None => Ok(None),
                Some(t) => {
                    let info = tensor(t)?;
                    if info.dtype != DType::I32 {
                        return Err(KernelError::InvalidParameter);
                    }
                    bytemuck::try_cast_slice(read(&info)?).map(Some).map_err(|_| KernelError::ShapeMismatch)
                }
            }
        };
        let zp = |t: &Slot| t.zero_point;
        let table = |offset: u32, count: u32| {
            model
                .requant_table(offset, count)
                .map(|(multiplier, shift)| Requant { multiplier, shift })
                .ok_or(KernelError::InvalidParameter)
        };
        let dims = |t: &Slot| t.shape.nhwc().ok_or(KernelError::ShapeMismatch);
        let output: &mut [i8] = bytemuck::cast_slice_mut(out_bytes);
        let y_zp = zp(&out);

        match op {
            Op::Conv2d { input, filter, bias, geometry, requant_offset, requant_count, clamp, .. } => {
                let (x, xi) = act(input)?;
                let (w, wi) = act(filter)?;
                let p = ConvParams {
                    stride: geometry.stride,
                    dilation: geometry.window,
                    padding: geometry.padding,
                    input_offset: -zp(&xi),
                    output_offset: y_zp,
                    clamp,
                };
                let (xd, wd, od) = (dims(&xi)?, dims(&wi)?, dims(&out)?);
                let (packed, prepared) = (packed.as_ref(), prepared.as_ref());
                let (bias, requant) = (ints(bias)?, table(requant_offset, requant_count)?);
                let conv = |xd, x: &[i8], pad_top, od, output: &mut [i8]| {
                    let p = ConvParams { padding: (pad_top, p.padding.1), ..p };
                    fast::conv2d_i8_prepared(&p, xd, x, wd, w, packed, prepared, bias, requant, od, output)
                };
                let work = od.elements().unwrap_or(0).saturating_mul(wd.h * wd.w * wd.c);
                parallel::rows(par, work, x, xd, od, p.stride.0, p.padding.0, output, conv)
            }
            Op::DepthwiseConv2d {
                input,
                filter,
                bias,
                geometry,
                depth_multiplier,
                requant_offset,
                requant_count,
                clamp,
                ..
            } => {
                let (x, xi) = act(input)?;
                let (w, wi) = act(filter)?;
                let p = DepthwiseParams {
                    conv: ConvParams {
                        stride: geometry.stride,
                        dilation: geometry.window,
                        padding: geometry.padding,
                        input_offset: -zp(&xi),
                        output_offset: y_zp,
                        clamp,
                    },
                    depth_multiplier,
                };
                let (xd, wd, od) = (dims(&xi)?, dims(&wi)?, dims(&out)?);
                let (bias, requant) = (ints(bias)?, table(requant_offset, requant_count)?);
                let depthwise = |xd, x: &[i8], pad_top, od, output: &mut [i8]| {
                    let p =
                        DepthwiseParams { conv: ConvParams { padding: (pad_top, p.conv.padding.1), ..p.conv }, ..p };
                    fast::depthwise_conv2d_i8(&p, xd, x, wd, w, bias, requant, od, output)
                };
                let work = od.elements().unwrap_or(0).saturating_mul(wd.h * wd.w * 4);
                parallel::rows(par, work, x, xd, od, p.conv.stride.0, p.conv.padding.0, output, depthwise)
            }
            Op::FullyConnected { input, filter, bias, requant_offset, requant_count, clamp, .. } => {
                let (x, xi) = act(input)?;
                let (w, wi) = act(filter)?;
                let (o, n) = match wi.shape.dims() {
                    [o, n] => (*o, *n),
                    _ => return Err(KernelError::ShapeMismatch),
                };
                let p = FullyConnectedParams { input_offset: -zp(&xi), output_offset: y_zp, clamp };
                fast::fully_connected_i8_prepared(
                    &p,
                    x.len() / n.max(1),
                    x,
                    (o, n),
                    w,
                    packed.as_ref(),
                    prepared.as_ref(),
                    ints(bias)?,
                    table(requant_offset, requant_count)?,
                    output,
                )
            }
            Op::Add { input1, input2, .. } => {
                let (a, ai) = act(input1)?;
                let (b, bi) = act(input2)?;
                let p = op.add_params(zp(&ai), zp(&bi), y_zp).ok_or(KernelError::InvalidParameter)?;
                // The table is built at load for these parameters; not used
                // when the reference kernels are forced.
                let table = add_table.filter(|_| fast::active() != Isa::Reference);
                let add = |r: core::ops::Range<usize>, out: &mut [i8]| {
                    let (a, b) = (
                        a.get(r.clone()).ok_or(KernelError::ShapeMismatch)?,
                        b.get(r).ok_or(KernelError::ShapeMismatch)?,
                    );
                    fast::add_i8_prepared(&p, table, a, b, out)
                };
                if a.len() == output.len() && b.len() == output.len() {
                    parallel::elements(par, output, add)
                } else {
                    add(0..a.len(), output) // the kernel reports the mismatch
                }
            }
            Op::AveragePool2d { input, geometry, clamp, .. } | Op::MaxPool2d { input, geometry, clamp, .. } => {
                let (x, xi) = act(input)?;
                let p =
                    PoolParams { filter: geometry.window, stride: geometry.stride, padding: geometry.padding, clamp };
                let average = matches!(op, Op::AveragePool2d { .. });
                let pool = |xd, x: &[i8], pad_top, od, output: &mut [i8]| {
                    let p = PoolParams { padding: (pad_top, p.padding.1), ..p };
                    if average {
                        fast::average_pool_i8(&p, xd, x, od, output)
                    } else {
                        reference::max_pool_i8(&p, xd, x, od, output)
                    }
                };
                let (xd, od) = (dims(&xi)?, dims(&out)?);
                let work = od.elements().unwrap_or(0).saturating_mul(p.filter.0 * p.filter.1 * 4);
                parallel::rows(par, work, x, xd, od, p.stride.0, p.padding.0, output, pool)
            }
            Op::Softmax { input, input_multiplier, input_left_shift, diff_min, requant, .. } => {
                let (x, xi) = act(input)?;
                let p = SoftmaxParams {
                    input_multiplier,
                    input_left_shift,
                    diff_min,
                    output: match requant {
                        None => SoftmaxOutput::Tflite256,
                        Some((multiplier, shift)) => SoftmaxOutput::Requantized { multiplier, shift, zero_point: y_zp },
                    },
                };
                reference::softmax_i8(&p, xi.shape.last(), x, output)
            }
            Op::Requantize { input, multiplier, shift, clamp, .. } => {
                let (x, xi) = act(input)?;
                let p = RequantizeParams { input_offset: -zp(&xi), multiplier, shift, output_offset: y_zp, clamp };
                reference::requantize_i8(&p, x, output)
            }
            Op::Transpose { input, perm, .. } => {
                let (x, xi) = act(input)?;
                let &[a, b, c, d] = xi.shape.dims() else {
                    return Err(KernelError::ShapeMismatch);
                };
                reference::transpose_i8([a, b, c, d], perm, x, output)
            }
        }
    }
}

/// Where the interpreter reads ops and tensor slots: decoded at load if it
/// has the model's [`crate::PackedWeights`], else from the package records.
#[derive(Clone, Copy)]
struct Records<'m, 'p> {
    model: &'m Model<'p>,
    #[cfg(feature = "alloc")]
    decoded: Option<&'m crate::packed::Decoded>,
}

impl Records<'_, '_> {
    fn op(self, i: usize) -> Option<Op> {
        #[cfg(feature = "alloc")]
        if let Some(d) = self.decoded {
            return d.ops.get(i).copied().flatten();
        }
        self.model.op(i)
    }

    fn slot(self, t: u16) -> Option<Slot> {
        #[cfg(feature = "alloc")]
        if let Some(d) = self.decoded {
            return d.slots.get(usize::from(t)).copied().flatten();
        }
        self.model.slot(t)
    }
}

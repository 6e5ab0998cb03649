//! The sensor seam: where feature frames come from.
//!
//! A board implements [`FeatureSensor`] over its own driver (a microphone on
//! I2S or PDM plus an MFCC front end, or a feature chip on I2C or SPI through
//! `embedded-hal` 1.0's bus traits). [`ReplaySensor`] replays frames from
//! memory: the QEMU build feeds it the reference input, tests feed it anything.

/// A source of int8 feature frames in the model's input layout.
pub trait FeatureSensor {
    /// The driver's error.
    type Error: core::fmt::Debug;

    /// True when a new frame can be read without waiting.
    ///
    /// # Errors
    /// The driver's, e.g. a bus error.
    fn frame_ready(&mut self) -> Result<bool, Self::Error>;

    /// Reads the frame into `out`, which has exactly the model input's length.
    ///
    /// # Errors
    /// The driver's, or a frame of another length.
    fn read_frame(&mut self, out: &mut [i8]) -> Result<(), Self::Error>;
}

/// Why [`ReplaySensor`] could not give a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayError {
    /// The frame and the buffer differ in length.
    LengthMismatch {
        /// Values in the replayed frame.
        frame: usize,
        /// Values the caller asked for.
        wanted: usize,
    },
}

/// Replays one frame from memory, always ready.
#[derive(Clone, Copy, Debug)]
pub struct ReplaySensor<'a> {
    frame: &'a [i8],
}

impl<'a> ReplaySensor<'a> {
    /// A sensor that returns `frame` every time.
    pub fn new(frame: &'a [i8]) -> Self {
        ReplaySensor { frame }
    }
}

impl FeatureSensor for ReplaySensor<'_> {
    type Error = ReplayError;

    fn frame_ready(&mut self) -> Result<bool, ReplayError> {
        Ok(true)
    }

    fn read_frame(&mut self, out: &mut [i8]) -> Result<(), ReplayError> {
        if out.len() != self.frame.len() {
            return Err(ReplayError::LengthMismatch { frame: self.frame.len(), wanted: out.len() });
        }
        out.copy_from_slice(self.frame);
        Ok(())
    }
}

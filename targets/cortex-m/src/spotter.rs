//! [`Spotter`]: one inference per sensor frame, in a caller-provided arena.

use core::fmt;

use edgefleet_runtime::{Interpreter, LoadError, Model, RunError};
use embedded_hal::delay::DelayNs;
use heapless::Vec;

use crate::sensor::FeatureSensor;

/// Most output values a [`Detection`] holds.
pub const MAX_CLASSES: usize = 32;

/// How long [`Spotter::next`] waits between polls of a sensor with no frame ready.
pub const POLL_INTERVAL_US: u32 = 1_000;

/// The scores of one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detection {
    /// The model's int8 output.
    pub scores: Vec<i8, MAX_CLASSES>,
    /// Index of the highest score (the first one on ties).
    pub class: usize,
    /// Times the spotter waited [`POLL_INTERVAL_US`] for the frame.
    pub polls_waited: u32,
}

impl fmt::Display for Detection {
    /// `output: s0 s1 ...`, the line `run.sh` compares with the host's output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("output:")?;
        for s in &self.scores {
            write!(f, " {s}")?;
        }
        Ok(())
    }
}

/// Why a frame could not be classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpotError<E> {
    /// The package is invalid.
    Load(LoadError),
    /// The runtime refused the arena or a buffer.
    Run(RunError),
    /// The model is not one input, one output of at most [`MAX_CLASSES`] values.
    UnsupportedModel,
    /// The sensor failed.
    Sensor(E),
}

impl<E> From<LoadError> for SpotError<E> {
    fn from(e: LoadError) -> Self {
        SpotError::Load(e)
    }
}

impl<E> From<RunError> for SpotError<E> {
    fn from(e: RunError) -> Self {
        SpotError::Run(e)
    }
}

impl<E: fmt::Debug> fmt::Display for SpotError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpotError::Load(e) => write!(f, "invalid package: {e}"),
            SpotError::Run(e) => write!(f, "inference: {e}"),
            SpotError::UnsupportedModel => {
                write!(f, "the spotter runs one-input, one-output models of at most {MAX_CLASSES} output values")
            }
            SpotError::Sensor(e) => write!(f, "sensor: {e:?}"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for SpotError<E> {}

/// Runs a classifier on frames from a [`FeatureSensor`].
#[derive(Debug)]
pub struct Spotter<'m, 'p, 'a> {
    interp: Interpreter<'m, 'p, 'a>,
}

impl<'m, 'p, 'a> Spotter<'m, 'p, 'a> {
    /// A spotter for `model` using `arena` (at least [`Model::arena_size`] bytes).
    ///
    /// # Errors
    /// [`SpotError::UnsupportedModel`], or [`SpotError::Run`] if the arena is too small.
    pub fn new<E>(model: &'m Model<'p>, arena: &'a mut [u8]) -> Result<Self, SpotError<E>> {
        let outputs = model.output(0).map_or(usize::MAX, |o| o.tensor.shape.elements());
        if model.input_count() != 1 || model.output_count() != 1 || outputs > MAX_CLASSES {
            return Err(SpotError::UnsupportedModel);
        }
        Ok(Spotter { interp: Interpreter::new(model, arena)? })
    }

    /// Waits for the sensor's next frame (polling every [`POLL_INTERVAL_US`]
    /// through `delay`), reads it straight into the model's input and runs
    /// the model.
    ///
    /// # Errors
    /// The sensor's, as [`SpotError::Sensor`].
    pub fn next<S: FeatureSensor, D: DelayNs>(
        &mut self,
        sensor: &mut S,
        delay: &mut D,
    ) -> Result<Detection, SpotError<S::Error>> {
        let mut polls_waited = 0;
        while !sensor.frame_ready().map_err(SpotError::Sensor)? {
            delay.delay_us(POLL_INTERVAL_US);
            polls_waited += 1;
        }
        sensor.read_frame(self.interp.input_mut(0)?).map_err(SpotError::Sensor)?;
        self.interp.invoke()?;
        let scores: Vec<i8, MAX_CLASSES> =
            Vec::from_slice(self.interp.output(0)?).map_err(|_| SpotError::UnsupportedModel)?;
        let class = scores.iter().enumerate().fold(0, |best, (i, &s)| if s > scores[best] { i } else { best });
        Ok(Detection { scores, class, polls_waited })
    }

    /// Exact arena bytes in use.
    pub fn arena_used_bytes(&self) -> usize {
        self.interp.arena_used_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kws;
    use crate::sensor::{ReplayError, ReplaySensor};
    use core::fmt::Write as _;

    /// Ready after `busy` polls; counts the nanoseconds it was made to wait.
    struct SlowSensor {
        busy: u32,
        fail: bool,
    }

    impl FeatureSensor for SlowSensor {
        type Error = &'static str;
        fn frame_ready(&mut self) -> Result<bool, &'static str> {
            if self.fail {
                return Err("bus error");
            }
            self.busy = self.busy.saturating_sub(1);
            Ok(self.busy == 0)
        }
        fn read_frame(&mut self, out: &mut [i8]) -> Result<(), &'static str> {
            out.copy_from_slice(&kws::REFERENCE_INPUT);
            Ok(())
        }
    }

    #[derive(Default)]
    struct Clock {
        ns: u64,
    }

    impl DelayNs for Clock {
        fn delay_ns(&mut self, ns: u32) {
            self.ns += u64::from(ns);
        }
    }

    fn model() -> Model<'static> {
        Model::load(kws::PACKAGE).expect("the embedded package loads")
    }

    #[test]
    fn reference_frame_gives_tflite_micros_output() {
        let model = model();
        let mut arena = [0u8; kws::ARENA_SIZE];
        let mut spotter = Spotter::new::<()>(&model, &mut arena).expect("spotter");
        assert_eq!(spotter.arena_used_bytes(), kws::ARENA_SIZE);
        let mut clock = Clock::default();
        let d = spotter.next(&mut ReplaySensor::new(&kws::REFERENCE_INPUT), &mut clock).expect("frame");
        assert_eq!(d.scores.as_slice(), &kws::EXPECTED_OUTPUT[..]);
        assert_eq!(d.class, 5, "KWS says 'on' for the reference utterance");
        assert_eq!((d.polls_waited, clock.ns), (0, 0));
        let mut line: heapless::String<160> = heapless::String::new();
        write!(line, "{d}").expect("fits");
        assert_eq!(line, "output: -128 -128 -128 -128 -128 127 -128 -128 -128 -128 -128 -128");
    }

    #[test]
    fn waits_on_the_timer_until_the_sensor_is_ready() {
        let model = model();
        let mut arena = [0u8; kws::ARENA_SIZE];
        let mut spotter = Spotter::new::<()>(&model, &mut arena).expect("spotter");
        let mut clock = Clock::default();
        let d = spotter.next(&mut SlowSensor { busy: 4, fail: false }, &mut clock).expect("frame");
        assert_eq!(d.polls_waited, 3);
        assert_eq!(clock.ns, 3 * u64::from(POLL_INTERVAL_US) * 1_000);
        assert_eq!(d.scores.as_slice(), &kws::EXPECTED_OUTPUT[..]);
    }

    #[test]
    fn sensor_and_arena_errors_are_reported() {
        let model = model();
        let mut small = [0u8; 100];
        let e = Spotter::new::<()>(&model, &mut small).expect_err("arena too small");
        assert_eq!(e, SpotError::Run(RunError::ArenaTooSmall { needed: kws::ARENA_SIZE, given: 100 }));

        let mut arena = [0u8; kws::ARENA_SIZE];
        let mut spotter = Spotter::new::<()>(&model, &mut arena).expect("spotter");
        let e = spotter.next(&mut SlowSensor { busy: 0, fail: true }, &mut Clock::default()).expect_err("fails");
        assert_eq!(e, SpotError::Sensor("bus error"));
        let e = spotter.next(&mut ReplaySensor::new(&[0; 10]), &mut Clock::default()).expect_err("short frame");
        assert_eq!(e, SpotError::Sensor(ReplayError::LengthMismatch { frame: 10, wanted: 490 }));
    }
}

//! burn as a peer (feature `burn`): the fp32 ONNX graphs imported by
//! burn-onnx at build time (`build.rs`: generated Rust code plus `.bpk`
//! weights), run on burn's ndarray backend (deprecated in burn 0.22) and on
//! its flex backend (the default CPU backend since 0.22), fp32.
//!
//! Single thread: `compare` sets `RAYON_NUM_THREADS=1` and
//! `MATMUL_NUM_THREADS=1` before anything starts a pool. A timed run is
//! `forward` plus `into_data` on the output (which waits for the result).

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use burn::prelude::*;

use crate::models::ModelKey;

macro_rules! generated {
    ($cfg:ident, $module:ident, $file:literal) => {
        #[cfg($cfg)]
        #[allow(warnings, clippy::all, clippy::pedantic, missing_docs)]
        mod $module {
            include!(concat!(env!("OUT_DIR"), "/burn/", $file));
        }
    };
}
generated!(burn_kws, kws, "kws_fp32.rs");
generated!(burn_vww, vww, "vww_fp32.rs");
generated!(burn_ic, ic, "ic_fp32.rs");
generated!(burn_ad, ad, "ad_fp32.rs");

/// burn's version (the `burn` dependency's requirement).
pub const BURN_VERSION: &str = "0.22";

/// Which burn backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `burn-ndarray`.
    Ndarray,
    /// `burn-flex`.
    Flex,
}

impl Backend {
    #[allow(deprecated)] // ndarray is deprecated in burn 0.22; measured all the same.
    fn device(self) -> Device {
        match self {
            Backend::Ndarray => Device::ndarray(),
            Backend::Flex => Device::flex(),
        }
    }
}

/// Why burn-onnx could not import `m`, if it could not (from the build).
pub fn import_error(m: ModelKey) -> Option<String> {
    include_str!(concat!(env!("OUT_DIR"), "/burn-import.txt")).lines().find_map(|l| {
        let (key, status) = l.split_once('\t')?;
        (key == m.key() && status != "ok").then(|| format!("burn-onnx import failed: {status}"))
    })
}

/// A loaded burn model with its input.
pub struct BurnSession {
    run: Box<dyn FnMut() -> Duration>,
}

impl BurnSession {
    /// Times one run.
    pub fn timed_run(&mut self) -> Duration {
        (self.run)()
    }

    /// Loads `m`'s imported model on `backend`, fed with `input` when it has
    /// the input's size (else pseudo-random values).
    ///
    /// # Errors
    /// The import failed at build time, or the weights do not load.
    pub fn load(m: ModelKey, backend: Backend, input: Option<&[f32]>) -> Result<BurnSession> {
        if let Some(e) = import_error(m) {
            bail!("{e}");
        }
        let device = backend.device();
        let values = |n: usize| -> Vec<f32> {
            match input {
                Some(v) if v.len() == n => v.to_vec(),
                _ => crate::models::pseudo_random_i8(n, 3).iter().map(|&x| f32::from(x) / 128.0).collect(),
            }
        };
        let guarded = |f: &mut dyn FnMut() -> BurnSession| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
                let why = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                anyhow!("burn: loading the {m} model failed: {why}")
            })
        };
        match m {
            #[cfg(burn_kws)]
            ModelKey::Kws => guarded(&mut || {
                let model = kws::Model::from_file(concat!(env!("OUT_DIR"), "/burn/kws_fp32.bpk"), &device);
                let x = Tensor::<4>::from_data(TensorData::new(values(490), [1, 49, 10, 1]), &device);
                session(move |x| model.forward(x), x)
            }),
            #[cfg(burn_vww)]
            ModelKey::Vww => guarded(&mut || {
                let model = vww::Model::from_file(concat!(env!("OUT_DIR"), "/burn/vww_fp32.bpk"), &device);
                let x = Tensor::<4>::from_data(TensorData::new(values(96 * 96 * 3), [1, 96, 96, 3]), &device);
                session(move |x| model.forward(x), x)
            }),
            #[cfg(burn_ic)]
            ModelKey::Ic => guarded(&mut || {
                let model = ic::Model::from_file(concat!(env!("OUT_DIR"), "/burn/ic_fp32.bpk"), &device);
                let x = Tensor::<4>::from_data(TensorData::new(values(32 * 32 * 3), [1, 32, 32, 3]), &device);
                session(move |x| model.forward(x), x)
            }),
            #[cfg(burn_ad)]
            ModelKey::Ad => guarded(&mut || {
                let model = ad::Model::from_file(concat!(env!("OUT_DIR"), "/burn/ad_fp32.bpk"), &device);
                let x = Tensor::<2>::from_data(TensorData::new(values(640), [1, 640]), &device);
                session(move |x| model.forward(x), x)
            }),
            #[allow(unreachable_patterns)]
            _ => bail!("burn: {m} was not imported in this build"),
        }
    }
}

fn session<const D: usize, const O: usize>(
    forward: impl Fn(Tensor<D>) -> Tensor<O> + 'static,
    x: Tensor<D>,
) -> BurnSession {
    BurnSession {
        run: Box::new(move || {
            let input = x.clone();
            let t = Instant::now();
            let out = forward(input).into_data();
            let d = t.elapsed();
            drop(out);
            d
        }),
    }
}

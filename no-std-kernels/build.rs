//! Build script: tells the kernels whether the target has the Arm DSP
//! extension (`smlad`, `sxtb16`, `smmlar`, `qadd`, `ssat`), so that
//! `fast::Isa::Dsp` can be chosen at compile time.
//!
//! On stable Rust, 32-bit Arm target features are not visible to
//! `cfg(target_feature = ...)` (`rustc --print cfg --target
//! thumbv7em-none-eabihf` lists none), so the decision is made here from the
//! target triple and passed on as `cfg(edgefleet_dsp)`:
//!
//! - `thumbv7em-*`: Cortex-M4 and M7 (ARMv7E-M always has the DSP extension);
//! - `armv7-*`, `armv7a-*`, `thumbv7neon-*`: ARMv7-A, which has these
//!   instructions in both ARM and Thumb-2 state.
//!
//! Not: `thumbv6m` (Cortex-M0/M0+), `thumbv7m` (Cortex-M3) and
//! `thumbv8m.base` (Cortex-M23) lack them; `thumbv8m.main` (Cortex-M33/M35P)
//! has them only as an option of the core, so a generic build cannot assume
//! them.

use std::env;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(edgefleet_dsp)");
    println!("cargo::rerun-if-changed=build.rs");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let target = env::var("TARGET").unwrap_or_default();
    let dsp_prefixes = ["thumbv7em-", "armv7-", "armv7a-", "thumbv7neon-"];
    if arch == "arm" && dsp_prefixes.iter().any(|p| target.starts_with(p)) {
        println!("cargo::rustc-cfg=edgefleet_dsp");
    }
}

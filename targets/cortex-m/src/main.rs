//! KWS firmware for QEMU's MPS2-AN386 board (Cortex-M4F).
//!
//! At boot, verifies the embedded update: the signed manifest against the
//! pinned root of trust (for this board's hardware id, installed counter 0
//! and the build's "now"), then the package against the manifest. It prints
//! each verdict; a rejected update is not run (exit status 1). A verified one
//! runs on the reference frame N times, and the firmware prints the output,
//! the arena, the heap and the peak stack over semihosting, exiting with
//! status 0 only if the output equals TensorFlow Lite Micro's. The
//! semihosting command line is `kws [RUNS [VERIFICATIONS [KERNELS]]]` (counts
//! default 1; kernels `reference` or `dsp`, default the best the build has:
//! `dsp` on the Cortex-M4). `run.sh` builds and runs it.
#![no_std]
#![no_main]

mod board;
mod heap;

use core::fmt::Write as _;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use edgefleet_firmware::sensor::ReplayError;
use edgefleet_firmware::{Check, ReplaySensor, SpotError, Spotter, error_name, kws, verify_update};
use edgefleet_protocol::DeviceContext;
use edgefleet_runtime::Model;
use panic_semihosting as _;

#[entry]
fn main() -> ! {
    // cortex-m-rt hands a `static mut` declared first in the entry function
    // over as a `&'static mut`: the arena, in .bss.
    static mut ARENA: [u8; kws::ARENA_SIZE] = [0; kws::ARENA_SIZE];
    board::paint_stack();
    heap::init();
    let command = board::command_line();
    if let Some(isa) = command.kernels {
        edgefleet_kernels::fast::set_active(isa);
    }
    let status = if !verify(command.verifications) {
        hprintln!("update rejected: the model is not run");
        debug::EXIT_FAILURE
    } else {
        match run(ARENA, command.runs) {
            Ok(true) => debug::EXIT_SUCCESS,
            Ok(false) => {
                hprintln!("FAIL: the output differs from the reference");
                debug::EXIT_FAILURE
            }
            Err(e) => {
                hprintln!("error: {}", e);
                debug::EXIT_FAILURE
            }
        }
    };
    debug::exit(status);
    loop {
        cortex_m::asm::nop();
    }
}

/// Verifies the embedded update `times` times (the last verdict counts) and
/// prints the verdict of each check; true if the update may run.
fn verify(times: u32) -> bool {
    let device = DeviceContext { hardware_id: board::HARDWARE_ID, installed_counter: 0, now: kws::NOW };
    let check = || verify_update(kws::ROOT_OF_TRUST, kws::MANIFEST, kws::PACKAGE, &device);
    // Nothing else may depend on `times`: run.sh derives the instructions of
    // one verification from the difference between two counts. Each one
    // starts from an empty heap.
    for _ in 1..times {
        drop(check());
    }
    let verdict = check();
    hprintln!("device: {}, installed counter {}, now {}", device.hardware_id, device.installed_counter, device.now);
    for c in Check::ALL {
        match &verdict {
            Ok(v) => match c {
                Check::Root => hprintln!("verify root: ok (version {})", v.root_version),
                Check::Manifest => hprintln!(
                    "verify manifest: ok ({} {}, release counter {}, expires {})",
                    v.manifest.model_id,
                    v.manifest.version,
                    v.manifest.release_counter,
                    v.manifest.expires
                ),
                Check::Package => hprintln!("verify package: ok ({} bytes, SHA-256 as signed)", v.manifest.package_len),
            },
            Err(r) if c < r.check => hprintln!("verify {}: ok", c.name()),
            Err(r) if c == r.check => hprintln!("verify {}: REJECTED {}: {}", c.name(), error_name(&r.error), r.error),
            Err(_) => hprintln!("verify {}: not checked", c.name()),
        }
    }
    let ok = verdict.is_ok();
    drop(verdict);
    hprintln!(
        "heap: high-water {} of {} bytes, {} in use after verification",
        heap::high_water(),
        heap::HEAP_SIZE,
        heap::used()
    );
    ok
}

/// Runs the reference frame `runs` times; true if the last output is the expected one.
fn run(arena: &'static mut [u8], runs: u32) -> Result<bool, SpotError<ReplayError>> {
    let model = Model::load(kws::PACKAGE)?;
    let mut spotter = Spotter::new(&model, arena)?;
    let mut sensor = ReplaySensor::new(&kws::REFERENCE_INPUT);
    let mut delay = board::SysTickDelay::take();
    let mut detection = spotter.next(&mut sensor, &mut delay)?;
    for _ in 1..runs {
        detection = spotter.next(&mut sensor, &mut delay)?;
    }
    // Nothing here may depend on `runs`: run.sh derives the instructions of
    // one inference from the difference between two run counts.
    hprintln!("kernels: {}", edgefleet_kernels::fast::active());
    let mut line: heapless::String<192> = heapless::String::new();
    // 12 scores of at most 5 characters fit; a longer output is cut, and then differs.
    let _ = write!(line, "{detection}");
    hprintln!("{}", line);
    hprintln!("class: {}", detection.class);
    hprintln!("arena: {} bytes", spotter.arena_used_bytes());
    hprintln!("stack peak: {} bytes", board::stack_peak());
    Ok(detection.scores.as_slice() == &kws::EXPECTED_OUTPUT[..])
}

//! KWS firmware for QEMU's MPS2-AN386 board (Cortex-M4F).
//!
//! Runs the embedded package on the reference frame N times (N from the
//! semihosting command line, default 1), prints the output, the arena and
//! the peak stack over semihosting, and exits with status 0 only if the
//! output equals TensorFlow Lite Micro's. `run.sh` builds and runs it.
#![no_std]
#![no_main]

mod board;

use core::fmt::Write as _;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use edgefleet_firmware::sensor::ReplayError;
use edgefleet_firmware::{ReplaySensor, SpotError, Spotter, kws};
use edgefleet_runtime::Model;
use panic_semihosting as _;

#[entry]
fn main() -> ! {
    // cortex-m-rt hands a `static mut` declared first in the entry function
    // over as a `&'static mut`: the arena, in .bss.
    static mut ARENA: [u8; kws::ARENA_SIZE] = [0; kws::ARENA_SIZE];
    board::paint_stack();
    let status = match run(ARENA) {
        Ok(true) => debug::EXIT_SUCCESS,
        Ok(false) => {
            hprintln!("FAIL: the output differs from the reference");
            debug::EXIT_FAILURE
        }
        Err(e) => {
            hprintln!("error: {}", e);
            debug::EXIT_FAILURE
        }
    };
    debug::exit(status);
    loop {
        cortex_m::asm::nop();
    }
}

/// Runs the reference frame `runs` times; true if the last output is the expected one.
fn run(arena: &'static mut [u8]) -> Result<bool, SpotError<ReplayError>> {
    let runs = board::runs_from_command_line();
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
    let mut line: heapless::String<192> = heapless::String::new();
    // 12 scores of at most 5 characters fit; a longer output is cut, and then differs.
    let _ = write!(line, "{detection}");
    hprintln!("{}", line);
    hprintln!("class: {}", detection.class);
    hprintln!("arena: {} bytes", spotter.arena_used_bytes());
    hprintln!("stack peak: {} bytes", board::stack_peak());
    Ok(detection.scores.as_slice() == &kws::EXPECTED_OUTPUT[..])
}

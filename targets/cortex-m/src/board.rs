//! The MPS2-AN386 side: its hardware id, a SysTick `DelayNs`, the run and
//! verification counts from the semihosting command line, and stack painting
//! to measure peak stack use.

use core::ptr::{addr_of, addr_of_mut};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use edgefleet_runtime::Isa;
use embedded_hal::delay::DelayNs;

/// The hardware id update manifests must name for this board.
pub const HARDWARE_ID: &str = "mps2-an386";

/// The AN386 FPGA image clocks the Cortex-M4 at 25 MHz.
const CORE_HZ: u32 = 25_000_000;
const PAINT: u32 = 0xDEAD_BEEF;

/// Busy-waits on SysTick, counting core clock cycles.
pub struct SysTickDelay {
    syst: SYST,
}

impl SysTickDelay {
    /// Takes SysTick from the core peripherals.
    pub fn take() -> Self {
        let Some(p) = cortex_m::Peripherals::take() else {
            panic!("core peripherals taken twice");
        };
        let mut syst = p.SYST;
        syst.set_clock_source(SystClkSource::Core);
        SysTickDelay { syst }
    }
}

impl DelayNs for SysTickDelay {
    fn delay_ns(&mut self, ns: u32) {
        let mut ticks = (u64::from(ns) * u64::from(CORE_HZ)).div_ceil(1_000_000_000);
        while ticks > 0 {
            // SysTick's reload register has 24 bits.
            let chunk = ticks.min(0x00FF_FFFF) as u32;
            self.syst.set_reload(chunk);
            self.syst.clear_current();
            self.syst.enable_counter();
            while !self.syst.has_wrapped() {}
            self.syst.disable_counter();
            ticks -= u64::from(chunk);
        }
    }
}

/// What the firmware is asked to do, from the semihosting command line
/// `kws [RUNS [VERIFICATIONS [KERNELS]]]` (QEMU: `-semihosting-config
/// ...,arg=kws,arg=11,arg=1`): inferences to run and times to verify the
/// update, each 1 if absent or not a positive number, and the kernels to
/// use (an `Isa` name, `reference` or `dsp`; the best the build has if
/// absent or unknown). `run.sh` varies the counts to count the instructions
/// of one inference and of one verification, and the kernels to measure the
/// portable ones too.
#[derive(Clone, Copy, Debug)]
pub struct CommandLine {
    /// Inferences on the reference frame.
    pub runs: u32,
    /// Times the update is verified (the last verdict counts).
    pub verifications: u32,
    /// The kernels asked for.
    pub kernels: Option<Isa>,
}

/// Reads the [`CommandLine`] from the host.
pub fn command_line() -> CommandLine {
    let mut buf = [0u8; 64];
    // SYS_GET_CMDLINE takes a two-word block: buffer address and length; the
    // host writes the string and stores its length in the second word.
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: `block` describes `buf`, which lives across the call and which
    // the host writes at most `buf.len()` bytes into.
    let failed =
        unsafe { cortex_m_semihosting::syscall1(cortex_m_semihosting::nr::GET_CMDLINE, block.as_mut_ptr() as usize) };
    let line = if failed == 0 { buf.get(..block[1]).and_then(|b| core::str::from_utf8(b).ok()) } else { None };
    let mut words = line.unwrap_or("").split_ascii_whitespace().skip(1);
    let mut next = || words.next().and_then(|w| w.parse::<u32>().ok()).filter(|&n| n > 0).unwrap_or(1);
    let (runs, verifications) = (next(), next());
    let kernels = words.next().and_then(Isa::from_name);
    CommandLine { runs, verifications, kernels }
}

unsafe extern "C" {
    // From cortex-m-rt's link.x: the end of .bss/.uninit (where the stack may
    // grow down to) and the initial stack pointer.
    static mut __sheap: u32;
    static _stack_start: u32;
}

fn stack_bounds() -> (usize, usize) {
    (addr_of_mut!(__sheap) as usize, addr_of!(_stack_start) as usize)
}

/// Fills the unused stack with a pattern, to measure the peak later. Call it
/// first thing in `main`.
#[inline(never)]
pub fn paint_stack() {
    let (bottom, _) = stack_bounds();
    // Leave this function's frame (and a margin) alone: everything below is unused.
    let limit = cortex_m::register::msp::read() as usize - 256;
    let mut p = bottom;
    while p < limit {
        // SAFETY: [bottom, limit) is RAM between the end of the statics and
        // the deepest stack frame so far, which nothing else uses.
        unsafe { (p as *mut u32).write_volatile(PAINT) };
        p += 4;
    }
}

/// Bytes of stack used at the deepest point since [`paint_stack`].
pub fn stack_peak() -> usize {
    let (bottom, top) = stack_bounds();
    let mut p = bottom;
    // SAFETY: reads words of RAM between the end of the statics and the stack top.
    while p < top && unsafe { (p as *const u32).read_volatile() } == PAINT {
        p += 4;
    }
    top - p
}

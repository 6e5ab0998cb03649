//! Optional multi-threaded execution of one inference.
//!
//! Off by default: a microcontroller has one core, and on a phone the
//! models this runtime is for (tens of microseconds to a few milliseconds)
//! usually share the device with everything else. For larger models the
//! host hands the interpreter something that implements [`Parallel`]
//! ([`Interpreter::with_parallel`](crate::Interpreter::with_parallel);
//! [`ThreadPool`] with the `threads` feature) and each convolution,
//! depthwise convolution, pooling and add is split into parts that run at
//! once:
//!
//! - spatial operators by **output rows**: part `i` computes rows
//!   `h0..h1` from the input rows its windows start at, with the top
//!   padding that is left, so every output element is computed exactly as
//!   in the whole operator (the same kernel, the same arithmetic: results
//!   are bit-identical, which `tests/parallel.rs` checks on every model);
//! - element-wise adds by ranges of elements.
//!
//! An operator is split only when each part gets at least
//! [`MIN_WORK_PER_PART`] of work (a part costs setup and synchronisation). Fully connected layers and the rest run whole.

use core::sync::atomic::{AtomicU8, Ordering};

use edgefleet_kernels::{Dims4, KernelError};

/// Runs the parts of one operator, possibly at the same time.
///
/// # Safety
///
/// [`Parallel::run`] must call `f(i)` exactly once for every `i` in
/// `0..parts` and return only after every call has returned: the
/// interpreter gives each part its own piece of the output on that promise.
pub unsafe trait Parallel: Sync {
    /// Threads working at once, the calling one included (1: no splitting).
    fn threads(&self) -> usize;

    /// Calls `f(0)`, …, `f(parts - 1)`, each once, and returns when all
    /// have returned.
    fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync));
}

/// Most parts one operator is split into.
pub const MAX_PARTS: usize = 16;

/// Least work per part, in multiply-accumulates of a convolution (a
/// depthwise or pooling MAC counts 4: they run ~4x fewer per second; an add
/// element counts 4). Below ~2 µs a part costs more in setup (each part
/// re-packs its padded input rows) and synchronisation than it saves.
pub const MIN_WORK_PER_PART: usize = 256 * 1024;

/// How many parts `work` on `units` splittable units is worth (1 without threads).
fn parts_for(par: Option<&dyn Parallel>, work: usize, units: usize) -> usize {
    par.map_or(1, |p| p.threads().min(units).min(MAX_PARTS).min(work / MIN_WORK_PER_PART))
}

/// The output, shared by parts that each write their own range of it.
struct Shared {
    ptr: *mut i8,
    len: usize,
}

// SAFETY: parts only make slices of disjoint ranges of the output (see
// `Shared::range`), and `Parallel::run` returns before the `&mut [i8]` the
// pointer came from is usable again.
unsafe impl Sync for Shared {}

impl Shared {
    /// Elements `start..start + len` of the output.
    ///
    /// # Safety
    /// The range is in bounds and no other live slice overlaps it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, start: usize, len: usize) -> &mut [i8] {
        debug_assert!(start + len <= self.len);
        // SAFETY: in bounds of the output and exclusive, by the caller's promise.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

fn code(e: KernelError) -> u8 {
    match e {
        KernelError::ShapeMismatch => 1,
        _ => 2,
    }
}

fn result(failed: &AtomicU8) -> Result<(), KernelError> {
    match failed.load(Ordering::Relaxed) {
        0 => Ok(()),
        1 => Err(KernelError::ShapeMismatch),
        _ => Err(KernelError::InvalidParameter),
    }
}

/// Runs a spatial NHWC operator (`f(input dims, input, top padding, output
/// dims, output)`) whole, or split by output rows among `par` when that is
/// worth it.
/// `work` is its multiply-accumulates; `stride` and `pad_top` its vertical
/// stride and top padding.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rows<F>(
    par: Option<&dyn Parallel>,
    work: usize,
    x: &[i8],
    xd: Dims4,
    od: Dims4,
    stride: usize,
    pad_top: usize,
    out: &mut [i8],
    f: F,
) -> Result<(), KernelError>
where
    F: Fn(Dims4, &[i8], usize, Dims4, &mut [i8]) -> Result<(), KernelError> + Sync,
{
    let parts = parts_for(par, work, od.h);
    let (row, in_row) = (od.w * od.c, xd.w * xd.c);
    let first_row = |i: usize| (od.h * i / parts) * stride;
    let whole = parts < 2
        || od.n != 1
        || xd.n != 1
        || out.len() != od.h * row
        || x.len() != xd.h * in_row
        // A part whose windows all start in the bottom padding would have no input rows.
        || (0..parts).any(|i| first_row(i).saturating_sub(pad_top) >= xd.h);
    let Some(par) = par.filter(|_| !whole) else {
        return f(xd, x, pad_top, od, out);
    };
    let shared = Shared { ptr: out.as_mut_ptr(), len: out.len() };
    let failed = AtomicU8::new(0);
    par.run(parts, &|i| {
        let (h0, h1) = (od.h * i / parts, od.h * (i + 1) / parts);
        let s = h0 * stride;
        // Output row h0's windows start at input row s - pad_top: the part's
        // input begins there (or at row 0 with the padding that is left).
        let (r0, pad) = if s >= pad_top { (s - pad_top, 0) } else { (0, pad_top - s) };
        let Some(sub_x) = x.get(r0 * in_row..) else {
            failed.store(code(KernelError::ShapeMismatch), Ordering::Relaxed);
            return;
        };
        // SAFETY: rows h0..h1 are this part's alone (parts cover disjoint
        // row ranges and `Parallel::run` calls each part once), inside the
        // output (h1 ≤ od.h and out.len() == od.h * row).
        let sub_out = unsafe { shared.range(h0 * row, (h1 - h0) * row) };
        let r = f(Dims4::new(1, xd.h - r0, xd.w, xd.c), sub_x, pad, Dims4::new(1, h1 - h0, od.w, od.c), sub_out);
        if let Err(e) = r {
            failed.store(code(e), Ordering::Relaxed);
        }
    });
    result(&failed)
}

/// Runs an element-wise operator (`f(range, output range)`) whole, or split
/// into ranges of elements among `par` when that is worth it.
pub(crate) fn elements<F>(par: Option<&dyn Parallel>, out: &mut [i8], f: F) -> Result<(), KernelError>
where
    F: Fn(core::ops::Range<usize>, &mut [i8]) -> Result<(), KernelError> + Sync,
{
    let n = out.len();
    let parts = parts_for(par, n.saturating_mul(4), n / 64);
    let Some(par) = par.filter(|_| parts >= 2) else {
        return f(0..n, out);
    };
    let shared = Shared { ptr: out.as_mut_ptr(), len: n };
    let failed = AtomicU8::new(0);
    par.run(parts, &|i| {
        // Ranges start on 64-element boundaries (whole vectors for the kernels).
        let (a, b) = ((n / 64 * i / parts) * 64, if i + 1 == parts { n } else { (n / 64 * (i + 1) / parts) * 64 });
        // SAFETY: a..b are this part's alone (disjoint ranges, each part run
        // once) and inside the output (b ≤ n).
        let sub = unsafe { shared.range(a, b - a) };
        if let Err(e) = f(a..b, sub) {
            failed.store(code(e), Ordering::Relaxed);
        }
    });
    result(&failed)
}

/// A pool of threads that spin briefly between operators (like XNNPACK's
/// pthreadpool): operators of a few microseconds follow each other too
/// closely for threads that sleep and are woken (a futex wake-up on a VM
/// costs as much as the operator). Workers spin for [`ThreadPool::SPIN`]
/// after their last part, then sleep until the next one. The calling thread
/// runs parts too; parts are claimed one by one, so a slow thread delays
/// only its own.
#[cfg(feature = "threads")]
pub struct ThreadPool {
    shared: std::sync::Arc<pool::Shared>,
    workers: std::vec::Vec<std::thread::JoinHandle<()>>,
}

#[cfg(feature = "threads")]
impl core::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ThreadPool").field("threads", &(self.workers.len() + 1)).finish()
    }
}

#[cfg(feature = "threads")]
impl ThreadPool {
    /// How long an idle worker spins before it sleeps.
    pub const SPIN: std::time::Duration = std::time::Duration::from_micros(500);

    /// A pool for `threads` threads at once (the caller's included: starts
    /// `threads - 1`; at least 1).
    ///
    /// # Errors
    /// The operating system refuses to start a thread.
    pub fn new(threads: usize) -> std::io::Result<ThreadPool> {
        let shared = std::sync::Arc::new(pool::Shared::default());
        let mut pool = ThreadPool { shared, workers: std::vec::Vec::new() };
        for i in 1..threads.max(1) {
            let s = pool.shared.clone();
            // On failure `pool` is dropped here, which stops the started workers.
            pool.workers
                .push(std::thread::Builder::new().name(std::format!("edgefleet-{i}")).spawn(move || pool::work(&s))?);
        }
        Ok(pool)
    }
}

#[cfg(feature = "threads")]
impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

// SAFETY: `pool::Shared::run` hands out each index in `0..parts` exactly once
// (claims are compare-and-swaps on one word holding the job's epoch and the
// next index) and returns only when all `parts` calls have finished.
#[cfg(feature = "threads")]
unsafe impl Parallel for ThreadPool {
    fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        self.shared.run(parts, f);
    }
}

#[cfg(feature = "threads")]
mod pool {
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};
    use std::time::Instant;

    /// The job being run: lives on the caller's stack for the length of `run`.
    struct Job<'a> {
        f: &'a (dyn Fn(usize) + Sync),
    }

    #[derive(Default)]
    pub(super) struct Shared {
        /// Epoch (high 32 bits) and next part to claim (low 32 bits).
        state: AtomicU64,
        /// Parts of the current epoch's job.
        parts: AtomicUsize,
        /// Parts of the current job finished.
        done: AtomicUsize,
        /// The current job (`Job<'static>` in name only, see `run`).
        job: AtomicPtr<Job<'static>>,
        stop: AtomicBool,
        panicked: AtomicBool,
        sleepers: AtomicUsize,
        /// Held for the length of a `run`: one job at a time.
        running: Mutex<()>,
        /// Guards sleeping (with `wake`).
        lock: Mutex<()>,
        wake: Condvar,
    }

    impl Shared {
        /// Claims and runs parts of the job of `epoch` until none is left.
        fn help(&self, epoch: u64) {
            loop {
                let s = self.state.load(Ordering::Acquire);
                let next = s & 0xffff_ffff;
                // Read after seeing the epoch: it was written before the epoch was published.
                if s >> 32 != epoch || next >= self.parts.load(Ordering::Acquire) as u64 {
                    return;
                }
                if self.state.compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
                    continue;
                }
                // SAFETY: part `next` of epoch `epoch` is claimed and not yet
                // done, so `run` is still waiting and the job it points to is
                // alive; the pointer was stored before the epoch was published
                // (Release) and the claim read it with Acquire.
                let job = unsafe { &*self.job.load(Ordering::Acquire) };
                // A part that panics (a bug) still counts as done, so `run`
                // returns, and `run` re-raises it on the caller's thread.
                let f = std::panic::AssertUnwindSafe(|| (job.f)(next as usize));
                if std::panic::catch_unwind(f).is_err() {
                    self.panicked.store(true, Ordering::Relaxed);
                }
                self.done.fetch_add(1, Ordering::Release);
            }
        }

        pub(super) fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
            if parts == 0 {
                return;
            }
            let job = Job { f };
            // Only one `run` at a time per pool (`&self` may be shared; a
            // part must not `run` on its own pool).
            let _running = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // The previous job is finished: nobody reads `job`, `parts` or `done` now.
            self.job.store((&job as *const Job<'_>).cast_mut().cast(), Ordering::Release);
            self.parts.store(parts, Ordering::Release);
            self.done.store(0, Ordering::Release);
            let epoch = (self.state.load(Ordering::Acquire) >> 32).wrapping_add(1) & 0xffff_ffff;
            self.state.store(epoch << 32, Ordering::SeqCst);
            if self.sleepers.load(Ordering::SeqCst) > 0 {
                let _lock = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                self.wake.notify_all();
            }
            self.help(epoch);
            while self.done.load(Ordering::Acquire) < parts {
                std::hint::spin_loop();
            }
            self.job.store(std::ptr::null_mut(), Ordering::Release);
            if self.panicked.swap(false, Ordering::Relaxed) {
                panic!("a part of an operator panicked");
            }
        }

        pub(super) fn stop(&self) {
            self.stop.store(true, Ordering::SeqCst);
            let _guard = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.wake.notify_all();
        }
    }

    /// A worker: runs parts of each new job, spins a while, then sleeps.
    pub(super) fn work(s: &Shared) {
        let mut seen = s.state.load(Ordering::Acquire) >> 32;
        loop {
            let since = Instant::now();
            let mut spins = 0u32;
            loop {
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                let epoch = s.state.load(Ordering::Acquire) >> 32;
                if epoch != seen {
                    seen = epoch;
                    s.help(epoch);
                    break;
                }
                spins += 1;
                if spins.is_multiple_of(1024) && since.elapsed() >= super::ThreadPool::SPIN {
                    // Sleep until the next job. `run` publishes the epoch and
                    // then reads `sleepers`; this counts itself a sleeper and
                    // then re-reads the epoch under the lock (both SeqCst), so
                    // one of the two sees the other.
                    let guard = s.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    s.sleepers.fetch_add(1, Ordering::SeqCst);
                    let mut guard = guard;
                    while s.state.load(Ordering::SeqCst) >> 32 == seen && !s.stop.load(Ordering::SeqCst) {
                        guard = s.wake.wait(guard).unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                    s.sleepers.fetch_sub(1, Ordering::SeqCst);
                    drop(guard);
                    spins = 0;
                    continue;
                }
                std::hint::spin_loop();
            }
        }
    }
}

#[cfg(all(test, feature = "threads"))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::{Parallel, ThreadPool};

    /// Every part runs exactly once per run, whatever the part count, with
    /// workers spinning, asleep (between runs longer than the spin) or
    /// racing another caller for the pool.
    #[test]
    fn each_part_runs_exactly_once() {
        let pool = ThreadPool::new(3).expect("threads");
        assert_eq!(pool.threads(), 3);
        let counts: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
        let mut expected = [0usize; 64];
        for round in 0..2000 {
            let parts = round % 64 + 1;
            pool.run(parts, &|i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
            expected[..parts].iter_mut().for_each(|e| *e += 1);
            if round % 500 == 0 {
                std::thread::sleep(ThreadPool::SPIN * 4); // the workers go to sleep
            }
        }
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..500 {
                        pool.run(7, &|i| {
                            counts[i].fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        expected[..7].iter_mut().for_each(|e| *e += 1000);
        let got: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_panicking_part_is_raised_on_the_caller_and_the_pool_still_works() {
        let pool = ThreadPool::new(2).expect("threads");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(8, &|i| assert!(i != 5, "part 5 fails"));
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(8, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 8);
        drop(pool); // joins its workers
        std::thread::sleep(Duration::from_millis(1));
    }
}

//! The heap for `alloc`, whose only user is the update verification
//! (`edgefleet-protocol` decodes signed documents into `Vec`s and `String`s):
//! embedded-alloc's linked-list first-fit heap over a static buffer in
//! `.uninit` (not zeroed at boot), with its high-water mark recorded so that
//! `run.sh` can check the size against what verification really uses.

use core::alloc::{GlobalAlloc, Layout};
use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicUsize, Ordering};

use embedded_alloc::LlffHeap;

/// Bytes of heap. Verifying the KWS update reaches 804 bytes (a root with
/// one root and one release key, a manifest with one signature and one
/// hardware id); 2 KiB leaves room for larger metadata (more keys,
/// signatures or hardware ids). `run.sh` fails if the high-water mark comes
/// within a third of it.
pub const HEAP_SIZE: usize = 2048;

#[unsafe(link_section = ".uninit.HEAP")]
static mut HEAP_MEM: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];

/// A first-fit heap that remembers the highest byte it ever handed out.
struct Heap {
    inner: LlffHeap,
    high_water: AtomicUsize,
}

#[global_allocator]
static HEAP: Heap = Heap { inner: LlffHeap::empty(), high_water: AtomicUsize::new(0) };

fn start() -> usize {
    addr_of_mut!(HEAP_MEM) as usize
}

/// Hands the static buffer to the allocator. Call it once, before anything allocates.
pub fn init() {
    // SAFETY: HEAP_MEM is used by nothing else, and `init` panics if called twice.
    unsafe { HEAP.inner.init(start(), HEAP_SIZE) }
}

/// Bytes from the start of the heap to the end of the highest allocation so
/// far: the smallest heap that would have served the same allocations.
pub fn high_water() -> usize {
    HEAP.high_water.load(Ordering::Relaxed)
}

/// Bytes allocated now.
pub fn used() -> usize {
    HEAP.inner.used()
}

// SAFETY: forwards to `LlffHeap`, only recording addresses on the way.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            self.high_water.fetch_max(p as usize + layout.size() - start(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.inner.dealloc(ptr, layout) }
    }
}

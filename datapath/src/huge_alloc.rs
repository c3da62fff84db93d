//! A global allocator that offers every large allocation to the kernel for transparent huge
//! pages, for the processes that run the classifier (`podwall`, the benches).
//!
//! The compiled classifier is a few large arrays read at random: at 100k rules, tens of MiB
//! whose lookups each touch three or four lines. With 4 KiB pages most of those loads also miss
//! the TLB, and in a VM a page walk is nested and costs about as much as the load. `policy` is
//! pure and allocates through the global allocator like any library, so the advice is given
//! here, where the process chooses its allocator. Everything else goes to the system allocator
//! untouched.
//!
//! The advice is only advice: with transparent huge pages set to `never`, or when the kernel
//! finds no free 2 MiB page, large allocations are ordinary memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

const HUGE_PAGE: usize = 2 << 20;

/// Allocations of at least this many bytes are aligned to a huge page and advised.
pub const LARGE: usize = HUGE_PAGE;

/// See the module documentation. Install it with
/// `#[global_allocator] static ALLOCATOR: HugePageAlloc = HugePageAlloc::new();`.
#[derive(Debug)]
pub struct HugePageAlloc {
    advise: AtomicBool,
}

impl HugePageAlloc {
    pub const fn new() -> HugePageAlloc {
        HugePageAlloc {
            advise: AtomicBool::new(true),
        }
    }

    /// Whether large allocations made from now on are advised (they are aligned either way).
    /// For measurements that compare the two in one process.
    pub fn set_advise(&self, advise: bool) {
        self.advise.store(advise, Ordering::Relaxed);
    }

    pub fn advises(&self) -> bool {
        self.advise.load(Ordering::Relaxed)
    }

    /// The layout a large allocation is made with: the same size on a huge-page boundary, so
    /// that its pages can be huge from its first byte.
    fn large(layout: Layout) -> Option<Layout> {
        if layout.size() < LARGE {
            return None;
        }
        Layout::from_size_align(layout.size(), layout.align().max(HUGE_PAGE)).ok()
    }

    fn advise(&self, ptr: *mut u8, size: usize) {
        if ptr.is_null() || !self.advises() {
            return;
        }
        // SAFETY: `ptr` starts a live allocation of at least `size` bytes that the caller is
        // about to hand out, aligned to a huge page (so to a page, as madvise requires). The
        // call only sets advice on those pages and never touches their contents; its failure
        // (no THP in this kernel) changes nothing, so it is not checked.
        unsafe {
            libc::madvise(ptr.cast(), size, libc::MADV_HUGEPAGE);
        }
    }
}

impl Default for HugePageAlloc {
    fn default() -> Self {
        HugePageAlloc::new()
    }
}

// SAFETY: every block is allocated and freed by `System` with one layout: the caller's, or
// for large blocks the caller's with a huge-page alignment, which `large` derives from the
// caller's layout alone, so `dealloc` and `realloc` recompute the very layout `alloc` used.
// Blocks keep at least the caller's size and alignment.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match Self::large(layout) {
            None => {
                // SAFETY: forwarded unchanged; the caller guarantees a non-zero size.
                unsafe { System.alloc(layout) }
            }
            Some(large) => {
                // SAFETY: `large` has the caller's non-zero size.
                let ptr = unsafe { System.alloc(large) };
                self.advise(ptr, large.size());
                ptr
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match Self::large(layout) {
            None => {
                // SAFETY: forwarded unchanged; the caller guarantees a non-zero size.
                unsafe { System.alloc_zeroed(layout) }
            }
            Some(large) => {
                // SAFETY: `large` has the caller's non-zero size.
                let ptr = unsafe { System.alloc_zeroed(large) };
                self.advise(ptr, large.size());
                ptr
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let layout = Self::large(layout).unwrap_or(layout);
        // SAFETY: the caller passes a block of this allocator with the layout it asked for;
        // `large` maps that to the layout `System` allocated the block with.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_large = layout.size() >= LARGE;
        let new_large = new_size >= LARGE;
        if !old_large && !new_large {
            // SAFETY: a small block, allocated by `System` with `layout`, staying small.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Crossing into or within the large blocks: a fresh block with the right alignment
        // and advice, as `GlobalAlloc::realloc`'s default does.
        // SAFETY: the caller guarantees that `new_size` with `layout`'s alignment is a valid
        // non-zero layout size.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as for `alloc`.
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            // SAFETY: both blocks are live, distinct, and at least the smaller size long.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new_ptr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static ALLOCATOR: HugePageAlloc = HugePageAlloc::new();

    fn with_block(size: usize, align: usize, check: impl FnOnce(*mut u8)) {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a non-zero size; the block is freed below with the same layout.
        let ptr = unsafe { ALLOCATOR.alloc(layout) };
        assert!(!ptr.is_null());
        check(ptr);
        // SAFETY: allocated above with `layout`, not used after this.
        unsafe { ALLOCATOR.dealloc(ptr, layout) };
    }

    #[test]
    fn large_blocks_start_on_a_huge_page_and_small_ones_keep_their_alignment() {
        with_block(LARGE, 8, |ptr| assert_eq!(ptr as usize % HUGE_PAGE, 0));
        with_block(3 * LARGE + 5, 64, |ptr| {
            assert_eq!(ptr as usize % HUGE_PAGE, 0)
        });
        with_block(LARGE - 1, 64, |ptr| assert_eq!(ptr as usize % 64, 0));
        with_block(24, 8, |ptr| assert_eq!(ptr as usize % 8, 0));
    }

    #[test]
    fn realloc_keeps_contents_across_the_large_threshold_both_ways() {
        let layout = Layout::from_size_align(4096, 8).unwrap();
        // SAFETY: a non-zero size; every block below is used within its size and freed once,
        // with the layout of its last size.
        unsafe {
            let ptr = ALLOCATOR.alloc(layout);
            for i in 0..4096 {
                ptr.add(i).write(i as u8);
            }
            let grown = ALLOCATOR.realloc(ptr, layout, 3 * LARGE);
            assert_eq!(grown as usize % HUGE_PAGE, 0);
            assert!((0..4096).all(|i| grown.add(i).read() == i as u8));
            grown.add(3 * LARGE - 1).write(7);
            let grown_layout = Layout::from_size_align(3 * LARGE, 8).unwrap();
            let shrunk = ALLOCATOR.realloc(grown, grown_layout, 100);
            assert!((0..100).all(|i| shrunk.add(i).read() == i as u8));
            ALLOCATOR.dealloc(shrunk, Layout::from_size_align(100, 8).unwrap());
        }
    }

    #[test]
    fn zeroed_large_blocks_are_zero() {
        let layout = Layout::from_size_align(LARGE + 4096, 8).unwrap();
        // SAFETY: a non-zero size; read within it, freed once with the same layout.
        unsafe {
            let ptr = ALLOCATOR.alloc_zeroed(layout);
            assert!((0..layout.size())
                .step_by(4093)
                .all(|i| ptr.add(i).read() == 0));
            ALLOCATOR.dealloc(ptr, layout);
        }
    }
}

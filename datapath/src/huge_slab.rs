//! A fixed-length slice allocated on 2 MiB boundaries and offered to the kernel for transparent
//! huge pages.
//!
//! The flow table is tens of MiB read at random: with 4 KiB pages nearly every lookup of a table
//! holding many flows also misses the TLB, and a page walk (nested, in a VM) costs as much as the
//! lookup. With 2 MiB pages the whole table needs a few dozen TLB entries. The advice is only
//! advice: with transparent huge pages set to `never` the slab is ordinary memory.

use std::alloc::{self, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

const HUGE_PAGE: usize = 2 << 20;

/// `len` values of `T` in one allocation that starts on a huge-page boundary and is a whole
/// number of huge pages long; never grows or shrinks.
pub(crate) struct HugeSlab<T> {
    ptr: NonNull<T>,
    len: usize,
    layout: Layout,
}

// SAFETY: a `HugeSlab<T>` owns its values exactly like a `Box<[T]>` does.
unsafe impl<T: Send> Send for HugeSlab<T> {}
// SAFETY: as for `Box<[T]>`: shared access only hands out `&[T]`.
unsafe impl<T: Sync> Sync for HugeSlab<T> {}

impl<T> HugeSlab<T> {
    /// A slab of `len` values, the `i`th being `value(i)`. Aborts like `Vec` when memory runs
    /// out; panics if the size overflows `isize`.
    pub(crate) fn new(len: usize, value: impl Fn(usize) -> T) -> HugeSlab<T> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|bytes| bytes.checked_next_multiple_of(HUGE_PAGE))
            .expect("slab size overflows usize");
        let layout = Layout::from_size_align(bytes.max(HUGE_PAGE), HUGE_PAGE.max(align_of::<T>()))
            .expect("slab size overflows isize");
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw.cast::<T>()) else {
            alloc::handle_alloc_error(layout);
        };
        // SAFETY: `raw` is the start of a live allocation of `layout.size()` bytes, a multiple of
        // the page size, that nothing else refers to yet. The call only sets advice on those
        // pages; its failure (no THP in this kernel) changes nothing, so it is not checked.
        unsafe {
            libc::madvise(raw.cast(), layout.size(), libc::MADV_HUGEPAGE);
        }
        for i in 0..len {
            // SAFETY: `i < len` and the allocation holds `len` values of `T` at `T`'s alignment;
            // slot `i` is uninitialised, so writing does not drop anything.
            unsafe { ptr.as_ptr().add(i).write(value(i)) };
        }
        HugeSlab { ptr, len, layout }
    }
}

impl<T> Deref for HugeSlab<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: the first `len` values were initialised in `new` and live until `drop`; the
        // borrow of `self` keeps them from being mutated meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for HugeSlab<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and the unique borrow of `self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for HugeSlab<T> {
    fn drop(&mut self) {
        // SAFETY: the values are initialised and dropped only here; afterwards the memory is
        // freed with the layout it was allocated with, and `self` is gone.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            ));
            alloc::dealloc(self.ptr.as_ptr().cast(), self.layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn holds_its_values_on_a_huge_page_boundary_and_drops_each_once() {
        let counted = Rc::new(());
        let mut slab = HugeSlab::new(1000, |i| (i, Rc::clone(&counted)));
        assert_eq!(slab.len(), 1000);
        assert_eq!(slab.as_ptr() as usize % HUGE_PAGE, 0);
        assert_eq!(slab[999].0, 999);
        slab[3].0 = 7;
        assert_eq!(slab.iter().map(|v| v.0).sum::<usize>(), 999 * 1000 / 2 + 4);
        assert_eq!(Rc::strong_count(&counted), 1001);
        drop(slab);
        assert_eq!(Rc::strong_count(&counted), 1);
    }

    #[test]
    fn an_empty_slab_is_empty() {
        let slab: HugeSlab<u64> = HugeSlab::new(0, |_| 0);
        assert!(slab.is_empty());
    }
}

//! Large buffers in 2 MiB pages: the weights a decoder reads, and the
//! parameters, gradients, moments and activations a training step sweeps.
//!
//! Decoding a token reads every weight once: 0.5 GB for GPT-2 124M in f32,
//! 4.4 GB for a 1.1B Llama. In 4 KiB pages that is 120,000 to 1.1 million
//! pages a token, far more than the TLB holds, so nearly every page costs
//! a walk of the page tables. In 2 MiB pages it is 250 to 2,100.
//!
//! Linux gives a process 2 MiB pages ("transparent huge pages") either
//! always or, in `madvise` mode (a common default), only for the memory it
//! asks for. llama.cpp gets them through its memory-mapped GGUF file.
//! [`advise`] asks for them for a buffer that has not been written yet: the
//! kernel picks the page size at the first write to each address.
//!
//! Only buffers used in full are advised. A decoding cache is sized for the
//! whole context and filled a row at a time; in 2 MiB pages each layer's
//! few rows would hold 2 MiB of memory.
//!
//! This is advice. Where the kernel has no huge pages to give, or this is
//! not Linux, nothing changes but speed; no value changes either way.

/// 2 MiB, the size of a huge page on x86-64 (and of the smallest buffer
/// worth advising).
const HUGE_PAGE: usize = 2 << 20;

/// Ask for `buf`'s memory in 2 MiB pages (the whole pages inside it; a
/// buffer under 2 MiB is left alone). Call it before the buffer is filled.
pub fn advise<T>(buf: &[T]) {
    #[cfg(target_os = "linux")]
    {
        let bytes = std::mem::size_of_val(buf);
        if bytes < HUGE_PAGE {
            return;
        }
        // SAFETY: sysconf only reads a constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        let first = buf.as_ptr() as usize;
        let start = first.next_multiple_of(page);
        let end = (first + bytes) / page * page;
        if end > start {
            // SAFETY: [start, end) lies inside `buf`'s allocation, and
            // MADV_HUGEPAGE changes how its pages are backed, never what
            // they hold. A refusal (a kernel without huge pages) is ignored.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The `VmFlags` line of the mapping of this process that holds `addr`.
    fn vm_flags_at(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
        let mut inside = false;
        for line in smaps.lines() {
            let range = line
                .split_whitespace()
                .next()
                .and_then(|r| r.split_once('-'));
            if let Some((lo, hi)) = range
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
            } else if inside && line.starts_with("VmFlags:") {
                return line.to_string();
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    /// Whether this kernel has transparent huge pages at all (else a test has
    /// nothing to check).
    fn kernel_has_huge_pages() -> bool {
        let has = std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists();
        if !has {
            eprintln!("this kernel has no transparent huge pages: nothing to check");
        }
        has
    }

    #[test]
    fn a_large_buffer_is_marked_for_huge_pages() {
        if !kernel_has_huge_pages() {
            return;
        }
        let mut weights = vec![0.0f32; 8 * HUGE_PAGE];
        let middle = weights.as_ptr() as usize + 4 * HUGE_PAGE;
        assert!(!vm_flags_at(middle).contains(" hg"), "marked before advise");
        advise(&weights);
        weights
            .iter_mut()
            .enumerate()
            .for_each(|(i, w)| *w = i as f32);
        let flags = vm_flags_at(middle);
        assert!(flags.contains(" hg"), "not marked for huge pages: {flags}");
        assert_eq!(weights[12345], 12345.0);
    }

    #[test]
    fn training_buffers_are_advised_and_decoding_caches_are_not() {
        use crate::backend::{Backend, cpu::Cpu};
        if !kernel_has_huge_pages() {
            return;
        }
        let be = Cpu::default();
        let swept = be.zeros_swept(8 * HUGE_PAGE).expect("zeros_swept");
        let cache = be.zeros(8 * HUGE_PAGE).expect("zeros");
        let flags = vm_flags_at(swept.as_ptr() as usize + 4 * HUGE_PAGE);
        assert!(
            flags.contains(" hg"),
            "a swept buffer is not advised: {flags}"
        );
        let flags = vm_flags_at(cache.as_ptr() as usize + 4 * HUGE_PAGE);
        assert!(!flags.contains(" hg"), "a cache is advised: {flags}");
    }
}

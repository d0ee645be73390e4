// Processor hints and facts Swift has no spelling for: a cache prefetch hint, the spin-wait hint,
// the vector width the build targets. Header only: nothing to link.
#ifndef NNC_PREFETCH_H
#define NNC_PREFETCH_H

/// Asks the CPU to start loading the cache line holding `address` (a hint: never faults, never blocks).
static inline void nnc_prefetch(const void *address) { __builtin_prefetch(address, 0, 2); }

/// Tells the CPU this thread is spinning on a flag (x86 `pause`; elsewhere nothing).
static inline void nnc_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/// The widest vectors the code of this build may use, from the compiler's target (release builds
/// are -march=native): 512 (AVX-512F), 256 (AVX2) or 128.
static inline int nnc_build_vector_bits(void) {
#if defined(__AVX512F__)
    return 512;
#elif defined(__AVX2__)
    return 256;
#else
    return 128;
#endif
}

#endif

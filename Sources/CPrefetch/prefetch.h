// A cache prefetch hint, which Swift has no spelling for. Header only: nothing to link.
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

#endif

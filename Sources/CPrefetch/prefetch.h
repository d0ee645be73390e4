// A cache prefetch hint, which Swift has no spelling for. Header only: nothing to link.
#ifndef NNC_PREFETCH_H
#define NNC_PREFETCH_H

/// Asks the CPU to start loading the cache line holding `address` (a hint: never faults, never blocks).
static inline void nnc_prefetch(const void *address) { __builtin_prefetch(address, 0, 2); }

#endif

// Counts heap allocations in the test process: defines malloc, calloc and realloc, which take
// precedence over glibc's (ELF symbol interposition), and forwards to glibc's own entry points.
#include "AllocationCounter.h"

// Under a sanitizer, malloc belongs to the sanitizer's runtime: count nothing, say so.
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define NNC_SANITIZED 1
#endif
#endif

#ifdef NNC_SANITIZED
int nnc_allocation_counting(void) { return 0; }
unsigned long nnc_allocation_count(void) { return 0; }
#else
int nnc_allocation_counting(void) { return 1; }

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);

static _Thread_local unsigned long allocations = 0;

void *malloc(size_t size) {
    allocations += 1;
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size) {
    allocations += 1;
    return __libc_calloc(count, size);
}

void *realloc(void *pointer, size_t size) {
    allocations += 1;
    return __libc_realloc(pointer, size);
}

unsigned long nnc_allocation_count(void) {
    return allocations;
}
#endif

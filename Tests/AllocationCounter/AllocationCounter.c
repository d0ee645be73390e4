// Counts heap allocations in the test process: defines malloc, calloc and realloc, which take
// precedence over glibc's (ELF symbol interposition), and forwards to glibc's own entry points.
#include "AllocationCounter.h"

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

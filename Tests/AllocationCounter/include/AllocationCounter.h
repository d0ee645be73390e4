#include <stddef.h>
/// Number of malloc, calloc and realloc calls made by this process so far (this test helper
/// interposes those functions and forwards to glibc's).
unsigned long nnc_allocation_count(void);

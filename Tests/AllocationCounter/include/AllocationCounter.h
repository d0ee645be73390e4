#include <stddef.h>
/// Number of malloc, calloc and realloc calls made so far by the calling thread (this test helper
/// interposes those functions and forwards to glibc's). Per thread, so that tests running in
/// parallel do not count each other's allocations.
unsigned long nnc_allocation_count(void);
/// 1 when allocations are counted; 0 under the address or thread sanitizer (their malloc, not ours).
int nnc_allocation_counting(void);

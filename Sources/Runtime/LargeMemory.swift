import Foundation
#if canImport(Glibc)
import Glibc
#endif

// Large, long-lived buffers (the arena, parameters and optimizer state, GEMM packing buffers, data
// sets) on 2 MB pages where Linux offers them (transparent huge pages in "madvise" mode, the common
// default). A batch gathers rows scattered over a 47 MB data set and GEMM packing reads rows 4 KB
// apart: with 4 KB pages nearly every such row costs a TLB miss and a page walk. Measured on the
// MLP's training: the batch copy 35 → 24–30 µs a step. Elsewhere (or when the system says no) the
// memory is ordinary, and only the speed differs.

/// Memory for one large buffer: 64-byte aligned, zero-filled, freed by `deallocate`.
struct LargeBuffer {
    let pointer: UnsafeMutableRawPointer
    let byteCount: Int
    /// The whole mapping (nil: ordinary heap memory).
    private let mapping: (base: UnsafeMutableRawPointer, length: Int)?

    static let hugePageBytes = 2 << 20
    /// From this size on a buffer gets its own 2 MB-aligned mapping (smaller ones would waste most of a page).
    static let hugePageMinimum = 1 << 20

    /// `faultIn`: touch the pages now (memory every step uses: the first step should not pay for it);
    /// otherwise they are faulted in when first used (scratch that small models never touch).
    static func allocate(byteCount: Int, faultIn: Bool = true) -> LargeBuffer {
        let bytes = max(64, byteCount)
        #if os(Linux)
        if bytes >= hugePageMinimum {
            let huge = hugePageBytes
            let length = (bytes + huge - 1) / huge * huge
            // Map one extra page's worth so the start can be moved up to a 2 MB boundary.
            let mapped = mmap(nil, length + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            if let mapped, mapped != UnsafeMutableRawPointer(bitPattern: -1) {
                let address = (UInt(bitPattern: mapped) + UInt(huge - 1)) & ~UInt(huge - 1)
                if let aligned = UnsafeMutableRawPointer(bitPattern: address) {
                    _ = madvise(aligned, length, MADV_HUGEPAGE)
                    if faultIn { memset(aligned, 0, bytes) }
                    return LargeBuffer(pointer: aligned, byteCount: bytes, mapping: (mapped, length + huge))
                }
                munmap(mapped, length + huge)
            }
        }
        #endif
        let pointer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        return LargeBuffer(pointer: pointer, byteCount: bytes, mapping: nil)
    }

    func deallocate() {
        #if os(Linux)
        if let mapping {
            munmap(mapping.base, mapping.length)
            return
        }
        #endif
        pointer.deallocate()
    }

    /// Asks the system to back the whole 2 MB pages inside memory that is already filled (a data set
    /// read into an array) with huge pages now, copying it over. A hint: any failure leaves the memory as it was.
    static func adviseHugePages(_ memory: UnsafeRawBufferPointer) {
        #if os(Linux)
        guard let start = memory.baseAddress else { return }
        let huge = UInt(hugePageBytes)
        let first = (UInt(bitPattern: start) + huge - 1) & ~(huge - 1)
        let end = (UInt(bitPattern: start) + UInt(memory.count)) & ~(huge - 1)
        guard end > first, let aligned = UnsafeMutableRawPointer(bitPattern: first) else { return }
        _ = madvise(aligned, Int(end - first), MADV_HUGEPAGE)
        _ = madvise(aligned, Int(end - first), madviseCollapse)
        #endif
    }

    /// MADV_COLLAPSE (Linux 6.1): collapse the range into huge pages synchronously. Older kernels
    /// answer EINVAL, which is ignored.
    private static let madviseCollapse: Int32 = 25
}

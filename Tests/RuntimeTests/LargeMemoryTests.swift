import Foundation
import Testing
@testable import Runtime

@Suite struct LargeMemoryTests {
    /// Small and huge-page-sized buffers alike: 64-byte aligned, zero-filled, writable to the last byte,
    /// independent of each other.
    @Test func buffersAreAlignedZeroedAndSeparate() {
        let sizes = [1, 100, LargeBuffer.hugePageMinimum - 1, LargeBuffer.hugePageMinimum, (4 << 20) + 5]
        let buffers = sizes.map { LargeBuffer.allocate(byteCount: $0) }
        defer { for b in buffers { b.deallocate() } }
        for (size, buffer) in zip(sizes, buffers) {
            #expect(Int(bitPattern: buffer.pointer) % 64 == 0)
            #expect(buffer.byteCount >= size)
            let zeros = [UInt8](repeating: 0, count: size)
            #expect(memcmp(buffer.pointer, zeros, size) == 0)
            memset(buffer.pointer, Int32(size % 251), size)
        }
        for (size, buffer) in zip(sizes, buffers) {
            let filled = [UInt8](repeating: UInt8(size % 251), count: size)
            #expect(memcmp(buffer.pointer, filled, size) == 0)
        }
    }

    /// The huge-page hint on memory already filled keeps its contents (it may move them to new pages).
    @Test func adviceKeepsContents() {
        let pattern = (0..<251).map { UInt8($0) }
        var values = [UInt8](repeating: 0, count: 5 << 20)
        values.withUnsafeMutableBytes { out in
            for start in stride(from: 0, to: out.count, by: 251) {
                memcpy(out.baseAddress! + start, pattern, min(251, out.count - start))
            }
        }
        let copy = values.withUnsafeBufferPointer { Array($0) }
        values.withUnsafeBytes { LargeBuffer.adviseHugePages($0) }
        [UInt8]().withUnsafeBytes { LargeBuffer.adviseHugePages($0) }  // nothing to advise
        #expect(values == copy)
    }
}

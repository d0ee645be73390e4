import IR
import Parser

// libFuzzer harness: compiled files (.nnc). Decoding ends in a file or an error, never a crash. The
// first byte picks how much of the envelope the harness repairs, so that mutations reach the
// sections behind the checksum: 0 none, 1 the CRC, 2 the payload length and the CRC. An accepted
// file re-encodes to bytes that decode to the same file, and its embedded source parses or fails
// with diagnostics.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCompiledFile(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    var bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let repair = data[0] % 3
    if repair == 2, bytes.count >= 20 { put(UInt64(bytes.count - 20), at: 8, count: 8, in: &bytes) }
    if repair >= 1, bytes.count >= 20 { put(UInt64(crc32(Array(bytes[..<(bytes.count - 4)]))), at: bytes.count - 4, count: 4, in: &bytes) }
    guard let file = try? CompiledFile.decode(bytes, path: "fuzz.nnc") else { return 0 }
    let encoded = file.encoded()
    guard let again = try? CompiledFile.decode(encoded, path: "fuzz.nnc") else {
        fatalError("an accepted file re-encodes to bytes that do not decode")
    }
    precondition(again.encoded() == encoded, "an accepted file does not round-trip")
    // The embedded source is untrusted text like any model file.
    if let ast = try? parseModel(SourceFile(path: file.sourcePath, text: file.source)) { _ = try? lower(ast) }
    return 0
}

/// Writes `value` little-endian over `count` bytes at `offset`.
func put(_ value: UInt64, at offset: Int, count: Int, in bytes: inout [UInt8]) {
    for i in 0..<count { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
}

import CZlib
import IR
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Reading and writing whole files

/// Reads a whole data file into memory: a regular file no larger than the machine's memory. Errors
/// name the file and the reason.
public func readFileBytes(path: String) throws(DataError) -> [UInt8] {
    do {
        return try readRegularFile(path: path, limit: machineMemoryBytes, what: "a data file")
    } catch {
        throw DataError(path: path, message: error.message)
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed, then renamed over `path`.
func writeFileAtomically(path: String, bytes: [UInt8]) throws(DataError) {
    let url = URL(fileURLWithPath: path)
    let dir = url.deletingLastPathComponent().path
    let tmp = dir + "/." + url.lastPathComponent + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    if fd < 0 {
        throw DataError(path: path, message: "cannot write: \(String(cString: strerror(errno)))")
    }
    var ok = false
    defer {
        if !ok { unlink(tmp) }
    }
    var written = 0
    var failure: Int32 = 0
    bytes.withUnsafeBytes { buf in
        while written < buf.count {
            let n = write(fd, buf.baseAddress! + written, buf.count - written)
            if n < 0 {
                if errno == EINTR { continue }
                failure = errno
                return
            }
            written += n
        }
    }
    if failure == 0 && fsync(fd) != 0 { failure = errno }
    if close(fd) != 0 && failure == 0 { failure = errno }
    if failure != 0 {
        throw DataError(path: path, message: "cannot write: \(String(cString: strerror(failure)))")
    }
    if rename(tmp, path) != 0 {
        throw DataError(path: path, message: "cannot write: \(String(cString: strerror(errno)))")
    }
    ok = true
}

func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
}

func fileExists(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0
}

// MARK: - zlib

/// The largest output a decompression may produce (protects against decompression bombs).
let maxInflatedBytes = 1 << 32

/// True when the bytes start with the gzip magic 1f 8b.
func isGzip(_ bytes: [UInt8]) -> Bool {
    bytes.count >= 2 && bytes[0] == 0x1F && bytes[1] == 0x8B
}

/// Decompresses a gzip (or zlib) stream; several concatenated gzip members are joined, as `gzip -d` does.
/// Errors carry the byte offset in the compressed input where the problem was found.
/// `declaredSize` reads the size the content declares from its first bytes (an IDX header), or nil:
/// decompression stops as soon as the output runs past it, so a small file that inflates to
/// gigabytes of zeros costs no more than its header promises.
func gunzip(_ input: [UInt8], declaredSize: (([UInt8], Int) -> Int?)? = nil) throws(ParseFailure) -> [UInt8] {
    // ISIZE (the last four bytes) is only a hint: it is untrusted and modulo 2^32.
    var hint = 1 << 16
    // With a declared size to come, the first chunk only needs to hold the header.
    if input.count >= 18, declaredSize == nil {
        let n = input.count
        let isize = Int(input[n - 4]) | Int(input[n - 3]) << 8 | Int(input[n - 2]) << 16 | Int(input[n - 1]) << 24
        hint = max(hint, min(isize, input.count.multipliedReportingOverflow(by: 1100).partialValue, 1 << 31))
    }
    return try inflateBytes(input, windowBits: 15 + 32, sizeHint: hint, expectedSize: nil, multiMember: true, declaredSize: declaredSize)
}

/// Decompresses a raw deflate stream (a zip member) whose size is known from the directory.
func inflateRaw(_ input: ArraySlice<UInt8>, expectedSize: Int) throws(ParseFailure) -> [UInt8] {
    try inflateBytes(Array(input), windowBits: -15, sizeHint: expectedSize, expectedSize: expectedSize, multiMember: false)
}

/// The first bytes (at most `maxBytes`) a raw deflate stream decompresses to: enough to read a
/// header before deciding to decompress all of it.
func inflateRawPrefix(_ input: ArraySlice<UInt8>, maxBytes: Int) throws(ParseFailure) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: maxBytes)
    var produced = 0
    var failure: ParseFailure?
    Array(input).withUnsafeBufferPointer { inBuf in
        var strm = z_stream()
        guard inflateInit2_(&strm, -15, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            failure = ParseFailure("cannot start decompression")
            return
        }
        defer { inflateEnd(&strm) }
        strm.next_in = UnsafeMutablePointer(mutating: inBuf.baseAddress)
        strm.avail_in = UInt32(min(inBuf.count, Int(UInt32.max)))
        let rc = out.withUnsafeMutableBufferPointer { ob in
            strm.next_out = ob.baseAddress
            strm.avail_out = UInt32(maxBytes)
            return inflate(&strm, Z_SYNC_FLUSH)
        }
        produced = maxBytes - Int(strm.avail_out)
        if rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR {
            failure = ParseFailure("corrupt compressed data: \(zlibMessage(strm, rc))", at: Int(strm.total_in))
        }
    }
    if let failure { throw failure }
    return Array(out[..<produced])
}

private func zlibMessage(_ strm: z_stream, _ code: Int32) -> String {
    if let m = strm.msg { return String(cString: m) }
    switch code {
    case Z_DATA_ERROR: return "invalid compressed data"
    case Z_MEM_ERROR: return "out of memory"
    case Z_BUF_ERROR: return "unexpected end of data"
    default: return "zlib error \(code)"
    }
}

private func inflateBytes(_ input: [UInt8], windowBits: Int32, sizeHint: Int, expectedSize: Int?, multiMember: Bool,
                          declaredSize: (([UInt8], Int) -> Int?)? = nil) throws(ParseFailure) -> [UInt8] {
    if input.isEmpty {
        throw ParseFailure("truncated compressed data: the stream is empty", at: 0)
    }
    var out = [UInt8](repeating: 0, count: max(sizeHint, 64))
    var produced = 0
    var failure: ParseFailure? = nil
    // The size the content's header declares, once enough of it is out.
    var declared: Int?
    input.withUnsafeBufferPointer { inBuf in
        var strm = z_stream()
        var rc = inflateInit2_(&strm, windowBits, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        if rc != Z_OK {
            failure = ParseFailure("cannot start decompression (zlib error \(rc))")
            return
        }
        defer { inflateEnd(&strm) }
        var consumed = 0  // input bytes before the current chunk
        var memberStart = 0
        while true {
            if produced == out.count {
                if out.count >= maxInflatedBytes {
                    failure = ParseFailure("decompressed data exceeds \(maxInflatedBytes >> 30) GiB", at: consumed + Int(strm.total_in) - memberStart)
                    return
                }
                if let limit = declared ?? expectedSize, produced >= limit {
                    // More output than the directory promised: one more byte is enough to know.
                    out.append(0)
                } else {
                    // Doubling, but not past what a declared size (and one byte to see more) needs.
                    let cap = declared.map { min($0 + 1, maxInflatedBytes) } ?? maxInflatedBytes
                    out.append(contentsOf: repeatElement(0, count: max(1, min(out.count, cap - out.count))))
                }
            }
            let inAvail = min(inBuf.count - consumed, Int(UInt32.max))
            strm.next_in = UnsafeMutablePointer(mutating: inBuf.baseAddress! + consumed)
            strm.avail_in = UInt32(inAvail)
            let outAvail = min(out.count - produced, Int(UInt32.max))
            let beforeIn = Int(strm.avail_in)
            let beforeOut = outAvail
            rc = out.withUnsafeMutableBufferPointer { ob in
                strm.next_out = ob.baseAddress! + produced
                strm.avail_out = UInt32(outAvail)
                return inflate(&strm, Z_NO_FLUSH)
            }
            let usedIn = beforeIn - Int(strm.avail_in)
            let madeOut = beforeOut - Int(strm.avail_out)
            consumed += usedIn
            produced += madeOut
            if declared == nil, let declaredSize { declared = declaredSize(out, produced) }
            if let declared, produced > declared {
                failure = ParseFailure("the decompressed data runs past the \(bytesText(declared)) its header declares (decompression stopped there)", at: consumed)
                return
            }
            if rc == Z_STREAM_END {
                if multiMember && consumed < inBuf.count {
                    // Another gzip member may follow; trailing zero padding is tolerated.
                    let rest = inBuf[consumed...]
                    if rest.allSatisfy({ $0 == 0 }) { return }
                    if rest.count >= 2 && rest[consumed] == 0x1F && rest[consumed + 1] == 0x8B {
                        inflateReset(&strm)
                        memberStart = consumed
                        continue
                    }
                    failure = ParseFailure("unexpected data after the end of the compressed stream", at: consumed)
                    return
                }
                return
            }
            if rc == Z_NEED_DICT {
                failure = ParseFailure("corrupt compressed data: a preset dictionary is required", at: consumed)
                return
            }
            if rc == Z_DATA_ERROR || rc == Z_STREAM_ERROR || rc == Z_MEM_ERROR {
                failure = ParseFailure("corrupt compressed data: \(zlibMessage(strm, rc))", at: consumed)
                return
            }
            if rc == Z_BUF_ERROR || (rc == Z_OK && usedIn == 0 && madeOut == 0) {
                if consumed >= inBuf.count {
                    failure = ParseFailure("truncated compressed data: the stream ends before its end marker (\(bytesText(inBuf.count)) read)", at: inBuf.count)
                    return
                }
                if strm.avail_out != 0 {
                    failure = ParseFailure("corrupt compressed data: \(zlibMessage(strm, rc))", at: consumed)
                    return
                }
            }
            if let expectedSize, produced > expectedSize {
                failure = ParseFailure("corrupt compressed data: more than the expected \(bytesText(expectedSize)) of output", at: consumed)
                return
            }
        }
    }
    if let failure { throw failure }
    out.removeSubrange(produced...)
    if let expectedSize, produced != expectedSize {
        throw ParseFailure("corrupt compressed data: \(bytesText(produced)) of output, expected \(bytesText(expectedSize))", at: input.count)
    }
    return out
}

/// CRC-32 (as in zip and gzip) through zlib.
func crc32Of<C: ContiguousCollection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
    bytes.withUnsafeBufferPointer { buf -> UInt32 in
        var crc: uLong = crc32(0, nil, 0)
        var p = buf.baseAddress
        var left = buf.count
        while left > 0, let base = p {
            let n = min(left, 1 << 30)
            crc = crc32(crc, base, uInt(n))
            p = base + n
            left -= n
        }
        return UInt32(truncatingIfNeeded: crc)
    }
}

/// Arrays and slices both expose contiguous storage.
protocol ContiguousCollection: Collection {
    func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Element>) throws -> R) rethrows -> R
}
extension Array: ContiguousCollection {}
extension ArraySlice: ContiguousCollection {}

/// Compresses bytes into a gzip stream (level 6), as `gzip` writes it.
func gzipCompress(_ input: [UInt8], level: Int32 = 6) -> [UInt8] {
    var strm = z_stream()
    guard deflateInit2_(&strm, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return [] }
    defer { deflateEnd(&strm) }
    let bound = Int(deflateBound(&strm, uLong(input.count))) + 32
    var out = [UInt8](repeating: 0, count: bound)
    var produced = 0
    input.withUnsafeBufferPointer { ib in
        out.withUnsafeMutableBufferPointer { ob in
            strm.next_in = UnsafeMutablePointer(mutating: ib.baseAddress)
            strm.avail_in = UInt32(ib.count)
            strm.next_out = ob.baseAddress
            strm.avail_out = UInt32(ob.count)
            _ = deflate(&strm, Z_FINISH)
            produced = ob.count - Int(strm.avail_out)
        }
    }
    return Array(out[0..<produced])
}

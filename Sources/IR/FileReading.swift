import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a file could not be read, in words (the caller adds the file name).
public struct FileReadError: Error, Sendable {
    public var message: String
}

/// The most any input file may hold: what the machine's memory holds.
public let machineMemoryBytes = Int(min(ProcessInfo.processInfo.physicalMemory, UInt64(Int.max)))

/// "3.2 GB".
public func gigabytesText(_ bytes: Int) -> String { String(format: "%.1f GB", Double(bytes) / 1e9) }

/// Reads a whole regular file of at most `limit` bytes. A device, pipe or directory is refused before
/// anything is read (`/dev/zero` would never end), and so is a file larger than the limit; the size
/// is checked again while reading, against a file that grows.
public func readRegularFile(path: String, limit: Int, what: String) throws(FileReadError) -> [UInt8] {
    // Non-blocking: opening a pipe must not wait for a writer (it is refused below).
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    if fd < 0 { throw FileReadError(message: errno == ENOENT ? "no such file" : "cannot open: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw FileReadError(message: "cannot read: \(String(cString: strerror(errno)))") }
    switch st.st_mode & S_IFMT {
    case S_IFREG: break
    case S_IFDIR: throw FileReadError(message: "is a directory, not \(what)")
    default: throw FileReadError(message: "is not a regular file (a device, pipe or socket); \(what) must be a file of known size")
    }
    let size = Int(st.st_size)
    guard size <= limit else {
        throw FileReadError(message: "the file is \(size) bytes; \(what) is at most \(limit) bytes\(limit == machineMemoryBytes ? " (the machine's memory, \(gigabytesText(limit)))" : "")")
    }
    var bytes = [UInt8](repeating: 0, count: size + 1)  // +1 to see the end (or growth) without another buffer
    var count = 0
    while count < bytes.count {
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw FileReadError(message: "cannot read: \(String(cString: strerror(errno)))")
        }
        if n == 0 { break }
        count += n
    }
    guard count <= size else { throw FileReadError(message: "the file grew while it was read") }
    bytes.removeSubrange(count...)
    return bytes
}

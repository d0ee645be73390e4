import Foundation

/// The compiled graph file (`.nnc`): one self-contained, checksummed file with the model source,
/// the optimized IR (for reading), and a typed `Checkpoint` (parameters, optimizer and other
/// persistent state, training settings and progress, history).
///
///     "NNC\u{1A}"  magic
///     u32         format version (2; version 1 files are read too)
///     u64         payload length
///     payload     sections: 4-byte tag, u64 length, bytes
///     u32         CRC-32 of everything before it
///
/// Version 2 sections: `SRCP` source path, `SRC ` model source, `IR  ` printed IR, `CKPT` the
/// checkpoint's scalar fields (below), `PARM` parameters, `OPTS` optimizer state, `PERS` other
/// persistent state (running statistics), `HIST` history. Version 1 had `META` (`key=value` lines)
/// and `STAT` (optimizer state) instead of `CKPT`, `OPTS` and `PERS`.
///
/// All integers little-endian. Loading rebuilds the graph from the embedded source (the compiler
/// is deterministic).
public struct CompiledFile: Sendable, Equatable {
    public static let magic: [UInt8] = [0x4E, 0x4E, 0x43, 0x1A]
    public static let formatVersion: UInt32 = 2

    public typealias Tensor = Checkpoint.Tensor
    public typealias Epoch = Checkpoint.Epoch

    public var sourcePath: String
    public var source: String
    public var ir: String
    public var checkpoint: Checkpoint
    /// The format version the file was read from (`formatVersion` for a file made here).
    public var readVersion: UInt32 = CompiledFile.formatVersion

    public init(sourcePath: String, source: String, ir: String, checkpoint: Checkpoint) {
        self.sourcePath = sourcePath; self.source = source; self.ir = ir; self.checkpoint = checkpoint
    }

    // MARK: Writing

    public func encoded() -> [UInt8] {
        let float64 = checkpoint.dtype == .f64
        var payload = Writer()
        payload.section("SRCP", Array(sourcePath.utf8))
        payload.section("SRC ", Array(source.utf8))
        payload.section("IR  ", Array(ir.utf8))
        payload.section("CKPT", checkpoint.encodedFields())
        payload.section("PARM", Self.encode(checkpoint.parameters, float64: float64))
        payload.section("OPTS", Self.encode(checkpoint.optimizerState, float64: float64))
        payload.section("PERS", Self.encode(checkpoint.persistentState, float64: float64))
        payload.section("HIST", Self.encode(checkpoint.history))
        // Sections added within format version 2: a reader of the version skips the ones it lacks.
        var validation = Writer()
        for epoch in checkpoint.history {
            for value in [epoch.validationLoss, epoch.validationAccuracy, epoch.learningRate] { validation.f64(value ?? .nan) }
        }
        payload.section("VHST", validation.bytes)
        if let best = checkpoint.best {
            var w = Writer()
            w.u64(UInt64(best.epoch))
            w.bytes += Self.encode(best.parameters, float64: float64)
            w.bytes += Self.encode(best.persistentState, float64: float64)
            payload.section("BEST", w.bytes)
        }
        var file = Writer()
        file.bytes += Self.magic
        file.u32(Self.formatVersion)
        file.u64(UInt64(payload.bytes.count))
        file.bytes += payload.bytes
        file.u32(crc32(file.bytes))
        return file.bytes
    }

    static func encode(_ tensors: [Tensor], float64: Bool) -> [UInt8] {
        var w = Writer()
        w.u64(UInt64(tensors.count))
        for tensor in tensors {
            let name = Array(tensor.name.utf8)
            w.u64(UInt64(name.count)); w.bytes += name
            w.u64(UInt64(tensor.shape.count))
            for d in tensor.shape { w.u64(UInt64(d)) }
            w.bytes.append(float64 ? 8 : 4)
            w.u64(UInt64(tensor.values.count))
            if float64 { for v in tensor.values { w.f64(v) } } else { for v in tensor.values { w.u32(Float(v).bitPattern) } }
        }
        return w.bytes
    }

    /// The history: u64 count, then per epoch four f64 (loss, accuracy, test loss, test accuracy; NaN: none).
    static func encode(_ history: [Epoch]) -> [UInt8] {
        var w = Writer()
        w.u64(UInt64(history.count))
        for epoch in history {
            for value in [epoch.loss, epoch.accuracy ?? .nan, epoch.testLoss ?? .nan, epoch.testAccuracy ?? .nan] { w.f64(value) }
        }
        return w.bytes
    }

    /// Writes atomically: a temporary file next to the target, then rename.
    public func write(to path: String) throws {
        try writeAtomically(Data(encoded()), to: path)
    }

    // MARK: Reading

    /// Reads and checks a compiled file; every problem is a `CompiledFileError` saying what is wrong.
    public static func read(path: String) throws(CompiledFileError) -> CompiledFile {
        let bytes: [UInt8]
        do { bytes = try readRegularFile(path: path, limit: machineMemoryBytes, what: "a compiled model") } catch {
            throw CompiledFileError(path: path, message: error.message)
        }
        return try decode(bytes, path: path)
    }

    public static func decode(_ bytes: [UInt8], path: String) throws(CompiledFileError) -> CompiledFile {
        func fail(_ message: String) -> CompiledFileError { CompiledFileError(path: path, message: message) }
        guard bytes.count >= 4, Array(bytes[0..<4]) == magic else {
            throw fail("not a compiled nnc file (it does not start with the nnc magic number)")
        }
        var reader = Reader(bytes: bytes, position: 4)
        guard let version = reader.u32() else { throw fail("truncated: the file ends inside its header") }
        guard version <= formatVersion else {
            throw fail("written by a newer nnc (format version \(version); this nnc reads versions 1 to \(formatVersion))")
        }
        guard version >= 1 else { throw fail("unknown format version \(version)") }
        guard let length = reader.u64() else { throw fail("truncated: the file ends inside its header") }
        // The length comes from the file: compare before any arithmetic on it.
        guard length <= UInt64(bytes.count) else {
            throw fail("truncated: the header promises \(length) bytes of content, the file has \(bytes.count) bytes in all")
        }
        let expected = 16 + Int(length) + 4
        guard bytes.count >= expected else { throw fail("truncated: expected \(expected) bytes, found \(bytes.count)") }
        guard bytes.count == expected else { throw fail("corrupted: \(bytes.count - expected) unexpected bytes after the end") }
        let stored = UInt32(bytes[expected - 4]) | UInt32(bytes[expected - 3]) << 8 | UInt32(bytes[expected - 2]) << 16 | UInt32(bytes[expected - 1]) << 24
        guard crc32(Array(bytes[0..<(expected - 4)])) == stored else { throw fail("corrupted: the checksum does not match") }
        var sections: [String: [UInt8]] = [:]
        while reader.position < expected - 4 {
            // A section header (tag and size) must itself fit before the checksum.
            guard expected - 4 - reader.position >= 12, let tag = reader.take(4), let size = reader.u64(), size <= UInt64(expected - 4 - reader.position),
                  let body = reader.take(Int(size)) else { throw fail("corrupted: a section overruns the file") }
            sections[String(decoding: tag, as: UTF8.self)] = body
        }
        func section(_ tag: String) throws(CompiledFileError) -> [UInt8] {
            guard let body = sections[tag] else {
                throw fail("corrupted: the section '\(tag.trimmingCharacters(in: .whitespaces))' is missing (format version \(version))")
            }
            return body
        }
        func text(_ tag: String) throws(CompiledFileError) -> String { String(decoding: try section(tag), as: UTF8.self) }

        var checkpoint: Checkpoint
        if version == 1 {
            checkpoint = try Checkpoint(version1Metadata: try text("META"), path: path)
            checkpoint.optimizerState = try decodeTensors(try section("STAT"), path: path)
        } else {
            checkpoint = try Checkpoint(fields: try section("CKPT"), path: path)
            checkpoint.optimizerState = try decodeTensors(try section("OPTS"), path: path)
            checkpoint.persistentState = try decodeTensors(try section("PERS"), path: path)
        }
        checkpoint.parameters = try decodeTensors(try section("PARM"), path: path)
        let historyBytes = try section("HIST")
        var h = Reader(bytes: historyBytes, position: 0)
        guard let epochs = h.u64(), epochs <= UInt64(historyBytes.count / 32) else { throw fail("corrupted: the training history is malformed") }
        for _ in 0..<Int(epochs) {
            guard let loss = h.f64(), let acc = h.f64(), let testLoss = h.f64(), let testAcc = h.f64() else { throw fail("corrupted: the training history is malformed") }
            checkpoint.history.append(Epoch(loss: loss, accuracy: acc.isNaN ? nil : acc, testLoss: testLoss.isNaN ? nil : testLoss, testAccuracy: testAcc.isNaN ? nil : testAcc))
        }
        if let validation = sections["VHST"] {
            // Per epoch: validation loss, validation accuracy, learning rate (NaN: none).
            guard validation.count == 24 * checkpoint.history.count else { throw fail("corrupted: the validation history is malformed") }
            var v = Reader(bytes: validation, position: 0)
            for index in checkpoint.history.indices {
                let values = (0..<3).map { _ in v.f64() ?? .nan }.map { $0.isNaN ? nil : $0 }
                checkpoint.history[index].validationLoss = values[0]
                checkpoint.history[index].validationAccuracy = values[1]
                checkpoint.history[index].learningRate = values[2]
            }
        }
        if let bytes = sections["BEST"] {
            var b = Reader(bytes: bytes, position: 0)
            guard let epoch = b.u64(), epoch >= 1, epoch <= UInt64(checkpoint.history.count) else { throw fail("corrupted: the best epoch is malformed") }
            let parameters = try decodeTensors(bytes, path: path, from: &b)
            let persistent = try decodeTensors(bytes, path: path, from: &b)
            guard b.position == bytes.count else { throw fail("corrupted: the best epoch is malformed") }
            checkpoint.best = Checkpoint.Best(epoch: Int(epoch), parameters: parameters, persistentState: persistent)
        }
        var file = CompiledFile(sourcePath: try text("SRCP"), source: try text("SRC "), ir: try text("IR  "), checkpoint: checkpoint)
        file.readVersion = version
        return file
    }

    static func decodeTensors(_ bytes: [UInt8], path: String) throws(CompiledFileError) -> [Tensor] {
        var r = Reader(bytes: bytes, position: 0)
        return try decodeTensors(bytes, path: path, from: &r)
    }

    /// A tensor table read from where `r` stands.
    static func decodeTensors(_ bytes: [UInt8], path: String, from r: inout Reader) throws(CompiledFileError) -> [Tensor] {
        func fail() -> CompiledFileError { CompiledFileError(path: path, message: "corrupted: a parameter table is malformed") }
        guard let count = r.u64(), count <= UInt64(bytes.count) else { throw fail() }
        var tensors: [Tensor] = []
        for _ in 0..<Int(count) {
            guard let nameLength = r.u64(), nameLength <= 4096, let name = r.take(Int(nameLength)),
                  let rank = r.u64(), rank <= 8 else { throw fail() }
            var shape: [Int] = []
            for _ in 0..<Int(rank) {
                guard let d = r.u64(), d <= UInt64(Int32.max) else { throw fail() }
                shape.append(Int(d))
            }
            guard let width = r.take(1)?.first, width == 4 || width == 8, let n = r.u64(),
                  n <= UInt64(bytes.count - r.position) / UInt64(width) else { throw fail() }
            var values = [Double](repeating: 0, count: Int(n))
            for i in 0..<Int(n) {
                if width == 8 { guard let v = r.f64() else { throw fail() }; values[i] = v }
                else { guard let v = r.u32() else { throw fail() }; values[i] = Double(Float(bitPattern: v)) }
            }
            tensors.append(Tensor(name: String(decoding: name, as: UTF8.self), shape: shape, values: values))
        }
        return tensors
    }
}

public struct CompiledFileError: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var message: String
    public var description: String { "\(path): error: \(message)" }
}

struct Writer {
    var bytes: [UInt8] = []
    mutating func u32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }
    mutating func u64(_ v: UInt64) { for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
    mutating func f64(_ v: Double) { u64(v.bitPattern) }
    mutating func section(_ tag: String, _ body: [UInt8]) {
        bytes += Array(tag.utf8.prefix(4)); u64(UInt64(body.count)); bytes += body
    }
}

struct Reader {
    let bytes: [UInt8]
    var position: Int
    mutating func take(_ n: Int) -> [UInt8]? {
        guard n >= 0, n <= bytes.count - position else { return nil }
        defer { position += n }
        return Array(bytes[position..<(position + n)])
    }
    mutating func u32() -> UInt32? {
        guard let b = take(4) else { return nil }
        return b.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
    }
    mutating func u64() -> UInt64? {
        guard let b = take(8) else { return nil }
        return b.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }
    mutating func f64() -> Double? { u64().map(Double.init(bitPattern:)) }
}

/// CRC-32 (IEEE, as zlib and zip use).
public func crc32(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc = crcTable[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8)
    }
    return crc ^ 0xFFFF_FFFF
}

private let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
    var c = UInt32(n)
    for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    return c
}

/// Removes `.NAME.PID.tmp` files next to `url` left by processes that no longer run (killed while
/// writing: SIGKILL cannot be caught).
func removeStaleTemporaryFiles(of url: URL) {
    let directory = url.deletingLastPathComponent()
    let prefix = "." + url.lastPathComponent + "."
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory.path) else { return }
    for name in names where name.hasPrefix(prefix) && name.hasSuffix(".tmp") {
        let middle = name.dropFirst(prefix.count).dropLast(4)
        guard let pid = Int32(middle), pid > 0, pid != getpid() else { continue }
        // kill(pid, 0) fails with ESRCH when no such process exists.
        if kill(pid, 0) != 0 && errno == ESRCH { try? FileManager.default.removeItem(at: directory.appendingPathComponent(name)) }
    }
}

/// Writes data to a temporary file in the same directory and renames it over the target, so a
/// crash never leaves a half-written file behind. Errors name the target and the system's reason.
public func writeAtomically(_ data: Data, to path: String) throws(CompiledFileError) {
    let url = URL(fileURLWithPath: resolvedOutputPath(path))
    let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp").path
    removeStaleTemporaryFiles(of: url)
    func failure(_ code: Int32) -> CompiledFileError {
        unlink(temporary)
        return CompiledFileError(path: path, message: "cannot write the file: \(String(cString: strerror(code)))")
    }
    let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o666)
    guard descriptor >= 0 else { throw failure(errno) }
    let writeError: Int32 = data.withUnsafeBytes { raw in
        guard let base = raw.baseAddress else { return 0 }
        var done = 0
        while done < raw.count {
            let count = write(descriptor, base + done, raw.count - done)
            if count < 0 { if errno == EINTR { continue }; return errno }
            done += count
        }
        return 0
    }
    // A full disk may show only at close.
    let closeError = close(descriptor) == 0 ? 0 : errno
    if writeError != 0 { throw failure(writeError) }
    if closeError != 0 { throw failure(closeError) }
    if rename(temporary, url.path) != 0 { throw failure(errno) }
}

/// Where a write to `path` lands: a symbolic link is followed, through chains and also to a file not
/// there yet, so that `-o latest.nnc` linking to a versioned file writes that file and the link
/// stays a link. (A loop of links comes back as a link; `checkOutput` refuses it.)
public func resolvedOutputPath(_ path: String) -> String {
    var current = path
    for _ in 0..<40 {
        var info = stat()
        guard lstat(current, &info) == 0, info.st_mode & S_IFMT == S_IFLNK else { return current }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink(current, &buffer, Int(PATH_MAX))
        guard count > 0 else { return current }
        let target = String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let directory = (current as NSString).deletingLastPathComponent
        current = target.hasPrefix("/") || directory.isEmpty ? target : directory + "/" + target
    }
    return current
}

import Foundation

/// An error in a data file: names the file and the place (line/column for text, byte offset for binary).
///
/// Rendered like a compiler diagnostic:
/// - text files: `path:LINE:COL: error: message` (or `path:LINE: error: message` without a column)
/// - binary files: `path: error: at byte N: message`
/// - otherwise: `path: error: message`
public struct DataError: Error, CustomStringConvertible, Equatable, Sendable {
    public var path: String
    public var line: Int?
    public var column: Int?
    public var byteOffset: Int?
    public var message: String

    public init(path: String, line: Int? = nil, column: Int? = nil, byteOffset: Int? = nil, message: String) {
        self.path = path
        self.line = line
        self.column = column
        self.byteOffset = byteOffset
        self.message = message
    }

    public var description: String {
        if let line {
            if let column { return "\(path):\(line):\(column): error: \(message)" }
            return "\(path):\(line): error: \(message)"
        }
        if let byteOffset { return "\(path): error: at byte \(byteOffset): \(message)" }
        return "\(path): error: \(message)"
    }
}

/// What the model expects of a data set, so a loader can check and interpret columns.
public struct DataExpectation: Sendable, Equatable {
    public enum Targets: Sendable, Equatable {
        /// Features only (`loss sum`, `nnc run --input`).
        case none
        /// `count` numeric target columns (regression: mse, sse, bce).
        case values(count: Int)
        /// One integer class label in `0..<classes` (crossentropy).
        case classLabels(classes: Int)
    }

    /// Elements per sample (e.g. 2, or 784 for 1x28x28).
    public var featureCount: Int
    public var targets: Targets

    public init(featureCount: Int, targets: Targets) {
        self.featureCount = featureCount
        self.targets = targets
    }

    /// Number of target columns a table (CSV or 2-D array) carries after the features.
    public var targetColumns: Int {
        switch targets {
        case .none: return 0
        case .values(let count): return count
        case .classLabels: return 1
        }
    }
}

/// A failure found while parsing bytes, before it is attached to a file name.
/// `offset` is a byte offset into the bytes that were parsed.
struct ParseFailure: Error {
    var offset: Int?
    var message: String
    init(_ message: String, at offset: Int? = nil) {
        self.offset = offset
        self.message = message
    }

    func dataError(path: String) -> DataError {
        DataError(path: path, byteOffset: offset, message: message)
    }
}

// MARK: - Small helpers shared by the loaders

/// Quotes a piece of (possibly binary) file content for a message: printable ASCII kept, the rest escaped, long text cut.
func quoteForMessage<C: Collection>(_ bytes: C, limit: Int = 40) -> String where C.Element == UInt8 {
    var out = "'"
    var n = 0
    var utf8Run: [UInt8] = []
    func flushUTF8() {
        if utf8Run.isEmpty { return }
        if let s = String(validating: utf8Run, as: UTF8.self) {
            out += s
        } else {
            for b in utf8Run { out += String(format: "\\x%02x", b) }
        }
        utf8Run.removeAll()
    }
    for b in bytes {
        if n >= limit { flushUTF8(); out += "..."; break }
        n += 1
        if b >= 0x80 { utf8Run.append(b); continue }
        flushUTF8()
        switch b {
        case 0x27: out += "\\'"
        case 0x5C: out += "\\\\"
        case 0x09: out += "\\t"
        case 0x0A: out += "\\n"
        case 0x0D: out += "\\r"
        case 0x20...0x7E: out += String(UnicodeScalar(b))
        default: out += String(format: "\\x%02x", b)
        }
    }
    flushUTF8()
    return out + "'"
}

/// Formats a UInt32 as `0x%08X`.
func hex32(_ v: UInt32) -> String { String(format: "0x%08X", v) }

/// Multiplies dimensions, returning nil on overflow or a negative dimension.
func checkedProduct<S: Sequence>(_ dims: S) -> Int? where S.Element == Int {
    var p = 1
    for d in dims {
        if d < 0 { return nil }
        let (r, o) = p.multipliedReportingOverflow(by: d)
        if o { return nil }
        p = r
    }
    return p
}

/// Human name of a byte count ("1 byte", "12 bytes").
func bytesText(_ n: Int) -> String { n == 1 ? "1 byte" : "\(n) bytes" }

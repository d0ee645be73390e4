import Foundation

/// An array read from an .npy file (or an .npz member), its values widened to Double.
public struct NPYArray: Sendable, Equatable {
    public var shape: [Int]
    public var values: [Double]
    /// True when the file stored float64 ('<f8'); false for float32 and integer types.
    public var isFloat64: Bool

    public init(shape: [Int], values: [Double], isFloat64: Bool) {
        self.shape = shape
        self.values = values
        self.isFloat64 = isFloat64
    }
}

// MARK: - dtype

/// An NPY element type: kind ('f', 'i', 'u', 'b'), size in bytes and byte order.
struct NPYDType: Equatable {
    enum Kind { case float, signed, unsigned, bool }
    var kind: Kind
    var size: Int
    var bigEndian: Bool
    var descr: String

    init?(descr: String) {
        let chars = Array(descr.utf8)
        guard chars.count >= 2 else { return nil }
        var i = 0
        var big = false
        switch chars[0] {
        case UInt8(ascii: "<"), UInt8(ascii: "="): i = 1
        case UInt8(ascii: "|"): i = 1
        case UInt8(ascii: ">"): i = 1; big = true
        default: i = 0
        }
        guard i < chars.count else { return nil }
        let kindChar = chars[i]
        guard let size = Int(String(decoding: chars[(i + 1)...], as: UTF8.self)) else { return nil }
        switch (kindChar, size) {
        case (UInt8(ascii: "f"), 2), (UInt8(ascii: "f"), 4), (UInt8(ascii: "f"), 8): kind = .float
        case (UInt8(ascii: "i"), 1), (UInt8(ascii: "i"), 2), (UInt8(ascii: "i"), 4), (UInt8(ascii: "i"), 8): kind = .signed
        case (UInt8(ascii: "u"), 1), (UInt8(ascii: "u"), 2), (UInt8(ascii: "u"), 4), (UInt8(ascii: "u"), 8): kind = .unsigned
        case (UInt8(ascii: "b"), 1): kind = .bool
        default: return nil
        }
        self.size = size
        self.bigEndian = big && size > 1
        self.descr = descr
    }

    var isFloat: Bool { kind == .float }
}

struct NPYHeader {
    var dtype: NPYDType
    var shape: [Int]
    var count: Int
    var dataOffset: Int

    var shapeText: String { pythonShape(shape) }
}

func pythonShape(_ shape: [Int]) -> String {
    shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
}

// MARK: - The header dict (a Python literal)

private indirect enum PyValue {
    case string(String)
    case int(Int)
    case bool(Bool)
    case none
    case tuple([PyValue])
    case dict([(String, PyValue)])
}

/// A parser for the small Python literal in an NPY header: `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
private struct PyLiteralParser {
    let b: [UInt8]
    var i = 0
    let base: Int  // offset of the header text in the file, for messages
    var depth = 0

    init(_ bytes: ArraySlice<UInt8>, base: Int) {
        b = Array(bytes)
        self.base = base
    }

    func fail(_ what: String) -> ParseFailure {
        ParseFailure("malformed NPY header: \(what)", at: base + min(i, b.count))
    }

    mutating func skipSpace() {
        while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x09 || b[i] == 0x0D { i += 1 }
    }

    mutating func parseValue() throws(ParseFailure) -> PyValue {
        skipSpace()
        guard i < b.count else { throw fail("unexpected end of the header") }
        let c = b[i]
        switch c {
        case UInt8(ascii: "'"), UInt8(ascii: "\""):
            return .string(try parseString())
        case UInt8(ascii: "("), UInt8(ascii: "["):
            depth += 1
            if depth > 16 { throw fail("nested too deeply") }
            defer { depth -= 1 }
            let close: UInt8 = c == UInt8(ascii: "(") ? UInt8(ascii: ")") : UInt8(ascii: "]")
            i += 1
            var items: [PyValue] = []
            while true {
                skipSpace()
                guard i < b.count else { throw fail("unexpected end of the header in a \(c == UInt8(ascii: "(") ? "tuple" : "list")") }
                if b[i] == close { i += 1; break }
                items.append(try parseValue())
                skipSpace()
                guard i < b.count else { throw fail("unexpected end of the header") }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == close { i += 1; break }
                throw fail("expected ',' or '\(String(UnicodeScalar(close)))', found \(quoteForMessage(b[i..<min(i + 1, b.count)]))")
            }
            return .tuple(items)
        case UInt8(ascii: "{"):
            depth += 1
            if depth > 16 { throw fail("nested too deeply") }
            defer { depth -= 1 }
            i += 1
            var items: [(String, PyValue)] = []
            while true {
                skipSpace()
                guard i < b.count else { throw fail("unexpected end of the header in the dict") }
                if b[i] == UInt8(ascii: "}") { i += 1; break }
                guard b[i] == UInt8(ascii: "'") || b[i] == UInt8(ascii: "\"") else { throw fail("expected a quoted key") }
                let key = try parseString()
                skipSpace()
                guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("expected ':' after '\(key)'") }
                i += 1
                items.append((key, try parseValue()))
                skipSpace()
                guard i < b.count else { throw fail("unexpected end of the header in the dict") }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "}") { i += 1; break }
                throw fail("expected ',' or '}', found \(quoteForMessage(b[i..<i + 1]))")
            }
            return .dict(items)
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "+"):
            let start = i
            var neg = false
            if c == UInt8(ascii: "-") || c == UInt8(ascii: "+") { neg = c == UInt8(ascii: "-"); i += 1 }
            var v = 0
            var digits = 0
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
                let (m, o1) = v.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(Int(b[i] - 0x30))
                if o1 || o2 { i = start; throw fail("number too large") }
                v = a
                digits += 1
                i += 1
            }
            if digits == 0 { i = start; throw fail("expected a number") }
            if i < b.count, b[i] == UInt8(ascii: "L") { i += 1 }  // Python 2 long
            return .int(neg ? -v : v)
        default:
            let start = i
            while i < b.count, (b[i] >= 0x41 && b[i] <= 0x5A) || (b[i] >= 0x61 && b[i] <= 0x7A) || b[i] == 0x5F { i += 1 }
            let word = String(decoding: b[start..<i], as: UTF8.self)
            switch word {
            case "True": return .bool(true)
            case "False": return .bool(false)
            case "None": return .none
            default:
                i = start
                throw fail("unexpected \(quoteForMessage(b[start..<min(max(i + 1, start + word.utf8.count), b.count)]))")
            }
        }
    }

    mutating func parseString() throws(ParseFailure) -> String {
        let q = b[i]
        let start = i
        i += 1
        var out: [UInt8] = []
        while i < b.count, b[i] != q {
            if b[i] == UInt8(ascii: "\\"), i + 1 < b.count { i += 1 }
            out.append(b[i])
            i += 1
        }
        guard i < b.count else { i = start; throw fail("unterminated string") }
        i += 1
        return String(decoding: out, as: UTF8.self)
    }
}

// MARK: - Parsing

let npyMagic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY

func hasNPYMagic(_ b: [UInt8]) -> Bool {
    b.count >= 6 && Array(b[0..<6]) == npyMagic
}

/// Parses and checks an NPY header: the magic, the version, the dict, and that the data is all there.
/// Parses an NPY header. `prefixOnly`: `b` is the start of the array only (an archive member read
/// that far), so the data is not checked to be all there.
func parseNPYHeader(_ b: [UInt8], prefixOnly: Bool = false) throws(ParseFailure) -> NPYHeader {
    if b.isEmpty { throw ParseFailure("the file is empty (expected an NPY file)", at: 0) }
    let prefix = min(b.count, 6)
    if Array(b[0..<prefix]) != Array(npyMagic[0..<prefix]) {
        throw ParseFailure("not an NPY file: it does not start with the magic string '\\x93NUMPY'", at: 0)
    }
    if b.count < 10 {
        throw ParseFailure("truncated: the file has \(bytesText(b.count)), but an NPY header needs at least 10", at: b.count)
    }
    let major = b[6], minor = b[7]
    let headerLen: Int
    let textStart: Int
    switch major {
    case 1:
        headerLen = Int(b[8]) | Int(b[9]) << 8
        textStart = 10
    case 2, 3:
        if b.count < 12 {
            throw ParseFailure("truncated: the file has \(bytesText(b.count)), but an NPY version \(major) header needs at least 12", at: b.count)
        }
        headerLen = Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24
        textStart = 12
    default:
        throw ParseFailure("unsupported NPY format version \(major).\(minor) (versions 1, 2 and 3 are supported)", at: 6)
    }
    if headerLen > b.count - textStart {
        throw ParseFailure("truncated: the header is \(bytesText(headerLen)) long, but only \(bytesText(b.count - textStart)) follow", at: 8)
    }
    var parser = PyLiteralParser(b[textStart..<textStart + headerLen], base: textStart)
    let value = try parser.parseValue()
    parser.skipSpace()
    if parser.i < parser.b.count {
        throw parser.fail("unexpected \(quoteForMessage(parser.b[parser.i...])) after the dict")
    }
    guard case .dict(let items) = value else {
        throw ParseFailure("malformed NPY header: expected a dict", at: textStart)
    }
    func item(_ key: String) -> PyValue? { items.first { $0.0 == key }?.1 }
    guard let descrValue = item("descr") else { throw ParseFailure("malformed NPY header: no 'descr' key", at: textStart) }
    guard let fortranValue = item("fortran_order") else { throw ParseFailure("malformed NPY header: no 'fortran_order' key", at: textStart) }
    guard let shapeValue = item("shape") else { throw ParseFailure("malformed NPY header: no 'shape' key", at: textStart) }
    let dtype: NPYDType
    switch descrValue {
    case .string(let s):
        guard let d = NPYDType(descr: s) else {
            throw ParseFailure("unsupported dtype '\(s)' (supported: float16/32/64, int8/16/32/64, uint8/16/32/64, bool)", at: textStart)
        }
        dtype = d
    default:
        throw ParseFailure("unsupported dtype: structured arrays are not supported", at: textStart)
    }
    guard case .bool(let fortran) = fortranValue else {
        throw ParseFailure("malformed NPY header: 'fortran_order' is not True or False", at: textStart)
    }
    if fortran {
        throw ParseFailure("the array is in Fortran (column-major) order, which is not supported: save it in C order (numpy.ascontiguousarray)", at: textStart)
    }
    guard case .tuple(let dimValues) = shapeValue else {
        throw ParseFailure("malformed NPY header: 'shape' is not a tuple", at: textStart)
    }
    var shape: [Int] = []
    for d in dimValues {
        guard case .int(let n) = d, n >= 0 else {
            throw ParseFailure("malformed NPY header: 'shape' must hold non-negative integers", at: textStart)
        }
        shape.append(n)
    }
    let dataOffset = textStart + headerLen
    let available = b.count - dataOffset
    guard let count = checkedProduct(shape), case let (bytes, false) = count.multipliedReportingOverflow(by: dtype.size) else {
        throw ParseFailure("the shape \(pythonShape(shape)) is too large", at: textStart)
    }
    if bytes < available, !prefixOnly {
        throw ParseFailure("\(bytesText(available - bytes)) of unexpected data after the \(bytesText(bytes)) that shape \(pythonShape(shape)) of '\(dtype.descr)' describes", at: dataOffset + bytes)
    }
    if bytes > available, !prefixOnly {
        throw ParseFailure("truncated: shape \(pythonShape(shape)) of '\(dtype.descr)' needs \(bytesText(bytes)) of data, but only \(bytesText(available)) follow", at: dataOffset)
    }
    return NPYHeader(dtype: dtype, shape: shape, count: count, dataOffset: dataOffset)
}

// MARK: - Decoding elements

@inline(__always)
private func loadBits<U: FixedWidthInteger>(_ p: UnsafeRawPointer, _ offset: Int, big: Bool, as: U.Type) -> U {
    let v = p.loadUnaligned(fromByteOffset: offset, as: U.self)
    return big ? U(bigEndian: v) : U(littleEndian: v)
}

/// Element `i` of the data as a Double. The caller has checked that the data is all there.
@inline(__always)
private func element(_ p: UnsafeRawPointer, _ i: Int, _ t: NPYDType) -> Double {
    let o = i * t.size
    switch (t.kind, t.size) {
    case (.float, 4): return Double(Float(bitPattern: loadBits(p, o, big: t.bigEndian, as: UInt32.self)))
    case (.float, 8): return Double(bitPattern: loadBits(p, o, big: t.bigEndian, as: UInt64.self))
    case (.float, _): return Double(Float16Bits.toFloat(loadBits(p, o, big: t.bigEndian, as: UInt16.self)))
    case (.unsigned, 1), (.bool, _): return Double(p.load(fromByteOffset: o, as: UInt8.self))
    case (.unsigned, 2): return Double(loadBits(p, o, big: t.bigEndian, as: UInt16.self))
    case (.unsigned, 4): return Double(loadBits(p, o, big: t.bigEndian, as: UInt32.self))
    case (.unsigned, _): return Double(loadBits(p, o, big: t.bigEndian, as: UInt64.self))
    case (.signed, 1): return Double(p.load(fromByteOffset: o, as: Int8.self))
    case (.signed, 2): return Double(Int16(bitPattern: loadBits(p, o, big: t.bigEndian, as: UInt16.self)))
    case (.signed, 4): return Double(Int32(bitPattern: loadBits(p, o, big: t.bigEndian, as: UInt32.self)))
    case (.signed, _): return Double(Int64(bitPattern: loadBits(p, o, big: t.bigEndian, as: UInt64.self)))
    }
}

/// IEEE half precision to Float, without relying on the platform's Float16.
enum Float16Bits {
    static func toFloat(_ h: UInt16) -> Float {
        let sign: UInt32 = UInt32(h >> 15) << 31
        let exp = Int((h >> 10) & 0x1F)
        let mant = UInt32(h & 0x3FF)
        if exp == 0 {
            let v = Float(mant) * Float(sign: .plus, exponent: -24, significand: 1)
            return sign != 0 ? -v : v
        }
        if exp == 31 {
            return Float(bitPattern: sign | 0x7F80_0000 | (mant << 13))
        }
        return Float(bitPattern: sign | UInt32(exp - 15 + 127) << 23 | (mant << 13))
    }
}

/// The elements `range` of the data (element indices) as Doubles.
func npyDoubles(_ b: [UInt8], _ h: NPYHeader, range: Range<Int>? = nil) -> [Double] {
    let r = range ?? 0..<h.count
    return b.withUnsafeBytes { raw -> [Double] in
        guard let base = raw.baseAddress else { return [] }
        let p = base + h.dataOffset
        let t = h.dtype
        if t.kind == .float && t.size == 8 && !t.bigEndian {
            return [Double](unsafeUninitializedCapacity: r.count) { buf, n in
                if r.count > 0 { memcpy(buf.baseAddress!, p + r.lowerBound * 8, r.count * 8) }
                n = r.count
            }
        }
        var out = [Double]()
        out.reserveCapacity(r.count)
        for i in r { out.append(element(p, i, t)) }
        return out
    }
}

/// The elements `range` as Floats (float32 data copied directly).
func npyFloats(_ b: [UInt8], _ h: NPYHeader, range: Range<Int>? = nil) -> [Float] {
    let r = range ?? 0..<h.count
    return b.withUnsafeBytes { raw -> [Float] in
        guard let base = raw.baseAddress else { return [] }
        let p = base + h.dataOffset
        let t = h.dtype
        if t.kind == .float && t.size == 4 && !t.bigEndian {
            return [Float](unsafeUninitializedCapacity: r.count) { buf, n in
                if r.count > 0 { memcpy(buf.baseAddress!, p + r.lowerBound * 4, r.count * 4) }
                n = r.count
            }
        }
        var out = [Float]()
        out.reserveCapacity(r.count)
        for i in r { out.append(Float(element(p, i, t))) }
        return out
    }
}

/// The index of the first NaN or infinity among elements `range`, if any (only float types can hold one).
func npyFirstNonFinite(_ b: [UInt8], _ h: NPYHeader, range: Range<Int>? = nil) -> Int? {
    guard h.dtype.isFloat else { return nil }
    let r = range ?? 0..<h.count
    return b.withUnsafeBytes { raw -> Int? in
        guard let base = raw.baseAddress else { return nil }
        let p = base + h.dataOffset
        for i in r where !element(p, i, h.dtype).isFinite { return i }
        return nil
    }
}

/// Element `i` as a Double.
func npyElement(_ b: [UInt8], _ h: NPYHeader, _ i: Int) -> Double {
    b.withUnsafeBytes { raw in element(raw.baseAddress! + h.dataOffset, i, h.dtype) }
}

/// Parses a whole .npy file into an NPYArray.
func parseNPY(_ b: [UInt8]) throws(ParseFailure) -> NPYArray {
    let h = try parseNPYHeader(b)
    return NPYArray(shape: h.shape, values: npyDoubles(b, h), isFloat64: h.dtype.kind == .float && h.dtype.size == 8)
}

// MARK: - Writing

/// The bytes of an .npy file (version 1.0, or 2.0 when the header needs it), as numpy.save writes them.
func encodeNPY(shape: [Int], float64: Bool, values: [Double]) throws(ParseFailure) -> [UInt8] {
    guard let count = checkedProduct(shape) else { throw ParseFailure("the shape \(pythonShape(shape)) is invalid") }
    if count != values.count {
        throw ParseFailure("the shape \(pythonShape(shape)) holds \(count) values, but \(values.count) were given")
    }
    let shapeText = shape.isEmpty ? "()" : pythonShape(shape)
    var dict = "{'descr': '\(float64 ? "<f8" : "<f4")', 'fortran_order': False, 'shape': \(shapeText), }"
    // numpy pads the header with spaces so that the data starts on a 64-byte boundary, and ends it with '\n'.
    var version: UInt8 = 1
    var prefixLen = 10
    if dict.utf8.count + 1 + prefixLen > 65535 + 10 { version = 2; prefixLen = 12 }
    let total = prefixLen + dict.utf8.count + 1
    let padded = (total + 63) / 64 * 64
    dict += String(repeating: " ", count: padded - total) + "\n"
    let headerLen = dict.utf8.count
    var out = npyMagic
    out += [version, 0]
    if version == 1 {
        out += [UInt8(headerLen & 0xFF), UInt8(headerLen >> 8)]
    } else {
        out += [UInt8(headerLen & 0xFF), UInt8((headerLen >> 8) & 0xFF), UInt8((headerLen >> 16) & 0xFF), UInt8(headerLen >> 24)]
    }
    out += Array(dict.utf8)
    out.reserveCapacity(out.count + values.count * (float64 ? 8 : 4))
    if float64 {
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out += $0 } }
    } else {
        for v in values { withUnsafeBytes(of: Float(v).bitPattern.littleEndian) { out += $0 } }
    }
    return out
}

/// Reads an .npy file (v1–v3; float16/32/64, int8–64, uint8–64, bool; C order).
public func readNPY(path: String) throws -> NPYArray {
    let file = try loadFile(path: path)
    do { return try parseNPY(file.bytes) } catch { throw file.error(error) }
}

/// Writes an .npy file (as numpy.save does), atomically: a temporary file in the same directory, then a rename.
public func writeNPY(path: String, shape: [Int], float64: Bool, values: [Double]) throws {
    let bytes: [UInt8]
    do { bytes = try encodeNPY(shape: shape, float64: float64, values: values) } catch {
        throw DataError(path: path, message: error.message)
    }
    try writeFileAtomically(path: path, bytes: bytes)
}

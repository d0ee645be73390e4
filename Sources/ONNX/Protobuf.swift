/// The protobuf wire format, by hand: enough to read and write ONNX's messages without a package.
///
/// A message is a run of fields, each a tag (`field << 3 | wire type`) and a value: a varint (0),
/// 8 bytes (1), a length and that many bytes (2), or 4 bytes (5). Readers take fields in any order
/// and skip the ones they do not know by their wire type.

/// A malformed message, at a byte offset of the file.
public struct ProtobufError: Error, Sendable, Equatable {
    /// Where in the file.
    public var offset: Int
    /// What is wrong there.
    public var message: String
}

enum WireType: Int {
    case varint = 0, fixed64 = 1, lengthDelimited = 2, fixed32 = 5
}

/// Reads the fields of one message: the bytes of `range` in the whole file's `bytes` (offsets in
/// errors are the file's). Every length is checked against what is left, so a lying length is an
/// error, never an allocation.
struct ProtoReader {
    let bytes: [UInt8]
    var position: Int
    let end: Int

    init(_ bytes: [UInt8], _ range: Range<Int>) {
        self.bytes = bytes
        self.position = range.lowerBound
        self.end = range.upperBound
    }

    init(_ bytes: [UInt8]) { self.init(bytes, 0..<bytes.count) }

    func error(_ message: String, at offset: Int? = nil) -> ProtobufError {
        ProtobufError(offset: offset ?? position, message: message)
    }

    /// The next field's number and wire type, or nil at the end of the message.
    mutating func nextField() throws(ProtobufError) -> (number: Int, wire: WireType)? {
        guard position < end else { return nil }
        let start = position
        let tag = try varint()
        guard let wire = WireType(rawValue: Int(tag & 7)) else {
            throw error("unsupported wire type \(tag & 7) in tag \(tag)", at: start)
        }
        let number = tag >> 3
        guard number >= 1, number <= 536_870_911 else { throw error("invalid field number \(number)", at: start) }
        return (Int(number), wire)
    }

    mutating func varint() throws(ProtobufError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        let start = position
        while true {
            guard position < end else { throw error("truncated varint", at: start) }
            let byte = bytes[position]
            position += 1
            guard shift < 64 else { throw error("varint longer than 10 bytes", at: start) }
            result |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
    }

    /// A varint read as a signed 64-bit integer (protobuf's int64/int32: two's complement).
    mutating func int64() throws(ProtobufError) -> Int64 { Int64(bitPattern: try varint()) }

    mutating func fixed32() throws(ProtobufError) -> UInt32 {
        guard end - position >= 4 else { throw error("truncated 4-byte value") }
        var value: UInt32 = 0
        for k in 0..<4 { value |= UInt32(bytes[position + k]) << (8 * UInt32(k)) }
        position += 4
        return value
    }

    mutating func fixed64() throws(ProtobufError) -> UInt64 {
        guard end - position >= 8 else { throw error("truncated 8-byte value") }
        var value: UInt64 = 0
        for k in 0..<8 { value |= UInt64(bytes[position + k]) << (8 * UInt64(k)) }
        position += 8
        return value
    }

    /// The byte range of a length-delimited value.
    mutating func lengthDelimited() throws(ProtobufError) -> Range<Int> {
        let start = position
        let length = try varint()
        guard length <= UInt64(end - position) else {
            throw error("length \(length) runs past the end of its message (\(end - position) bytes left)", at: start)
        }
        let range = position..<(position + Int(length))
        position = range.upperBound
        return range
    }

    mutating func string() throws(ProtobufError) -> String {
        let range = try lengthDelimited()
        return String(decoding: bytes[range], as: UTF8.self)
    }

    mutating func message() throws(ProtobufError) -> ProtoReader {
        ProtoReader(bytes, try lengthDelimited())
    }

    /// Skips a field this reader does not use.
    mutating func skip(_ wire: WireType) throws(ProtobufError) {
        switch wire {
        case .varint: _ = try varint()
        case .fixed64: _ = try fixed64()
        case .fixed32: _ = try fixed32()
        case .lengthDelimited: _ = try lengthDelimited()
        }
    }

    /// A repeated integer field: one varint, or (packed) a length-delimited run of them.
    mutating func appendInts(_ wire: WireType, to values: inout [Int64]) throws(ProtobufError) {
        switch wire {
        case .varint: values.append(try int64())
        case .lengthDelimited:
            var packed = ProtoReader(bytes, try lengthDelimited())
            while packed.position < packed.end { values.append(try packed.int64()) }
        case .fixed32, .fixed64: throw error("an integer field with wire type \(wire.rawValue)")
        }
    }

    /// A repeated float field: one fixed32, or a packed run of them.
    mutating func appendFloats(_ wire: WireType, to values: inout [Float]) throws(ProtobufError) {
        try appendFixed(wire, .fixed32, "float", to: &values) { reader throws(ProtobufError) in Float(bitPattern: try reader.fixed32()) }
    }

    /// A repeated double field: one fixed64, or a packed run of them.
    mutating func appendDoubles(_ wire: WireType, to values: inout [Double]) throws(ProtobufError) {
        try appendFixed(wire, .fixed64, "double", to: &values) { reader throws(ProtobufError) in Double(bitPattern: try reader.fixed64()) }
    }

    /// A repeated fixed-width field: one value of wire type `single`, or a packed run of them.
    mutating func appendFixed<V>(_ wire: WireType, _ single: WireType, _ what: String, to values: inout [V],
                                 read: (inout ProtoReader) throws(ProtobufError) -> V) throws(ProtobufError) {
        let size = single == .fixed32 ? 4 : 8
        switch wire {
        case single: values.append(try read(&self))
        case .lengthDelimited:
            let range = try lengthDelimited()
            guard range.count % size == 0 else { throw error("packed \(what)s of \(range.count) bytes, not a multiple of \(size)", at: range.lowerBound) }
            var packed = ProtoReader(bytes, range)
            values.reserveCapacity(values.count + range.count / size)
            while packed.position < packed.end { values.append(try read(&packed)) }
        default: throw error("a \(what) field with wire type \(wire.rawValue)")
        }
    }
}

/// Writes one message's fields. Nested messages are written into their own writer first, then
/// added with their length.
struct ProtoWriter {
    var bytes: [UInt8] = []

    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7f) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func tag(_ field: Int, _ wire: WireType) { varint(UInt64(field << 3 | wire.rawValue)) }

    mutating func int(_ field: Int, _ value: Int64) {
        tag(field, .varint)
        varint(UInt64(bitPattern: value))
    }

    mutating func float(_ field: Int, _ value: Float) {
        tag(field, .fixed32)
        let bits = value.bitPattern
        for k in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt32(k)))) }
    }

    mutating func data(_ field: Int, _ value: [UInt8]) {
        tag(field, .lengthDelimited)
        varint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func string(_ field: Int, _ value: String) { data(field, Array(value.utf8)) }

    mutating func message(_ field: Int, _ nested: ProtoWriter) { data(field, nested.bytes) }

    /// A packed repeated integer field.
    mutating func packedInts(_ field: Int, _ values: [Int64]) {
        var packed = ProtoWriter()
        for value in values { packed.varint(UInt64(bitPattern: value)) }
        data(field, packed.bytes)
    }
}

/// ONNX's messages (onnx/onnx `onnx/onnx.proto`), the fields nnc reads and writes, with the field
/// numbers of the schema. Tensor data of every numeric type is kept as Double.

/// TensorProto.DataType values nnc reads.
public enum ONNXDataType: Int, Sendable {
    case float = 1, uint8 = 2, int8 = 3, uint16 = 4, int16 = 5, int32 = 6, int64 = 7, bool = 9, double = 11, uint32 = 12, uint64 = 13

    var byteSize: Int {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16: return 2
        case .float, .int32, .uint32: return 4
        case .int64, .double, .uint64: return 8
        }
    }

    var isFloatingPoint: Bool { self == .float || self == .double }
}

/// The most elements a tensor read from a file may declare (the same limit as nnc's tensors).
let maxONNXElements = 1 << 31

/// TensorProto: name (8), dims (1), data_type (2), and its values from raw_data (9) or the typed fields.
public struct ONNXTensor: Sendable, Equatable {
    /// The tensor's name (an initializer's is the value it defines).
    public var name: String
    /// Its shape.
    public var dims: [Int]
    /// Its element type.
    public var dataType: ONNXDataType
    /// Row-major values.
    public var values: [Double]

    /// A tensor of these values (row-major).
    public init(name: String, dims: [Int], dataType: ONNXDataType, values: [Double]) {
        self.name = name; self.dims = dims; self.dataType = dataType; self.values = values
    }

    /// Its element count.
    public var count: Int { dims.reduce(1, *) }
}

/// An attribute's value, by AttributeProto's type (20): f (2), i (3), s (4), t (5), floats (7), ints (8), strings (9).
public enum ONNXAttributeValue: Sendable, Equatable {
    case float(Double)
    case int(Int64)
    case string(String)
    case tensor(ONNXTensor)
    case floats([Double])
    case ints([Int64])
    case strings([String])
    /// A type nnc does not use (graphs, sparse tensors, type protos).
    case other(Int)
}

/// AttributeProto: a node's named setting.
public struct ONNXAttribute: Sendable, Equatable {
    /// Its name (1).
    public var name: String
    /// Its value.
    public var value: ONNXAttributeValue
}

/// NodeProto: one op of the graph.
public struct ONNXNode: Sendable, Equatable {
    /// The values it reads (1); an empty name is an absent optional input.
    public var inputs: [String] = []
    /// The values it defines (2).
    public var outputs: [String] = []
    /// Its name (3), for messages.
    public var name = ""
    /// The op (4): `Conv`, `Gemm`, ….
    public var opType = ""
    /// The op's domain (7); empty for the default `ai.onnx`.
    public var domain = ""
    /// Its attributes (5).
    public var attributes: [ONNXAttribute] = []
    /// Where the node starts in the file.
    public var offset = 0

    /// The value of the attribute with this name, if given.
    public func attribute(_ name: String) -> ONNXAttributeValue? { attributes.first { $0.name == name }?.value }
}

/// One dimension of a value's shape: a size (dim_value), a symbol (dim_param, the batch `N`), or neither.
public enum ONNXDimension: Sendable, Equatable {
    case value(Int)
    case parameter(String)
    case unknown
}

/// ValueInfoProto: a graph input's or output's name, element type and shape.
public struct ONNXValueInfo: Sendable, Equatable {
    /// Its name (1).
    public var name: String
    /// TensorProto.DataType of its elements, if given.
    public var elementType: Int?
    /// nil: no shape given.
    public var dims: [ONNXDimension]?
}

/// GraphProto: nodes (1) in topological order, name (2), initializers (5), doc string (10), inputs (11), outputs (12).
public struct ONNXGraph: Sendable, Equatable {
    /// The graph's name.
    public var name = ""
    /// Its ops, each after the ops that define its inputs.
    public var nodes: [ONNXNode] = []
    /// Constant tensors (weights).
    public var initializers: [ONNXTensor] = []
    /// Its inputs (before IR 4 also listing the initializers).
    public var inputs: [ONNXValueInfo] = []
    /// Its outputs.
    public var outputs: [ONNXValueInfo] = []
    /// Its documentation.
    public var docString = ""
}

/// OperatorSetIdProto: an operator set the model uses and its version.
public struct ONNXOpset: Sendable, Equatable {
    /// The domain (1); empty or `ai.onnx` for the default set.
    public var domain: String
    /// The version (2).
    public var version: Int
}

/// ModelProto: the file.
public struct ONNXModel: Sendable, Equatable {
    /// The IR version (1).
    public var irVersion = 0
    /// The tool that wrote it (2).
    public var producerName = ""
    /// That tool's version (3).
    public var producerVersion = ""
    /// Its documentation (6); nnc's exports hold the model source.
    public var docString = ""
    /// The graph (7).
    public var graph = ONNXGraph()
    /// The operator sets it imports (8).
    public var opsets: [ONNXOpset] = []

    /// The version of the default (`ai.onnx`) operator set.
    public var defaultOpset: Int? { opsets.first { $0.domain == "" || $0.domain == "ai.onnx" }?.version }
}

// MARK: - Reading

extension ONNXModel {
    /// Decodes a model file's bytes.
    public init(bytes: [UInt8]) throws(ProtobufError) {
        var reader = ProtoReader(bytes)
        var sawGraph = false
        while let (field, wire) = try reader.nextField() {
            switch (field, wire) {
            case (1, .varint): irVersion = Int(clamping: try reader.int64())
            case (2, .lengthDelimited): producerName = try reader.string()
            case (3, .lengthDelimited): producerVersion = try reader.string()
            case (6, .lengthDelimited): docString = try reader.string()
            case (7, .lengthDelimited):
                var nested = try reader.message()
                graph = try ONNXGraph(&nested)
                sawGraph = true
            case (8, .lengthDelimited):
                var nested = try reader.message()
                var opset = ONNXOpset(domain: "", version: 0)
                while let (f, w) = try nested.nextField() {
                    switch (f, w) {
                    case (1, .lengthDelimited): opset.domain = try nested.string()
                    case (2, .varint): opset.version = Int(clamping: try nested.int64())
                    default: try nested.skip(w)
                    }
                }
                opsets.append(opset)
            default: try reader.skip(wire)
            }
        }
        guard sawGraph else { throw ProtobufError(offset: 0, message: "not an ONNX model: no graph (field 7) in \(bytes.count) bytes") }
    }
}

extension ONNXGraph {
    init(_ reader: inout ProtoReader) throws(ProtobufError) {
        while let (field, wire) = try reader.nextField() {
            switch (field, wire) {
            case (1, .lengthDelimited):
                var nested = try reader.message()
                nodes.append(try ONNXNode(&nested))
            case (2, .lengthDelimited): name = try reader.string()
            case (5, .lengthDelimited):
                var nested = try reader.message()
                initializers.append(try ONNXTensor(&nested))
            case (10, .lengthDelimited): docString = try reader.string()
            case (11, .lengthDelimited):
                var nested = try reader.message()
                inputs.append(try ONNXValueInfo(&nested))
            case (12, .lengthDelimited):
                var nested = try reader.message()
                outputs.append(try ONNXValueInfo(&nested))
            default: try reader.skip(wire)
            }
        }
    }
}

extension ONNXNode {
    init(_ reader: inout ProtoReader) throws(ProtobufError) {
        offset = reader.position
        while let (field, wire) = try reader.nextField() {
            switch (field, wire) {
            case (1, .lengthDelimited): inputs.append(try reader.string())
            case (2, .lengthDelimited): outputs.append(try reader.string())
            case (3, .lengthDelimited): name = try reader.string()
            case (4, .lengthDelimited): opType = try reader.string()
            case (5, .lengthDelimited):
                var nested = try reader.message()
                attributes.append(try ONNXAttribute(&nested))
            case (7, .lengthDelimited): domain = try reader.string()
            default: try reader.skip(wire)
            }
        }
    }
}

extension ONNXAttribute {
    init(_ reader: inout ProtoReader) throws(ProtobufError) {
        name = ""
        var type = 0
        var f: Double?, i: Int64?, s: String?, t: ONNXTensor?
        var floats: [Float] = [], ints: [Int64] = [], strings: [String] = []
        while let (field, wire) = try reader.nextField() {
            switch (field, wire) {
            case (1, .lengthDelimited): name = try reader.string()
            case (2, .fixed32): f = Double(Float(bitPattern: try reader.fixed32()))
            case (3, .varint): i = try reader.int64()
            case (4, .lengthDelimited): s = try reader.string()
            case (5, .lengthDelimited):
                var nested = try reader.message()
                t = try ONNXTensor(&nested)
            case (7, .fixed32), (7, .lengthDelimited): try reader.appendFloats(wire, to: &floats)
            case (8, .varint), (8, .lengthDelimited): try reader.appendInts(wire, to: &ints)
            case (9, .lengthDelimited): strings.append(try reader.string())
            case (20, .varint): type = Int(clamping: try reader.int64())
            default: try reader.skip(wire)
            }
        }
        // The type field (IR ≥ 2) says which value is meant; older files leave it out.
        switch type {
        case 1: value = .float(f ?? 0)
        case 2: value = .int(i ?? 0)
        case 3: value = .string(s ?? "")
        case 4:
            guard let t else { throw reader.error("attribute '\(name)' of type TENSOR has no tensor") }
            value = .tensor(t)
        case 6: value = .floats(floats.map(Double.init))
        case 7: value = .ints(ints)
        case 8: value = .strings(strings)
        case 0:
            if let f { value = .float(f) } else if let i { value = .int(i) } else if let s { value = .string(s) }
            else if let t { value = .tensor(t) } else if !floats.isEmpty { value = .floats(floats.map(Double.init)) }
            else if !strings.isEmpty { value = .strings(strings) } else { value = .ints(ints) }
        default: value = .other(type)
        }
    }
}

extension ONNXValueInfo {
    init(_ reader: inout ProtoReader) throws(ProtobufError) {
        name = ""
        while let (field, wire) = try reader.nextField() {
            switch (field, wire) {
            case (1, .lengthDelimited): name = try reader.string()
            case (2, .lengthDelimited):
                // TypeProto.tensor_type (1) → elem_type (1), shape (2) → dim (1) → dim_value (1) | dim_param (2)
                var type = try reader.message()
                while let (f, w) = try type.nextField() {
                    guard f == 1, w == .lengthDelimited else { try type.skip(w); continue }
                    var tensor = try type.message()
                    while let (g, x) = try tensor.nextField() {
                        switch (g, x) {
                        case (1, .varint): elementType = Int(clamping: try tensor.int64())
                        case (2, .lengthDelimited):
                            var shape = try tensor.message()
                            var dims: [ONNXDimension] = []
                            while let (h, y) = try shape.nextField() {
                                guard h == 1, y == .lengthDelimited else { try shape.skip(y); continue }
                                var dimension = try shape.message()
                                var dim = ONNXDimension.unknown
                                while let (k, z) = try dimension.nextField() {
                                    switch (k, z) {
                                    case (1, .varint): dim = .value(Int(clamping: try dimension.int64()))
                                    case (2, .lengthDelimited): dim = .parameter(try dimension.string())
                                    default: try dimension.skip(z)
                                    }
                                }
                                dims.append(dim)
                            }
                            self.dims = dims
                        default: try tensor.skip(x)
                        }
                    }
                }
            default: try reader.skip(wire)
            }
        }
    }
}

extension ONNXTensor {
    /// Decodes a TensorProto. Its declared size is checked against the data it carries before any
    /// value is converted.
    init(_ reader: inout ProtoReader) throws(ProtobufError) {
        let start = reader.position
        name = ""
        dims = []
        var type = 0
        var raw: Range<Int>?
        var floats: [Float] = [], doubles: [Double] = [], int64s: [Int64] = [], int32s: [Int64] = []
        var external = false
        while let (field, wire) = try reader.nextField() {
            switch (field, wire) {
            case (1, .varint), (1, .lengthDelimited):
                var d: [Int64] = []
                try reader.appendInts(wire, to: &d)
                for value in d {
                    guard value >= 0, value <= Int64(maxONNXElements) else { throw reader.error("tensor dimension \(value) out of range", at: start) }
                    dims.append(Int(value))
                }
            case (2, .varint): type = Int(clamping: try reader.int64())
            case (4, _): try reader.appendFloats(wire, to: &floats)
            case (5, .varint), (5, .lengthDelimited): try reader.appendInts(wire, to: &int32s)
            case (7, .varint), (7, .lengthDelimited): try reader.appendInts(wire, to: &int64s)
            case (8, .lengthDelimited): name = try reader.string()
            case (9, .lengthDelimited): raw = try reader.lengthDelimited()
            case (10, _): try reader.appendDoubles(wire, to: &doubles)
            case (11, .varint), (11, .lengthDelimited): try reader.appendInts(wire, to: &int64s)
            case (14, .varint): external = try reader.varint() == 1
            default: try reader.skip(wire)
            }
        }
        let label = name.isEmpty ? "a tensor" : "tensor '\(name)'"
        if external { throw reader.error("\(label) keeps its data in an external file, which nnc does not read", at: start) }
        guard let dataType = ONNXDataType(rawValue: type) else {
            throw reader.error("\(label) has data type \(type), which nnc does not read (float, double and integers only)", at: start)
        }
        self.dataType = dataType
        var count = 1
        for d in dims {
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow, product <= maxONNXElements else { throw reader.error("\(label) declares more than 2^31 elements", at: start) }
            count = product
        }
        let bytes = reader.bytes
        if let raw {
            guard raw.count == count * dataType.byteSize else {
                throw reader.error("\(label) declares \(count) elements of \(dataType.byteSize) bytes, but its raw_data has \(raw.count) bytes", at: raw.lowerBound)
            }
            values = ONNXTensor.decodeRaw(bytes, raw, dataType, count)
            return
        }
        let typed: [Double]
        switch dataType {
        case .float: typed = floats.map(Double.init)
        case .double: typed = doubles
        case .int64, .uint32, .uint64: typed = int64s.map { dataType == .uint64 ? Double(UInt64(bitPattern: $0)) : Double($0) }
        case .int32, .int16, .int8, .uint16, .uint8, .bool: typed = int32s.map(Double.init)
        }
        guard typed.count == count else {
            throw reader.error("\(label) declares \(count) elements (dims \(dims)), but carries \(typed.count) values", at: start)
        }
        values = typed
    }

    static func decodeRaw(_ bytes: [UInt8], _ range: Range<Int>, _ type: ONNXDataType, _ count: Int) -> [Double] {
        var values = [Double](repeating: 0, count: count)
        let base = range.lowerBound
        func word(_ index: Int, _ size: Int) -> UInt64 {
            var value: UInt64 = 0
            for k in 0..<size { value |= UInt64(bytes[base + index * size + k]) << (8 * UInt64(k)) }
            return value
        }
        for index in 0..<count {
            switch type {
            case .float: values[index] = Double(Float(bitPattern: UInt32(word(index, 4))))
            case .double: values[index] = Double(bitPattern: word(index, 8))
            case .int64: values[index] = Double(Int64(bitPattern: word(index, 8)))
            case .uint64: values[index] = Double(word(index, 8))
            case .int32: values[index] = Double(Int32(bitPattern: UInt32(word(index, 4))))
            case .uint32: values[index] = Double(UInt32(word(index, 4)))
            case .int16: values[index] = Double(Int16(bitPattern: UInt16(word(index, 2))))
            case .uint16: values[index] = Double(UInt16(word(index, 2)))
            case .int8: values[index] = Double(Int8(bitPattern: UInt8(word(index, 1))))
            case .uint8, .bool: values[index] = Double(word(index, 1))
            }
        }
        return values
    }

    /// Reads a bare TensorProto file (the backend tests' `input_0.pb`).
    public init(bytes: [UInt8]) throws(ProtobufError) {
        var reader = ProtoReader(bytes)
        try self.init(&reader)
    }
}

// MARK: - Writing

extension ONNXTensor {
    /// FLOAT or DOUBLE tensors as raw_data, little-endian; INT64 as raw_data too.
    func encoded() -> ProtoWriter {
        var w = ProtoWriter()
        for d in dims { w.int(1, Int64(d)) }
        w.int(2, Int64(dataType.rawValue))
        w.string(8, name)
        var raw: [UInt8] = []
        raw.reserveCapacity(values.count * dataType.byteSize)
        for value in values {
            let bits: UInt64
            switch dataType {
            case .double: bits = value.bitPattern
            case .float: bits = UInt64(Float(value).bitPattern)
            default: bits = UInt64(bitPattern: Int64(value))
            }
            for k in 0..<dataType.byteSize { raw.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt64(k)))) }
        }
        w.data(9, raw)
        return w
    }
}

extension ONNXAttribute {
    func encoded() -> ProtoWriter {
        var w = ProtoWriter()
        w.string(1, name)
        switch value {
        case .float(let f): w.float(2, Float(f)); w.int(20, 1)
        case .int(let i): w.int(3, i); w.int(20, 2)
        case .string(let s): w.string(4, s); w.int(20, 3)
        case .tensor(let t): w.message(5, t.encoded()); w.int(20, 4)
        case .floats(let fs): for f in fs { w.float(7, Float(f)) }; w.int(20, 6)
        case .ints(let values): for i in values { w.int(8, i) }; w.int(20, 7)
        case .strings(let ss): for s in ss { w.string(9, s) }; w.int(20, 8)
        case .other: break
        }
        return w
    }
}

extension ONNXNode {
    func encoded() -> ProtoWriter {
        var w = ProtoWriter()
        for input in inputs { w.string(1, input) }
        for output in outputs { w.string(2, output) }
        if !name.isEmpty { w.string(3, name) }
        w.string(4, opType)
        for attribute in attributes { w.message(5, attribute.encoded()) }
        if !domain.isEmpty { w.string(7, domain) }
        return w
    }
}

extension ONNXValueInfo {
    func encoded() -> ProtoWriter {
        var shape = ProtoWriter()
        for dim in dims ?? [] {
            var d = ProtoWriter()
            switch dim {
            case .value(let v): d.int(1, Int64(v))
            case .parameter(let p): d.string(2, p)
            case .unknown: break
            }
            shape.message(1, d)
        }
        var tensor = ProtoWriter()
        tensor.int(1, Int64(elementType ?? 1))
        if dims != nil { tensor.message(2, shape) }
        var type = ProtoWriter()
        type.message(1, tensor)
        var w = ProtoWriter()
        w.string(1, name)
        w.message(2, type)
        return w
    }
}

extension ONNXModel {
    /// The model's bytes, as an `.onnx` file holds them.
    public func encoded() -> [UInt8] {
        var g = ProtoWriter()
        for node in graph.nodes { g.message(1, node.encoded()) }
        g.string(2, graph.name)
        for tensor in graph.initializers { g.message(5, tensor.encoded()) }
        if !graph.docString.isEmpty { g.string(10, graph.docString) }
        for input in graph.inputs { g.message(11, input.encoded()) }
        for output in graph.outputs { g.message(12, output.encoded()) }
        var w = ProtoWriter()
        w.int(1, Int64(irVersion))
        w.string(2, producerName)
        w.string(3, producerVersion)
        if !docString.isEmpty { w.string(6, docString) }
        w.message(7, g)
        for opset in opsets {
            var o = ProtoWriter()
            o.string(1, opset.domain)
            o.int(2, Int64(opset.version))
            w.message(8, o)
        }
        return w.bytes
    }
}

import Foundation
import IR
import Parser

/// An ONNX graph as an nnc model: the `.nn` source it is equivalent to, and its weights under the
/// names lowering gives them (`fc1.weight` as [in, out], `conv1.weight` as [O, C/G, KH, KW],
/// `bn1.running_mean`, …).
public struct ImportedModel: Sendable {
    /// The `.nn` source.
    public var source: String
    /// f64 for a DOUBLE graph, else f32.
    public var dtype: DType
    /// The parameters, by lowering's names and layouts.
    public var parameters: [Checkpoint.Tensor]
    /// Running statistics of batch norms.
    public var persistentState: [Checkpoint.Tensor]
    /// The graph output's shape after the batch dimension, as ONNX has it (nnc's own output holds
    /// the same values in the same order, perhaps under another shape: [C] for [C,1,1]).
    public var outputDims: [Int]
}

/// Why a graph cannot be imported, in words.
public struct ImportError: Error, Sendable, CustomStringConvertible {
    /// What cannot be imported, naming the node, its op and opset.
    public var message: String
    public var description: String { message }
}

/// The ops `nnc import` reads, listed in its errors.
public let supportedONNXOps = [
    "Gemm", "MatMul", "Add (bias or residual)", "Conv (1-D, 2-D)", "MaxPool and AveragePool (1-D, 2-D, 3-D)", "GlobalAveragePool", "ReduceMean (spatial)",
    "BatchNormalization", "Relu", "LeakyRelu", "Elu", "Selu", "Softplus", "Tanh", "Sigmoid", "Clip", "Neg", "Abs", "Exp", "Softsign", "Mul and Div by a scalar", "Mul as x·sigmoid(x)", "Softmax", "LogSoftmax",
    "Pow (whole exponent)", "PRelu", "Pad (constant, reflect, edge)", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Transpose (of a weight)", "Constant", "Dropout", "Identity",
]

/// Translates a decoded ONNX model. The first dimension of the graph's input is the batch.
public func importONNX(_ model: ONNXModel) throws(ImportError) -> ImportedModel {
    var translator = try Translator(model)
    try translator.run()
    return translator.result()
}

/// The largest integer attribute or shape value the importer takes (2^30): products of two stay in range.
let maxAttribute = 1 << 30

/// The product of sizes, or nil beyond 2^31 (a lying shape).
func checkedProduct(_ dims: [Int]) -> Int? {
    var product = 1
    for d in dims {
        let (next, overflow) = product.multipliedReportingOverflow(by: d)
        guard !overflow, next <= maxONNXElements else { return nil }
        product = next
    }
    return product
}

/// The ONNX SELU constants (the op's attribute defaults), which PyTorch's SELU also uses.
private let seluAlpha = 1.67326319217681884765625, seluGamma = 1.05070102214813232421875

struct Translator {
    let model: ONNXModel
    let opset: Int
    var dtype = DType.f32

    /// A value of the nnc model: its per-sample dims, and the statement that makes it (-1: the input).
    struct NNValue {
        var dims: [Int]
        var producer: Int
        var needsName = false
    }
    /// An ONNX tensor that depends on the batch: the nnc value holding its data, and its own dims
    /// after the batch (the same elements in the same order).
    struct DataValue {
        var value: Int
        var dims: [Int]
    }
    struct Emitted {
        var text: String
        var output: Int
    }

    var nnValues: [NNValue] = []
    var data: [String: DataValue] = [:]
    var constants: [String: ONNXTensor] = [:]
    var statements: [Emitted] = []
    /// The nnc value the last statement left current.
    var current = 0
    /// How many nodes (and graph outputs) read each ONNX value.
    var uses: [String: Int] = [:]
    var parameters: [Checkpoint.Tensor] = []
    var persistentState: [Checkpoint.Tensor] = []
    var fcCount = 0, convCount = 0, bnCount = 0, preluCount = 0
    var inputLine = ""
    var outputName = ""

    init(_ model: ONNXModel) throws(ImportError) {
        self.model = model
        guard let opset = model.defaultOpset else { throw ImportError(message: "the model imports no version of the default operator set (ai.onnx)") }
        guard (1...23).contains(opset) else { throw ImportError(message: "operator set version \(opset) is not one nnc reads (1 to 23)") }
        self.opset = opset
        for tensor in model.graph.initializers { constants[tensor.name] = tensor }
        for node in model.graph.nodes { for input in node.inputs where !input.isEmpty { uses[input, default: 0] += 1 } }
        for output in model.graph.outputs { uses[output.name, default: 0] += 1 }
    }

    // MARK: The graph

    mutating func run() throws(ImportError) {
        let graph = model.graph
        let inputs = graph.inputs.filter { constants[$0.name] == nil }
        guard inputs.count == 1 else {
            throw ImportError(message: "the graph has \(inputs.count) inputs besides its initializers (\(inputs.map(\.name).joined(separator: ", "))); nnc models take one")
        }
        try defineInput(inputs[0])
        for node in recognizedPatterns(graph.nodes) { try translate(node) }
        guard graph.outputs.count == 1 else {
            throw ImportError(message: "the graph has \(graph.outputs.count) outputs (\(graph.outputs.map(\.name).joined(separator: ", "))); nnc models have one")
        }
        outputName = graph.outputs[0].name
        guard let output = data[outputName] else {
            throw ImportError(message: "the graph output '\(outputName)' is \(constants[outputName] != nil ? "a constant" : "never computed"); nnc models compute their output from the input")
        }
        if output.value != current { from(output.value) }
    }

    mutating func defineInput(_ input: ONNXValueInfo) throws(ImportError) {
        switch input.elementType {
        case 1?, nil: dtype = .f32
        case 11?: dtype = .f64
        case let type?: throw ImportError(message: "the graph input '\(input.name)' has element type \(type); nnc reads float (1) and double (11) inputs")
        }
        guard let dims = input.dims, dims.count >= 2 else {
            throw ImportError(message: "the graph input '\(input.name)' needs a shape of at least two dimensions (the batch first), found \(input.dims.map { "\($0.count)" } ?? "none")")
        }
        var sample: [Int] = []
        for (axis, dim) in dims.enumerated().dropFirst() {
            guard case .value(let size) = dim, size >= 1 else {
                throw ImportError(message: "the graph input '\(input.name)' has no fixed size on axis \(axis); nnc needs every dimension but the batch")
            }
            sample.append(size)
        }
        guard checkedProduct(sample) != nil else {
            throw ImportError(message: "the graph input '\(input.name)' has more than 2^31 elements per sample")
        }
        let nn = canonicalDims(sample)
        inputLine = "input " + nn.map(String.init).joined(separator: "x")
        nnValues.append(NNValue(dims: nn, producer: -1))
        data[input.name] = DataValue(value: 0, dims: sample)
        current = 0
    }

    /// How nnc holds a tensor of these per-sample dims: features [F] for ONNX rank 2, an image
    /// [C, H, W] for rank 4; rank 3 as [C, L, 1] (1-D ops as 2-D ones of unit width, PyTorch's own
    /// lowering), higher ranks as [C, D·H…, W] (enough for per-channel and element-wise ops).
    func canonicalDims(_ dims: [Int]) -> [Int] {
        switch dims.count {
        case 0: return [1]
        case 1: return dims
        case 2: return dims + [1]
        case 3: return dims
        default: return [dims[0], dims.dropFirst().dropLast().reduce(1, *), dims[dims.count - 1]]
        }
    }

    // MARK: Emitting statements

    /// Adds a statement reading `input` (the current value unless `from` is needed) and making a new value.
    @discardableResult
    mutating func emit(_ text: String, reading input: Int, dims: [Int]) -> Int {
        if input != current { from(input) }
        nnValues.append(NNValue(dims: dims, producer: statements.count))
        let value = nnValues.count - 1
        statements.append(Emitted(text: text, output: value))
        current = value
        return value
    }

    mutating func from(_ value: Int) {
        nnValues[value].needsName = true
        statements.append(Emitted(text: "from \(name(value))", output: value))
        current = value
    }

    func name(_ value: Int) -> String { value == 0 ? "input" : "v\(value)" }

    /// The model's text: the input, then each statement with `as NAME` where a later one reads it.
    func result() -> ImportedModel {
        // Names from the file go into a comment: one line of printable characters.
        func printable(_ text: String) -> String {
            String(String.UnicodeScalarView(text.unicodeScalars.prefix(80).map { [.control, .lineSeparator, .paragraphSeparator].contains($0.properties.generalCategory) ? " " : $0 }))
        }
        let producer = model.producerName.isEmpty ? "unknown" : model.producerName + " " + model.producerVersion
        let inputName = data.first { $0.value.value == 0 }?.key ?? ""
        var lines = ["# imported from ONNX (producer \(printable(producer)), opset \(opset)); input: \(printable(inputName))", inputLine]
        for statement in statements {
            var line = statement.text
            let value = nnValues[statement.output]
            if value.needsName, value.producer >= 0, !line.hasPrefix("from ") { line += " as \(name(statement.output))" }
            lines.append(line)
        }
        return ImportedModel(source: lines.joined(separator: "\n") + "\n", dtype: dtype, parameters: parameters,
                             persistentState: persistentState, outputDims: data[outputName]?.dims ?? [])
    }

    /// Op sequences that are one activation: x / (|x| + 1) (PyTorch 0.3's Softsign) becomes a
    /// Softsign node, when its intermediate values have no other use.
    func recognizedPatterns(_ nodes: [ONNXNode]) -> [ONNXNode] {
        var producer: [String: Int] = [:]
        for (index, node) in nodes.enumerated() { for output in node.outputs { producer[output] = index } }
        func isOne(_ name: String) -> Bool {
            if let tensor = constants[name] { return tensor.values == [1] }
            guard let index = producer[name], nodes[index].opType == "Constant", case .tensor(let t)? = nodes[index].attribute("value") else { return false }
            return t.values == [1]
        }
        var removed = Set<Int>(), replaced: [Int: ONNXNode] = [:]
        for (index, node) in nodes.enumerated() where node.opType == "Div" && node.inputs.count == 2 {
            let x = node.inputs[0]
            guard let addIndex = producer[node.inputs[1]], nodes[addIndex].opType == "Add", nodes[addIndex].inputs.count == 2,
                  uses[node.inputs[1]] == 1 else { continue }
            let add = nodes[addIndex]
            let (absolute, one) = isOne(add.inputs[1]) ? (add.inputs[0], add.inputs[1]) : (add.inputs[1], add.inputs[0])
            guard isOne(one), let absIndex = producer[absolute], nodes[absIndex].opType == "Abs", nodes[absIndex].inputs == [x],
                  uses[absolute] == 1 else { continue }
            removed.formUnion([addIndex, absIndex])
            replaced[index] = ONNXNode(inputs: [x], outputs: node.outputs, name: node.name, opType: "Softsign", offset: node.offset)
        }
        return nodes.enumerated().compactMap { removed.contains($0.offset) ? nil : replaced[$0.offset] ?? $0.element }
    }

    // MARK: Nodes

    func unsupported(_ node: ONNXNode, _ why: String) -> ImportError {
        ImportError(message: "node \(node.name.isEmpty ? "#\(model.graph.nodes.firstIndex(of: node) ?? 0)" : "'\(node.name)'") (\(node.opType), opset \(opset)): \(why)")
    }

    func dataInput(_ node: ONNXNode, _ index: Int = 0) throws(ImportError) -> DataValue {
        guard index < node.inputs.count, let value = data[node.inputs[index]] else {
            let name = index < node.inputs.count ? node.inputs[index] : ""
            throw unsupported(node, constants[name] != nil ? "input \(index) '\(name)' is a constant where nnc needs a value computed from the model input"
                                                          : "input \(index) '\(name)' is not computed before it is used")
        }
        return value
    }

    func constant(_ node: ONNXNode, _ index: Int) throws(ImportError) -> ONNXTensor? {
        guard index < node.inputs.count, !node.inputs[index].isEmpty else { return nil }
        guard let tensor = constants[node.inputs[index]] else {
            throw unsupported(node, "input \(index) '\(node.inputs[index])' must be a constant (an initializer or a Constant node)")
        }
        return tensor
    }

    func int(_ node: ONNXNode, _ name: String, _ fallback: Int) throws(ImportError) -> Int {
        guard let value = node.attribute(name) else { return fallback }
        guard case .int(let i) = value, abs(i) <= Int64(maxAttribute) else { throw unsupported(node, "attribute '\(name)' must be an integer of at most 2^30 in size") }
        return Int(i)
    }

    /// A float attribute as the shortest decimal that is the same float (0.1, not 0.10000000149011612):
    /// attributes are float32, and the model source shows them as written.
    func float(_ node: ONNXNode, _ name: String, _ fallback: Double) throws(ImportError) -> Double {
        guard let value = node.attribute(name) else { return fallback }
        guard case .float(let f) = value, f.isFinite else { throw unsupported(node, "attribute '\(name)' must be a finite number") }
        return Double(Float(f).description) ?? f
    }

    func ints(_ node: ONNXNode, _ name: String) throws(ImportError) -> [Int]? {
        guard let value = node.attribute(name) else { return nil }
        guard case .ints(let values) = value else { throw unsupported(node, "attribute '\(name)' must be a list of integers") }
        var result: [Int] = []
        for v in values {
            guard abs(v) <= Int64(maxAttribute) else { throw unsupported(node, "attribute '\(name)' has the value \(v), out of range") }
            result.append(Int(v))
        }
        return result
    }

    /// A constant's values as integers (axes, shapes, pads, indices): whole numbers of at most 2^30 in size.
    func integers(_ node: ONNXNode, _ tensor: ONNXTensor) throws(ImportError) -> [Int] {
        var result: [Int] = []
        for value in tensor.values {
            guard value == value.rounded(), abs(value) <= Double(maxAttribute) else {
                throw unsupported(node, "the constant '\(tensor.name)' holds \(value) where a whole number of at most 2^30 in size belongs")
            }
            result.append(Int(value))
        }
        return result
    }

    /// The constant input `index` as integers, or nil when it is absent.
    func integerInput(_ node: ONNXNode, _ index: Int) throws(ImportError) -> [Int]? {
        guard let tensor = try constant(node, index) else { return nil }
        return try integers(node, tensor)
    }

    func string(_ node: ONNXNode, _ name: String) throws(ImportError) -> String? {
        guard let value = node.attribute(name) else { return nil }
        guard case .string(let s) = value else { throw unsupported(node, "attribute '\(name)' must be a string") }
        return s
    }

    /// A node's output stays below 2^31 elements per sample (a lying pad or kernel could make more).
    func checkSize(_ node: ONNXNode, _ dims: [Int]) throws(ImportError) {
        guard checkedProduct(dims) != nil else { throw unsupported(node, "its output \(dims) would have more than 2^31 elements per sample") }
    }

    /// Defines the node's first output as the value `value` with these ONNX dims.
    mutating func define(_ node: ONNXNode, _ value: Int, dims: [Int]) {
        if let output = node.outputs.first { data[output] = DataValue(value: value, dims: dims) }
    }

    mutating func translate(_ node: ONNXNode) throws(ImportError) {
        guard node.domain.isEmpty || node.domain == "ai.onnx" else { throw unsupported(node, "the operator domain '\(node.domain)' is not one nnc reads") }
        for extra in node.outputs.dropFirst() where (uses[extra] ?? 0) > 0 {
            throw unsupported(node, "its output '\(extra)' is used, and nnc computes only the first output of a \(node.opType)")
        }
        // Nodes on constants only (weight transposes, shape arithmetic) are folded.
        let dataInputs = node.inputs.filter { data[$0] != nil }
        if dataInputs.isEmpty, node.opType != "Constant" {
            try fold(node)
            return
        }
        switch node.opType {
        case "Constant": try constantNode(node)
        case "Identity", "Dropout":
            let x = try dataInput(node)
            if let output = node.outputs.first { data[output] = x }
        case "Flatten":
            let x = try dataInput(node)
            var axis = try int(node, "axis", 1)
            if axis < 0 { axis += x.dims.count + 1 }
            guard axis == 1 else { throw unsupported(node, "Flatten at axis \(axis) would mix the batch with the features; nnc flattens at axis 1") }
            define(node, x.value, dims: [x.dims.reduce(1, *)])
        case "Reshape": try reshape(node)
        case "Squeeze", "Unsqueeze": try squeeze(node)
        case "Gemm": try gemm(node)
        case "MatMul": try matmul(node)
        case "Conv": try conv(node)
        case "MaxPool", "AveragePool": try pool(node)
        case "GlobalAveragePool":
            let x = try dataInput(node)
            guard x.dims.count == 2 || x.dims.count == 3 else { throw unsupported(node, "nnc's globalavgpool takes [N, C, L] and [N, C, H, W] inputs, found rank \(x.dims.count + 1)") }
            let input = try image(node, x)
            let y = emit("globalavgpool", reading: input, dims: [x.dims[0]])
            define(node, y, dims: [x.dims[0]] + [Int](repeating: 1, count: x.dims.count - 1))
        case "ReduceMean":
            // The mean over every spatial axis is a global average pool (PyTorch's AdaptiveAvgPool2d(1)).
            let x = try dataInput(node)
            let rank = x.dims.count + 1
            let given: [Int]?
            if opset >= 18 { given = try integerInput(node, 1) } else { given = try ints(node, "axes") }
            let axes = Set((given ?? Array(0..<rank)).map { $0 < 0 ? $0 + rank : $0 })
            guard rank == 3 || rank == 4, axes == Set(2..<rank) else {
                throw unsupported(node, "nnc imports ReduceMean over the spatial axes of [N, C, …] (a global average pool), found axes \(given ?? [])")
            }
            let input = try image(node, x)
            let y = emit("globalavgpool", reading: input, dims: [x.dims[0]])
            define(node, y, dims: try int(node, "keepdims", 1) == 1 ? [x.dims[0]] + [Int](repeating: 1, count: rank - 2) : [x.dims[0]])
        case "BatchNormalization": try batchNorm(node)
        case "Relu": try activation(node, "relu")
        case "Tanh": try activation(node, "tanh")
        case "Sigmoid": try activation(node, "sigmoid")
        case "Softplus": try activation(node, "softplus")
        case "LeakyRelu":
            let alpha = try float(node, "alpha", 0.01)
            guard alpha >= 0, alpha < 1 else { throw unsupported(node, "nnc's leakyrelu slope is in [0, 1), found \(alpha)") }
            try activation(node, "leakyrelu \(formatNumber(alpha))")
        case "Elu":
            let alpha = try float(node, "alpha", 1)
            guard alpha >= 0 else { throw unsupported(node, "nnc's elu alpha is at least 0, found \(alpha)") }
            try activation(node, alpha == 1 ? "elu" : "elu \(formatNumber(alpha))")
        case "Selu":
            let alpha = try float(node, "alpha", seluAlpha), gamma = try float(node, "gamma", seluGamma)
            guard abs(alpha - seluAlpha) < 1e-6, abs(gamma - seluGamma) < 1e-6 else {
                throw unsupported(node, "nnc's selu has the standard constants (alpha \(seluAlpha), gamma \(seluGamma)), found \(alpha) and \(gamma)")
            }
            try activation(node, "selu")
        case "Pow":
            guard let exponent = try constant(node, 1), exponent.values.count == 1, let k = Int(exactly: exponent.values[0]), (1...64).contains(k) else {
                throw unsupported(node, "nnc's pow takes a constant whole exponent from 1 to 64")
            }
            try activation(node, "pow \(k)")
        case "Softmax", "LogSoftmax": try softmax(node)
        case "Add", "Sum": try add(node)
        case "PRelu": try prelu(node)
        case "Clip": try clip(node)
        case "Shape":
            // The shape as a constant for the shape arithmetic that follows (x.view(x.size(0), -1)),
            // the batch as 0: a Reshape copies it from there.
            let x = try dataInput(node)
            let full = [0] + x.dims
            var start = try int(node, "start", 0), end = try int(node, "end", full.count)
            if start < 0 { start += full.count }
            if end < 0 { end += full.count }
            start = min(max(start, 0), full.count); end = min(max(end, start), full.count)
            if let output = node.outputs.first {
                constants[output] = ONNXTensor(name: output, dims: [end - start], dataType: .int64, values: full[start..<end].map(Double.init))
            }
        case "Mul", "Div": try multiply(node)
        case "Neg": try activation(node, "neg")
        case "Abs": try activation(node, "abs")
        case "Exp": try activation(node, "exp")
        case "Softsign": try activation(node, "softsign")
        case "Pad": try pad(node)
        case "Concat": try concat(node)
        default:
            throw unsupported(node, "nnc does not import \(node.opType); it imports \(supportedONNXOps.joined(separator: ", "))")
        }
    }

    mutating func activation(_ node: ONNXNode, _ word: String) throws(ImportError) {
        let x = try dataInput(node)
        let y = emit(word, reading: x.value, dims: nnValues[x.value].dims)
        define(node, y, dims: x.dims)
    }

    /// The value in nnc's image layout for its ONNX dims, [C, H, W] (ONNX rank 3 and 4), with a
    /// `reshape` where it is held otherwise ([C] after globalavgpool, a flattened value).
    mutating func image(_ node: ONNXNode, _ x: DataValue) throws(ImportError) -> Int {
        reshaped(x.value, to: canonicalDims(x.dims))
    }

    /// The value under these per-sample dims (the same values in the same order).
    mutating func reshaped(_ value: Int, to dims: [Int]) -> Int {
        if nnValues[value].dims == dims { return value }
        return emit("reshape " + dims.map(String.init).joined(separator: "x"), reading: value, dims: dims)
    }

    /// The value as flat features, with a `flatten` where it is an image.
    mutating func flat(_ x: DataValue) -> Int {
        if nnValues[x.value].dims.count == 1 { return x.value }
        return emit("flatten", reading: x.value, dims: [x.dims.reduce(1, *)])
    }

    // MARK: Constants

    mutating func constantNode(_ node: ONNXNode) throws(ImportError) {
        guard let output = node.outputs.first else { return }
        if case .tensor(var tensor)? = node.attribute("value") {
            tensor.name = output
            constants[output] = tensor
        } else if case .float(let f)? = node.attribute("value_float") {
            constants[output] = ONNXTensor(name: output, dims: [], dataType: .float, values: [f])
        } else if case .floats(let fs)? = node.attribute("value_floats") {
            constants[output] = ONNXTensor(name: output, dims: [fs.count], dataType: .float, values: fs)
        } else if case .int(let i)? = node.attribute("value_int") {
            constants[output] = ONNXTensor(name: output, dims: [], dataType: .int64, values: [Double(i)])
        } else if case .ints(let values)? = node.attribute("value_ints") {
            constants[output] = ONNXTensor(name: output, dims: [values.count], dataType: .int64, values: values.map(Double.init))
        } else {
            throw unsupported(node, "a Constant needs a tensor, float or integer value")
        }
    }

    /// Evaluates a node whose inputs are all constants (PyTorch exports a weight's transpose, and
    /// shape arithmetic, so).
    mutating func fold(_ node: ONNXNode) throws(ImportError) {
        guard let output = node.outputs.first else { return }
        switch node.opType {
        case "Identity", "Dropout":
            guard let x = try constant(node, 0) else { return }
            constants[output] = x
        case "Transpose":
            guard let x = try constant(node, 0) else { return }
            let perm = try ints(node, "perm") ?? Array((0..<x.dims.count).reversed())
            guard perm.sorted() == Array(0..<x.dims.count) else { throw unsupported(node, "perm \(perm) is not a permutation of the \(x.dims.count) axes") }
            constants[output] = transposed(x, perm, name: output)
        case "Unsqueeze", "Squeeze", "Reshape", "Flatten":
            guard let x = try constant(node, 0) else { return }
            var y = x
            y.name = output
            y.dims = try reshapedConstantDims(node, x)
            constants[output] = y
        case "Cast":
            guard let x = try constant(node, 0) else { return }
            let to = try int(node, "to", 1)
            guard let type = ONNXDataType(rawValue: to) else { throw unsupported(node, "Cast to data type \(to)") }
            constants[output] = ONNXTensor(name: output, dims: x.dims, dataType: type, values: type.isFloatingPoint ? x.values : x.values.map { $0.rounded(.towardZero) })
        case "Gather":
            guard let x = try constant(node, 0), let indices = try constant(node, 1) else { return }
            let positions = try integers(node, indices)
            var axis = try int(node, "axis", 0)
            if axis < 0 { axis += x.dims.count }
            guard x.dims.indices.contains(axis) else { throw unsupported(node, "axis \(axis) out of range") }
            let outer = x.dims[..<axis].reduce(1, *), inner = x.dims[(axis + 1)...].reduce(1, *), size = x.dims[axis]
            var values: [Double] = []
            for o in 0..<outer {
                for index in positions {
                    let i = index < 0 ? index + size : index
                    guard (0..<size).contains(i) else { throw unsupported(node, "index \(index) out of range for \(size)") }
                    values.append(contentsOf: x.values[((o * size + i) * inner)..<((o * size + i + 1) * inner)])
                }
            }
            constants[output] = ONNXTensor(name: output, dims: Array(x.dims[..<axis]) + indices.dims + Array(x.dims[(axis + 1)...]), dataType: x.dataType, values: values)
        case "Concat":
            var parts: [ONNXTensor] = []
            for index in node.inputs.indices { if let part = try constant(node, index) { parts.append(part) } }
            guard let first = parts.first, parts.allSatisfy({ $0.dims.count == 1 }) else { throw unsupported(node, "nnc folds Concat of 1-D constants") }
            constants[output] = ONNXTensor(name: output, dims: [parts.reduce(0) { $0 + $1.values.count }], dataType: first.dataType, values: parts.flatMap(\.values))
        case "Slice":
            guard let x = try constant(node, 0), x.dims.count == 1 else { throw unsupported(node, "nnc folds Slice of 1-D constants") }
            let starts = try opset < 10 ? ints(node, "starts") : integerInput(node, 1)
            let ends = try opset < 10 ? ints(node, "ends") : integerInput(node, 2)
            let step = try opset < 10 ? 1 : (integerInput(node, 4)?.first ?? 1)
            guard var start = starts?.first, var end = ends?.first, step == 1 else { throw unsupported(node, "Slice needs one start and end, step 1") }
            let n = x.values.count
            if start < 0 { start += n }
            if end < 0 { end += n }
            start = min(max(start, 0), n); end = min(max(end, start), n)
            constants[output] = ONNXTensor(name: output, dims: [end - start], dataType: x.dataType, values: Array(x.values[start..<end]))
        case "Add", "Sub", "Mul", "Div":
            guard let a = try constant(node, 0), let b = try constant(node, 1) else { return }
            guard a.values.count == b.values.count || a.values.count == 1 || b.values.count == 1 else {
                throw unsupported(node, "nnc folds \(node.opType) of constants of the same size (or a scalar)")
            }
            let count = max(a.values.count, b.values.count)
            let integer = !a.dataType.isFloatingPoint
            let values = (0..<count).map { i -> Double in
                let (x, y) = (a.values[a.values.count == 1 ? 0 : i], b.values[b.values.count == 1 ? 0 : i])
                switch node.opType {
                case "Add": return x + y
                case "Sub": return x - y
                case "Mul": return x * y
                default: return integer ? (x / y).rounded(.down) : x / y
                }
            }
            constants[output] = ONNXTensor(name: output, dims: a.values.count >= b.values.count ? a.dims : b.dims, dataType: a.dataType, values: values)
        default:
            throw unsupported(node, "nnc folds Transpose, Reshape, Squeeze, Unsqueeze, Flatten, Cast, Gather, Concat, Slice, arithmetic and Identity of constants, not \(node.opType)")
        }
    }

    func transposed(_ x: ONNXTensor, _ perm: [Int], name: String) -> ONNXTensor {
        let dims = perm.map { x.dims[$0] }
        var strides = [Int](repeating: 1, count: x.dims.count)
        for axis in stride(from: x.dims.count - 2, through: 0, by: -1) { strides[axis] = strides[axis + 1] * x.dims[axis + 1] }
        var values = [Double](repeating: 0, count: x.values.count)
        var index = [Int](repeating: 0, count: dims.count)
        for flat in 0..<values.count {
            var source = 0
            for axis in 0..<dims.count { source += index[axis] * strides[perm[axis]] }
            values[flat] = x.values[source]
            var axis = dims.count - 1
            while axis >= 0 {
                index[axis] += 1
                if index[axis] < dims[axis] { break }
                index[axis] = 0
                axis -= 1
            }
        }
        return ONNXTensor(name: name, dims: dims, dataType: x.dataType, values: values)
    }

    func reshapedConstantDims(_ node: ONNXNode, _ x: ONNXTensor) throws(ImportError) -> [Int] {
        switch node.opType {
        case "Flatten":
            var axis = try int(node, "axis", 1)
            if axis < 0 { axis += x.dims.count }
            guard (0...x.dims.count).contains(axis) else { throw unsupported(node, "axis \(axis) out of range") }
            return [x.dims[..<axis].reduce(1, *), x.dims[axis...].reduce(1, *)]
        case "Reshape":
            return try resolveShape(node, try reshapeTarget(node), x.dims)
        default:
            return try squeezedDims(node, x.dims)
        }
    }

    // MARK: Shapes

    /// Squeeze/Unsqueeze's axes: an attribute before opset 13, an input from 13.
    func axes(_ node: ONNXNode) throws(ImportError) -> [Int]? {
        if opset >= 13 {
            guard let tensor = try constant(node, 1) else { return nil }
            return try integers(node, tensor)
        }
        return try ints(node, "axes")
    }

    /// Dims after a Squeeze or Unsqueeze (full dims, batch included when called on data).
    func squeezedDims(_ node: ONNXNode, _ dims: [Int]) throws(ImportError) -> [Int] {
        let axes = try self.axes(node)
        if node.opType == "Unsqueeze" {
            guard let axes else { throw unsupported(node, "Unsqueeze needs its axes") }
            let rank = dims.count + axes.count
            let normalized = axes.map { $0 < 0 ? $0 + rank : $0 }
            guard normalized.allSatisfy({ (0..<rank).contains($0) }), Set(normalized).count == normalized.count else { throw unsupported(node, "axes \(axes) out of range") }
            var result: [Int] = []
            var rest = dims.makeIterator()
            for axis in 0..<rank { result.append(normalized.contains(axis) ? 1 : (rest.next() ?? 1)) }
            return result
        }
        let normalized = (axes ?? dims.indices.filter { dims[$0] == 1 }).map { $0 < 0 ? $0 + dims.count : $0 }
        guard normalized.allSatisfy({ dims.indices.contains($0) && dims[$0] == 1 }) else { throw unsupported(node, "Squeeze axes \(axes ?? []) are not all of size 1") }
        return dims.indices.filter { !normalized.contains($0) }.map { dims[$0] }
    }

    func reshapeTarget(_ node: ONNXNode) throws(ImportError) -> [Int] {
        if opset < 5 {
            guard let shape = try ints(node, "shape") else { throw unsupported(node, "Reshape needs its shape") }
            return shape
        }
        guard let tensor = try constant(node, 1) else { throw unsupported(node, "Reshape needs its shape") }
        return try integers(node, tensor)
    }

    /// A Reshape's target with 0 (copy, unless allowzero) and −1 (the rest) resolved.
    func resolveShape(_ node: ONNXNode, _ target: [Int], _ dims: [Int]) throws(ImportError) -> [Int] {
        let total = dims.reduce(1, *)
        let allowZero = try int(node, "allowzero", 0) == 1
        var result: [Int] = []
        var inferred: Int?
        for (axis, size) in target.enumerated() {
            if size == 0, !allowZero {
                guard axis < dims.count else { throw unsupported(node, "shape \(target) copies axis \(axis), which the input lacks") }
                result.append(dims[axis])
            } else if size == -1 {
                guard inferred == nil else { throw unsupported(node, "shape \(target) has two −1") }
                inferred = axis
                result.append(1)
            } else if size >= 0 {
                result.append(size)
            } else {
                throw unsupported(node, "shape \(target) has a negative size")
            }
        }
        guard let known = checkedProduct(result) else { throw unsupported(node, "shape \(target) has more than 2^31 elements") }
        if let inferred {
            guard known > 0, total % known == 0 else { throw unsupported(node, "shape \(target) does not fit \(total) elements") }
            result[inferred] = total / known
        }
        guard checkedProduct(result) == total else { throw unsupported(node, "shape \(target) does not fit the input's \(dims) (\(total) elements)") }
        return result
    }

    mutating func reshape(_ node: ONNXNode) throws(ImportError) {
        let x = try dataInput(node)
        let target = try reshapeTarget(node)
        // The batch stays first: 0 copies it, −1 takes it when the rest is fixed, and a positive size
        // (an exporter's trace at one batch size) is read as the batch.
        guard let first = target.first, first >= -1 else { throw unsupported(node, "shape \(target) does not keep the batch first") }
        var rest = Array(target.dropFirst())
        if first == -1, rest.contains(-1) { throw unsupported(node, "shape \(target) leaves both the batch and a dimension open") }
        // 0 copies the input's size on that axis (axis k of the target is axis k − 1 of a sample).
        if try int(node, "allowzero", 0) == 0 {
            for (index, size) in rest.enumerated() where size == 0 {
                guard index < x.dims.count else { throw unsupported(node, "shape \(target) copies axis \(index + 1), which the input lacks") }
                rest[index] = x.dims[index]
            }
        }
        let dims = try resolveShape(node, rest, x.dims)
        define(node, x.value, dims: dims)
    }

    mutating func squeeze(_ node: ONNXNode) throws(ImportError) {
        let x = try dataInput(node)
        let full = try squeezedDims(node, [-1] + x.dims)
        guard full.first == -1 else { throw unsupported(node, "\(node.opType) would move the batch from the first axis") }
        define(node, x.value, dims: Array(full.dropFirst()))
    }

    // MARK: Layers

    mutating func addParameter(_ name: String, _ dims: [Int], _ values: [Double]) {
        parameters.append(Checkpoint.Tensor(name: name, shape: dims, values: values))
    }

    /// A bias of `count` values from a constant that broadcasts to [count] (scalar, [count], [1, count]).
    func bias(_ node: ONNXNode, _ tensor: ONNXTensor, count: Int, scale: Double = 1) throws(ImportError) -> [Double] {
        if tensor.values.count == count, tensor.dims.filter({ $0 != 1 }).count <= 1 { return tensor.values.map { $0 * scale } }
        if tensor.values.count == 1 { return [Double](repeating: tensor.values[0] * scale, count: count) }
        throw unsupported(node, "the bias has shape \(tensor.dims), which does not broadcast to [\(count)] per sample")
    }

    mutating func gemm(_ node: ONNXNode) throws(ImportError) {
        let x = try dataInput(node)
        guard x.dims.count == 1 else { throw unsupported(node, "Gemm takes a 2-D input, found rank \(x.dims.count + 1)") }
        guard try int(node, "transA", 0) == 0 else { throw unsupported(node, "transA = 1 would put the batch in the columns") }
        guard let b = try constant(node, 1), b.dims.count == 2 else { throw unsupported(node, "B must be a 2-D constant (the weight)") }
        let alpha = try float(node, "alpha", 1), beta = try float(node, "beta", 1)
        let transB = try int(node, "transB", 0) == 1
        let weight = transB ? transposed(b, [1, 0], name: b.name) : b
        let (inputs, outputs) = (weight.dims[0], weight.dims[1])
        guard inputs == x.dims[0] else { throw unsupported(node, "B has \(inputs) rows, but the input has \(x.dims[0]) features") }
        let c = try constant(node, 2)
        let biasValues = try c.map { (tensor: ONNXTensor) throws(ImportError) in try bias(node, tensor, count: outputs, scale: beta) }
        try dense(node, x, weight.values.map { $0 * alpha }, inputs: inputs, outputs: outputs, bias: biasValues)
    }

    mutating func matmul(_ node: ONNXNode) throws(ImportError) {
        let x = try dataInput(node)
        guard x.dims.count == 1 else { throw unsupported(node, "nnc imports MatMul of a 2-D input by a weight, found an input of rank \(x.dims.count + 1)") }
        guard let b = try constant(node, 1), b.dims.count == 2, b.dims[0] == x.dims[0] else {
            throw unsupported(node, "B must be a [\(x.dims[0]), M] constant (the weight)")
        }
        try dense(node, x, b.values, inputs: b.dims[0], outputs: b.dims[1], bias: nil)
    }

    /// `fc I->O`, with weight [I, O] (row-major) and an optional bias.
    mutating func dense(_ node: ONNXNode, _ x: DataValue, _ weight: [Double], inputs: Int, outputs: Int, bias: [Double]?) throws(ImportError) {
        let input = flat(x)
        fcCount += 1
        addParameter("fc\(fcCount).weight", [inputs, outputs], weight)
        if let bias { addParameter("fc\(fcCount).bias", [outputs], bias) }
        let y = emit("fc \(inputs)->\(outputs)\(bias == nil ? " nobias" : "")", reading: input, dims: [outputs])
        define(node, y, dims: [outputs])
    }

    /// Pads of a conv or pool on its spatial axes (begin = end, as nnc pads), from `pads` or `auto_pad`.
    func symmetricPads(_ node: ONNXNode, spatial: [Int], kernel: [Int], strides: [Int], dilations: [Int]) throws(ImportError) -> [Int] {
        let n = spatial.count
        let autoPad = try string(node, "auto_pad") ?? "NOTSET"
        var begin = [Int](repeating: 0, count: n), end = begin
        switch autoPad {
        case "NOTSET", "":
            if let pads = try ints(node, "pads") {
                guard pads.count == 2 * n, pads.allSatisfy({ $0 >= 0 }) else { throw unsupported(node, "pads \(pads) do not fit \(n) spatial axes") }
                begin = Array(pads[..<n]); end = Array(pads[n...])
            }
        case "VALID": break
        case "SAME_UPPER", "SAME_LOWER":
            for axis in 0..<n {
                let out = (spatial[axis] + strides[axis] - 1) / strides[axis]
                let total = max(0, (out - 1) * strides[axis] + (kernel[axis] - 1) * dilations[axis] + 1 - spatial[axis])
                begin[axis] = autoPad == "SAME_UPPER" ? total / 2 : total - total / 2
                end[axis] = total - begin[axis]
            }
        default: throw unsupported(node, "auto_pad '\(autoPad)' is not one ONNX defines")
        }
        guard begin == end else { throw unsupported(node, "pads \(begin) at the start and \(end) at the end differ; nnc pads both sides alike") }
        return begin
    }

    /// "A" or "AxB" for a 1-D (unit width) or 2-D window setting.
    func pair(_ values: [Int], unit: Int) -> String {
        let (h, w) = (values[0], values.count > 1 ? values[1] : unit)
        return h == w ? "\(h)" : "\(h)x\(w)"
    }

    mutating func conv(_ node: ONNXNode) throws(ImportError) {
        let x = try dataInput(node)
        guard x.dims.count == 2 || x.dims.count == 3 else { throw unsupported(node, "nnc imports 1-D and 2-D convolutions, found an input of rank \(x.dims.count + 1)") }
        let spatial = Array(x.dims.dropFirst())
        let n = spatial.count
        guard let w = try constant(node, 1), w.dims.count == n + 2 else { throw unsupported(node, "the weight must be a constant of rank \(n + 2)") }
        let kernel = try ints(node, "kernel_shape") ?? Array(w.dims.dropFirst(2))
        guard kernel == Array(w.dims.dropFirst(2)) else { throw unsupported(node, "kernel_shape \(kernel) differs from the weight's \(w.dims)") }
        let strides = try ints(node, "strides") ?? [Int](repeating: 1, count: n)
        let dilations = try ints(node, "dilations") ?? [Int](repeating: 1, count: n)
        guard strides.count == n, dilations.count == n, strides.allSatisfy({ $0 >= 1 }), dilations.allSatisfy({ $0 >= 1 }) else {
            throw unsupported(node, "strides \(strides) and dilations \(dilations) must be positive, one per spatial axis")
        }
        let pads = try symmetricPads(node, spatial: spatial, kernel: kernel, strides: strides, dilations: dilations)
        let groups = try int(node, "group", 1)
        let (channels, outputs) = (x.dims[0], w.dims[0])
        guard groups >= 1, channels % groups == 0, outputs % groups == 0, w.dims[1] == channels / groups else {
            throw unsupported(node, "group \(groups) does not fit \(channels) input channels and a weight of shape \(w.dims)")
        }
        let bias = try constant(node, 2).map { (tensor: ONNXTensor) throws(ImportError) in try self.bias(node, tensor, count: outputs) }
        let input = try image(node, x)
        var text = "conv \(channels)->\(outputs) \(kernel[0])x\(n > 1 ? kernel[1] : 1)"
        if strides.contains(where: { $0 != 1 }) { text += " stride \(pair(strides, unit: 1))" }
        if pads.contains(where: { $0 != 0 }) { text += " pad \(pair(pads, unit: 0))" }
        if dilations.contains(where: { $0 != 1 }) { text += " dilation \(pair(dilations, unit: 1))" }
        if groups != 1 { text += " groups \(groups)" }
        if bias == nil { text += " nobias" }
        var outDims = [outputs]
        for axis in 0..<n {
            guard let size = windowOutputSize(input: spatial[axis], window: kernel[axis], stride: strides[axis], padding: pads[axis], dilation: dilations[axis]) else {
                throw unsupported(node, "the kernel \(kernel) is larger than the padded input \(spatial)")
            }
            outDims.append(size)
        }
        convCount += 1
        addParameter("conv\(convCount).weight", [outputs, channels / groups, kernel[0], n > 1 ? kernel[1] : 1], w.values)
        if let bias { addParameter("conv\(convCount).bias", [outputs], bias) }
        try checkSize(node, outDims)
        let y = emit(text, reading: input, dims: canonicalDims(outDims))
        define(node, y, dims: outDims)
    }

    mutating func pool(_ node: ONNXNode) throws(ImportError) {
        let x = try dataInput(node)
        guard (2...4).contains(x.dims.count) else { throw unsupported(node, "nnc imports 1-D, 2-D and 3-D pooling, found an input of rank \(x.dims.count + 1)") }
        let spatial = Array(x.dims.dropFirst())
        let n = spatial.count
        guard let kernel = try ints(node, "kernel_shape"), kernel.count == n, kernel.allSatisfy({ $0 >= 1 }) else { throw unsupported(node, "kernel_shape must give one positive size per spatial axis") }
        let strides = try ints(node, "strides") ?? [Int](repeating: 1, count: n)
        guard strides.count == n, strides.allSatisfy({ $0 >= 1 }) else { throw unsupported(node, "strides \(strides) must be positive, one per spatial axis") }
        if let dilations = try ints(node, "dilations"), dilations.contains(where: { $0 != 1 }) {
            throw unsupported(node, "nnc's pooling has no dilation (dilations \(dilations))")
        }
        let pads = try symmetricPads(node, spatial: spatial, kernel: kernel, strides: strides, dilations: [Int](repeating: 1, count: n))
        let average = node.opType == "AveragePool"
        if average, pads.contains(where: { $0 != 0 }), try int(node, "count_include_pad", 0) == 0 {
            throw unsupported(node, "nnc's avgpool counts the padding in the average (count_include_pad = 1); this one does not")
        }
        guard zip(pads, kernel).allSatisfy({ 2 * $0 <= $1 }) else { throw unsupported(node, "pads \(pads) exceed half the window \(kernel)") }
        var outDims = [x.dims[0]]
        for axis in 0..<n {
            guard let size = windowOutputSize(input: spatial[axis], window: kernel[axis], stride: strides[axis], padding: pads[axis]) else {
                throw unsupported(node, "the window \(kernel) is larger than the padded input \(spatial)")
            }
            // ceil_mode adds a last, partial window where the input has one more row than floor reaches.
            if try int(node, "ceil_mode", 0) == 1, (spatial[axis] + 2 * pads[axis] - kernel[axis]) % strides[axis] != 0 {
                throw unsupported(node, "ceil_mode = 1 adds a partial window here, and nnc's pooling rounds down")
            }
            outDims.append(size)
        }
        try checkSize(node, outDims)
        let word = average ? "avgpool" : "maxpool"
        if n == 3 {
            // 3-D pooling is separable: over (H, W) with the depth among the channels, then over D
            // with H·W as the width. Max pads with −∞ in both; the average counts the padding in
            // both, kd·kh·kw in all; as the 3-D window does.
            let (channels, depth, height, width) = (x.dims[0], spatial[0], spatial[1], spatial[2])
            let planes = reshaped(x.value, to: [channels * depth, height, width])
            let inner = emit(poolText(word, [kernel[1], kernel[2]], [strides[1], strides[2]], [pads[1], pads[2]]), reading: planes,
                             dims: [channels * depth, outDims[2], outDims[3]])
            let columns = reshaped(inner, to: [channels, depth, outDims[2] * outDims[3]])
            let y = emit(poolText(word, [kernel[0], 1], [strides[0], 1], [pads[0], 0]), reading: columns, dims: [channels, outDims[1], outDims[2] * outDims[3]])
            define(node, y, dims: outDims)
            return
        }
        let input = try image(node, x)
        let y = emit(poolText(word, [kernel[0], n > 1 ? kernel[1] : 1], [strides[0], n > 1 ? strides[1] : 1], [pads[0], n > 1 ? pads[1] : 0]),
                     reading: input, dims: canonicalDims(outDims))
        define(node, y, dims: outDims)
    }

    /// `maxpool KHxKW [stride …] [pad …]`.
    func poolText(_ word: String, _ window: [Int], _ strides: [Int], _ pads: [Int]) -> String {
        var text = "\(word) \(window[0])x\(window[1])"
        if strides != window { text += " stride \(pair(strides, unit: 1))" }
        if pads.contains(where: { $0 != 0 }) { text += " pad \(pair(pads, unit: 0))" }
        return text
    }

    mutating func batchNorm(_ node: ONNXNode) throws(ImportError) {
        let x = try dataInput(node)
        if try int(node, "training_mode", 0) == 1 { throw unsupported(node, "training_mode = 1 (nnc imports the inference form)") }
        if opset < 9, try int(node, "spatial", 1) == 0 { throw unsupported(node, "spatial = 0 (statistics per element, not per channel)") }
        let channels = x.dims[0]
        var tensors: [ONNXTensor] = []
        for index in 1...4 {
            guard let tensor = try constant(node, index), tensor.values.count == channels else {
                throw unsupported(node, "input \(index) must be a constant of \(channels) values (one per channel)")
            }
            tensors.append(tensor)
        }
        let eps = try float(node, "epsilon", 1e-5)
        let momentum = try float(node, "momentum", 0.9)
        guard eps > 0, (0...1).contains(momentum) else { throw unsupported(node, "epsilon \(eps) and momentum \(momentum) out of range") }
        let input = x.dims.count == 1 ? x.value : try image(node, x)
        bnCount += 1
        addParameter("bn\(bnCount).weight", [channels], tensors[0].values)
        addParameter("bn\(bnCount).bias", [channels], tensors[1].values)
        persistentState.append(Checkpoint.Tensor(name: "bn\(bnCount).running_mean", shape: [channels], values: tensors[2].values))
        persistentState.append(Checkpoint.Tensor(name: "bn\(bnCount).running_var", shape: [channels], values: tensors[3].values))
        // ONNX's momentum weighs the old statistic, PyTorch's (and nnc's) the new one.
        let y = emit("batchnorm momentum \(formatNumber(Double(String(format: "%.7g", 1 - momentum)) ?? 1 - momentum)) eps \(formatNumber(eps))",
                     reading: input, dims: nnValues[input].dims)
        define(node, y, dims: x.dims)
    }

    mutating func softmax(_ node: ONNXNode) throws(ImportError) {
        let x = try dataInput(node)
        let rank = x.dims.count + 1
        var axis = try int(node, "axis", opset >= 13 ? -1 : 1)
        if axis < 0 { axis += rank }
        guard (1..<rank).contains(axis) else { throw unsupported(node, "axis \(axis) is the batch axis or out of range") }
        // Before opset 13 the input is flattened to 2-D at the axis; from 13 softmax runs along one axis.
        let rowsPerSample = x.dims[..<(axis - 1)].reduce(1, *)
        let alongOneAxis = opset >= 13 ? x.dims.enumerated().allSatisfy { $0.offset == axis - 1 || $0.element == 1 } : rowsPerSample == 1
        guard alongOneAxis else {
            throw unsupported(node, "softmax along axis \(axis) of \([-1] + x.dims) normalizes several rows per sample; nnc's normalizes each sample's features")
        }
        let input = flat(x)
        let y = emit(node.opType == "Softmax" ? "softmax" : "logsoftmax", reading: input, dims: nnValues[input].dims)
        define(node, y, dims: x.dims)
    }

    mutating func add(_ node: ONNXNode) throws(ImportError) {
        let operands = node.inputs.filter { !$0.isEmpty }
        guard operands.count == 2 else { throw unsupported(node, "nnc imports the sum of two tensors, found \(operands.count)") }
        let values = operands.map { data[$0] }
        if let a = values[0], let b = values[1] {
            guard a.dims == b.dims else { throw unsupported(node, "the operands' shapes \(a.dims) and \(b.dims) differ (nnc's add does not broadcast)") }
            guard nnValues[a.value].dims == nnValues[b.value].dims else { throw unsupported(node, "the operands are held in different layouts") }
            // current + other: either order (addition commutes).
            let (first, second) = a.value == current || b.value != current ? (a, b) : (b, a)
            nnValues[second.value].needsName = true
            let y = emit("add \(name(second.value))", reading: first.value, dims: nnValues[first.value].dims)
            define(node, y, dims: a.dims)
            return
        }
        // A value plus a constant: the bias of the fc or conv that made the value.
        guard let x = values[0] ?? values[1], let tensor = constants[values[0] == nil ? operands[0] : operands[1]] else {
            throw unsupported(node, "an operand is neither computed nor constant")
        }
        try mergeBias(node, x, tensor)
    }

    /// `fc … nobias` or `conv … nobias` followed by the addition of a per-output constant: the layer's bias.
    mutating func mergeBias(_ node: ONNXNode, _ x: DataValue, _ tensor: ONNXTensor) throws(ImportError) {
        let value = nnValues[x.value]
        guard value.producer >= 0, value.producer == statements.count - 1, x.value == current,
              uses[node.inputs.first { data[$0] != nil } ?? ""] == 1 else {
            throw unsupported(node, "nnc imports the addition of a constant only as the bias of the fc or conv just before it")
        }
        let text = statements[value.producer].text
        let isLayer = text.hasPrefix("fc ") || text.hasPrefix("conv ")
        guard isLayer, text.hasSuffix(" nobias") else {
            throw unsupported(node, "nnc imports the addition of a constant only as the bias of an fc or conv without one")
        }
        let outputs = value.dims[0]
        // One value per output, broadcast along everything else: aligned with the full shape
        // [N, O, …] from the right (opset 7 on), or at the `axis` attribute (the old `broadcast`).
        let rank = x.dims.count + 1
        var aligned = tensor.dims
        if opset < 7, let axis = try? int(node, "axis", -1), axis >= 0 {
            aligned = [Int](repeating: 1, count: axis) + aligned
        }
        if aligned.count < rank { aligned = [Int](repeating: 1, count: rank - aligned.count) + aligned }
        let perOutput = tensor.values.count == 1 || (aligned.count == rank && aligned[1] == outputs && aligned.enumerated().allSatisfy { $0.offset == 1 || $0.element == 1 })
        guard perOutput else { throw unsupported(node, "the constant of shape \(tensor.dims) is not one value per output of the layer") }
        let values = try bias(node, tensor, count: outputs)
        statements[value.producer].text = String(text.dropLast(" nobias".count))
        let layer = text.hasPrefix("fc ") ? "fc\(fcCount)" : "conv\(convCount)"
        addParameter("\(layer).bias", [outputs], values)
        // Lowering lists a layer's bias right after its weight.
        if let weight = parameters.firstIndex(where: { $0.name == "\(layer).weight" }) {
            let bias = parameters.removeLast()
            parameters.insert(bias, at: weight + 1)
        }
        define(node, x.value, dims: x.dims)
    }

    /// Clip: `relu6` (0, 6), `relu` (0, none), `hardtanh LOW HIGH` otherwise.
    mutating func clip(_ node: ONNXNode) throws(ImportError) {
        var low = -Double.infinity, high = Double.infinity
        if opset < 11 {
            low = try float(node, "min", low)
            if node.attribute("min") == nil { low = -.infinity }
            high = node.attribute("max") == nil ? .infinity : try float(node, "max", high)
        } else {
            if let bound = try constant(node, 1)?.values.first { low = bound }
            if let bound = try constant(node, 2)?.values.first { high = bound }
        }
        switch (low, high) {
        case (0, 6): try activation(node, "relu6")
        case (0, .infinity): try activation(node, "relu")
        case (-1, 1): try activation(node, "hardtanh")
        default:
            guard low.isFinite, high.isFinite, low < high else { throw unsupported(node, "nnc clips to finite bounds LOW < HIGH (or at 0 from below), found \(low) and \(high)") }
            try activation(node, "hardtanh \(formatNumber(low)) \(formatNumber(high))")
        }
    }

    /// Mul or Div by a scalar constant: `scale K`. x · sigmoid(x), PyTorch's SiLU: the `sigmoid`
    /// just emitted for this Mul becomes `silu`.
    mutating func multiply(_ node: ONNXNode) throws(ImportError) {
        let operands = node.inputs.filter { !$0.isEmpty }
        let divide = node.opType == "Div"
        guard operands.count == 2 else { throw unsupported(node, "\(node.opType) takes two operands") }
        if data[operands[0]] != nil, let k = constants[operands[1]], k.values.count == 1, !divide || k.values[0] != 0 {
            try activation(node, try scaleStatement(node, divide ? 1 / k.values[0] : k.values[0]))
            return
        }
        if !divide, data[operands[1]] != nil, let k = constants[operands[0]], k.values.count == 1 {
            try scaleFromLeft(node, k.values[0])
            return
        }
        guard !divide, let a = data[operands[0]], let b = data[operands[1]] else {
            throw unsupported(node, "nnc imports \(node.opType) by a scalar constant\(divide ? "" : ", or x·sigmoid(x) (SiLU)")")
        }
        for (x, s, name) in [(a, b, operands[1]), (b, a, operands[0])] {
            let gate = nnValues[s.value]
            guard s.value == current, gate.producer == statements.count - 1, statements[gate.producer].text == "sigmoid", uses[name] == 1,
                  statements.count >= 1 else { continue }
            // The sigmoid read x: it was the current value before it, with no `from` between.
            let previous = gate.producer > 0 ? statements[gate.producer - 1].output : 0
            guard previous == x.value else { continue }
            statements[gate.producer].text = "silu"
            define(node, s.value, dims: x.dims)
            return
        }
        throw unsupported(node, "nnc imports Mul of two computed values only as x·sigmoid(x) (SiLU)")
    }

    /// The `scale` statement for a constant factor: a NaN or infinite one cannot be written as one.
    func scaleStatement(_ node: ONNXNode, _ k: Double) throws(ImportError) -> String {
        guard k.isFinite else { throw unsupported(node, "\(node.opType) by a constant that is not finite") }
        return "scale \(formatNumber(k))"
    }

    /// k · x with the constant first.
    mutating func scaleFromLeft(_ node: ONNXNode, _ k: Double) throws(ImportError) {
        let statement = try scaleStatement(node, k)
        let x = try dataInput(node, 1)
        let y = emit(statement, reading: x.value, dims: nnValues[x.value].dims)
        define(node, y, dims: x.dims)
    }

    /// PRelu with one slope, or one per channel (features): `prelu` or `prelu C`.
    mutating func prelu(_ node: ONNXNode) throws(ImportError) {
        let x = try dataInput(node)
        guard let slope = try constant(node, 1) else { throw unsupported(node, "PRelu needs its slope") }
        let channels = x.dims.first ?? 1
        // Per channel: [C] broadcast at axis 1 (before opset 7, PyTorch 0.3's export), or from the
        // right as [C, 1, …] (numpy broadcasting).
        let perChannel = slope.values.count == channels && channels > 1
            && (opset < 7 || slope.dims.drop { $0 == 1 }.first == channels && slope.dims.drop { $0 == 1 }.dropFirst().allSatisfy { $0 == 1 } && slope.dims.count - slope.dims.prefix { $0 == 1 }.count == x.dims.count)
        guard slope.values.count == 1 || perChannel else {
            throw unsupported(node, "the slope of shape \(slope.dims) is neither one value nor one per channel of \([-1] + x.dims)")
        }
        let input = x.dims.count == 1 ? x.value : try image(node, x)
        preluCount += 1
        addParameter("prelu\(preluCount).weight", [slope.values.count], slope.values)
        let y = emit(perChannel ? "prelu \(channels)" : "prelu", reading: input, dims: nnValues[input].dims)
        define(node, y, dims: x.dims)
    }

    /// Pad of the last one or two axes: `pad TOPxLEFT BOTTOMxRIGHT` with its mode.
    mutating func pad(_ node: ONNXNode) throws(ImportError) {
        let x = try dataInput(node)
        let rank = x.dims.count + 1
        guard rank == 3 || rank == 4 else { throw unsupported(node, "nnc pads 3-D and 4-D tensors, found rank \(rank)") }
        var pads: [Int]
        var value = 0.0
        if opset < 11 {
            // Opset 1 called them `paddings`.
            let named = try ints(node, "pads"), old = try ints(node, "paddings")
            guard let given = named ?? old else { throw unsupported(node, "Pad needs its pads") }
            pads = given
            value = try float(node, "value", 0)
        } else {
            guard let given = try constant(node, 1) else { throw unsupported(node, "Pad needs its pads") }
            pads = try integers(node, given)
            if let fill = try constant(node, 2), let first = fill.values.first { value = first }
            if node.inputs.count > 3, !node.inputs[3].isEmpty {
                // opset 18: the axes padded; spread them over all axes.
                guard let axes = try constant(node, 3) else { throw unsupported(node, "Pad's axes must be constant") }
                var all = [Int](repeating: 0, count: 2 * rank)
                for (k, axis) in try integers(node, axes).map({ $0 < 0 ? $0 + rank : $0 }).enumerated() {
                    guard (0..<rank).contains(axis), k + axes.values.count < pads.count + 1 else { throw unsupported(node, "Pad axes out of range") }
                    all[axis] = pads[k]
                    all[axis + rank] = pads[k + axes.values.count]
                }
                pads = all
            }
        }
        guard pads.count == 2 * rank else { throw unsupported(node, "pads \(pads) do not fit rank \(rank)") }
        guard pads.allSatisfy({ $0 >= 0 }) else { throw unsupported(node, "negative pads (cropping) \(pads)") }
        guard pads[0] == 0, pads[1] == 0, pads[rank] == 0, pads[rank + 1] == 0 else {
            throw unsupported(node, "nnc pads the spatial axes only, found pads \(pads) on the batch or channels")
        }
        // The spatial axes: (H, W) of a 4-D tensor; the length of a 3-D one, held as [C, L, 1].
        let (top, bottom) = (pads[2], pads[rank + 2])
        let (left, right) = rank == 4 ? (pads[3], pads[rank + 3]) : (0, 0)
        let mode: String
        switch try string(node, "mode") ?? "constant" {
        case "constant": mode = value == 0 ? "" : " value \(formatNumber(value))"
        case "reflect": mode = " reflect"
        case "edge": mode = " replicate"
        case let other: throw unsupported(node, "mode '\(other)' is not one nnc pads with (constant, reflect, edge)")
        }
        let spatial = Array(x.dims.dropFirst())
        if mode == " reflect", top >= spatial[0] || bottom >= spatial[0] || (rank == 4 && (left >= spatial[1] || right >= spatial[1])) {
            throw unsupported(node, "reflect pads \(pads) must be smaller than the input \(spatial)")
        }
        let input = try image(node, x)
        var outDims = x.dims
        outDims[1] += top + bottom
        if rank == 4 { outDims[2] += left + right }
        try checkSize(node, outDims)
        let begin = top == left ? "\(top)" : "\(top)x\(left)", end = bottom == right ? "\(bottom)" : "\(bottom)x\(right)"
        let text = "pad " + (begin == end ? begin : "\(top)x\(left) \(bottom)x\(right)") + mode
        let y = emit(text, reading: input, dims: canonicalDims(outDims))
        define(node, y, dims: outDims)
    }

    mutating func concat(_ node: ONNXNode) throws(ImportError) {
        let operands = node.inputs.filter { !$0.isEmpty }
        var values: [DataValue] = []
        for index in operands.indices { values.append(try dataInput(node, index)) }
        guard let first = values.first else { throw unsupported(node, "Concat has no inputs") }
        var axis = try int(node, "axis", 1)
        if axis < 0 { axis += first.dims.count + 1 }
        guard axis == 1 else { throw unsupported(node, "nnc concatenates along the channels or features (axis 1), found axis \(axis)") }
        let layout = nnValues[first.value].dims
        for value in values.dropFirst() {
            let other = nnValues[value.value].dims
            guard Array(value.dims.dropFirst()) == Array(first.dims.dropFirst()), other.count == layout.count, Array(other.dropFirst()) == Array(layout.dropFirst()) else {
                throw unsupported(node, "the inputs' shapes \(values.map(\.dims)) differ beyond the concatenated axis")
            }
        }
        var y = first.value
        var dims = first.dims
        for value in values.dropFirst() {
            nnValues[value.value].needsName = true
            var nn = nnValues[y].dims
            nn[0] += nnValues[value.value].dims[0]
            y = emit("concat \(name(value.value))", reading: y, dims: nn)
            dims[0] += value.dims[0]
        }
        define(node, y, dims: dims)
    }
}

import IR
import Parser

/// Why a graph cannot be exported.
public struct ExportError: Error, Sendable, CustomStringConvertible {
    /// Why, in words.
    public var message: String
    public var description: String { message }
}

/// The ONNX form nnc writes: IR version 8 with opset 13, which every ONNX Runtime of the last years loads.
public let exportIRVersion = 8, exportOpset = 13

/// Ops ONNX Runtime 1.32's CPU provider runs in double precision, tried one by one (it has no double
/// Conv, AveragePool, LeakyRelu, Elu, Selu, Softplus, Softsign or PRelu): an f64 model with any other is refused.
let doubleKernels: Set = ["Gemm", "Add", "Mul", "Relu", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Flatten", "Reshape",
                          "Concat", "Identity", "BatchNormalization", "MaxPool", "Pow", "Neg", "Abs", "Exp", "Clip", "Pad"]

/// The inference graph of a model as ONNX: the forward graph (no loss, no dropout) from its input
/// to its output, weights and running statistics as initializers, a symbolic batch dimension,
/// node names from the model's layers, and the model source as the doc string.
///
/// `forward`: the unoptimized forward graph in inference mode; `tensors`: every parameter and
/// persistent state by name.
public func exportONNX(_ forward: Graph, tensors: [Checkpoint.Tensor], name: String, source: String) throws(ExportError) -> ONNXModel {
    var exporter = Exporter(graph: forward, name: name)
    try exporter.run(tensors: tensors)
    var model = ONNXModel()
    model.irVersion = exportIRVersion
    model.producerName = "nnc"
    model.producerVersion = "0.1.0"
    model.docString = source
    model.opsets = [ONNXOpset(domain: "", version: exportOpset)]
    model.graph = exporter.onnx
    if forward.dtype == .f64, let node = exporter.onnx.nodes.first(where: { !doubleKernels.contains($0.opType) }) {
        throw ExportError(message: "ONNX Runtime has no double-precision \(node.opType) (node '\(node.name)'); export the model in f32 (train or compile it with --dtype f32)")
    }
    return model
}

struct Exporter {
    let graph: Graph
    var onnx = ONNXGraph()
    var names: [ValueID: String] = [:]
    var usedNames: Set<String> = []
    var nodeNames: Set<String> = []
    var constantCount = 0

    init(graph: Graph, name: String) {
        self.graph = graph
        onnx.name = name
    }

    var elementType: ONNXDataType { graph.dtype == .f64 ? .double : .float }

    /// A value's ONNX name: unique, readable (the IR's names), `input` and `output` for the ends.
    mutating func name(_ value: ValueID) -> String {
        if let name = names[value] { return name }
        var name = value == graph.output ? "output" : value == graph.input ? "input" : graph[value].name
        if usedNames.contains(name) { name += "_\(value.index)" }
        usedNames.insert(name)
        names[value] = name
        return name
    }

    /// A scalar or 1-D constant as an initializer.
    mutating func constant(_ values: [Double], dims: [Int], type: ONNXDataType? = nil) -> String {
        constantCount += 1
        let name = "const\(constantCount)"
        onnx.initializers.append(ONNXTensor(name: name, dims: dims, dataType: type ?? elementType, values: values))
        return name
    }

    /// A node named after the model line it comes from: `conv1_line3`, `relu_line4`.
    mutating func emit(_ op: String, _ inputs: [String], _ outputs: [String], at source: Node, _ attributes: [ONNXAttribute] = []) {
        var base = op.lowercased()
        if let location = source.location, let file = graph.source { base += "_line\(file.line(of: location.start))" }
        var name = base
        var k = 1
        while nodeNames.contains(name) { k += 1; name = "\(base)_\(k)" }
        nodeNames.insert(name)
        onnx.nodes.append(ONNXNode(inputs: inputs, outputs: outputs, name: name, opType: op, attributes: attributes))
    }

    func unsupported(_ node: Node) -> ExportError {
        ExportError(message: "the op \(node.op.name) has no ONNX form in nnc's exporter")
    }

    mutating func run(tensors: [Checkpoint.Tensor]) throws(ExportError) {
        guard let input = graph.input, let output = graph.output else { throw ExportError(message: "the model has no input or no output") }
        // The nodes the output needs, and how many of them read each value.
        var needed = Set([output])
        var readers: [ValueID: Int] = [:]
        for node in graph.nodes.reversed() where node.results.contains(where: needed.contains) {
            for operand in node.operands { needed.insert(operand); readers[operand, default: 0] += 1 }
        }
        // Weights and statistics keep their names (fc1.weight, bn1.running_mean), as PyTorch's exporter does.
        for node in graph.nodes {
            if case .parameter(let tensor) = node.op { names[node.results[0]] = tensor; usedNames.insert(tensor) }
            if case .state(let tensor) = node.op { names[node.results[0]] = tensor; usedNames.insert(tensor) }
        }
        let batch = ONNXDimension.parameter("N")
        onnx.inputs = [ONNXValueInfo(name: name(input), elementType: elementType.rawValue, dims: [batch] + graph[input].shape.dims.map { .value($0) })]
        var fusedBias: Set<ValueID> = []
        // Lookups by name and by value, not searches: a search per node is quadratic in the model's depth.
        let tensorsByName = Dictionary(tensors.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var biasAddAfter: [ValueID: Node] = [:]
        for node in graph.nodes where node.op == .biasAdd {
            if let x = node.operands.first, biasAddAfter[x] == nil { biasAddAfter[x] = node }
        }
        for node in graph.nodes where node.results.contains(where: needed.contains) {
            let inputs = node.operands.map { name($0) }
            let outputs = node.results.map { name($0) }
            // A bias add right after the matmul or conv it belongs to is that node's third input.
            func bias() -> (String, ValueID)? {
                guard let result = node.results.first, readers[result] == 1,
                      let next = biasAddAfter[result] else { return nil }
                return (name(next.operands[1]), next.results[0])
            }
            switch node.op {
            case .parameter(let parameter), .state(let parameter):
                guard let tensor = tensorsByName[parameter] else { throw ExportError(message: "no values for \(parameter)") }
                onnx.initializers.append(ONNXTensor(name: outputs[0], dims: tensor.shape, dataType: elementType, values: tensor.values))
            case .input: break
            case .matmul(false, false):
                if let (b, result) = bias() {
                    fusedBias.insert(result)
                    emit("Gemm", inputs + [b], [name(result)], at: node)
                } else {
                    emit("Gemm", inputs, outputs, at: node)
                }
            case .conv2d(let g):
                let w = graph[node.operands[1]].shape.dims
                var attributes = [ONNXAttribute(name: "kernel_shape", value: .ints([Int64(w[2]), Int64(w[3])])),
                                  ONNXAttribute(name: "strides", value: .ints([Int64(g.strideH), Int64(g.strideW)])),
                                  ONNXAttribute(name: "pads", value: .ints([g.padH, g.padW, g.padH, g.padW].map(Int64.init))),
                                  ONNXAttribute(name: "dilations", value: .ints([Int64(g.dilationH), Int64(g.dilationW)]))]
                attributes.append(ONNXAttribute(name: "group", value: .int(Int64(g.groups))))
                if let (b, result) = bias() {
                    fusedBias.insert(result)
                    emit("Conv", inputs + [b], [name(result)], at: node, attributes)
                } else {
                    emit("Conv", inputs, outputs, at: node, attributes)
                }
            case .biasAdd:
                guard fusedBias.contains(node.results[0]) else { throw unsupported(node) }
            case .pool(let kind, let window, let stride, let padding):
                var attributes = [ONNXAttribute(name: "kernel_shape", value: .ints(window.map(Int64.init))),
                                  ONNXAttribute(name: "strides", value: .ints(stride.map(Int64.init))),
                                  ONNXAttribute(name: "pads", value: .ints((padding + padding).map(Int64.init)))]
                // nnc's average counts the padding (PyTorch's default), ONNX's does not unless told.
                if kind == .average { attributes.append(ONNXAttribute(name: "count_include_pad", value: .int(1))) }
                emit(kind == .max ? "MaxPool" : "AveragePool", inputs, outputs, at: node, attributes)
            case .reshape(let shape):
                if shape.dims.count == 1 {
                    emit("Flatten", inputs, outputs, at: node, [ONNXAttribute(name: "axis", value: .int(1))])
                } else {
                    let target = constant([-1] + shape.dims.map(Double.init), dims: [shape.dims.count + 1], type: .int64)
                    emit("Reshape", inputs + [target], outputs, at: node)
                }
            case .activation(let function): activation(function, inputs[0], outputs[0], at: node)
            case .softmax: emit("Softmax", inputs, outputs, at: node, [ONNXAttribute(name: "axis", value: .int(1))])
            case .logSoftmax: emit("LogSoftmax", inputs, outputs, at: node, [ONNXAttribute(name: "axis", value: .int(1))])
            case .batchNormInference(let eps):
                emit("BatchNormalization", inputs, outputs, at: node, [ONNXAttribute(name: "epsilon", value: .float(eps))])
            case .add: emit("Add", inputs, outputs, at: node)
            case .concat: emit("Concat", inputs, outputs, at: node, [ONNXAttribute(name: "axis", value: .int(1))])
            case .multiply: emit("Mul", inputs, outputs, at: node)
            case .prelu:
                // ONNX broadcasts from the right: per-channel slopes of an image are [C, 1, 1].
                let x = graph[node.operands[0]].shape.dims, slopes = graph[node.operands[1]].shape.dims
                var slope = inputs[1]
                if slopes == [x[0]], x.count > 1, x[0] > 1 {
                    slope = constant([-1] + [Int](repeating: 1, count: x.count - 1).map(Double.init), dims: [x.count], type: .int64)
                    let reshaped = inputs[1] + "_per_channel"
                    emit("Reshape", [inputs[1], slope], [reshaped], at: node)
                    slope = reshaped
                }
                emit("PRelu", [inputs[0], slope], outputs, at: node)
            case .pad(let spec):
                let pads = constant([0, 0, spec.top, spec.left, 0, 0, spec.bottom, spec.right].map(Double.init), dims: [8], type: .int64)
                switch spec.mode {
                case .constant(let value):
                    emit("Pad", [inputs[0], pads, constant([value], dims: [])], outputs, at: node, [ONNXAttribute(name: "mode", value: .string("constant"))])
                case .reflect: emit("Pad", [inputs[0], pads], outputs, at: node, [ONNXAttribute(name: "mode", value: .string("reflect"))])
                case .replicate: emit("Pad", [inputs[0], pads], outputs, at: node, [ONNXAttribute(name: "mode", value: .string("edge"))])
                }
            case .scale(let factor): emit("Mul", [inputs[0], constant([factor], dims: [])], outputs, at: node)
            // Training, loss and fused ops: not in an inference forward graph.
            case .matmul, .target, .activationGrad, .softmaxGrad, .subtract, .constant, .biasGrad, .sumAll, .meanAll, .broadcast,
                 .conv2dInputGrad, .conv2dWeightGrad, .poolGrad, .sliceChannels, .batchNorm, .batchNormGrad, .batchNormFold,
                 .logSoftmaxGrad, .nllLoss, .nllLossGrad, .dropoutMask, .crossEntropy, .crossEntropyGrad, .binaryCrossEntropy,
                 .binaryCrossEntropyGrad, .softmaxCrossEntropy, .softmaxCrossEntropyGrad, .squaredError, .squaredErrorWithGrad, .update, .dense, .convFused,
                 .activationGradBias, .activationGradBiasUpdate, .convBackward, .matmulUpdate, .preluGrad, .padGrad:
                throw unsupported(node)
            }
        }
        onnx.outputs = [ONNXValueInfo(name: name(output), elementType: elementType.rawValue, dims: [batch] + graph[output].shape.dims.map { .value($0) })]
    }

    mutating func activation(_ function: ActivationFunction, _ x: String, _ y: String, at source: Node) {
        switch function {
        case .identity: emit("Identity", [x], [y], at: source)
        case .tanh: emit("Tanh", [x], [y], at: source)
        case .sigmoid: emit("Sigmoid", [x], [y], at: source)
        case .relu: emit("Relu", [x], [y], at: source)
        case .leakyRelu(let alpha): emit("LeakyRelu", [x], [y], at: source, [ONNXAttribute(name: "alpha", value: .float(alpha))])
        case .elu(let alpha): emit("Elu", [x], [y], at: source, [ONNXAttribute(name: "alpha", value: .float(alpha))])
        case .selu: emit("Selu", [x], [y], at: source)
        case .softplus: emit("Softplus", [x], [y], at: source)
        case .pow(let k): emit("Pow", [x, constant([Double(k)], dims: [])], [y], at: source)
        case .clip(let low, let high): emit("Clip", [x, constant([low], dims: []), constant([high], dims: [])], [y], at: source)
        case .silu:
            emit("Sigmoid", [x], [y + "_sigmoid"], at: source)
            emit("Mul", [x, y + "_sigmoid"], [y], at: source)
        case .neg: emit("Neg", [x], [y], at: source)
        case .abs: emit("Abs", [x], [y], at: source)
        case .exp: emit("Exp", [x], [y], at: source)
        case .softsign: emit("Softsign", [x], [y], at: source)
        case .scale(let k): emit("Mul", [x, constant([k], dims: [])], [y], at: source)
        case .gelu:
            // Gelu with approximate="tanh" arrived in opset 20; at 13 it is spelled out:
            // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
            let cube = y + "_x3", inner = y + "_inner", scaled = y + "_scaled", t = y + "_tanh", onePlus = y + "_1p", product = y + "_xp"
            emit("Pow", [x, constant([3], dims: [])], [cube], at: source)
            emit("Mul", [cube, constant([0.044715], dims: [])], [inner + "_c"], at: source)
            emit("Add", [x, inner + "_c"], [inner], at: source)
            emit("Mul", [inner, constant([(2 / Double.pi).squareRoot()], dims: [])], [scaled], at: source)
            emit("Tanh", [scaled], [t], at: source)
            emit("Add", [t, constant([1], dims: [])], [onePlus], at: source)
            emit("Mul", [x, onePlus], [product], at: source)
            emit("Mul", [product, constant([0.5], dims: [])], [y], at: source)
        }
    }
}

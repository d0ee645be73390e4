import Foundation
import IR
import ONNX
import Parser
import Runtime

let runCommand = Command(
    name: "run", summary: "run a trained model on inputs; print one line of outputs per input row",
    usage: "nnc run MODEL.nnc --input PATH [--output PATH] [--threads N]",
    details: "Inputs: CSV (features only; a header line is skipped), NPY or IDX. Each output is printed in its\nshortest form that reads back to the same value, comma-separated.",
    valueOptions: ["--input", "--output", "--threads"], flagOptions: []
) { arguments, console in
    let path = try onePath(arguments, "compiled model (.nnc)")
    guard let inputPath = arguments.values["--input"] else { throw UsageError(message: "missing --input PATH") }
    let threads = try arguments.threads()
    if let output = arguments.values["--output"] { try checkOutput(output, flag: "--output", inputs: [path, inputPath]) }
    let state = try ModelState.open(path: path, dtype: nil, seed: nil)
    let data = try loadData(path: inputPath, expecting: DataExpectation(featureCount: state.program.model.inputShape.rowElements, targets: .none)).train
    let lines: [String]
    switch state.dtype {
    case .f32: lines = try predict(Float.self, state, data, threads: threads)
    case .f64: lines = try predict(Double.self, state, data, threads: threads)
    }
    let text = lines.joined(separator: "\n") + (lines.isEmpty ? "" : "\n")
    if let output = arguments.values["--output"] {
        try writeAtomically(Data(text.utf8), to: output)
    } else {
        console.print(text, terminator: "")
    }
}

/// Runs the model's inference graph over `count` rows, at most 1,024 at a time, in one session
/// whose weights are packed for the GEMMs once: `fill` writes a batch's rows (start, rows) into the
/// input, `take` reads its outputs (start, rows, width).
func runInference<T: KernelScalar>(_ type: T.Type, _ state: ModelState, count: Int, threads: Int,
                                   fill: (UnsafeMutablePointer<T>, Int, Int) -> Void,
                                   take: (UnsafePointer<T>, Int, Int, Int) -> Void) throws {
    let graph = try state.program.inferenceGraph(dtype: state.dtype, withLoss: false)
    let batch = max(1, min(1024, count))
    let store = ParameterStore<T>(graph: graph)
    state.fill(store)
    let session = try Session<T>(plan: try Plan(graph: graph, batch: batch), store: store, threads: threads, constantParameters: true)
    guard let input = session.inputPointer, let outputValue = graph.output else { return }
    let output = session.pointer(outputValue)
    let width = graph[outputValue].shape.rowElements
    var start = 0
    while start < count {
        let rows = min(batch, count - start)
        fill(input, start, rows)
        session.run(try session.executable(batch: rows))
        take(output, start, rows, width)
        start += rows
    }
}

/// Prediction rows as text.
func predict<T: KernelScalar>(_ type: T.Type, _ state: ModelState, _ data: Dataset, threads: Int) throws -> [String] {
    var lines: [String] = []
    let indices = Array(0..<data.count)
    try runInference(T.self, state, count: data.count, threads: threads) { input, start, rows in
        indices.withUnsafeBufferPointer { all in data.copyFeatures(UnsafeBufferPointer(rebasing: all[start..<(start + rows)]), into: input) }
    } take: { output, _, rows, width in
        for r in 0..<rows { lines.append((0..<width).map { "\(output[r * width + $0])" }.joined(separator: ",")) }
    }
    return lines
}

/// The model's outputs for `count` input rows (row-major, the model's input size each), in its precision.
func inferenceOutputs(_ state: ModelState, inputs: [Double], count: Int, threads: Int = 1) throws -> [Double] {
    let width = state.program.model.inputShape.rowElements
    guard inputs.count == width * count else { throw InputError("the input has \(inputs.count) values, not \(count) rows of \(width)") }
    func run<T: KernelScalar>(_ type: T.Type) throws -> [Double] {
        var outputs: [Double] = []
        try runInference(T.self, state, count: count, threads: threads) { input, start, rows in
            for i in 0..<(rows * width) { input[i] = T(inputs[start * width + i]) }
        } take: { output, _, rows, width in
            outputs += (0..<(rows * width)).map { Double(output[$0]) }
        }
        return outputs
    }
    switch state.dtype {
    case .f32: return try run(Float.self)
    case .f64: return try run(Double.self)
    }
}

let evalCommand = Command(
    name: "eval", summary: "loss and accuracy of a trained model on a data set",
    usage: "nnc eval MODEL.nnc [--data PATH] [--loss KIND] [--threads N]",
    details: "Default data: the model's `data test` file, else its `data` file. For an MNIST-layout directory\nthe test split is used. --loss KIND adds a loss to a model without one (an imported ONNX model).",
    valueOptions: ["--data", "--threads", "--loss"], flagOptions: []
) { arguments, console in
    let path = try onePath(arguments, "compiled model (.nnc)")
    let threads = try arguments.threads()
    var state = try ModelState.open(path: path, dtype: nil, seed: nil)
    if let loss = try lossFlag(arguments) { state.program = try state.program.withLoss(loss) }
    let program = state.program
    guard program.model.graph.loss != nil else { throw InputError(program.noLossMessage) }
    let dataPath = arguments.values["--data"] ?? program.settings.testDataPath.map(program.resolve)
        ?? state.checkpoint.dataPath ?? program.settings.dataPath.map(program.resolve)
    guard let dataPath else { throw UsageError(message: "no data: pass --data PATH") }
    // The test split of an MNIST directory alone: its training files are neither read nor checked.
    let splits = try loadData(path: dataPath, expecting: program.expectation, testOnly: true)
    let data = splits.test ?? splits.train
    let result = try Model(state: state).evaluate(data, threads: threads)
    var line = "\(dataPath)\(splits.test != nil ? " (test split)" : ""): \(data.count) samples, loss \(formatLoss(result.loss))"
    if let accuracy = result.accuracy { line += ", accuracy \(String(format: "%.4f", accuracy))" }
    console.print(line)
}

let exportCommand = Command(
    name: "export", summary: "write a trained model for other tools: NumPy weights, or an ONNX graph",
    usage: "nnc export MODEL.nnc [--weights W.npz] [--onnx OUT.onnx]",
    details: """
    --weights W.npz   the parameters and running statistics as a NumPy .npz: one array per tensor
                      (fc1.weight, bn1.running_mean, …), float64 for f64 models, float32 otherwise; numpy.load reads it.
    --onnx OUT.onnx   the inference graph as ONNX (IR version \(exportIRVersion), opset \(exportOpset)): no loss, no dropout,
                      batch norm with its running statistics, weights as initializers, a symbolic batch dimension
                      'N', the model source as the doc string. ONNX Runtime and onnx.checker accept it.
    """,
    valueOptions: ["--weights", "--onnx"], flagOptions: []
) { arguments, console in
    let path = try onePath(arguments, "compiled model (.nnc)")
    let weights = arguments.values["--weights"], onnx = arguments.values["--onnx"]
    guard weights != nil || onnx != nil else { throw UsageError(message: "missing --weights W.npz or --onnx OUT.onnx") }
    if let weights { try checkOutput(weights, flag: "--weights", inputs: [path]) }
    if let onnx { try checkOutput(onnx, flag: "--onnx", inputs: [path] + [weights].compactMap { $0 }) }
    let state = try ModelState.open(path: path, dtype: nil, seed: nil)
    // Parameters, then the persistent state (running statistics), as PyTorch's state_dict has them.
    let tensors = state.checkpoint.parameters + state.checkpoint.persistentState
    if let weights {
        try writeNPZ(path: weights, arrays: tensors.map { ($0.name, $0.shape, state.dtype == .f64, $0.values) })
        console.print("wrote \(weights) (\(tensors.count) arrays)")
    }
    if let onnx {
        let model = try exportedONNX(state)
        try writeAtomically(Data(model.encoded()), to: onnx)
        console.print("wrote \(onnx) (\(model.graph.nodes.count) nodes, opset \(exportOpset))")
    }
}

/// The model's inference graph as ONNX.
func exportedONNX(_ state: ModelState) throws -> ONNXModel {
    let program = state.program
    var graph = try program.forward(dtype: state.dtype, training: false).graph
    graph.loss = nil
    let name = ((program.source.path as NSString).lastPathComponent as NSString).deletingPathExtension
    do {
        return try exportONNX(graph, tensors: state.checkpoint.parameters + state.checkpoint.persistentState, name: name, source: program.source.text)
    } catch {
        throw InputError("\(program.source.path): error: \(error.message)")
    }
}

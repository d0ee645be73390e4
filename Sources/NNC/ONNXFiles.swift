import Foundation
import IR
import ONNX
import Parser
import Runtime

/// The largest ONNX file nnc reads (protobuf itself stops at 2 GiB).
let maxONNXFileBytes = 2 << 30

/// Reads and decodes an ONNX file; a malformed one is an error naming the file and the byte offset.
func readONNXModel(path: String) throws -> ONNXModel {
    let bytes = try readBoundedFile(path: path, limit: maxONNXFileBytes, what: "an ONNX file")
    do {
        return try ONNXModel(bytes: bytes)
    } catch {
        throw InputError("\(path): error: byte \(error.offset): \(error.message)")
    }
}

/// A whole regular file of at most `limit` bytes, checked before reading.
func readBoundedFile(path: String, limit: Int, what: String) throws -> [UInt8] {
    do { return try readRegularFile(path: path, limit: limit, what: what) } catch { throw InputError("\(path): error: \(error.message)") }
}

/// An ONNX model as an nnc model: its source compiled, its weights as the checkpoint.
func importedModelState(path: String) throws -> (state: ModelState, imported: ImportedModel) {
    let model = try readONNXModel(path: path)
    let imported: ImportedModel
    do { imported = try importONNX(model) } catch { throw InputError("\(path): error: \(error.message)") }
    let base = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
    let program: ModelProgram
    do {
        program = try ModelProgram.compile(SourceFile(path: base + ".nn", text: imported.source))
    } catch let error as DiagnosticError {
        throw InputError("\(path): error: the imported model does not compile (an nnc bug):\n\(error.rendered)\(imported.source)")
    }
    var checkpoint = Checkpoint()
    checkpoint.dtype = imported.dtype
    checkpoint.parameters = imported.parameters
    checkpoint.persistentState = imported.persistentState
    let state = ModelState(program: program, checkpoint: checkpoint)
    try state.checkParameters(against: program.model.graph.parameters, file: path)
    return (state, imported)
}

// MARK: import

let importCommand = Command(
    name: "import", summary: "import an ONNX model as an nnc model (.nnc), or print its .nn source",
    usage: "nnc import MODEL.onnx [-o OUT.nnc] [--emit nn]",
    details: """
    Reads the ONNX graph (any opset from 6 to 21) and writes the equivalent nnc model: its .nn source
    (layers, with 'as', 'from', 'add' and 'concat' for branches) and the weights, as a .nnc that run,
    eval, bench, export and train accept. The first dimension of the graph input is the batch.
    -o OUT.nnc   where to write (default: MODEL.nnc here)
    --emit nn    print the .nn source instead of writing
    Supported ops: \(supportedONNXOps.joined(separator: ", ")).
    """,
    valueOptions: ["-o", "--emit"], flagOptions: []
) { arguments, console in
    let path = try onePath(arguments, "ONNX model (.onnx)")
    if let stage = arguments.values["--emit"] {
        guard stage == "nn" else { throw UsageError(message: "--emit takes 'nn', got '\(stage)'") }
        console.print(try importedModelState(path: path).imported.source, terminator: "")
        return
    }
    let output = arguments.values["-o"] ?? defaultOutputPath(for: path)
    try checkOutput(output, flag: "-o", inputs: [path])
    let (state, imported) = try importedModelState(path: path)
    try state.write(to: output)
    let layers = imported.source.split(separator: "\n").filter { !$0.hasPrefix("#") }.count - 1
    console.print("wrote \(output) (\(layers) statements, \(imported.parameters.count + imported.persistentState.count) tensors, \(imported.dtype.rawValue))")
}

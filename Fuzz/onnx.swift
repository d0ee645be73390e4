import IR
import Parser
@testable import ONNX

// libFuzzer harness: ONNX files. Decoding and import must end in a model or an error, never a
// crash; an accepted model's source compiles (the importer's contract).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzONNX(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let model = try? ONNXModel(bytes: bytes), let imported = try? importONNX(model) else { return 0 }
    do {
        let ast = try parseModel(SourceFile(path: "imported.nn", text: imported.source))
        _ = try lower(ast)
    } catch {
        fatalError("an imported model does not compile: \(error)\n\(imported.source)")
    }
    return 0
}

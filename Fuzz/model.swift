import IR
import Parser

// libFuzzer harness: model text. Lexing, parsing, name resolution and lowering end in a model or in
// diagnostics, never a crash; an accepted model's training graph builds and passes the verifier.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzModel(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let source = SourceFile(path: "fuzz.nn", bytes: Array(UnsafeBufferPointer(start: data, count: size)))
    guard let ast = try? parseModel(source), let model = try? lower(ast), model.graph.loss != nil else { return 0 }
    // Tiny shapes only: the harness checks the compiler, not the machine's memory.
    guard model.graph.values.allSatisfy({ $0.shape.rowElements <= 1 << 16 }) else { return 0 }
    do {
        let training = try lower(ast, training: true).graph.differentiated().withUpdates(model.settings.training.update)
        _ = try training.optimized(verify: true)
    } catch {
        fatalError("an accepted model does not build its training graph: \(error)\n\(String(decoding: source.bytes, as: UTF8.self))")
    }
    return 0
}

import Foundation
import Testing
@testable import NNC
@testable import Runtime

/// `nnc import` and `nnc export --onnx` from the command line: an imported PyTorch export runs with
/// ONNX Runtime's outputs, fine-tunes with --loss, exports again and imports back; bad files exit 1.
@Suite struct ONNXCommandTests {
    static let data = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Data/onnx")

    @Test func importRunTrainExportImport() throws {
        let reference = try #require(ONNXImportTests.reference?.cases.first { $0.file == "cnn-torchscript.onnx" })
        let scratch = try FrontEnd.scratch()
        let onnx = Self.data.appendingPathComponent("cnn-torchscript.onnx").path
        let imported = scratch.appendingPathComponent("cnn.nnc").path

        let emitted = FrontEnd.run(["import", onnx, "--emit", "nn"])
        #expect(emitted.status == 0)
        #expect(emitted.output.contains("\ninput 1x8x8\nconv 1->4 3x3 pad 1\nleakyrelu 0.1\nmaxpool 2x2\n"), "\(emitted.output)")

        let written = FrontEnd.run(["import", onnx, "-o", imported])
        #expect(written.status == 0, "\(written.errors)")
        #expect(written.output.hasPrefix("wrote \(imported)"))

        // run: ONNX Runtime's outputs, one line per input row.
        let rows = stride(from: 0, to: reference.input.values.count, by: 64).map { reference.input.values[$0..<($0 + 64)].map { "\($0)" }.joined(separator: ",") }
        let input = scratch.appendingPathComponent("x.csv").path
        try rows.joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        let ran = FrontEnd.run(["run", imported, "--input", input])
        #expect(ran.status == 0, "\(ran.errors)")
        let outputs = ran.output.split(whereSeparator: { $0 == "\n" || $0 == "," }).compactMap { Double($0) }
        #expect(outputs.count == reference.output.values.count)
        #expect(zip(outputs, reference.output.values).allSatisfy { abs($0 - $1) <= 1e-4 * max(1, abs($1)) })

        // Fine-tuning: a loss from the command line, labelled rows.
        let labelled = scratch.appendingPathComponent("train.csv").path
        try rows.enumerated().map { "\($0.element),\($0.offset % 5)" }.joined(separator: "\n").write(toFile: labelled, atomically: true, encoding: .utf8)
        let tuned = scratch.appendingPathComponent("tuned.nnc").path
        let noLoss = FrontEnd.run(["train", imported, "--data", labelled, "--epochs", "1", "-o", tuned])
        #expect(noLoss.status == 1)
        #expect(noLoss.errors.contains("has no loss"))
        let trained = FrontEnd.run(["train", imported, "--data", labelled, "--loss", "crossentropy", "--epochs", "2", "--lr", "0.01", "-o", tuned])
        #expect(trained.status == 0, "\(trained.errors)")
        let evaluated = FrontEnd.run(["eval", tuned, "--data", labelled])
        #expect(evaluated.status == 0, "\(evaluated.errors)")
        #expect(evaluated.output.contains("3 samples, loss"))

        // Export, and import of the export.
        let exported = scratch.appendingPathComponent("tuned.onnx").path
        let export = FrontEnd.run(["export", tuned, "--onnx", exported])
        #expect(export.status == 0, "\(export.errors)")
        #expect(FrontEnd.run(["import", exported, "-o", scratch.appendingPathComponent("again.nnc").path]).status == 0)
    }

    @Test func badFilesAreErrors() throws {
        let scratch = try FrontEnd.scratch()
        let text = scratch.appendingPathComponent("model.onnx").path
        try "input 2\nfc 2->1\n".write(toFile: text, atomically: true, encoding: .utf8)
        let notONNX = FrontEnd.run(["import", text])
        #expect(notONNX.status == 1)
        #expect(notONNX.errors.hasPrefix("\(text): error: byte "), "\(notONNX.errors)")

        let missing = FrontEnd.run(["import", scratch.appendingPathComponent("none.onnx").path])
        #expect(missing.status == 1)
        #expect(missing.errors.contains("no such file"))

        let directory = FrontEnd.run(["import", scratch.path])
        #expect(directory.status == 1)
        #expect(directory.errors.contains("is a directory, not an ONNX file"))

        #expect(FrontEnd.run(["import", text, "--emit", "ir"]).status == 2)

        // A double-precision conv net has no ONNX Runtime kernels: a clear error, nothing written.
        let cnn = scratch.appendingPathComponent("cnn.nn").path
        try "input 1x4x4\nconv 1->2 3x3\nflatten\nfc 3\n".write(toFile: cnn, atomically: true, encoding: .utf8)
        let compiled = scratch.appendingPathComponent("cnn.nnc").path
        #expect(FrontEnd.run(["compile", cnn, "--dtype", "f64", "-o", compiled]).status == 0)
        let out = scratch.appendingPathComponent("cnn.onnx").path
        let f64 = FrontEnd.run(["export", compiled, "--onnx", out])
        #expect(f64.status == 1)
        #expect(f64.errors.contains("ONNX Runtime has no double-precision Conv"))
        #expect(!FileManager.default.fileExists(atPath: out))
    }
}

/// Inputs that never end or have no size are refused before anything is read (issue: /dev/zero as
/// --data, --input, a model or a compiled file was read until memory ran out).
@Suite struct NonRegularInputTests {
    @Test func devicesAndPipesAreRefused() throws {
        let (scratch, model, compiled) = try smallModel()
        let fifo = scratch.appendingPathComponent("pipe").path
        #expect(mkfifo(fifo, 0o600) == 0)
        for device in ["/dev/zero", fifo] {
            for arguments in [["train", model, "--data", device, "-o", scratch.appendingPathComponent("o.nnc").path],
                              ["run", compiled, "--input", device], ["check", device], ["eval", device, "--data", device],
                              ["import", device]] {
                let result = FrontEnd.run(arguments)
                #expect(result.status == 1, "\(arguments)")
                #expect(result.errors.contains("\(device): error: is not a regular file"), "\(arguments): \(result.errors)")
            }
        }
    }
}

/// A model whose parameters cannot fit any machine (10^12 of them): `check` warns, every command
/// that would allocate them says so and exits 1 (issue: they were OOM-killed).
@Suite struct MemoryTests {
    @Test func modelsTooLargeForMemoryAreRefusedBeforeAllocating() throws {
        let scratch = try FrontEnd.scratch()
        let model = scratch.appendingPathComponent("huge.nn").path
        let layers = (0..<500).map { _ in "fc 32768\nfc 32768" }.joined(separator: "\n")
        try "input 32768\n\(layers)\nloss mse\n".write(toFile: model, atomically: true, encoding: .utf8)
        let check = FrontEnd.run(["check", model])
        #expect(check.status == 0)
        #expect(check.errors.contains("\(model): warning: the model's 1,073,774,592,000 parameters need"), "\(check.errors)")
        for arguments in [["compile", model, "-o", scratch.appendingPathComponent("h.nnc").path], ["bench", model], ["gradcheck", model],
                          ["train", model, "--data", model]] {
            let result = FrontEnd.run(arguments)
            #expect(result.status == 1, "\(arguments)")
            #expect(result.errors.contains("the machine has") || result.errors.contains("more than this machine's"), "\(arguments): \(result.errors)")
        }
        #expect(throws: InputError.self) { try Model(source: "input 32768\n\(layers)\nloss mse\n") }
    }
}

/// Clear errors where the issue found unclear ones: a compiled file given as source, a batch beyond
/// its range, and infinities that come from the input (blamed on the learning rate before).
@Suite struct ClearErrorTests {
    @Test func errorsSayWhatIsWrongWhereItEnters() throws {
        let (scratch, model, compiled) = try smallModel()
        let disguised = scratch.appendingPathComponent("c.nn").path
        try FileManager.default.copyItem(atPath: compiled, toPath: disguised)
        for command in ["check", "compile", "gradcheck", "bench"] {
            let result = FrontEnd.run([command, disguised])
            #expect(result.status == 1 && result.errors.hasPrefix("\(disguised): error: this is a compiled model (.nnc), not model source"), "\(command): \(result.errors)")
        }
        let batch = FrontEnd.run(["train", model, "--batch", "2147483648"])
        #expect(batch.status == 2 && batch.errors.contains("'batch' must be a whole number from 1 to 2147483647, found 2147483648"))

        let data = scratch.appendingPathComponent("d.csv").path
        try "1,2,3\n4,1e39,5\n".write(toFile: data, atomically: true, encoding: .utf8)
        let overflow = FrontEnd.run(["train", model, "--data", data, "-o", compiled])
        #expect(overflow.status == 1 && overflow.errors.contains("\(data): error: sample 2, feature 2 is 1e+39, beyond float32's range"), "\(overflow.errors)")
        #expect(FrontEnd.run(["train", model, "--data", data, "--dtype", "f64", "-o", compiled]).status == 0)

        let wild = scratch.appendingPathComponent("w.nn").path
        try "input 2\nfc 2->1 init normal(0,1e39)\nloss mse\n".write(toFile: wild, atomically: true, encoding: .utf8)
        let initialized = FrontEnd.run(["train", wild, "--data", data, "--dtype", "f32", "-o", compiled])
        #expect(initialized.status == 1 && initialized.errors.hasPrefix("\(wild):2:1: error: parameter 'fc1.weight' starts with")
                && initialized.errors.contains("from its initializer normal(0,1e+39)"), "\(initialized.errors)")
        // compile writes initial parameters too: the same error, and no file.
        let compiledWild = scratch.appendingPathComponent("w.nnc").path
        let compiling = FrontEnd.run(["compile", wild, "-o", compiledWild])
        #expect(compiling.status == 1 && compiling.errors.hasPrefix("\(wild):2:1: error: parameter 'fc1.weight' starts with"), "\(compiling.errors)")
        #expect(!FileManager.default.fileExists(atPath: compiledWild))
        #expect(FrontEnd.run(["train", wild, "--data", data, "--dtype", "f64", "-o", compiled]).status == 0)

        let weights = scratch.appendingPathComponent("w.npz").path
        try writeNPZ(path: weights, arrays: [("fc1.weight", [2, 1], true, [1, .nan]), ("fc1.bias", [1], true, [0])])
        let nan = FrontEnd.run(["train", model, "--data", data, "--init", weights, "-o", compiled])
        #expect(nan.status == 1 && nan.errors.contains("array 'fc1.weight' holds nan at flat index 1"), "\(nan.errors)")
        try writeNPZ(path: weights, arrays: [("fc1.weight", [2, 1], true, [1, 2]), ("fc1.bias", [1], true, [0]), ("fc2.weight", [1], true, [0])])
        let extra = FrontEnd.run(["train", model, "--data", data, "--init", weights, "-o", compiled])
        #expect(extra.status == 1 && extra.errors.contains("array 'fc2.weight' is not a parameter or running statistic of the model"), "\(extra.errors)")

        // An NPY with more data than its header describes.
        let npy = scratch.appendingPathComponent("x.npy").path
        let valid = try encodeNPY(shape: [2, 3], float64: true, values: [1, 2, 3, 4, 5, 6])
        try Data(valid + [0, 0, 0, 0, 0, 0, 0, 0]).write(to: URL(fileURLWithPath: npy))
        let long = FrontEnd.run(["train", model, "--data", npy, "-o", compiled])
        #expect(long.status == 1 && long.errors.contains("8 bytes of unexpected data after the 48 bytes that shape (2, 3)"), "\(long.errors)")
    }
}

/// A scratch directory with a two-input regression model, as source (m.nn) and compiled (m.nnc).
func smallModel() throws -> (scratch: URL, model: String, compiled: String) {
    let scratch = try FrontEnd.scratch()
    let model = scratch.appendingPathComponent("m.nn").path
    try "input 2\nfc 2->1\nloss mse\n".write(toFile: model, atomically: true, encoding: .utf8)
    let compiled = scratch.appendingPathComponent("m.nnc").path
    #expect(FrontEnd.run(["compile", model, "-o", compiled]).status == 0)
    return (scratch, model, compiled)
}

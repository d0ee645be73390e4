import Foundation
import Testing
@testable import NNC
@testable import IR
import ONNX
import Parser
import TestSupport

/// Export judged by outsiders: every models/*.nn, with random weights and running statistics, is
/// written as ONNX; onnx.checker (full_check) accepts it and ONNX Runtime reproduces `nnc run`
/// (1e-5). The file also imports back into the same outputs.
@Suite struct ONNXExportTests {
    /// Models using every op export has a form for, beyond models/.
    static let everyOp = [
        ("graph_ops.nn", """
         input 3x9x8
         pad 2x1 1x3 reflect
         conv 3->4 3x3 stride 2 pad 1 dilation 1 as c
         batchnorm momentum 0.2 eps 1e-3
         prelu 4
         relu6 as a
         from c
         conv 4->4 3x3 pad 2 dilation 2 groups 2
         silu
         add a
         concat c
         pad 1 replicate
         hardtanh -0.5 2
         maxpool 3x3 stride 2 pad 1
         avgpool 2x2 stride 1 pad 1
         elu 0.5
         reshape 4x10x5
         selu
         pad 1x0 0x2 value 0.25
         softplus
         globalavgpool
         fc 6
         leakyrelu 0.2
         gelu
         prelu
         fc 5
         logsoftmax
         loss nll
         """),
        ("features.nn", "input 7\nfc 7->6\nbatchnorm\nprelu 6\npow 3\nfc 6->4\nsigmoid\ntanh\nidentity\nsoftsign\nabs\nscale -0.7\nexp\nneg\nfc 3\nsoftmax\nloss crossentropy"),
        ("double.nn", "input 6\nfc 6->5\nbatchnorm\nrelu6\nneg\nabs\nexp\nscale 0.5\nsilu\nfc 5->4\nhardtanh\npow 2\nlogsoftmax\nloss nll"),
    ]

    static let models: [String] = {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("models")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        var paths = names.filter { $0.hasSuffix(".nn") }.sorted().map { directory.appendingPathComponent($0).path }
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("nnc-export-models-\(getpid())")
        try? FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        for (name, text) in everyOp {
            let path = scratch.appendingPathComponent(name).path
            if (try? text.write(toFile: path, atomically: true, encoding: .utf8)) != nil { paths.append(path) }
        }
        return paths
    }()

    /// A model with its initial weights and random running statistics (so that batch norm is tested).
    static func state(_ path: String, dtype: DType) throws -> ModelState {
        let program = try ModelProgram.load(path: path)
        var checkpoint = try initialCheckpoint(program, dtype: dtype, seed: 7)
        var random = SplitMix64(seed: 11)
        for index in checkpoint.persistentState.indices {
            let variance = checkpoint.persistentState[index].name.hasSuffix("running_var")
            checkpoint.persistentState[index].values = checkpoint.persistentState[index].values.map { _ in
                Double(random.next() % 1000) / 1000 + (variance ? 0.5 : -0.5)
            }
        }
        return ModelState(program: program, checkpoint: checkpoint)
    }

    static func input(_ state: ModelState, rows: Int) -> (shape: [Int], values: [Double]) {
        var random = SplitMix64(seed: 3)
        let shape = [rows] + state.program.model.inputShape.dims
        return (shape, (0..<shape.reduce(1, *)).map { _ in Double(random.next() % 2001) / 1000 - 1 })
    }

    static func expectClose(_ got: [Double], _ expected: [Double], tolerance: Double, _ what: String) {
        #expect(got.count == expected.count, "\(what): \(got.count) values, expected \(expected.count)")
        let worst = zip(got, expected).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
        #expect(worst <= tolerance, "\(what): largest difference \(worst)")
    }

    @Test func everyModelExportsAndRuntimeAgrees() throws {
        guard let venv = judgeEnvironment() else {
            #expect(!judgesRequired, "CI needs the judges' environment (.ci/run creates it)")
            return
        }
        let directory = try scratchDirectory("export")
        defer { try? FileManager.default.removeItem(at: directory) }
        var requests: [JudgeRequest] = [], expected: [(String, [Double], Double)] = []
        for path in Self.models {
            for dtype in [DType.f32, .f64] {
                let state = try Self.state(path, dtype: dtype)
                let name = (path as NSString).lastPathComponent
                let model: ONNXModel
                do {
                    model = try exportedONNX(state)
                } catch let error as InputError {
                    // Double precision only where ONNX Runtime has the kernels, with a clear error elsewhere.
                    #expect(dtype == .f64 && error.message.contains("no double-precision"), "\(name): \(error.message)")
                    continue
                }
                let file = directory.appendingPathComponent("\(name)-\(dtype.rawValue).onnx").path
                try Data(model.encoded()).write(to: URL(fileURLWithPath: file))
                let (shape, values) = Self.input(state, rows: 3)
                let outputs = try inferenceOutputs(state, inputs: values, count: 3)
                requests.append(JudgeRequest(path: file, shape: shape, values: values, dtype: dtype == .f64 ? "float64" : "float32"))
                expected.append(("\(name) \(dtype.rawValue)", outputs, dtype == .f64 ? 1e-10 : 1e-5))

                // The file imports back into a model with the same outputs (but for gelu: opset 13 spells
                // it out in Pow, Mul, Add and Tanh, which import does not reassemble).
                if state.program.source.text.contains("gelu") { continue }
                let (imported, _) = try importedModelState(path: file)
                #expect(imported.dtype == dtype)
                Self.expectClose(try inferenceOutputs(imported, inputs: values, count: 3), outputs, tolerance: 1e-6, "\(name) \(dtype.rawValue) imported back")
            }
        }
        #expect(expected.count >= Self.models.count, "every model exports in f32")
        #expect(expected.contains { $0.0 == "double.nn f64" }, "a double-precision export")
        for (result, (what, outputs, tolerance)) in zip(try judge(venv, requests), expected) {
            #expect(result.checker == "ok", "\(what): onnx.checker: \(result.checker ?? "-")")
            #expect(result.error == nil, "\(what): ONNX Runtime: \(result.error ?? "")")
            Self.expectClose(result.values ?? [], outputs, tolerance: tolerance, "\(what): ONNX Runtime against nnc run")
        }
    }

    /// Batch-1 inference, judged by ONNX Runtime: one row through layers large enough for the
    /// one-row paths on two threads (the matrix-vector product split over the threads from 2^17
    /// multiply-adds, a convolution's channels split, Winograd's convolutions), and on one thread; and
    /// the Fashion CNN's layers, whose pooled convolutions make their pools without their outputs (the
    /// direct path from its planes, Winograd's tiles split over the threads).
    @Test func batchOneRunAgreesWithRuntime() throws {
        guard let venv = judgeEnvironment() else {
            #expect(!judgesRequired, "CI needs the judges' environment (.ci/run creates it)")
            return
        }
        let directory = try scratchDirectory("batch1")
        defer { try? FileManager.default.removeItem(at: directory) }
        let models = [("mlp.nn", "input 784\nfc 784->256\nrelu\nfc 256->130\ntanh\nfc 130->10\nsoftmax\n"),
                      ("conv.nn", "input 16x32x32\nconv 16->36 3x3 pad 1\nrelu\nflatten\nfc 36864->10\nsoftmax\n"),
                      ("cnn.nn", "input 1x28x28\nconv 1->16 3x3 pad 1\nrelu\nmaxpool 2x2\nconv 16->32 3x3 pad 1\nrelu\nmaxpool 2x2\n"
                                 + "flatten\nfc 1568->128\nrelu\nfc 128->10\nsoftmax\n")]
        var requests: [JudgeRequest] = [], expected: [(String, [Double])] = []
        for (name, text) in models {
            let path = directory.appendingPathComponent(name).path
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            let state = try Self.state(path, dtype: .f32)
            let file = directory.appendingPathComponent(name + ".onnx").path
            try Data(try exportedONNX(state).encoded()).write(to: URL(fileURLWithPath: file))
            let (shape, values) = Self.input(state, rows: 1)
            let two = try inferenceOutputs(state, inputs: values, count: 1, threads: 2)
            #expect(try inferenceOutputs(state, inputs: values, count: 1, threads: 1) == two, "\(name): one thread and two agree bit for bit")
            requests.append(JudgeRequest(path: file, shape: shape, values: values, dtype: "float32"))
            expected.append((name, two))
        }
        for (result, (name, outputs)) in zip(try judge(venv, requests), expected) {
            #expect(result.error == nil, "\(name): ONNX Runtime: \(result.error ?? "")")
            Self.expectClose(result.values ?? [], outputs, tolerance: 1e-5, "\(name): ONNX Runtime against nnc at batch 1")
        }
    }
}

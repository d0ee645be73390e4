import Foundation
import Testing
@testable import NNC
@testable import IR
@testable import ONNX
import TestSupport
import Parser

/// Import of models PyTorch exported (torch.onnx.export, both exporters; batch norm as a node and
/// folded, a residual block with a global average pool, 1-D convolution): nnc reproduces ONNX
/// Runtime's outputs to 1e-4 (bench/reference/onnx_torch_models.py wrote the files and ONNX
/// Runtime's numbers). Malformed, truncated, bit-flipped and lying files are errors, never crashes.
@Suite struct ONNXImportTests {
    struct Tensor: Decodable { var shape: [Int]; var values: [Double] }
    struct Case: Decodable { var file: String; var input: Tensor; var output: Tensor }
    struct Reference: Decodable { var torch: String; var cases: [Case] }

    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Data/onnx")
    static let reference: Reference? = (try? Data(contentsOf: directory.appendingPathComponent("onnx_torch_models.json")))
        .flatMap { try? JSONDecoder().decode(Reference.self, from: $0) }
    static var files: [String] { reference?.cases.map(\.file) ?? ["(missing Tests/Data/onnx/onnx_torch_models.json)"] }

    @Test(arguments: files)
    func pytorchExportReproducesRuntime(_ file: String) throws {
        let c = try #require(Self.reference?.cases.first { $0.file == file })
        let (state, imported) = try importedModelState(path: Self.directory.appendingPathComponent(file).path)
        #expect(Array(c.output.shape.dropFirst()) == imported.outputDims)
        let got = try inferenceOutputs(state, inputs: c.input.values, count: c.input.shape[0])
        #expect(got.count == c.output.values.count)
        let worst = zip(got, c.output.values).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? .infinity
        #expect(worst <= 1e-4, "\(file): largest difference from ONNX Runtime \(worst)")
    }

    /// An imported model trains: its source compiles to a training graph once a loss is added.
    @Test func importedModelsTrain() throws {
        let (state, _) = try importedModelState(path: Self.directory.appendingPathComponent("residual-torchscript.onnx").path)
        let program = try state.program.withLoss(.crossentropy)
        _ = try program.trainingGraph(dtype: .f32, settings: program.settings.training).optimized(verify: true)
    }

    static func decodeAndImport(_ bytes: [UInt8]) -> String {
        do {
            let model = try ONNXModel(bytes: bytes)
            _ = try importONNX(model)
            return "ok"
        } catch let error as ProtobufError {
            return "byte \(error.offset): \(error.message)"
        } catch {
            return "\(error)"
        }
    }

    @Test func truncatedFilesAreErrors() throws {
        let bytes = [UInt8](try Data(contentsOf: Self.directory.appendingPathComponent("cnn-torchscript.onnx")))
        var errors = 0
        for length in 0..<bytes.count {
            if Self.decodeAndImport(Array(bytes[..<length])) != "ok" { errors += 1 }
        }
        // A prefix can be a valid, smaller model only where it ends between the graph's fields.
        #expect(errors > bytes.count * 9 / 10)
    }

    @Test func mutatedFilesNeverCrash() throws {
        var random = SplitMix64(seed: 2026)
        var outcomes: [String: Int] = [:]
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.directory.path).filter({ $0.hasSuffix(".onnx") }).sorted()
        for file in files {
            let original = [UInt8](try Data(contentsOf: Self.directory.appendingPathComponent(file)))
            for _ in 0..<100 {
                var bytes = original
                for _ in 0..<(1 + random.below(4)) {
                    let at = random.below(bytes.count)
                    switch random.below(3) {
                    case 0: bytes[at] ^= UInt8(1 << random.below(8))           // a bit flip
                    case 1: bytes[at] = UInt8(truncatingIfNeeded: random.next()) // a random byte
                    default: bytes[at] = 0xff                                    // a long varint
                    }
                }
                let outcome = Self.decodeAndImport(bytes)
                outcomes[outcome == "ok" ? "ok" : "error", default: 0] += 1
            }
        }
        #expect((outcomes["ok"] ?? 0) + (outcomes["error"] ?? 0) == 100 * files.count && files.count >= 10)
        #expect((outcomes["error"] ?? 0) > 0)
    }

    /// Every input the fuzz harness (Fuzz/onnx.swift) ever failed on: it imports to a model whose
    /// source compiles, or is an error.
    @Test func fuzzFindingsStayFixed() throws {
        let findings = try fuzzFindings("onnx")
        #expect(!findings.isEmpty)
        for (file, bytes) in findings {
            guard let model = try? ONNXModel(bytes: bytes), let imported = try? importONNX(model) else { continue }
            #expect(throws: Never.self, "\(file)") { _ = try ModelProgram.compile(SourceFile(path: "m.nn", text: imported.source)) }
        }
    }

    @Test func lyingLengthsAreErrorsWithTheirOffset() {
        // graph (field 7, length-delimited) with a length of 2^62.
        var lying = ProtoWriter()
        lying.tag(7, .lengthDelimited)
        lying.varint(1 << 62)
        #expect(Self.decodeAndImport(lying.bytes) == "byte 1: length 4611686018427387904 runs past the end of its message (0 bytes left)")

        // A tensor declaring 10^10 elements without their data: refused before any allocation.
        var tensor = ProtoWriter()
        tensor.int(1, 100_000); tensor.int(1, 100_000); tensor.int(2, 1); tensor.string(8, "w")
        var graph = ProtoWriter()
        graph.message(5, tensor)
        var model = ProtoWriter()
        model.message(7, graph)
        #expect(Self.decodeAndImport(model.bytes).hasSuffix("tensor 'w' declares more than 2^31 elements"))

        // A varint of eleven bytes.
        #expect(Self.decodeAndImport([0x08] + [UInt8](repeating: 0xff, count: 11)) == "byte 1: varint longer than 10 bytes")
        #expect(Self.decodeAndImport([]) == "byte 0: not an ONNX model: no graph (field 7) in 0 bytes")
    }

    @Test func unsupportedOpsNameTheNodeOpAndOpset() throws {
        var model = ONNXModel()
        model.irVersion = 8
        model.opsets = [ONNXOpset(domain: "", version: 13)]
        model.graph.inputs = [ONNXValueInfo(name: "x", elementType: 1, dims: [.parameter("N"), .value(4)])]
        model.graph.outputs = [ONNXValueInfo(name: "y", elementType: 1, dims: nil)]
        model.graph.nodes = [ONNXNode(inputs: ["x"], outputs: ["y"], name: "cos1", opType: "Cos")]
        let message = Self.decodeAndImport(model.encoded())
        #expect(message.hasPrefix("node 'cos1' (Cos, opset 13): nnc does not import Cos; it imports Gemm, MatMul,"))
    }

    @Test func wireFormatReadsPackedAndUnpackedFieldsInAnyOrder() throws {
        // dims packed and one per tag, float_data packed, the name last: the same tensor.
        var packed = ProtoWriter()
        packed.packedInts(1, [2, 3])
        packed.int(2, 1)
        let raw = (0..<6).flatMap { k in (0..<4).map { UInt8(truncatingIfNeeded: Float(k).bitPattern >> (8 * $0)) } }
        packed.data(4, raw)
        packed.string(8, "t")
        var unpacked = ProtoWriter()
        unpacked.string(8, "t")
        for k in 0..<6 { unpacked.float(4, Float(k)) }
        unpacked.int(1, 2); unpacked.int(2, 1); unpacked.int(1, 3)
        unpacked.int(99, 7)  // an unknown field, skipped
        let a = try ONNXTensor(bytes: packed.bytes), b = try ONNXTensor(bytes: unpacked.bytes)
        #expect(a == b)
        #expect(a.dims == [2, 3] && a.values == [0, 1, 2, 3, 4, 5])
    }
}

import Foundation
import Testing
@testable import NNC
import ONNX
import TestSupport

/// The ONNX package's own backend tests (`pytorch-converted`: 82 models with an input and the
/// expected output as TensorProto files), run the way the official runner does: import the model,
/// run it on the input, compare with rtol 1e-3 and atol 1e-7. The tests nnc passes are listed in
/// Tests/Data/onnx_backend_passing.txt: each must keep passing, and there must be at least 60.
/// Every test's result is written to .build/onnx-backend-results.md (the README's table).
@Suite struct ONNXBackendTests {
    static let passingList: [String] = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Data/onnx_backend_passing.txt")
        let text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map(String.init).filter { !$0.isEmpty && !$0.hasPrefix("#") }
    }()

    /// The outcome of one backend test: nil when it passes, else why not. A passing model is also
    /// exported (`roundTrip`: the file, its input and the expected output) for ONNX Runtime.
    static func run(_ directory: URL, exportTo roundTrip: URL? = nil) -> (failure: String?, roundTrip: (JudgeRequest, [Double])?) {
        do {
            let (state, imported) = try importedModelState(path: directory.appendingPathComponent("model.onnx").path)
            let data = directory.appendingPathComponent("test_data_set_0")
            let input = try ONNXTensor(bytes: [UInt8](Data(contentsOf: data.appendingPathComponent("input_0.pb"))))
            let expected = try ONNXTensor(bytes: [UInt8](Data(contentsOf: data.appendingPathComponent("output_0.pb"))))
            guard let batch = input.dims.first else { return ("the input has no batch dimension", nil) }
            let got = try inferenceOutputs(state, inputs: input.values, count: batch)
            guard got.count == expected.values.count, Array(expected.dims.dropFirst()) == imported.outputDims else {
                return ("output \(got.count) values as [N]+\(imported.outputDims), expected \(expected.dims)", nil)
            }
            // numpy.testing.assert_allclose(actual, desired, rtol=1e-3, atol=1e-7)
            var worst = 0.0
            for (a, b) in zip(got, expected.values) {
                let excess = abs(a - b) - (1e-7 + 1e-3 * abs(b))
                if !(excess <= 0) { worst = max(worst, excess.isNaN ? .infinity : excess) }
            }
            if worst > 0 { return ("outputs differ (by up to \(worst) beyond the tolerance)", nil) }
            guard let roundTrip else { return (nil, nil) }
            try Data(try exportedONNX(state).encoded()).write(to: roundTrip)
            let shape = [batch] + state.program.model.inputShape.dims
            return (nil, (JudgeRequest(path: roundTrip.path, shape: shape, values: input.values), expected.values))
        } catch {
            return ("\(error)".replacingOccurrences(of: directory.path + "/", with: ""), nil)
        }
    }

    @Test func pytorchConvertedTests() throws {
        guard let venv = judgeEnvironment() else {
            #expect(!judgesRequired, "CI needs the judges' environment (.ci/run creates it)")
            return
        }
        let root = try #require(onnxBackendData(venv), "no onnx/backend/test/data/pytorch-converted in \(venv.path)")
        let tests = try FileManager.default.contentsOfDirectory(atPath: root.path).filter { $0.hasPrefix("test_") }.sorted()
        #expect(tests.count == 82)
        let exports = try scratchDirectory("backend")
        defer { try? FileManager.default.removeItem(at: exports) }
        var results: [(String, String?)] = []
        var roundTrips: [(String, JudgeRequest, [Double])] = []
        for test in tests {
            let (failure, roundTrip) = Self.run(root.appendingPathComponent(test), exportTo: exports.appendingPathComponent(test + ".onnx"))
            results.append((test, failure))
            if let (request, expected) = roundTrip { roundTrips.append((test, request, expected)) }
        }
        let passed = results.filter { $0.1 == nil }.map(\.0)
        // nnc import → nnc export → ONNX Runtime gives the test's expected output.
        #expect(roundTrips.count == passed.count)
        let verdicts = try judge(venv, roundTrips.map(\.1))
        #expect(verdicts.count == roundTrips.count)
        for ((test, _, expected), judged) in zip(roundTrips, verdicts) {
            #expect(judged.error == nil && judged.checker == "ok", "\(test) exported: \(judged.error ?? judged.checker ?? "")")
            let got = judged.values ?? []
            let within = got.count == expected.count && zip(got, expected).allSatisfy { abs($0 - $1) <= 1e-7 + 1e-3 * abs($1) }
            #expect(within, "\(test): ONNX Runtime on nnc's export differs from the expected output")
        }
        for name in Self.passingList {
            #expect(passed.contains(name), "\(name) no longer passes: \(results.first { $0.0 == name }?.1 ?? "missing")")
        }
        #expect(passed.count >= 60, "\(passed.count) of \(tests.count) backend tests pass")
        var table = "| test | nnc |\n| --- | --- |\n"
        for (name, failure) in results {
            table += "| \(name) | \(failure.map { "no: " + $0.replacingOccurrences(of: "|", with: "\\|").replacingOccurrences(of: "\n", with: " ") } ?? "pass") |\n"
        }
        table += "\n\(passed.count) of \(tests.count) pass.\n"
        let package = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        try? table.write(to: package.appendingPathComponent(".build/onnx-backend-results.md"), atomically: true, encoding: .utf8)
    }
}

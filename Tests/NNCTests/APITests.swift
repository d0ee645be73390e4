import Foundation
import Testing
import NNC

/// The public API as a Swift program uses it (`import NNC` only).
@Suite struct APITests {
    static let source = "input 2\nfc 2->4\ntanh\nfc 4->3\nloss crossentropy\ntrain sgd lr 0.3 momentum 0.9 epochs 6 batch 3 seed 5\n"

    static func data() throws -> Dataset {
        var features: [Double] = []
        for i in 0..<20 { features += [Double(i % 5) / 4, Double(i % 3) / 2] }
        return try Dataset.classification(features: features, featureCount: 2, labels: (0..<20).map { $0 % 3 }, name: "points")
    }

    @Test func errorsAreTyped() throws {
        #expect(throws: DiagnosticError.self) { try Model(source: "input 2\nfc 3->1\n") }
        var model = try Model(source: Self.source)
        #expect(throws: InputError.self) { try model.predict([1.0, 2, 3] as [Double], count: 1) }
        #expect(throws: InputError.self) { try model.setParameter("fc9.weight", to: [1]) }
        #expect(throws: InputError.self) { try model.setParameter("fc1.bias", to: [1]) }
        #expect(throws: InputError.self) { try Dataset.classification(features: [1, 2, 3], featureCount: 2, labels: [0]) }
        #expect(throws: InputError.self) { try Dataset.classification(features: [1, .nan], featureCount: 2, labels: [0]) }
        let wrongLabels = try Dataset.classification(features: [1, 2], featureCount: 2, labels: [7])
        #expect(throws: InputError.self) { try model.train(on: wrongLabels) }
        #expect(throws: (any Error).self) { try Model(contentsOf: "/nonexistent/m.nnc") }
    }

    @Test func parametersByName() throws {
        var model = try Model(source: Self.source)
        #expect(model.parameterNames == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"])
        #expect(model.parameter("fc1.weight")?.shape == [2, 4])
        try model.setParameter("fc1.bias", to: [1, 2, 3, 4])
        #expect(model.parameter("fc1.bias")?.values == [1, 2, 3, 4])
    }

    /// A handler that stops the run leaves a checkpoint; training it again ends exactly where an
    /// uninterrupted run does, also through a file.
    @Test func stoppingAndResumingIsExact() throws {
        let data = try Self.data()
        var whole = try Model(source: Self.source)
        var epochs: [Int] = []
        let summary = try whole.train(on: data) { event in
            if case .epoch(let report) = event { epochs.append(report.epoch) }
            return .continue
        }
        #expect(epochs == Array(1...6) && !summary.stopped && summary.steps == 42)

        var parts = try Model(source: Self.source)
        var steps = 0
        let first = try parts.train(on: data) { event in
            if case .step = event { steps += 1 }
            return steps == 10 ? .stop : .continue
        }
        #expect(first.stopped && first.steps == 10)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("api-\(getpid()).nnc").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try parts.save(to: path)
        var resumed = try Model(contentsOf: path)
        let rest = try resumed.train(on: data)
        #expect(rest.steps == 32 && !rest.stopped)
        for name in whole.parameterNames { #expect(resumed.parameter(name)?.values == whole.parameter(name)?.values, "\(name)") }
        #expect(resumed.history.map(\.loss) == whole.history.map(\.loss))

        let evaluation = try whole.evaluate(data)
        #expect(evaluation.accuracy != nil && evaluation.loss.isFinite)
        let floats = try whole.predict([Float(0.5), 0.5], count: 1)
        let doubles = try whole.predict([0.5, 0.5], count: 1)
        #expect(floats.count == 3 && zip(floats, doubles).allSatisfy { abs(Double($0) - $1) < 1e-6 })
        var buffer = [Float](repeating: 0, count: 3)
        try [Float(0.5), 0.5].withUnsafeBufferPointer { input in
            try buffer.withUnsafeMutableBufferPointer { try whole.predict(input, count: 1, into: $0) }
        }
        #expect(buffer == floats)
        var small = [Float](repeating: 0, count: 2)
        #expect(throws: InputError.self) {
            try [Float(0.5), 0.5].withUnsafeBufferPointer { input in try small.withUnsafeMutableBufferPointer { try whole.predict(input, count: 1, into: $0) } }
        }
    }
}

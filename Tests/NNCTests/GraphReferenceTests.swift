import Foundation
import Testing
@testable import NNC
@testable import IR
@testable import Runtime
import Parser

/// Graph models (named values, add, concat, batch norm, grouped, dilated and strided convolutions,
/// padded pooling, elu, selu, softplus, gelu, logsoftmax with nll, batch norms fused with what
/// follows them on odd planes) against PyTorch: the same weights
/// and running statistics give PyTorch's evaluation outputs, and one full-batch SGD step in training
/// mode gives its weights and running statistics, to 1e-9 in f64. The numbers come from
/// bench/reference/graphs_torch.py (Tests/Data/graphs_torch.json).
@Suite struct GraphReferenceTests {
    struct Tensor: Decodable { var shape: [Int]; var values: [Double] }
    struct Case: Decodable {
        var name: String, source: String
        var tensors: [String: Tensor]
        var x: Tensor
        var labels: [Int]
        var eval_output: [Double]
        var loss: Double
        var after_step: [String: Tensor]
    }
    struct Reference: Decodable { var torch: String; var cases: [Case] }

    static let reference: Reference? = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Data/graphs_torch.json")
        return (try? Data(contentsOf: url)).flatMap { try? JSONDecoder().decode(Reference.self, from: $0) }
    }()

    static var caseNames: [String] { reference?.cases.map(\.name) ?? ["(missing Tests/Data/graphs_torch.json)"] }

    static func reference(_ name: String) throws -> Case {
        try #require(reference?.cases.first { $0.name == name })
    }

    /// Loads the case's weights and running statistics into a store, by name.
    static func load(_ c: Case, into store: ParameterStore<Double>) throws {
        for (index, name) in store.names.enumerated() {
            let tensor = try #require(c.tensors[name], "no \(name)")
            #expect(tensor.shape == store.shapes[index], "\(name)")
            store.load(tensor.values, into: store.parameters[index])
        }
        for (index, slot) in store.stateSlots.enumerated() where slot.kind == .persistent {
            store.load(try #require(c.tensors[slot.name], "no \(slot.name)").values, into: store.states[index])
        }
    }

    static func expectClose(_ got: [Double], _ expected: [Double], _ what: String, tolerance: Double = 1e-9) {
        #expect(got.count == expected.count, "\(what): \(got.count) values, PyTorch \(expected.count)")
        let worst = zip(got, expected).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
        #expect(worst <= tolerance, "\(what): largest difference \(worst)")
    }

    @Test(arguments: caseNames, [1, 2])
    func evaluationMatchesPyTorch(_ name: String, threads: Int) throws {
        let c = try Self.reference(name)
        let program = try ModelProgram.compile(SourceFile(path: "\(name).nn", text: c.source))
        let graph = try program.inferenceGraph(dtype: .f64, withLoss: false)
        let store = ParameterStore<Double>(graph: graph)
        try Self.load(c, into: store)
        let batch = c.labels.count
        let session = try Session<Double>(plan: try Plan(graph: graph, batch: batch), store: store, threads: threads)
        let input = try #require(session.inputPointer)
        for (i, v) in c.x.values.enumerated() { input[i] = v }
        try session.run(batch: batch)
        let output = session.pointer(try #require(graph.output))
        Self.expectClose((0..<c.eval_output.count).map { output[$0] }, c.eval_output, "\(name) evaluation output")
    }

    @Test(arguments: caseNames, [1, 2])
    func oneTrainingStepMatchesPyTorch(_ name: String, threads: Int) throws {
        let c = try Self.reference(name)
        let program = try ModelProgram.compile(SourceFile(path: "\(name).nn", text: c.source))
        let graph = try program.trainingGraph(dtype: .f64, settings: program.settings.training).optimized(verify: true).graph
        if name == "pooled" {
            // These numbers judge fuse-batchnorm's kernels: its three chains must have fused.
            #expect(graph.nodes.filter { if case .batchNormGrad(let epilogue) = $0.op { return epilogue != .none }; return false }.count == 3)
        }
        let store = ParameterStore<Double>(graph: graph)
        try Self.load(c, into: store)
        let batch = c.labels.count
        let session = try Session<Double>(plan: try Plan(graph: graph, batch: batch), store: store, threads: threads)
        let input = try #require(session.inputPointer), target = try #require(session.targetPointer)
        for (i, v) in c.x.values.enumerated() { input[i] = v }
        for (i, label) in c.labels.enumerated() { target[i] = Double(label) }
        try session.run(batch: batch)
        #expect(abs(session.lossValue - c.loss) <= 1e-12 * max(1, abs(c.loss)), "\(name) loss \(session.lossValue) vs \(c.loss)")
        for (index, parameter) in store.names.enumerated() {
            Self.expectClose(store.values(store.parameters[index]), try #require(c.after_step[parameter]).values, "\(name) \(parameter) after the step")
        }
        for (index, slot) in store.stateSlots.enumerated() where slot.kind == .persistent {
            Self.expectClose(store.values(store.states[index]), try #require(c.after_step[slot.name]).values, "\(name) \(slot.name) after the step")
        }
    }
}

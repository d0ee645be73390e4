import Foundation
import Testing
@testable import NNC
@testable import IR
@testable import Runtime
import Parser

/// Inference sessions with constant parameters pack their weights for the GEMMs once.
@Suite struct ConstantParametersTests {
    static let text = "input 300\nfc 300->200\nrelu\nfc 200->40 nobias\nsigmoid"

    /// The model's output for one fixed batch, from a session over `store`.
    static func output<T: KernelScalar>(_ session: Session<T>, batch: Int) throws -> [T] {
        var random = MT19937(seed: 4)
        fillRandomBatch(session, batch: batch, random: &random)
        try session.run(batch: batch)
        guard let output = session.plan.graph.output else { return [] }
        let pointer = session.pointer(output)
        return Array(UnsafeBufferPointer(start: pointer, count: 40 * batch))
    }

    static func store<T: KernelScalar>(_ graph: Graph, seed: Int) -> ParameterStore<T> {
        let store = ParameterStore<T>(graph: graph)
        for (buffer, initial) in zip(store.parameters, initialValues(for: graph.parameters, seed: seed)) { store.load(initial, into: buffer) }
        return store
    }

    func check<T: KernelScalar>(_ t: T.Type, threads: Int) throws {
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: Self.text))
        let graph = try program.inferenceGraph(dtype: T.self == Double.self ? .f64 : .f32, withLoss: false)
        let plan = try Plan(graph: graph, batch: 64)
        let store: ParameterStore<T> = Self.store(graph, seed: 1)
        let packed = try Session<T>(plan: plan, store: store, threads: threads, constantParameters: true)
        #expect(packed.constantParameters)
        let plain = try Session<T>(plan: plan, store: store, threads: threads)
        // Same bits, at the planned batch and at a smaller one (its own executable, same packed weights).
        for batch in [64, 30] {
            #expect(try Self.output(packed, batch: batch) == Self.output(plain, batch: batch), "batch \(batch)")
        }
        // New parameters: the packed session keeps multiplying by the old weights until told.
        for (buffer, initial) in zip(store.parameters, initialValues(for: graph.parameters, seed: 2)) { store.load(initial, into: buffer) }
        let expected = try Self.output(plain, batch: 64)
        #expect(try Self.output(packed, batch: 64) != expected)
        packed.parametersChanged()
        #expect(try Self.output(packed, batch: 64) == expected)
    }

    @Test func packedWeightsGiveTheSameOutputs() throws {
        for threads in [1, 2] {
            try check(Float.self, threads: threads)
            try check(Double.self, threads: threads)
        }
    }

    /// The f32 products run on the 256-bit or the 512-bit kernel (by the build's target; the weights
    /// packed for the one in use): both give the same outputs, bit for bit, packed or not, at batch 64
    /// and at batch 1 (the matrix-vector path, threaded for the first layer), whatever the machine.
    @Test func bothKernelWidthsGiveTheSameOutputs() throws {
        let text = "input 600\nfc 600->256\nrelu\nfc 256->96\nsigmoid\nfc 96->40\nsigmoid"
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: text))
        let graph = try program.inferenceGraph(dtype: .f32, withLoss: false)
        let plan = try Plan(graph: graph, batch: 64)
        let store: ParameterStore<Float> = Self.store(graph, seed: 1)
        func session(wide: Bool, packed: Bool) throws -> Session<Float> {
            let context = GEMMContext(threads: 2)
            context.wideKernels = wide
            return try Session<Float>(plan: plan, store: store, threads: 2, context: context, constantParameters: packed)
        }
        for batch in [64, 1] {
            let expected = try Self.output(session(wide: false, packed: false), batch: batch)
            for (wide, packed) in [(false, true), (true, false), (true, true)] {
                #expect(try Self.output(session(wide: wide, packed: packed), batch: batch) == expected,
                        "batch \(batch), \(wide ? 512 : 256)-bit kernel, \(packed ? "packed" : "unpacked") weights")
            }
        }
    }

    /// A plan that updates its parameters (training) never packs them once.
    @Test func trainingSessionsIgnoreIt() throws {
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: "input 300\nfc 300->200\nrelu\nfc 200->10\nloss crossentropy"))
        let graph = try program.trainingGraph(dtype: .f32, settings: TrainingSettings()).optimized().graph
        let session = try Session<Float>(plan: try Plan(graph: graph, batch: 64), store: Self.store(graph, seed: 1), threads: 2,
                                         constantParameters: true)
        #expect(!session.constantParameters)
    }
}

import Foundation
import Testing
@testable import NNC
@testable import IR
@testable import Runtime
import Parser

/// Parameters after `steps` training steps (SGD with momentum, or Adam) from a fixed start, on fixed
/// random batches, with the given number of threads.
private func trainedParameters(_ text: String, batch: Int, threads: Int, steps: Int = 4, adam: Bool = false,
                               wideKernels: Bool? = nil) throws -> [[Float]] {
    let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: text))
    var settings = TrainingSettings()
    settings.momentum = 0.9
    if adam { settings.optimizer = .adam }
    let graph = try program.trainingGraph(dtype: .f32, settings: settings).optimized().graph
    let plan = try Plan(graph: graph, batch: batch)
    let store = ParameterStore<Float>(graph: graph)
    for (buffer, initial) in zip(store.parameters, initialValues(for: graph.parameters, seed: 3)) { store.load(initial, into: buffer) }
    let context = GEMMContext(threads: threads)
    if let wideKernels { context.wideKernels = wideKernels }
    let session = try Session<Float>(plan: plan, store: store, threads: threads, seed: 5, context: context)
    var random = MT19937(seed: 11)
    for _ in 0..<steps {
        fillRandomBatch(session, batch: batch, random: &random)
        try session.run(batch: batch)
    }
    return store.parameters.map { Array($0) }
}

/// Threads claim work items as they come free, so which thread computes what varies from run to
/// run; results must not. Every kernel here is above its parallel threshold at these sizes.
@Suite struct ThreadDeterminismTests {
    static let mlp = "input 64\nfc 64->512\nrelu\nfc 512->10\nloss crossentropy"
    static let cnn = "input 1x12x12\nconv 1->8 3x3 pad 1\nrelu\nmaxpool 2x2\nflatten\nfc 288->64\nrelu\nfc 64->10\nloss crossentropy"

    @Test func repeatedRunsOnTwoThreadsAgreeBitForBit() throws {
        for (text, batch) in [(Self.mlp, 64), (Self.cnn, 32)] {
            let first = try trainedParameters(text, batch: batch, threads: 2)
            for _ in 0..<3 { #expect(try trainedParameters(text, batch: batch, threads: 2) == first, "\(text)") }
        }
        let adam = try trainedParameters(Self.mlp, batch: 64, threads: 2, adam: true)
        #expect(try trainedParameters(Self.mlp, batch: 64, threads: 2, adam: true) == adam)
    }

    /// Without convolutions (whose weight gradients are summed per thread, then across threads),
    /// the thread count does not change a single bit either.
    @Test func oneTwoAndThreeThreadsAgreeOnAnMLP() throws {
        let one = try trainedParameters(Self.mlp, batch: 64, threads: 1)
        #expect(try trainedParameters(Self.mlp, batch: 64, threads: 2) == one)
        #expect(try trainedParameters(Self.mlp, batch: 64, threads: 3) == one)
        let adam = try trainedParameters(Self.mlp, batch: 64, threads: 1, adam: true)
        #expect(try trainedParameters(Self.mlp, batch: 64, threads: 2, adam: true) == adam)
    }

    /// Training on the 256-bit or the 512-bit f32 kernel (by the build's target) gives the same
    /// parameters, bit for bit, on any machine: forward, weight-gradient and input-gradient products.
    @Test func bothKernelWidthsTrainAlike() throws {
        for (text, batch) in [(Self.mlp, 64), (Self.cnn, 32)] {
            let narrow = try trainedParameters(text, batch: batch, threads: 2, wideKernels: false)
            #expect(try trainedParameters(text, batch: batch, threads: 2, wideKernels: true) == narrow, "\(text)")
        }
    }

    /// The Fashion-MNIST MLP on the short last batch of an epoch (60,000 = 468 · 128 + 96): its first
    /// layer packs A once for both threads, and a packing overrun once made two threads differ there.
    @Test func fashionMLPOnItsLastBatch() throws {
        let text = "input 784\nfc 784->256\nrelu\nfc 256->128\nrelu\nfc 128->10\nloss crossentropy"
        let one = try trainedParameters(text, batch: 96, threads: 1, steps: 1)
        #expect(try trainedParameters(text, batch: 96, threads: 2, steps: 1) == one)
    }
}

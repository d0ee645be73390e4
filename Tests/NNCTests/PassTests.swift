import Foundation
import Testing
import TestSupport
@testable import NNC
@testable import IR
@testable import Runtime
import Parser

/// The models shipped in models/, read relative to this file.
func shippedModelsDirectory() -> String {
    let here = URL(fileURLWithPath: #filePath)
    return here.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("models").path
}

func shippedModelFiles() -> [String] {
    let directory = shippedModelsDirectory()
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    return names.filter { $0.hasSuffix(".nn") }.sorted().map { directory + "/" + $0 }
}

/// Loss and gradients of one step on fixed random data, in a given graph.
func lossAndGradients<T: KernelScalar>(_ type: T.Type, _ graph: Graph, batch: Int) throws -> (Double, [[Double]]) {
    let plan = try Plan(graph: graph, batch: batch)
    let store = ParameterStore<T>(graph: graph)
    let values = initialValues(for: graph.parameters, seed: 3)
    for (buffer, initial) in zip(store.parameters, values) { store.load(initial, into: buffer) }
    let session = try Session<T>(plan: plan, store: store, threads: 1, seed: 5)
    var random = MT19937(seed: 11)
    fillRandomBatch(session, batch: batch, random: &random)
    session.reseed(99)
    try session.run(batch: batch)
    let gradients = graph.gradients.map { id in
        id.map { Array(UnsafeBufferPointer(start: session.pointer($0), count: graph[$0].shape.rowElements)).map(Double.init) } ?? []
    }
    return (session.lossValue, gradients)
}

/// Parameters after `steps` training steps on fixed random data, in a given training graph.
func parametersAfterTraining<T: KernelScalar>(_ type: T.Type, _ graph: Graph, batch: Int, steps: Int, threads: Int) throws -> [[Double]] {
    let plan = try Plan(graph: graph, batch: batch)
    let store = ParameterStore<T>(graph: graph)
    let values = initialValues(for: graph.parameters, seed: 3)
    for (buffer, initial) in zip(store.parameters, values) { store.load(initial, into: buffer) }
    let session = try Session<T>(plan: plan, store: store, threads: threads, seed: 5)
    var random = MT19937(seed: 11)
    for step in 0..<steps {
        fillRandomBatch(session, batch: batch, random: &random)
        session.reseed(UInt32(step))
        try session.run(batch: batch)
    }
    return store.parameters.map { Array($0).map(Double.init) }
}

@Suite struct PassTests {
    /// For every model in models/: training with the SGD steps fused into the weight-gradient GEMMs
    /// gives the same parameters, bit for bit, as training with separate update passes.
    @Test(arguments: shippedModelFiles())
    func fusedUpdatesMatchSeparateUpdates(_ path: String) throws {
        let program = try ModelProgram.load(path: path)
        guard program.model.graph.loss != nil else { return }
        var settings = TrainingSettings()
        settings.momentum = 0.9
        settings.decay = 0.001
        for dtype in [DType.f32, .f64] {
            let training = try program.trainingGraph(dtype: dtype, settings: settings)
            let separate = try training.optimized(through: "fuse-activation-grad", verify: true).graph
            let (fused, log) = try training.optimized(verify: true)
            #expect(log.contains { $0.pass == "fuse-update" && $0.fused }, "\(path): no update fused")
            #expect(fused.nodes.contains { if case .matmulUpdate = $0.op { return true }; return false })
            let a = dtype == .f32 ? try parametersAfterTraining(Float.self, separate, batch: 3, steps: 3, threads: 2)
                                  : try parametersAfterTraining(Double.self, separate, batch: 3, steps: 3, threads: 2)
            let b = dtype == .f32 ? try parametersAfterTraining(Float.self, fused, batch: 3, steps: 3, threads: 2)
                                  : try parametersAfterTraining(Double.self, fused, batch: 3, steps: 3, threads: 2)
            #expect(a == b, "\(path) \(dtype): parameters differ")
        }
    }

    /// The fused step stays at the matmul when nothing later reads the parameter, and moves to the
    /// update's place when something does; a bias whose gradient an activation's backward pass sums
    /// takes its step there; Adam steps and other gradients are logged, not fused.
    @Test func updateFusionPlacementAndReasons() throws {
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: "input 4\nfc 4->3\nrelu\nfc 3->2\nloss crossentropy"))
        var settings = TrainingSettings()
        settings.momentum = 0.9
        var training = try program.trainingGraph(dtype: .f32, settings: settings)
        var (fused, log) = try training.optimized(verify: true)
        // Both weights, and the first layer's bias (relu's gradient sums it); the second layer's bias
        // gradient is a bias_grad of the loss's gradient.
        #expect(log.filter { $0.pass == "fuse-update" && $0.fused }.count == 3)
        #expect(log.contains { $0.pass == "fuse-update" && !$0.fused && $0.reason.contains("not computed by a matmul") && $0.line == 4 })
        let placed = fused.nodes.filter { if case .matmulUpdate = $0.op { return true }; return false }
        #expect(placed.allSatisfy { $0.phase == .backward })
        let b0 = training.parameters[1].value
        let biasStep = try #require(fused.nodes.first { if case .activationGradBiasUpdate(.relu, .sgd(_, 0.9, false, 0)) = $0.op { return true }; return false })
        #expect(biasStep.operands.count == 4 && biasStep.operands[2] == b0 && biasStep.phase == .backward)
        #expect(!fused.nodes.contains { if case .update = $0.op { return $0.operands[0] == b0 }; return false })

        // Put the second layer's weight gradient before the input gradient that reads its weight:
        // its fused step must then wait for the update's place.
        let producers = training.producers()
        let w1 = training.parameters[2].value
        let g1 = try #require(training.gradients[2])
        let dw = try #require(producers[g1.index])
        let dh = try #require(training.nodes.indices.first { training.nodes[$0].operands.contains(w1) && training.nodes[$0].phase == .backward })
        #expect(dh < dw)
        let moved = training.nodes.remove(at: dw)
        training.nodes.insert(moved, at: dh)
        (fused, log) = try training.optimized(verify: true)
        let fusedW1 = try #require(fused.nodes.firstIndex { if case .matmulUpdate = $0.op, $0.operands[2] == w1 { return true }; return false })
        let readsW1 = fused.nodes.indices.filter { fused.nodes[$0].operands.contains(w1) && $0 != fusedW1 }
        #expect(readsW1.allSatisfy { $0 < fusedW1 })
        #expect(fused.nodes[fusedW1].phase == .update)
        #expect(try parametersAfterTraining(Float.self, fused, batch: 2, steps: 2, threads: 1)
                == parametersAfterTraining(Float.self, training.optimized(through: "fuse-activation-grad").graph, batch: 2, steps: 2, threads: 1))

        settings.optimizer = .adam
        log = try program.trainingGraph(dtype: .f32, settings: settings).optimized(verify: true).log
        #expect(!log.contains { $0.pass == "fuse-update" && $0.fused })
        #expect(log.contains { $0.pass == "fuse-update" && $0.reason == "only sgd steps are fused" })
    }

    /// For every model in models/: the optimized graph gives the same loss and gradients as the
    /// unoptimized one (1e-5 relative in f32, 1e-12 in f64), and the verifier passes after each pass.
    @Test(arguments: shippedModelFiles())
    func optimizedGraphMatchesUnoptimized(_ path: String) throws {
        let program = try ModelProgram.load(path: path)
        guard program.model.graph.loss != nil else { return }
        let batch = 3
        for dtype in [DType.f32, .f64] {
            let plain = try program.gradientGraph(dtype: dtype, training: true)
            let optimized = try plain.optimized(verify: true).graph
            let tolerance = dtype == .f32 ? 1e-5 : 1e-12
            let (lossA, gradientsA) = dtype == .f32 ? try lossAndGradients(Float.self, plain, batch: batch) : try lossAndGradients(Double.self, plain, batch: batch)
            let (lossB, gradientsB) = dtype == .f32 ? try lossAndGradients(Float.self, optimized, batch: batch) : try lossAndGradients(Double.self, optimized, batch: batch)
            #expect(abs(lossA - lossB) <= tolerance * max(1, abs(lossA)), "\(path) \(dtype): loss \(lossA) vs \(lossB)")
            for (a, b) in zip(gradientsA, gradientsB) {
                #expect(a.count == b.count)
                let scale = max(1e-3, a.map(abs).max() ?? 0)
                for (x, y) in zip(a, b) { #expect(abs(x - y) <= tolerance * scale * 10, "\(path) \(dtype): gradient \(x) vs \(y)") }
            }
        }
    }

    /// `loss mse` and `loss sse` become one op, with its gradient one op in training graphs, with the
    /// same loss and gradients bit for bit (f32 and f64; 33 elements fill the f32 sum's eight running
    /// sums and a tail); the evaluation graph keeps the loss alone.
    @Test func squaredErrorFusesWithTheSameNumbers() throws {
        for loss in ["mse", "sse"] {
            let mean = loss == "mse"
            let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: "input 5\nfc 5->7\ntanh\nfc 7->11\nloss \(loss)"))
            for dtype in [DType.f32, .f64] {
                let plain = try program.gradientGraph(dtype: dtype, training: true)
                let (fused, log) = try plain.optimized(verify: true)
                let ops = fused.nodes.map(\.op)
                #expect(ops.contains(.squaredErrorWithGrad(mean: mean)) && !ops.contains(.squaredError(mean: mean)))
                #expect(!ops.contains(.subtract) && !ops.contains(.activation(.pow(2))) && !ops.contains(.broadcast(mean: mean)))
                #expect(log.contains { $0.pass == "fuse-squared-error" && $0.fused && $0.line == 5 })
                let before = try plain.optimized(through: "fuse-softmax-crossentropy", verify: true).graph
                let after = try plain.optimized(through: "fuse-squared-error", verify: true).graph
                #expect(before.nodes.contains { $0.op == .subtract } && after.nodes.contains { $0.op == .squaredErrorWithGrad(mean: mean) })
                let (lossA, gradientsA) = dtype == .f32 ? try lossAndGradients(Float.self, before, batch: 3) : try lossAndGradients(Double.self, before, batch: 3)
                let (lossB, gradientsB) = dtype == .f32 ? try lossAndGradients(Float.self, after, batch: 3) : try lossAndGradients(Double.self, after, batch: 3)
                #expect(lossA == lossB, "\(loss) \(dtype)")
                #expect(gradientsA == gradientsB, "\(loss) \(dtype)")
            }
            let evaluation = try program.inferenceGraph(dtype: .f32, withLoss: true).optimized(verify: true).graph
            #expect(evaluation.nodes.contains { $0.op == .squaredError(mean: mean) })
            #expect(!evaluation.nodes.contains { $0.op == .subtract })
        }
    }

    /// fuse-batchnorm takes what follows a batch norm only where nothing else reads the values it
    /// removes: relu + pool, the residual add + relu, an activation whose output other layers read;
    /// not a batch norm read twice, not an add without an activation after it, not [N,F].
    @Test func batchNormTakesItsEpilogueWhereNothingElseReadsIt() throws {
        let source = """
            input 2x6x6
            conv 2->3 3x3 pad 1 nobias
            batchnorm
            relu
            maxpool 2x2 as a
            conv 3->3 3x3 pad 1
            batchnorm
            tanh as t
            conv 3->3 3x3 pad 1
            batchnorm as n
            add t
            relu
            add n
            conv 3->3 3x3 pad 1
            batchnorm
            add a
            flatten
            fc 27->4
            batchnorm
            relu
            loss crossentropy
            """
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: source))
        let (graph, log) = try program.trainingGraph(dtype: .f64, settings: TrainingSettings()).optimized(verify: true)
        let epilogues = graph.nodes.compactMap { node -> BatchNormEpilogue? in
            if case .batchNorm(_, _, let epilogue) = node.op { return epilogue }
            return nil
        }
        #expect(epilogues == [BatchNormEpilogue(activation: .relu, pooled: true), BatchNormEpilogue(activation: .tanh), .none, .none, .none])
        let grads = graph.nodes.compactMap { node -> BatchNormEpilogue? in
            if case .batchNormGrad(let epilogue) = node.op { return epilogue }
            return nil
        }
        #expect(grads.filter { $0 != .none }.count == 2 && grads.count == 5)
        let notFused = log.filter { $0.pass == "fuse-batchnorm" && !$0.fused }.map { "\($0.line ?? 0): \($0.reason)" }
        #expect(notFused == ["10: nothing it can take follows it", "15: nothing it can take follows it", "19: only batch norms of [N,C,H,W] are fused"])
        #expect(log.contains { $0.pass == "fuse-batchnorm" && $0.fused && $0.line == 3 && $0.pattern.hasSuffix("+ maxpool %p0 and their gradients") })
        // The residual add with relu and a pool after it: one op each way, the add's gradient as the fourth result.
        let resnet = try ModelProgram.load(path: shippedModelFiles().first { $0.hasSuffix("fashion_resnet.nn") } ?? "")
        let fused = try resnet.trainingGraph(dtype: .f32, settings: resnet.settings.training).optimized(verify: true).graph
        let residual = try #require(fused.nodes.first { $0.op == .batchNormGrad(BatchNormEpilogue(residual: true, activation: .relu, pooled: true)) })
        #expect(residual.operands.count == 7 && residual.results.count == 4)
        #expect(!fused.nodes.contains { $0.op == .activation(.relu) || $0.op == .add && $0.phase == .forward || $0.op == .pool(.max, window: [2, 2], stride: [2, 2], padding: [0, 0]) })
    }

    @Test func fusionMakesDenseOpsAndLogsReasons() throws {
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: "input 3\nfc 3->4\ntanh\nfc 4->2\npow 2\nfc 2->2\nsoftmax\nloss crossentropy"))
        let training = try program.trainingGraph(dtype: .f32, settings: TrainingSettings())
        let (optimized, log) = try training.optimized(verify: true)
        let ops = optimized.nodes.map(\.op)
        #expect(ops.contains(.dense(.tanh, bias: true)))
        #expect(ops.contains(.softmaxCrossEntropy))
        #expect(ops.contains(.softmaxCrossEntropyGrad))
        #expect(!ops.contains(.crossEntropy))
        // The tanh layer's activation and bias gradients in one pass, which also takes the bias's step.
        #expect(ops.contains { if case .activationGradBiasUpdate(.tanh, .sgd) = $0 { return true }; return false })
        #expect(log.contains { !$0.fused && $0.reason.contains("pow(2)") && $0.line == 5 })
        #expect(log.contains { $0.fused && $0.pattern.contains("tanh") && $0.line == 2 })
        // Every pass can be dumped on its own.
        for name in passNames { _ = try training.optimized(through: name, verify: true) }
    }

    @Test func convolutionBackwardIsOneOpPerLayer() throws {
        let program = try ModelProgram.compile(SourceFile(path: "c.nn", text: "input 1x8x8\nconv 1->4 3x3 pad 1\nrelu\nmaxpool 2x2\nconv 4->2 3x3\ntanh\nflatten\nfc 3\nloss crossentropy"))
        let (optimized, log) = try program.trainingGraph(dtype: .f32, settings: TrainingSettings()).optimized(verify: true)
        let ops = optimized.nodes.map(\.op)
        let geometry = ConvGeometry(stride: 1, padding: 1)
        #expect(ops.contains(.convFused(geometry, .relu, bias: true, pooled: true)))
        #expect(!ops.contains { if case .pool = $0 { return true }; return false })
        // The first layer needs no input gradient, and takes its max pool's gradient; the second needs both.
        #expect(ops.contains(.convBackward(geometry, .relu, bias: true, inputGradient: false, pooled: true)))
        #expect(ops.contains(.convBackward(ConvGeometry(stride: 1, padding: 0), .tanh, bias: true, inputGradient: true, pooled: false)))
        #expect(!ops.contains { if case .conv2dWeightGrad = $0 { return true }; return false })
        #expect(!ops.contains { if case .poolGrad = $0 { return true }; return false })
        #expect(log.filter { $0.pass == "fuse-conv-grad" && $0.fused }.count == 2)
        #expect(log.filter { $0.pass == "fuse-pool-grad" && $0.fused }.count == 1)
        #expect(log.filter { $0.pass == "fuse-pool" && $0.fused }.count == 1)
    }

    /// A 2×2 max pool computed in the conv kernel, and its gradient routed inside the conv layer's
    /// backward, give the same loss and gradients, bit for bit, on each of the conv kernel's paths: the
    /// direct ones (f32, large planes), the GEMM (f64, small planes) and the general one (dilation);
    /// odd sizes leave rows and columns no window covers. Other pools are not fused.
    @Test func poolFusesWithTheSameNumbers() throws {
        let text = "input 2x17x15\nconv 2->5 3x3 pad 1\nrelu\nmaxpool 2x2\nconv 5->4 3x3 pad 2 dilation 2\nrelu\nmaxpool 2x2\n"
            + "conv 4->3 3x3 pad 1\nrelu\nmaxpool 2x2\nflatten\nfc 3\nloss crossentropy"
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: text))
        for dtype in [DType.f32, .f64] {
            let plain = try program.gradientGraph(dtype: dtype, training: true)
            let before = try plain.optimized(through: "fuse-conv", verify: true).graph
            let (after, log) = try plain.optimized(through: "fuse-pool-grad", verify: true)
            #expect(log.filter { $0.pass == "fuse-pool-grad" && $0.fused }.count == 3)
            #expect(log.filter { $0.pass == "fuse-pool" && $0.fused }.count == 3)
            #expect(!after.nodes.contains { if case .poolGrad = $0.op { return true }; return false })
            #expect(!after.nodes.contains { if case .pool = $0.op { return true }; return false })
            let (lossA, gradientsA) = dtype == .f32 ? try lossAndGradients(Float.self, before, batch: 3) : try lossAndGradients(Double.self, before, batch: 3)
            let (lossB, gradientsB) = dtype == .f32 ? try lossAndGradients(Float.self, after, batch: 3) : try lossAndGradients(Double.self, after, batch: 3)
            #expect(lossA == lossB, "\(dtype)")
            #expect(gradientsA == gradientsB, "\(dtype)")
        }
        for pool in ["maxpool 3x3 stride 2", "avgpool 2x2", "maxpool 2x2 pad 1"] {
            let other = try ModelProgram.compile(SourceFile(path: "m.nn", text: "input 1x12x12\nconv 1->2 3x3\nrelu\n\(pool)\nflatten\nfc 2\nloss crossentropy"))
            let (graph, log) = try other.gradientGraph(dtype: .f32, training: true).optimized(verify: true)
            #expect(graph.nodes.contains { if case .poolGrad = $0.op { return true }; return false }, "\(pool)")
            #expect(graph.nodes.contains { if case .pool = $0.op { return true }; return false }, "\(pool)")
            #expect(!log.contains { ($0.pass == "fuse-pool-grad" || $0.pass == "fuse-pool") && $0.fused }, "\(pool)")
        }
    }

    /// In inference nothing reads a pooled convolution's own output: one image on two threads runs the
    /// Winograd path, which then makes the pool alone. Same output as the graph without the pool fused
    /// (which writes the convolution's output and pools it), and with the weights transformed in
    /// every call rather than once (a session whose parameters may change).
    @Test func poolAloneGivesTheSameInference() throws {
        let text = "input 8x10x9\nconv 8->16 3x3 pad 1\nrelu\nmaxpool 2x2\nflatten\nfc 3\nsoftmax"
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: text))
        var plain = try program.forward(dtype: .f32, training: false).graph
        plain.loss = nil
        var outputs: [[Float]] = []
        for (through, constant) in [("fuse-conv", true), ("fuse-pool", true), ("fuse-pool", false)] {
            let graph = try plain.optimized(through: through, verify: true).graph
            #expect(graph.nodes.contains { if case .convFused(_, _, _, let pooled) = $0.op { return pooled == (through == "fuse-pool") }; return false })
            let plan = try Plan(graph: graph, batch: 1)
            let store = ParameterStore<Float>(graph: graph)
            for (buffer, initial) in zip(store.parameters, initialValues(for: graph.parameters, seed: 3)) { store.load(initial, into: buffer) }
            let session = try Session<Float>(plan: plan, store: store, threads: 2, constantParameters: constant)
            var random = MT19937(seed: 11)
            fillRandomBatch(session, batch: 1, random: &random)
            try session.run(batch: 1)
            let output = try #require(graph.output)
            outputs.append(Array(UnsafeBufferPointer(start: session.pointer(output), count: graph[output].shape.rowElements)))
        }
        #expect(outputs[0] == outputs[1] && outputs[1] == outputs[2])
    }

    @Test func fusionRespectsGraphOutputs() throws {
        // The pre-activation value is kept as a gradient root when it is a graph output: no fusion.
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: "input 2\nfc 2->3\nloss sum"))
        let (optimized, log) = try program.gradientGraph(dtype: .f32).optimized(verify: true)
        #expect(optimized.nodes.contains { $0.op == .dense(.identity, bias: true) })
        #expect(!log.isEmpty)
    }

    /// gelu's derivative needs its input: at inference it goes into the dense and conv epilogues; in
    /// training the pre-activation has a second consumer (the gradient) and stays, and the backward
    /// fusions that only see the output refuse it.
    @Test func geluFusesWhereItsInputIsNotNeeded() throws {
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: "input 1x6x5\nconv 1->2 3x3 pad 1\ngelu\nflatten\nfc 4\ngelu\nfc 2\nloss mse"))
        let inference = try program.inferenceGraph(dtype: .f64, withLoss: false)
        #expect(inference.nodes.contains { $0.op == .dense(.gelu, bias: true) })
        #expect(inference.nodes.contains { $0.op == .convFused(ConvGeometry(stride: 1, padding: 1), .gelu, bias: true) })
        #expect(!inference.nodes.contains { $0.op == .activation(.gelu) })
        let (training, log) = try program.trainingGraph(dtype: .f64, settings: program.settings.training).optimized(verify: true)
        #expect(training.nodes.filter { $0.op == .activation(.gelu) }.count == 2)
        #expect(training.nodes.filter { $0.op == .activationGrad(.gelu) }.count == 2)
        #expect(log.contains { $0.pass == "fuse-dense" && !$0.fused && $0.pattern.contains("gelu") && $0.reason.contains("2 consumers") })
        #expect(log.contains { $0.pass == "fuse-activation-grad" && !$0.fused && $0.reason.contains("needs its input") })
        #expect(log.contains { $0.pass == "fuse-conv-grad" && !$0.fused && $0.reason.contains("needs its input") })

        // The fused inference graph computes what the unfused forward graph does.
        let unfused = try program.forward(dtype: .f64, training: false).graph
        let values = initialValues(for: unfused.parameters, seed: 3)
        var random = MT19937(seed: 5)
        let x = (0..<(3 * 30)).map { _ in random.uniform(-2, 2) }
        func outputs(_ graph: Graph) throws -> [Double] {
            let store = ParameterStore<Double>(graph: graph)
            for (buffer, initial) in zip(store.parameters, values) { store.load(initial, into: buffer) }
            let session = try Session<Double>(plan: try Plan(graph: graph, batch: 3), store: store, threads: 1)
            let input = try #require(session.inputPointer)
            for i in x.indices { input[i] = x[i] }
            try session.run(batch: 3)
            let output = session.pointer(try #require(graph.output))
            return (0..<6).map { output[$0] }
        }
        let fused = try outputs(inference), reference = try outputs(unfused)
        for (a, b) in zip(fused, reference) { #expect(abs(a - b) <= 1e-12 * (1 + abs(b)), "\(fused) vs \(reference)") }
    }

    @Test func deadCodeIsRemoved() throws {
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: "input 2\nfc 2->3\ntanh\nsoftmax\nloss crossentropy"))
        let graph = try program.inferenceGraph(dtype: .f32, withLoss: false)
        // Without the loss, the cross-entropy disappears; the softmax (the output) stays.
        #expect(!graph.nodes.contains { $0.op == .softmaxCrossEntropy || $0.op == .crossEntropy })
        #expect(graph.nodes.contains { $0.op == .softmax })
    }
}

@Suite struct PlanTests {
    @Test func buffersDoNotOverlapWhileLive() throws {
        for path in shippedModelFiles() {
            let program = try ModelProgram.load(path: path)
            guard program.model.graph.loss != nil else { continue }
            let graph = try program.trainingGraph(dtype: .f32, settings: TrainingSettings()).optimized(verify: true).graph
            let plan = try Plan(graph: graph, batch: 7)
            for (i, a) in plan.buffers.enumerated() {
                for b in plan.buffers[(i + 1)...] {
                    let timeOverlap = a.firstUse <= b.lastUse && b.firstUse <= a.lastUse
                    let spaceOverlap = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes
                    #expect(!(timeOverlap && spaceOverlap), "\(path): buffers overlap")
                }
                #expect(a.offset % 64 == 0)
                #expect(a.offset + a.bytes <= plan.arenaBytes)
            }
            #expect(plan.arenaBytes <= plan.unplannedBytes)
            // The input and target are written before the step: they must be live from the start.
            for source in [graph.input, graph.target].compactMap({ $0 }) {
                #expect(plan.buffers.first { $0.values.contains(source) }?.firstUse == 0)
            }
        }
    }

    @Test func hugeBatchesAreErrorsNotCrashes() throws {
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: "input 784\nfc 784->10\nloss crossentropy"))
        let graph = try program.trainingGraph(dtype: .f32, settings: TrainingSettings()).optimized().graph
        #expect(throws: PlanError.self) { try Plan(graph: graph, batch: Int.max / 2) }
        #expect(throws: PlanError.self) { try Plan(graph: graph, batch: 3_000_000) }   // 2.35e9 elements > 2^31
        #expect(throws: PlanError.self) { try Plan(graph: graph, batch: 1000, memoryLimit: 1 << 20) }
        #expect(throws: PlanError.self) { try Plan(graph: graph, batch: 0) }
        let console = Console.capturing()
        #expect(runCommandLine(["compile", shippedModelsDirectory() + "/xor.nn", "--emit", "plan", "--batch", "9000000000000000000"], console: console) == 1)
        #expect(console.errors.contains("is too large"))
    }

    /// `check` skips the passes and the planner when the bound (every value in a buffer of its own)
    /// fits: the bound must be above every plan, for every model and batch.
    @Test func arenaBoundIsAboveThePlan() throws {
        let texts = try shippedModelFiles().map { try String(contentsOfFile: $0, encoding: .utf8) }
            + ["input 2\nfc 2->3\ntanh\nfc 3->1\ntanh\nloss mse", "input 8\nfc 8->8\nbatchnorm\nrelu as a\nfc 8->8\nadd a\nfc 8->2\nloss crossentropy"]
        for text in texts {
            let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: text))
            guard program.model.graph.loss != nil else { continue }
            let training = try program.trainingGraph(dtype: .f32, settings: program.settings.training)
            let optimized = try training.optimized(recordLog: false).graph
            for batch in [1, 7, 128] {
                let bound = try #require(Plan.arenaBound(of: training, batch: batch))
                let arena = try Plan(graph: optimized, batch: batch).arenaBytes
                #expect(arena <= bound, "\(text.prefix(40)): batch \(batch) plans \(arena) bytes, the bound says \(bound)")
                #expect(arena <= Plan.arenaBound(of: optimized, batch: batch) ?? 0)
            }
            #expect(Plan.arenaBound(of: training, batch: 1 << 40) == nil)
        }
    }

    /// A batch whose working memory does not fit the machine: `check` warns (through the plan).
    @Test func checkWarnsAboutABatchThatDoesNotFit() throws {
        let path = try scratchDirectory("check-batch").appendingPathComponent("big.nn").path
        // 64 layers whose outputs the backward pass keeps, each just under 2^31 elements (8 GiB): more
        // than any machine here has.
        let rows = (1 << 31) / 1024 - 1
        let layers = Array(repeating: "fc 1024->1024\ntanh", count: 64).joined(separator: "\n")
        try "input 1024\n\(layers)\nloss mse\ntrain sgd lr 0.1 batch \(rows)\n".write(toFile: path, atomically: true, encoding: .utf8)
        let console = Console.capturing()
        #expect(runCommandLine(["check", path], console: console) == 0)
        #expect(console.errors.contains("warning: batch \(rows) needs"), "\(console.errors)")
        #expect(console.errors.contains("working memory"))
    }

    @Test func planReportsSavingsAndInPlaceOps() throws {
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: "input 8\nfc 8->16\nrelu\nfc 16->16\npow 2\nfc 16->4\nloss mse"))
        let graph = try program.trainingGraph(dtype: .f32, settings: TrainingSettings()).optimized(verify: true).graph
        let plan = try Plan(graph: graph, batch: 32)
        #expect(plan.savedBytes > 0)
        #expect(!plan.inPlace.isEmpty)
        let text = plan.printed()
        #expect(text.contains("arena:"))
        #expect(text.contains("saved"))
        #expect(text.contains("(in place)"))
    }

    /// The loss gradient's seed, a constant, is written once when the plan is made runnable: it needs a
    /// buffer no other value shares, live the whole step, and no instruction. Two steps at either
    /// batch size then give the gradients of a fresh session.
    @Test func constantsKeepBuffersOfTheirOwn() throws {
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: "input 2\nfc 2->3\ntanh\nfc 3->1\ntanh\nloss mse"))
        let graph = try program.gradientGraph(dtype: .f64, training: true).optimized(verify: true).graph
        let constants = graph.nodes.filter(\.op.isConstant).flatMap(\.results)
        #expect(constants.count == 1)
        let plan = try Plan(graph: graph, batch: 4)
        for constant in constants {
            let buffer = try #require(plan.buffers.first { $0.values.contains(constant) })
            #expect(buffer.values == [constant] && buffer.firstUse == 0 && buffer.lastUse == graph.nodes.count)
        }
        #expect(plan.printed().contains("constant 1   (written once, before the first step)"))
        let (loss, gradients) = try lossAndGradients(Double.self, graph, batch: 4)
        let store = ParameterStore<Double>(graph: graph)
        for (buffer, initial) in zip(store.parameters, initialValues(for: graph.parameters, seed: 3)) { store.load(initial, into: buffer) }
        let session = try Session<Double>(plan: plan, store: store, threads: 1, seed: 5)
        for batch in [1, 4, 4] {
            var random = MT19937(seed: 11)
            fillRandomBatch(session, batch: 4, random: &random)
            try session.run(batch: batch)
        }
        #expect(session.lossValue == loss)
        #expect(graph.gradients.map { id in id.map { Array(UnsafeBufferPointer(start: session.pointer($0), count: graph[$0].shape.rowElements)) } ?? [] } == gradients)
    }
}

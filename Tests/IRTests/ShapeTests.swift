import Testing
@testable import IR
import Parser

struct GeometryCase: CustomTestStringConvertible, Sendable {
    var model: String
    /// Expected per-sample output shape of the last layer (PyTorch: floor((H + 2p - k) / s) + 1).
    var expected: [Int]
    init(_ model: String, _ expected: [Int]) { self.model = model; self.expected = expected }
    var testDescription: String { model.split(separator: "\n").joined(separator: "; ") }
}

@Suite("Output shapes, parameter names and the lowered IR")
struct ShapeTests {
    static let convolutions: [GeometryCase] = [
        .init("input 1x28x28\nconv 1->4 3", [4, 26, 26]),
        .init("input 1x28x28\nconv 1->4 3 stride 2", [4, 13, 13]),
        .init("input 1x28x28\nconv 1->4 3 stride 3", [4, 9, 9]),
        .init("input 1x28x28\nconv 1->4 3 pad 1", [4, 28, 28]),
        .init("input 1x28x28\nconv 1->4 3 pad 1 stride 2", [4, 14, 14]),
        .init("input 1x28x28\nconv 1->4 5 pad 2", [4, 28, 28]),
        .init("input 1x28x28\nconv 1->4 5 pad 2 stride 3", [4, 10, 10]),
        .init("input 1x28x28\nconv 1->4 5 pad 1 stride 2", [4, 13, 13]),
        .init("input 3x7x7\nconv 3->2 2 stride 2", [2, 3, 3]),
        .init("input 3x7x7\nconv 3->2 3 stride 3", [2, 2, 2]),
        .init("input 2x5x5\nconv 2->6 5", [6, 1, 1]),
        .init("input 1x8x10\nconv 1->2 3x5", [2, 6, 6]),
        .init("input 1x8x10\nconv 1->2 3x5 stride 2 pad 1", [2, 4, 4]),
        .init("input 1x32x32\nconv 1->2 1", [2, 32, 32]),
        .init("input 1x1x1\nconv 1->5 1", [5, 1, 1]),
        .init("input 1x9x9\nconv 1->1 3 stride 5", [1, 2, 2]),
        .init("input 1x4x4\nconv 1->1 3 pad 2 stride 1", [1, 6, 6]),
        // Padding as large as the kernel or larger is allowed, as in PyTorch (border outputs see only zeros).
        .init("input 1x4x4\nconv 1->1 1 pad 1", [1, 6, 6]),
        .init("input 2x5x5\nconv 2->3 3 pad 4 stride 2", [3, 6, 6]),
        .init("input 1x28x28\nconv 8 3\nconv 16 3\nconv 4 3 stride 2", [4, 11, 11]),
    ]

    static let poolings: [GeometryCase] = [
        .init("input 1x28x28\nmaxpool 2", [1, 14, 14]),
        .init("input 1x27x27\nmaxpool 2x2", [1, 13, 13]),
        .init("input 2x7x7\nmaxpool 3", [2, 2, 2]),
        .init("input 2x7x7\nmaxpool 3 stride 2", [2, 3, 3]),
        .init("input 2x7x7\navgpool 3 stride 1", [2, 5, 5]),
        .init("input 2x5x5\navgpool 5", [2, 1, 1]),
        .init("input 1x6x6\navgpool 2 stride 3", [1, 2, 2]),
        .init("input 1x28x28\nconv 1->32 3\nrelu\nmaxpool 2x2", [32, 13, 13]),
        .init("input 1x28x28\nconv 1->32 3\nrelu\nmaxpool 2x2\nflatten", [5408]),
        .init("input 3x4x5\nflatten", [60]),
        .init("input 7\nflatten", [7]),
    ]

    @Test(arguments: convolutions + poolings)
    func outputShape(_ c: GeometryCase) throws {
        let model = try lowered(c.model)
        #expect(model.outputShape == Shape(batched: true, c.expected))
        #expect(model.layers.last?.outputShape == Shape(batched: true, c.expected))
        // The graph's last value has the same shape as the summary says.
        let graph = model.graph
        #expect(graph.nodes.last.map { graph[$0.results[0]].shape } == Shape(batched: true, c.expected))
        try graph.verify()
    }

    /// PyTorch's MaxPool2d(kernel_size=(2, 3)) has stride (2, 3): "stride defaults to the window".
    @Test func nonSquarePoolingStrideDefaultsToTheWholeWindow() throws {
        let model = try lowered("input 1x4x9\nmaxpool 2x3")
        #expect(model.outputShape == .batch(1, 2, 3))
    }

    @Test func parameterNamesShapesAndCounts() throws {
        let model = try lowered("""
        input 1x8x8
        conv 1->4 3x3
        relu
        conv 4->2 3 nobias
        flatten
        fc 32->10
        relu
        fc 10->3 nobias
        loss crossentropy
        """)
        let parameters = model.graph.parameters
        #expect(parameters.map(\.name) == ["conv1.weight", "conv1.bias", "conv2.weight", "fc1.weight", "fc1.bias", "fc2.weight"])
        #expect(parameters.map(\.shape) == [.fixed(4, 1, 3, 3), .fixed(4), .fixed(2, 4, 3, 3), .fixed(32, 10), .fixed(10), .fixed(10, 3)])
        #expect(parameters.map { model.graph[$0.value].name } == ["w0", "b0", "w1", "w2", "b2", "w3"])
        #expect(model.layers.map(\.parameters) == [0, 40, 0, 72, 0, 330, 0, 30, 0])
        #expect(model.parameterCount == 472)
        #expect(model.layers.map(\.statement) == ["input 1x8x8", "conv 1->4 3x3", "relu", "conv 4->2 3 nobias", "flatten", "fc 32->10", "relu", "fc 10->3 nobias", "loss crossentropy"])
        #expect(model.layers.map { $0.outputShape.description } == ["[N,1,8,8]", "[N,4,6,6]", "[N,4,6,6]", "[N,2,4,4]", "[N,32]", "[N,10]", "[N,10]", "[N,3]", "[]"])
        #expect(model.inputShape == .batch(1, 8, 8))
        #expect(model.graph.targetKind == .classLabels(classes: 3))
    }

    @Test func fcWeightsAreInputsByOutputs() throws {
        let model = try lowered("input 2\nfc 2->3\ntanh\nfc 3->1\ntanh\nloss mse")
        #expect(model.graph.parameters.map(\.name) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"])
        #expect(model.graph.parameters.map(\.shape) == [.fixed(2, 3), .fixed(3), .fixed(3, 1), .fixed(1)])
        #expect(model.parameterCount == 13)
        #expect(model.flopsPerSample == model.layers.map(\.flops).reduce(0, +))
        #expect(model.layers[1].flops == 2 * 2 * 3 + 3)
        #expect(model.graph.targetKind == .values(width: 1))
    }

    @Test func inferredInputsAndFirstFcDefinesTheInput() throws {
        let model = try lowered("fc 4->16\nrelu\nfc 8\nfc 2\nloss mse")
        #expect(model.inputShape == .batch(4))
        #expect(model.graph.parameters.map(\.shape) == [.fixed(4, 16), .fixed(16), .fixed(16, 8), .fixed(8), .fixed(8, 2), .fixed(2)])
        let conv = try lowered("input 3x10x10\nconv 6 3\nconv 2 3")
        #expect(conv.graph.parameters.map(\.shape) == [.fixed(6, 3, 3, 3), .fixed(6), .fixed(2, 6, 3, 3), .fixed(2)])
    }

    @Test func initializers() throws {
        let model = try lowered("""
        input 2
        fc 2->3 init uniform(-1,1)
        fc 3->4 init normal(0.5,2)
        fc 4->6 init xavier
        fc 6->8 init he
        fc 8->1 init zeros
        fc 1->4
        """)
        let inits = model.graph.parameters.map(\.initializer)
        #expect(inits[0] == .uniform(low: -1, high: 1) && inits[1] == .uniform(low: -1, high: 1))
        #expect(inits[2] == .normal(mean: 0.5, std: 2) && inits[3] == .normal(mean: 0.5, std: 2))
        let xavier = (6.0 / (4 + 6)).squareRoot()
        #expect(inits[4] == .uniform(low: -xavier, high: xavier) && inits[5] == .zeros)   // xavier: ±sqrt(6 / (fan_in + fan_out))
        #expect(inits[6] == .normal(mean: 0, std: (2.0 / 6).squareRoot()) && inits[7] == .zeros) // he: N(0, sqrt(2 / fan_in))
        #expect(inits[8] == .zeros && inits[9] == .zeros)
        #expect(inits[10] == .uniform(low: -1, high: 1) && inits[11] == .uniform(low: -1, high: 1)) // default: 1/sqrt(fan_in = 1)
    }

    @Test func fcLowersToMatmulAndBiasAdd() throws {
        let graph = try lowered("input 2\nfc 2->3\nfc 3->1 nobias\nsigmoid\nloss mse").graph
        let ops = graph.nodes.map(\.op.name)
        #expect(ops == ["input", "param", "param", "matmul", "bias_add", "param", "matmul", "sigmoid", "target", "sub", "pow(2)", "mean"])
        #expect(graph.nodes.filter { $0.phase == .loss }.map(\.op.name) == ["sub", "pow(2)", "mean"])
    }

    @Test func lossesLowerToPrimitives() throws {
        func ops(_ loss: String) throws -> [String] {
            let graph = try lowered("input 4\nfc 4->3\n\(loss)").graph
            return graph.nodes.filter { $0.phase == .loss }.map(\.op.name)
        }
        #expect(try ops("loss mse") == ["sub", "pow(2)", "mean"])
        #expect(try ops("loss sse") == ["sub", "pow(2)", "sum"])
        #expect(try ops("loss sum") == ["sum"])
        #expect(try ops("sigmoid\nloss bce").count == 1)
        #expect(try ops("loss crossentropy").count == 1)
        #expect(try lowered("input 4\nfc 4->3\nloss crossentropy").graph.targetKind == .classLabels(classes: 3))
        #expect(try lowered("input 4\nfc 4->3\nloss sum").graph.target == nil)
    }

    @Test func dropoutOnlyInTraining() throws {
        let text = "input 4\nfc 4->4\ndropout 0.5\nfc 4->1\nloss mse"
        let inference = try lowered(text).graph
        let training = try lowered(text, training: true).graph
        #expect(training.nodes.count == inference.nodes.count + 2)
        #expect(try lowered("input 4\ndropout 0\nfc 4->1", training: true).graph.nodes.count == lowered("input 4\nfc 4->1").graph.nodes.count)
    }

    @Test func nodesCarryTheirStatementLocation() throws {
        let source = SourceFile(path: "m.nn", text: "input 2\nfc 2->3\ntanh\nloss sum")
        let graph = try lower(parseModel(source)).graph
        let lines = graph.nodes.map { $0.location.map { source.line(of: $0.start) } ?? 0 }
        #expect(lines == [1, 2, 2, 2, 2, 3, 4])
    }

    @Test(arguments: [
        "input 2\nfc 2->3\ntanh\nfc 3->1\ntanh\nloss mse",
        "input 3\nfc 3->1 nobias\nsigmoid\nloss sse",
        "input 4\nfc 4->8\nrelu\ndropout 0.25\nfc 8->3\nsoftmax\nloss crossentropy",
        "input 4\nfc 4->8\nleakyrelu 0.1\nfc 8->3\nloss crossentropy",
        "input 3\nfc 3->2 nobias\npow 3\nidentity\nloss sum",
        "input 2\nfc 2->1\nsigmoid\nloss bce",
        "input 1x8x8\nconv 1->4 3 pad 1\nrelu\nmaxpool 2\nconv 4->2 3 nobias\ntanh\navgpool 2 stride 1\nflatten\nfc 10\nloss crossentropy",
    ])
    func trainingGraphBuildsVerifiesAndPlans(_ text: String) throws {
        let model = try lowered(text, training: true)
        for update in [OptimizerUpdate.sgd(lr: 0.1, momentum: 0.9, nesterov: true, decay: 1e-4), .adam(lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, decay: 0)] {
            let training = try model.graph.differentiated().withUpdates(update)
            try training.verify()
            #expect(training.gradients.count == model.graph.parameters.count)
            #expect(training.gradients.allSatisfy { $0 != nil })
            for (parameter, gradient) in zip(training.parameters, training.gradients) {
                #expect(training[gradient!].shape == parameter.shape, "d\(parameter.name)")
            }
            for pass in passNames {
                _ = try training.optimized(through: pass, verify: true)
            }
            let optimized = try training.optimized(verify: true).graph
            for batch in [1, 3, 64] {
                let plan = try Plan(graph: optimized, batch: batch)
                #expect(plan.arenaBytes <= plan.unplannedBytes)
            }
        }
    }

    @Test func denseFusionGivesTheDesignLine() throws {
        let model = try lowered("input 2\nfc 2->3\ntanh\nfc 3->1\ntanh\nloss mse", path: "xor.nn", training: true)
        let optimized = try model.graph.differentiated().withUpdates(.sgd(lr: 0.1, momentum: 0, nesterov: false, decay: 0)).optimized(verify: true).graph
        let lines = optimized.printed().split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
        #expect(lines.contains("%h0 : f32[N,3] = dense %x, %w0, %b0, tanh # xor.nn:2"))
        #expect(lines.contains("%h1 : f32[N,1] = dense %h0, %w1, %b1, tanh # xor.nn:4"))
        #expect(lines.contains("%x : f32[N,2] = input # xor.nn:1"))
        #expect(lines.contains { $0.hasPrefix("%w0 : f32[2,3] = param fc1.weight uniform(") })
    }
}

import Testing
@testable import NNC
@testable import IR
@testable import Runtime
import Parser

/// Small models that together use every differentiable op of the IR, each checked against
/// central finite differences in f64 through the optimized graph.
let gradientModels: [(String, String)] = [
    ("fc + tanh + mse", "input 3\nfc 3->4\ntanh\nfc 4->2\nloss mse"),
    ("sigmoid + sse", "input 2\nfc 2->3\nsigmoid\nfc 3->1 nobias\nsigmoid\nloss sse"),
    ("relu + leakyrelu", "input 4\nfc 4->5\nrelu\nfc 5->3\nleakyrelu 0.1\nfc 3->2\nloss mse"),
    ("pow 2 and pow 3 (habr)", "input 3\nfc 3->4 nobias\npow 2\nfc 4->1 nobias\npow 3\nloss sse"),
    ("identity + sum", "input 3\nfc 3->2\nidentity\nsigmoid\nloss sum"),
    ("softmax + crossentropy", "input 4\nfc 4->6\ntanh\nfc 6->3\nsoftmax\nloss crossentropy"),
    ("crossentropy on logits", "input 4\nfc 4->3\nloss crossentropy"),
    ("softmax + mse", "input 3\nfc 3->4\nsoftmax\nloss mse"),
    ("sigmoid + bce", "input 3\nfc 3->2\nsigmoid\nloss bce"),
    ("dropout", "input 5\nfc 5->6\nrelu\ndropout 0.3\nfc 6->2\nloss mse"),
    ("conv + maxpool", "input 2x6x5\nconv 2->3 3x3 pad 1\nrelu\nmaxpool 2x2\nflatten\nfc 3\nloss crossentropy"),
    ("strided conv + avgpool", "input 2x7x6\nconv 2->3 3x2 stride 2 pad 1\ntanh\navgpool 2x2 stride 1\nflatten\nfc 4\nsigmoid\nloss bce"),
    ("non-square max and average pooling", "input 2x5x7\nmaxpool 2x3\navgpool 1x2 stride 1\nflatten\nfc 2\nloss mse"),
    ("gelu (derivative from the input)", "input 3\nfc 3->4\ngelu\nfc 4->2\ngelu\nloss mse"),
    ("conv + gelu (no fused conv backward)", "input 2x5x4\nconv 2->3 3x3 pad 1\ngelu\nflatten\nfc 2\nloss mse"),
    ("residual with batch norm, add, concat, from, globalavgpool",
     "input 2x5x5\nconv 2->3 3x3 pad 1 nobias\nbatchnorm\nrelu as a\nconv 3->3 3x3 pad 1\nbatchnorm\nadd a\nrelu as b\nfrom a\nconv 3->2 1x1\nconcat b\nglobalavgpool\nfc 3\nloss crossentropy"),
    ("grouped, dilated, strided conv; padded pooling; elu, selu, softplus",
     "input 4x7x6\nconv 4->6 3x2 stride 2x1 pad 1x0 groups 2 as c\nelu 0.5 as e\nfrom c\nconv 6->6 3x3 pad 2 dilation 2 groups 3\nselu\nadd e\nmaxpool 3x3 stride 2 pad 1\navgpool 2x2 stride 1 pad 1\nsoftplus\nflatten\nfc 4\nloss mse"),
    ("batch norm on features, logsoftmax + nll", "input 5\nfc 5->6\nbatchnorm momentum 0.3 eps 1e-3\ntanh\nfc 6->3\nlogsoftmax\nloss nll"),
    ("relu6, hardtanh (from the output), silu (from the input), reshape",
     "input 2x5x4\nconv 2->3 3x3 pad 1\nrelu6\nconv 3->3 3x3 pad 1\nsilu\nreshape 6x10\nhardtanh -0.3 0.4\nflatten\nfc 60->3\nsilu\nfc 3\nloss mse"),
    ("pad (reflect, replicate, constant) and prelu (shared, per channel)",
     "input 2x5x4\npad 2x1 1x3 reflect\nprelu 2\nconv 2->3 3x3\nprelu\npad 1 replicate\npad 0 1 value 0.5\nflatten\nprelu 243\nfc 4\nloss mse"),
    ("neg, abs (from the input), exp, softsign, scale", "input 4\nfc 4->5\nsoftsign\nabs\nscale -0.7\nexp\nneg\nfc 3\nloss mse"),
    ("conv nobias + leakyrelu + sigmoid", "input 1x5x5\nconv 1->2 2x2 nobias\nleakyrelu 0.2\nconv 2->2 2x2\nsigmoid\nmaxpool 2x2 stride 1\nflatten\nloss sum"),
]

@Test(arguments: gradientModels)
func gradientsMatchFiniteDifferences(_ name: String, _ text: String) throws {
    let program = try ModelProgram.compile(SourceFile(path: "\(name).nn", text: text))
    let checks = try gradientCheck(program, batch: 3, seed: 7)
    #expect(!checks.isEmpty)
    for check in checks {
        #expect(check.maxRelativeError < 1e-6, "\(name): \(check.parameter) max relative error \(check.maxRelativeError)")
    }
}

/// A wrong gradient must be caught: gradcheck of a model whose gradient we corrupt fails.
@Test func gradientCheckDetectsAWrongGradient() throws {
    let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: "input 2\nfc 2->2\ntanh\nloss mse"))
    var graph = try program.gradientGraph(dtype: .f64).optimized(verify: true).graph
    // Scale one parameter's gradient by 2 by rewriting its producer into a doubled value.
    let gradient = try #require(graph.gradients[0])
    let doubled = try graph.add1(.scale(2), [gradient], name: "bad", at: nil, phase: .backward)
    graph.gradients[0] = doubled
    let plan = try Plan(graph: graph, batch: 2)
    let store = ParameterStore<Double>(graph: graph)
    for buffer in store.parameters { for i in buffer.indices { buffer[i] = Double(i) * 0.1 - 0.2 } }
    let session = try Session<Double>(plan: plan, store: store, threads: 1)
    for i in 0..<4 { session.inputPointer?[i] = Double(i) * 0.3 - 0.5 }
    for i in 0..<4 { session.targetPointer?[i] = 0.25 }
    try session.run(batch: 2)
    let analytic = session.pointer(doubled)[1]
    let buffer = store.parameters[0]
    let h = 1e-6, original = buffer[1]
    buffer[1] = original + h; try session.run(batch: 2); let plus = session.lossValue
    buffer[1] = original - h; try session.run(batch: 2); let minus = session.lossValue
    buffer[1] = original
    let numeric = (plus - minus) / (2 * h)
    #expect(abs(analytic - 2 * numeric) < 1e-6)
    #expect(abs(analytic - numeric) > 1e-4)
}

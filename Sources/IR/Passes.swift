import Parser

/// One line of the fusion log: a candidate pattern and what became of it.
public struct FusionLogEntry: Sendable, CustomStringConvertible {
    public var pass: String
    public var pattern: String
    public var fused: Bool
    public var reason: String
    public var location: SourceRange?
    public var line: Int?

    public var description: String {
        let place = line.map { "line \($0): " } ?? ""
        return "\(pass): \(place)\(pattern): " + (fused ? "fused" : "not fused (\(reason))")
    }
}

/// The fusion log as the passes write it: entries are composed only when it is recording.
public struct FusionLog: Sendable {
    public let isRecording: Bool
    public private(set) var entries: [FusionLogEntry] = []

    mutating func append(_ entry: @autoclosure () -> FusionLogEntry) {
        if isRecording { entries.append(entry()) }
    }
}

/// A named graph-to-graph rewrite. Passes run in the order of `optimizationPasses`.
public struct Pass: Sendable {
    public var name: String
    public var summary: String
    /// The nodes its pattern starts from: a graph without any is left as it is, the pass not run
    /// (most models lack most patterns, and a pass builds its users and producers up front).
    let startsAt: @Sendable (Node) -> Bool
    let run: @Sendable (inout Graph, inout FusionLog) throws -> Void
}

/// The pass pipeline, in order; each is a small local pattern → rewrite, run when the graph has a
/// node its pattern starts from.
public let optimizationPasses: [Pass] = [
    // softmax → cross_entropy (and its backward) becomes one numerically stable op on the logits
    Pass(name: "fuse-softmax-crossentropy", summary: "softmax + cross-entropy → softmax_cross_entropy",
         startsAt: { $0.op == .crossEntropy || $0.op == .softmaxGrad }, run: fuseSoftmaxCrossEntropy),
    // sub → pow 2 → mean (loss mse) becomes one pass over the prediction and target; with its gradient, one op
    Pass(name: "fuse-squared-error", summary: "sub + pow 2 + mean|sum → mse|sse (with its gradient: mse+grad|sse+grad)",
         startsAt: { $0.op == .meanAll || $0.op == .sumAll }, run: fuseSquaredError),
    // an evaluation-mode batch norm after a conv or fc scales its weights and bias instead
    Pass(name: "fold-batchnorm", summary: "conv2d/matmul [+ bias_add] + batchnorm.eval → batchnorm_fold + conv2d/matmul + bias_add",
         startsAt: { if case .batchNormInference = $0.op { return true }; return false }, run: foldBatchNorm),
    // a training-mode batch norm takes the residual add, activation and 2×2 max pool after it (and their gradients)
    Pass(name: "fuse-batchnorm", summary: "batchnorm [+ add] [+ activation] [+ maxpool 2x2] → one kernel call; their gradients + batchnorm_grad → one",
         startsAt: { if case .batchNorm(_, _, BatchNormEpilogue.none) = $0.op { return true }; return false }, run: fuseBatchNorm),
    // matmul → bias_add → activation becomes one dense op, computed in the GEMM's epilogue
    Pass(name: "fuse-dense", summary: "matmul + bias_add + activation → dense", startsAt: isForwardMatmul, run: fuseDense),
    // conv2d → bias_add → activation becomes one fused convolution
    Pass(name: "fuse-conv", summary: "conv2d + bias_add + activation → fused conv2d", startsAt: isConvolution, run: fuseConvolution),
    // a 2×2 max pool of a fused convolution's output, pooled plane by plane in the conv kernel
    Pass(name: "fuse-pool", summary: "fused conv2d + maxpool 2x2 → one kernel call (the pool reads each plane while it is in cache)",
         startsAt: { if case .convFused = $0.op { return true }; return false }, run: fusePool),
    // a conv layer's activation gradient, bias gradient, weight and input gradients in one kernel call
    Pass(name: "fuse-conv-grad", summary: "activation_grad + bias_grad + conv2d grads → conv2d_backward",
         startsAt: { if case .conv2dWeightGrad = $0.op { return true }; return false }, run: fuseConvolutionGradient),
    // a 2×2 max pool's gradient routed into the conv layer's dZ as the conv kernel makes it
    Pass(name: "fuse-pool-grad", summary: "maxpool_grad 2x2 + conv2d_backward → one kernel call (no full-size gradient between them)",
         startsAt: { if case .convBackward = $0.op { return true }; return false }, run: fusePoolGradient),
    // activation gradient and bias gradient computed in one pass over the output gradient
    Pass(name: "fuse-activation-grad", summary: "activation_grad + bias_grad → one pass over dy",
         startsAt: { if case .activationGrad = $0.op { return true }; return false }, run: fuseActivationGradient),
    // a weight gradient's matmul takes the parameter's SGD step in its epilogue, a bias gradient's pass the bias's
    Pass(name: "fuse-update", summary: "matmul (weight gradient) + sgd update → one GEMM; activation_grad+bias_grad + the bias's sgd update → one pass",
         startsAt: { if case .update = $0.op { return true }; return false }, run: fuseUpdate),
    // nodes whose results nobody uses
    Pass(name: "dce", summary: "dead-code elimination", startsAt: { _ in true }, run: eliminateDeadCode),
]

/// The names of the passes, for `--emit after:NAME`.
public var passNames: [String] { optimizationPasses.map(\.name) }

extension Graph {
    /// Runs the pipeline (or its prefix up to and including `lastPass`), verifying after each pass
    /// when asked (tests and debug builds do).
    /// `recordLog: false` leaves the log empty and skips composing its text (a log line per
    /// candidate is a noticeable share of optimizing a long model).
    public consuming func optimized(through lastPass: String? = nil, verify: Bool = false, recordLog: Bool = true) throws -> (graph: Graph, log: [FusionLogEntry]) {
        // Consuming: a temporary graph is optimized in place, not copied (models can be long).
        var graph = consume self
        var log = FusionLog(isRecording: recordLog)
        for pass in optimizationPasses {
            // Looking for a starting node, then the pass's own walk (plus the users and producers it
            // builds, counted there).
            WorkCounter.count(graph.nodes.count)
            if graph.nodes.contains(where: pass.startsAt) {
                WorkCounter.count(graph.nodes.count)
                try pass.run(&graph, &log)
                if verify {
                    do { try graph.verify() } catch { throw IRError("after pass \(pass.name): \(error.message)", at: error.location, in: error.source) }
                }
            }
            if pass.name == lastPass { break }
        }
        return (graph, log.entries)
    }

    /// Values that must be kept: loss, output, parameter gradients.
    var keptValues: IndexMask {
        var kept = IndexMask(count: values.count)
        for value in roots + gradients.compactMap({ $0 }) { kept.insert(value.index) }
        return kept
    }

    func line(_ location: SourceRange?) -> Int? {
        guard let location, let source else { return nil }
        return source.line(of: location.start)
    }

    /// Why an intermediate value cannot disappear into a fused op, or nil when it can. `kept`: the
    /// graph's `keptValues`, computed once per pass (it has an entry per parameter).
    func blocker(_ value: ValueID, users: Users, kept: IndexMask) -> String? {
        if kept.contains(value.index) { return "%\(self[value].name) is a graph output" }
        if users[value.index].count > 1 { return "%\(self[value].name) has \(users[value.index].count) consumers" }
        return nil
    }

    /// Removes the nodes at the given indices.
    mutating func removeNodes(_ removed: IndexMask) {
        // In place, keeping the order: no copy of the nodes that stay (passes run this on every graph).
        guard !removed.isEmpty else { return }
        WorkCounter.count(nodes.count)
        let kept = nodes.withUnsafeMutableBufferPointer { buffer in
            var kept = 0
            for index in buffer.indices where !removed.contains(index) {
                if kept != index { buffer.swapAt(kept, index) }
                kept += 1
            }
            return kept
        }
        nodes.removeLast(nodes.count - kept)
    }
}

/// A set of node or value indices, as a mask over the graph: the passes mark some of a deep model's
/// hundreds of thousands of nodes, and hashing each into a Set cost more than the pass's walk.
struct IndexMask {
    private var marks: [Bool]
    private(set) var isEmpty = true
    init(count: Int) { marks = [Bool](repeating: false, count: count) }
    func contains(_ index: Int) -> Bool { marks[index] }
    mutating func insert(_ index: Int) { marks[index] = true; isEmpty = false }
    mutating func formUnion<S: Sequence>(_ indices: S) where S.Element == Int { for index in indices { insert(index) } }
}

/// A forward matmul (not a transposed one of the backward pass): where fuse-dense starts.
@Sendable func isForwardMatmul(_ node: Node) -> Bool {
    if case .matmul(false, false) = node.op, node.phase == .forward { return true }
    return false
}

/// A convolution: where fuse-conv starts.
@Sendable func isConvolution(_ node: Node) -> Bool {
    if case .conv2d = node.op { return true }
    return false
}

/// matmul → [bias_add] → [activation] ⇒ dense
func fuseDense(_ graph: inout Graph, _ log: inout FusionLog) throws {
    try fuseProducerChain(&graph, &log, pass: "fuse-dense", matches: isForwardMatmul) { activation, bias, _ in .dense(activation, bias: bias) }
}

/// conv2d → [bias_add] → [activation] ⇒ fused conv2d
func fuseConvolution(_ graph: inout Graph, _ log: inout FusionLog) throws {
    try fuseProducerChain(&graph, &log, pass: "fuse-conv", matches: isConvolution) { activation, bias, node in
        guard case .conv2d(let geometry) = node.op else { return node.op }
        return .convFused(geometry, activation, bias: bias)
    }
}

/// The shared shape of the forward fusions: a producer, then optionally a bias_add, then
/// optionally an element-wise activation, each the only consumer of the one before.
func fuseProducerChain(_ graph: inout Graph, _ log: inout FusionLog, pass: String,
                       matches: (Node) -> Bool, make: (ActivationFunction, Bool, Node) -> Op) throws {
    var removed = IndexMask(count: graph.nodes.count)
    let users = graph.users(), kept = graph.keptValues
    var replacements: [(Int, Node)] = []
    // By index, copying only the nodes that match (a copy of every node per pass adds up in long models).
    for index in graph.nodes.indices where matches(graph.nodes[index]) {
        let node = graph.nodes[index]
        var operands = Array(node.operands)
        var result = node.results[0]
        var last = index
        var hasBias = false
        var activation = ActivationFunction.identity
        var pattern = log.isRecording ? "\(node.op.name.split(separator: " ")[0]) %\(graph[result].name)" : ""
        var absorbed: [Int] = []
        func next() -> Int? { users[result.index].count == 1 ? users[result.index].first : nil }
        if let user = next(), case .biasAdd = graph.nodes[user].op, graph.blocker(result, users: users, kept: kept) == nil {
            operands.append(graph.nodes[user].operands[1])
            absorbed.append(user)
            hasBias = true
            result = graph.nodes[user].results[0]
            last = user
            if log.isRecording { pattern += " + bias_add %\(graph[result].name)" }
        }
        if let user = users[result.index].first(where: { if case .activation = graph.nodes[$0].op { return true }; return false }),
           case .activation(let f) = graph.nodes[user].op {
            let candidate = log.isRecording ? pattern + " + \(f) %\(graph[graph.nodes[user].results[0]].name)" : ""
            if !f.epilogueFusable {
                log.append(.init(pass: pass, pattern: candidate, fused: false, reason: "\(f) is not an element-wise activation the epilogue supports", location: node.location, line: graph.line(node.location)))
            } else if let reason = graph.blocker(result, users: users, kept: kept) {
                log.append(.init(pass: pass, pattern: candidate, fused: false, reason: reason, location: node.location, line: graph.line(node.location)))
            } else {
                activation = f
                absorbed.append(user)
                result = graph.nodes[user].results[0]
                last = user
                pattern = candidate
            }
        }
        if absorbed.isEmpty {
            log.append(.init(pass: pass, pattern: pattern, fused: false, reason: graph.blocker(node.results[0], users: users, kept: kept) ?? "nothing to fuse after it", location: node.location, line: graph.line(node.location)))
            continue
        }
        log.append(.init(pass: pass, pattern: pattern, fused: true, reason: "", location: node.location, line: graph.line(node.location)))
        let fused = Node(op: make(activation, hasBias, node), operands: operands, results: [result], location: node.location, phase: node.phase)
        // The fused node takes the place of the last node of the chain, so later users still follow it.
        replacements.append((last, fused))
        removed.insert(index)
        for a in absorbed where a != last { removed.insert(a) }
    }
    for (index, node) in replacements { graph.nodes[index] = node }
    graph.removeNodes(removed)
}

/// activation_grad → bias_grad ⇒ activation_grad+bias_grad (one pass over dy)
func fuseActivationGradient(_ graph: inout Graph, _ log: inout FusionLog) throws {
    let users = graph.users()
    var removed = IndexMask(count: graph.nodes.count)
    // By index: the loop rewrites nodes in place, and an iterator would hold (and force a copy of) the array.
    for index in graph.nodes.indices {
        guard case .activationGrad(let f) = graph.nodes[index].op else { continue }
        let node = graph.nodes[index]
        let dz = node.results[0]
        let pattern = log.isRecording ? "\(f)_grad %\(graph[dz].name)" : ""
        guard f.backwardFusable else {
            log.append(.init(pass: "fuse-activation-grad", pattern: pattern, fused: false, reason: f.derivativeFromOutput ? "\(f) is not supported by the fused kernel" : "\(f)'s derivative needs its input, the fused kernel sees only the output", location: node.location, line: graph.line(node.location)))
            continue
        }
        guard let biasUser = users[dz.index].first(where: { graph.nodes[$0].op == .biasGrad }) else {
            log.append(.init(pass: "fuse-activation-grad", pattern: pattern, fused: false, reason: "no bias gradient follows it", location: node.location, line: graph.line(node.location)))
            continue
        }
        let db = graph.nodes[biasUser].results[0]
        log.append(.init(pass: "fuse-activation-grad", pattern: pattern + " + bias_grad %\(graph[db].name)", fused: true, reason: "", location: node.location, line: graph.line(node.location)))
        graph.nodes[index] = Node(op: .activationGradBias(f, bias: true), operands: node.operands, results: [dz, db], location: node.location, phase: node.phase)
        removed.insert(biasUser)
    }
    graph.removeNodes(removed)
}

/// softmax → cross_entropy ⇒ softmax_cross_entropy on the logits, and in the backward
/// cross_entropy_grad → softmax_grad ⇒ softmax_cross_entropy_grad.
func fuseSoftmaxCrossEntropy(_ graph: inout Graph, _ log: inout FusionLog) throws {
    let producers = graph.producers()
    for index in graph.nodes.indices {
        let node = graph.nodes[index]
        if node.op == .crossEntropy {
            let probabilities = node.operands[0]
            guard let p = producers[probabilities.index], graph.nodes[p].op == .softmax else {
                log.append(.init(pass: "fuse-softmax-crossentropy", pattern: "cross_entropy %\(graph[node.results[0]].name)", fused: false, reason: "its input is not a softmax", location: node.location, line: graph.line(node.location)))
                continue
            }
            let logits = graph.nodes[p].operands[0]
            graph.nodes[index].op = .softmaxCrossEntropy
            graph.nodes[index].operands = [logits, node.operands[1]]
            log.append(.init(pass: "fuse-softmax-crossentropy", pattern: "softmax %\(graph[probabilities].name) + cross_entropy %\(graph[node.results[0]].name)", fused: true, reason: "", location: node.location, line: graph.line(node.location)))
        } else if node.op == .softmaxGrad {
            // softmax_grad(p, cross_entropy_grad(p, labels, g)) = softmax_cross_entropy_grad(logits, labels, g)
            guard let c = producers[node.operands[1].index], graph.nodes[c].op == .crossEntropyGrad,
                  let p = producers[node.operands[0].index], graph.nodes[p].op == .softmax else { continue }
            let crossEntropyGrad = graph.nodes[c]
            graph.nodes[index].op = .softmaxCrossEntropyGrad
            graph.nodes[index].operands = [graph.nodes[p].operands[0], crossEntropyGrad.operands[1], crossEntropyGrad.operands[2]]
        }
    }
}

/// sub → pow 2 → mean (sum), how `loss mse` (`sse`) lowers, ⇒ one mse (sse) op on the sub's operands;
/// in a training graph, with its gradient, broadcast_mean (broadcast) → pow 2's gradient, ⇒ one
/// mse+grad (sse+grad) op on the same operands and the loss's gradient, where the gradient was (a
/// tiny network's step is a few ops: each one fewer counts). Same operations in the same order, so
/// the same numbers; the sub, pow and broadcast are left without users (dce removes them).
func fuseSquaredError(_ graph: inout Graph, _ log: inout FusionLog) throws {
    let producers = graph.producers()
    let users = graph.users(), kept = graph.keptValues
    var removed = IndexMask(count: graph.nodes.count)
    for index in graph.nodes.indices {
        let node = graph.nodes[index]
        let mean: Bool
        switch node.op {
        case .meanAll: mean = true
        case .sumAll: mean = false
        default: continue
        }
        let squared = node.operands[0]
        guard let power = producers[squared.index], graph.nodes[power].op == .activation(.pow(2)) else { continue }
        let difference = graph.nodes[power].operands[0]
        guard let subtraction = producers[difference.index], graph.nodes[subtraction].op == .subtract else { continue }
        let pattern = log.isRecording ? "sub %\(graph[difference].name) + pow(2) %\(graph[squared].name) + \(node.op.name) %\(graph[node.results[0]].name)" : ""
        func skip(_ reason: String) {
            log.append(.init(pass: "fuse-squared-error", pattern: pattern, fused: false, reason: reason, location: node.location, line: graph.line(node.location)))
        }
        if kept.contains(difference.index) || kept.contains(squared.index) { skip("an intermediate value is a graph output"); continue }
        // The gradient's nodes, when this is a training graph: the broadcast of the loss's gradient (which
        // reads the squares for their shape only) and pow 2's gradient, its one user.
        var gradient: (broadcast: Int, powerGradient: Int)?
        let squaredUsers = users[squared.index].filter { $0 != index }
        if let broadcast = squaredUsers.first {
            guard squaredUsers.count == 1, graph.nodes[broadcast].op == .broadcast(mean: mean),
                  graph.nodes[broadcast].operands.count == 2, graph.nodes[broadcast].operands[1] == squared else {
                skip("%\(graph[squared].name) has other consumers"); continue
            }
            let spread = graph.nodes[broadcast].results[0]
            guard !kept.contains(spread.index), users[spread.index].count == 1, let powerGradient = users[spread.index].first,
                  graph.nodes[powerGradient].op == .activationGrad(.pow(2)), graph.nodes[powerGradient].operands == [difference, spread] else {
                skip("the gradient of %\(graph[squared].name) is not pow 2's gradient alone"); continue
            }
            gradient = (broadcast, powerGradient)
        }
        guard users[difference.index].allSatisfy({ $0 == power || $0 == gradient?.powerGradient }) else {
            skip("%\(graph[difference].name) has other consumers"); continue
        }
        let sides = graph.nodes[subtraction].operands
        if let gradient {
            // The loss is then made where its gradient was: nothing may read it before.
            guard users[node.results[0].index].allSatisfy({ $0 > gradient.powerGradient }) else {
                skip("%\(graph[node.results[0]].name) is read before its gradient"); continue
            }
            let powerGradient = graph.nodes[gradient.powerGradient]
            graph.nodes[gradient.powerGradient] = Node(op: .squaredErrorWithGrad(mean: mean), operands: ValueList(Array(sides) + [graph.nodes[gradient.broadcast].operands[0]]),
                                                       results: ValueList([node.results[0]] + Array(powerGradient.results)), location: node.location, phase: node.phase)
            removed.insert(index)
        } else {
            graph.nodes[index] = Node(op: .squaredError(mean: mean), operands: sides, results: node.results, location: node.location, phase: node.phase)
        }
        log.append(.init(pass: "fuse-squared-error", pattern: pattern + (gradient == nil ? "" : " and its gradient"), fused: true, reason: "",
                         location: node.location, line: graph.line(node.location)))
    }
    graph.removeNodes(removed)
}

/// conv2d/matmul [→ bias_add] → batchnorm.eval ⇒ batchnorm_fold (W' = W·s, b' = (b − mean)·s + β,
/// s = γ/√(var + eps)) → conv2d/matmul with W' → bias_add b'. The fold runs in every step (its cost is
/// the weights' size), so the parameters may change between steps (evaluation during training).
/// The new nodes take the batch norm's place, where its statistics are defined; the fused layer
/// then takes the activation after it in its epilogue (fuse-conv, fuse-dense).
func foldBatchNorm(_ graph: inout Graph, _ log: inout FusionLog) throws {
    let producers = graph.producers()
    let users = graph.users(), kept = graph.keptValues
    var removed = IndexMask(count: graph.nodes.count)
    var replacements: [(Int, [Node])] = []
    for index in graph.nodes.indices {
        guard case .batchNormInference(let eps) = graph.nodes[index].op else { continue }
        let node = graph.nodes[index]
        let pattern = log.isRecording ? "batchnorm.eval %\(graph[node.results[0]].name)" : ""
        func skip(_ reason: String) {
            log.append(.init(pass: "fold-batchnorm", pattern: pattern, fused: false, reason: reason, location: node.location, line: graph.line(node.location)))
        }
        var input = node.operands[0]
        var biasNode: Int?
        if let p = producers[input.index], graph.nodes[p].op == .biasAdd {
            if let reason = graph.blocker(input, users: users, kept: kept) { skip(reason); continue }
            biasNode = p
            input = graph.nodes[p].operands[0]
        }
        guard let layer = producers[input.index] else { skip("its input is not made by a conv or fc"); continue }
        let convolution: Bool
        switch graph.nodes[layer].op {
        case .conv2d: convolution = true
        case .matmul(false, false): convolution = false
        default: skip("its input is not made by a conv or fc"); continue
        }
        if let reason = graph.blocker(input, users: users, kept: kept) { skip(reason); continue }
        let layerNode = graph.nodes[layer]
        let weight = layerNode.operands[1]
        let bias = biasNode.map { graph.nodes[$0].operands[1] }
        let channels = node.operands[1]
        let foldedWeight = graph.newValue(graph[weight].name + ".folded", graph[weight].shape)
        let foldedBias = graph.newValue(graph[node.results[0]].name + ".bias", graph[channels].shape)
        let product = graph.newValue(graph[input].name + ".folded", graph[input].shape)
        let fold = Node(op: .batchNormFold(eps: eps, convolution: convolution, bias: bias != nil),
                        operands: [weight] + (bias.map { [$0] } ?? []) + Array(node.operands[1...4]), results: [foldedWeight, foldedBias],
                        location: node.location, phase: node.phase)
        let scaled = Node(op: layerNode.op, operands: [layerNode.operands[0], foldedWeight], results: [product], location: layerNode.location, phase: layerNode.phase)
        let shifted = Node(op: .biasAdd, operands: [product, foldedBias], results: node.results, location: node.location, phase: node.phase)
        replacements.append((index, [fold, scaled, shifted]))
        removed.insert(layer)
        if let biasNode { removed.insert(biasNode) }
        log.append(.init(pass: "fold-batchnorm", pattern: "\(layerNode.op.name.split(separator: " ")[0]) %\(graph[input].name) + " + pattern,
                         fused: true, reason: "", location: node.location, line: graph.line(node.location)))
    }
    guard !replacements.isEmpty else { return }
    var nodes: [Node] = []
    var pending = replacements[...]
    for (index, node) in graph.nodes.enumerated() {
        if let first = pending.first, first.0 == index {
            nodes += first.1
            pending = pending.dropFirst()
            continue
        }
        if !removed.contains(index) { nodes.append(node) }
    }
    graph.nodes = nodes
}

/// batchnorm (training) [→ add r] → [activation f] → [maxpool 2×2] ⇒ batchnorm with that epilogue, and
/// in a training graph [maxpool_grad] → [f_grad] → batchnorm_grad ⇒ one batchnorm_grad that recomputes
/// h = f(bn(x) [+ r]) from x: the full-size values between them (the 28×28 planes of a CNN's stem: a
/// normalized copy, its activation, their gradients) are neither written nor read again. Each step is
/// taken only when its forward value has no other reader and, in a training graph, its gradient is
/// the one the next step makes; the add only with an activation after it (its gradient, which also
/// flows to r, is then the fused backward's fourth result).
func fuseBatchNorm(_ graph: inout Graph, _ log: inout FusionLog) throws {
    let users = graph.users(), kept = graph.keptValues
    var removed = IndexMask(count: graph.nodes.count)
    var replacements: [(Int, Node)] = []
    for index in graph.nodes.indices {
        guard case .batchNorm(let eps, let momentum, BatchNormEpilogue.none) = graph.nodes[index].op else { continue }
        let node = graph.nodes[index]
        var pattern = log.isRecording ? "batchnorm %\(graph[node.results[0]].name)" : ""
        guard graph[node.operands[0]].shape.dims.count == 3 else {
            log.append(.init(pass: "fuse-batchnorm", pattern: pattern, fused: false, reason: "only batch norms of [N,C,H,W] are fused",
                             location: node.location, line: graph.line(node.location)))
            continue
        }
        // The node's gradient, in a training graph, and the gradient of the value the chain has reached.
        let backward = users[node.results[1].index].first { if case .batchNormGrad = graph.nodes[$0].op { return true }; return false }
        var gradient = backward.map { graph.nodes[$0].operands[5] }
        var epilogue = BatchNormEpilogue(), residual: ValueID?
        var value = node.results[0]
        var absorbed: [Int] = [], absorbedBackward: [Int] = []
        /// The only user of `value` when it is not a graph output and has no others than `also`.
        func soleUser(also: [Int] = []) -> Int? {
            guard !kept.contains(value.index) else { return nil }
            let rest = users[value.index].filter { !also.contains($0) }
            return rest.count == 1 ? rest.first : nil
        }
        // The residual add, when an activation follows it.
        if let add = soleUser(), graph.nodes[add].op == .add, let other = graph.nodes[add].operands.first(where: { $0 != value }),
           graph.nodes[add].operands.contains(value), graph[other].shape == graph[value].shape {
            let sum = graph.nodes[add].results[0]
            if !kept.contains(sum.index), users[sum.index].count == 1, let f = users[sum.index].first, case .activation = graph.nodes[f].op {
                epilogue.residual = true
                residual = other
                absorbed.append(add)
                value = sum
                if log.isRecording { pattern += " + add %\(graph[sum].name)" }
            }
        }
        // The activation and, in a training graph, its gradient, which must be the gradient reaching here.
        var activationGradient: Int?
        if let user = soleUser(), case .activation(let f) = graph.nodes[user].op, f.backwardFusable {
            let h = graph.nodes[user].results[0]
            let grad = users[h.index].first { graph.nodes[$0].op == .activationGrad(f) && graph.nodes[$0].operands[0] == h }
            let dz = grad.map { graph.nodes[$0].results[0] }
            // (With the residual, the add's gradient also flows on to r: the fused backward still makes it.)
            if gradient == nil || dz.map({ $0 == gradient && !kept.contains($0.index) && (epilogue.residual || users[$0.index].count == 1) }) == true {
                epilogue.activation = f
                absorbed.append(user)
                activationGradient = grad
                if let grad { absorbedBackward.append(grad); gradient = graph.nodes[grad].operands[1] }
                value = h
                if log.isRecording { pattern += " + \(f) %\(graph[h].name)" }
            }
        }
        if epilogue.residual && epilogue.activation == .identity {
            // The add's activation did not fuse: the add stays apart.
            (epilogue.residual, residual, value) = (false, nil, node.results[0])
            absorbed.removeAll()
            if log.isRecording { pattern = "batchnorm %\(graph[node.results[0]].name)" }
        }
        // The 2×2 max pool and, in a training graph, its gradient (which reads the pooled value too).
        let poolGradient = users[value.index].first { if case .poolGrad = graph.nodes[$0].op { return true }; return false }
        if let pool = soleUser(also: [poolGradient, activationGradient].compactMap { $0 }),
           graph.nodes[pool].op == .pool(.max, window: [2, 2], stride: [2, 2], padding: [0, 0]) {
            let pooled = graph.nodes[pool].results[0]
            let routed = poolGradient.flatMap { p -> ValueID? in
                let grad = graph.nodes[p]
                guard grad.op == .poolGrad(.max, window: [2, 2], stride: [2, 2], padding: [0, 0]), grad.operands[0] == value, grad.operands[1] == pooled
                else { return nil }
                return grad.results[0]
            }
            if gradient == nil ? poolGradient == nil : routed.map({ $0 == gradient && !kept.contains($0.index) && users[$0.index].count == 1 }) == true {
                epilogue.pooled = true
                absorbed.append(pool)
                if let poolGradient { absorbedBackward.append(poolGradient); gradient = graph.nodes[poolGradient].operands[2] }
                value = pooled
                if log.isRecording { pattern += " + maxpool %\(graph[pooled].name)" }
            }
        }
        guard let last = absorbed.max(), backward == nil || !absorbedBackward.isEmpty else {
            log.append(.init(pass: "fuse-batchnorm", pattern: pattern, fused: false, reason: "nothing it can take follows it",
                             location: node.location, line: graph.line(node.location)))
            continue
        }
        let residualOperand = residual.map { [$0] } ?? []
        // At the last absorbed node's place (the residual is defined by then; the statistics' readers come later).
        replacements.append((last, Node(op: .batchNorm(eps: eps, momentum: momentum, epilogue), operands: ValueList(Array(node.operands) + residualOperand),
                                        results: [value, node.results[1], node.results[2]], location: node.location, phase: node.phase)))
        removed.insert(index)
        for a in absorbed where a != last { removed.insert(a) }
        if let backward, let gradient, let first = absorbedBackward.min() {
            // At the first absorbed gradient's place: its operand, the gradient of the output, is defined there.
            let old = graph.nodes[backward]
            // With a residual: the activation's gradient (the add's), which r's gradient also reads.
            let dResidual = epilogue.residual ? activationGradient.map { [graph.nodes[$0].results[0]] } ?? [] : []
            replacements.append((first, Node(op: .batchNormGrad(epilogue), operands: ValueList(Array(old.operands.prefix(5)) + [gradient] + residualOperand),
                                             results: ValueList(Array(old.results) + dResidual), location: old.location, phase: old.phase)))
            removed.insert(backward)
            for b in absorbedBackward where b != first { removed.insert(b) }
        }
        log.append(.init(pass: "fuse-batchnorm", pattern: pattern + (backward == nil ? "" : " and their gradients"), fused: true, reason: "",
                         location: node.location, line: graph.line(node.location)))
    }
    for (index, node) in replacements { graph.nodes[index] = node }
    graph.removeNodes(removed)
}

/// Removes nodes whose results nobody needs (keeping effects and the graph's roots).
func eliminateDeadCode(_ graph: inout Graph, _ log: inout FusionLog) throws {
    var live = [Bool](repeating: false, count: graph.values.count)
    for value in graph.roots + graph.gradients.compactMap({ $0 }) { live[value.index] = true }
    var dead = IndexMask(count: graph.nodes.count)
    // By index: `let node = graph.nodes[index]` would copy every node.
    for index in graph.nodes.indices.reversed() {
        // Sources stay: they are the model's interface (parameters must be saved even if unused).
        let op = graph.nodes[index].op
        guard op.hasEffect || op.isSource || graph.nodes[index].results.contains(where: { live[$0.index] }) else { dead.insert(index); continue }
        for operand in graph.nodes[index].operands { live[operand.index] = true }
    }
    graph.removeNodes(dead)
}

/// act_grad(y, dy) → [bias_grad] → conv2d_weight_grad [+ conv2d_input_grad] ⇒ conv2d_backward:
/// the conv kernel computes dz = dy ⊙ act'(y) on the fly, with db, dW and dx, in one call.
func fuseConvolutionGradient(_ graph: inout Graph, _ log: inout FusionLog) throws {
    let users = graph.users(), kept = graph.keptValues
    var removed = IndexMask(count: graph.nodes.count)
    // By index: the loop rewrites nodes in place, and an iterator would hold (and force a copy of) the array.
    for index in graph.nodes.indices {
        guard case .activationGrad(let f) = graph.nodes[index].op else { continue }
        let node = graph.nodes[index]
        let dz = node.results[0]
        let consumers = users[dz.index]
        guard let weightUser = consumers.first(where: { if case .conv2dWeightGrad = graph.nodes[$0].op { return true }; return false }),
              case .conv2dWeightGrad(let geometry) = graph.nodes[weightUser].op else { continue }
        let pattern = log.isRecording ? "\(f)_grad %\(graph[dz].name) + conv2d grads" : ""
        func skip(_ reason: String) {
            log.append(.init(pass: "fuse-conv-grad", pattern: pattern, fused: false, reason: reason, location: node.location, line: graph.line(node.location)))
        }
        guard f.backwardFusable else { skip(f.derivativeFromOutput ? "\(f) is not supported by the conv kernel" : "\(f)'s derivative needs its input, the conv kernel sees only the output"); continue }
        guard !kept.contains(dz.index) else { skip("%\(graph[dz].name) is a graph output"); continue }
        let biasUser = consumers.first { graph.nodes[$0].op == .biasGrad }
        let inputUser = consumers.first { if case .conv2dInputGrad(let g) = graph.nodes[$0].op { return g == geometry }; return false }
        let known = [weightUser] + [biasUser, inputUser].compactMap { $0 }
        guard consumers.count == known.count else { skip("%\(graph[dz].name) has other consumers"); continue }
        let x = graph.nodes[weightUser].operands[0], w = graph.nodes[weightUser].operands[2]
        var results = [graph.nodes[weightUser].results[0]]
        if let biasUser { results.append(graph.nodes[biasUser].results[0]) }
        if let inputUser { results.append(graph.nodes[inputUser].results[0]) }
        // At the activation gradient's place: x, W, y and dy are all defined there, and every user of
        // the results comes after the nodes that made them before.
        graph.nodes[index] = Node(op: .convBackward(geometry, f, bias: biasUser != nil, inputGradient: inputUser != nil, pooled: false),
                                  operands: [x, w, node.operands[0], node.operands[1]], results: results,
                                  location: graph.nodes[weightUser].location, phase: node.phase)
        removed.formUnion(known)
        log.append(.init(pass: "fuse-conv-grad", pattern: pattern, fused: true, reason: "", location: node.location, line: graph.line(node.location)))
    }
    graph.removeNodes(removed)
}

/// fused conv2d → maxpool (2×2, stride 2, unpadded) ⇒ fused conv2d with the pool's output as a second
/// result. The convolution's own output stays a result: the backward pass reads it.
func fusePool(_ graph: inout Graph, _ log: inout FusionLog) throws {
    let users = graph.users()
    var removed = IndexMask(count: graph.nodes.count)
    for index in graph.nodes.indices {
        guard case .convFused(let g, let f, let bias, false) = graph.nodes[index].op else { continue }
        let node = graph.nodes[index]
        let y = node.results[0]
        guard let poolIndex = users[y.index].first(where: { if case .pool(.max, _, _, _) = graph.nodes[$0].op { return true }; return false }),
              case .pool(.max, let window, let stride, let padding) = graph.nodes[poolIndex].op else { continue }
        let pool = graph.nodes[poolIndex]
        let pattern = log.isRecording ? "conv2d %\(graph[y].name) + maxpool %\(graph[pool.results[0]].name)" : ""
        guard window == [2, 2], stride == [2, 2], padding.allSatisfy({ $0 == 0 }) else {
            log.append(.init(pass: "fuse-pool", pattern: pattern, fused: false, reason: "only 2x2 windows with stride 2 and no padding are fused",
                             location: pool.location, line: graph.line(pool.location)))
            continue
        }
        // At the convolution's place: every user of the pool's output comes after the pool, after it.
        graph.nodes[index] = Node(op: .convFused(g, f, bias: bias, pooled: true), operands: node.operands,
                                  results: [y, pool.results[0]], location: node.location, phase: node.phase)
        removed.insert(poolIndex)
        log.append(.init(pass: "fuse-pool", pattern: pattern, fused: true, reason: "", location: pool.location, line: graph.line(pool.location)))
    }
    graph.removeNodes(removed)
}

/// maxpool_grad (2×2, stride 2, unpadded) of a conv layer's output → that layer's conv2d_backward ⇒
/// conv2d_backward (pooled): the pool's gradient is routed into each dZ plane as the kernel makes it
/// (same values, same sums), instead of a full-size dY written by one op and read back by the next.
func fusePoolGradient(_ graph: inout Graph, _ log: inout FusionLog) throws {
    let producers = graph.producers(), users = graph.users(), kept = graph.keptValues
    var removed = IndexMask(count: graph.nodes.count)
    for index in graph.nodes.indices {
        guard case .convBackward(let g, let f, let bias, let inputGradient, false) = graph.nodes[index].op else { continue }
        let node = graph.nodes[index]
        let dy = node.operands[3]
        guard let producer = producers[dy.index], case .poolGrad(.max, let window, let stride, let padding) = graph.nodes[producer].op else { continue }
        let pool = graph.nodes[producer]
        let pattern = log.isRecording ? "maxpool_grad %\(graph[dy].name) + conv2d_backward" : ""
        func skip(_ reason: String) {
            log.append(.init(pass: "fuse-pool-grad", pattern: pattern, fused: false, reason: reason, location: pool.location, line: graph.line(pool.location)))
        }
        guard window == [2, 2], stride == [2, 2], padding.allSatisfy({ $0 == 0 }) else {
            skip("only 2x2 windows with stride 2 and no padding are fused"); continue
        }
        guard pool.operands[0] == node.operands[2] else { skip("the pool does not read the convolution's output"); continue }
        guard !kept.contains(dy.index), users[dy.index].count == 1 else { skip("%\(graph[dy].name) has other consumers"); continue }
        // At the conv backward's place: the pool's output gradient is defined before the pool's gradient.
        graph.nodes[index] = Node(op: .convBackward(g, f, bias: bias, inputGradient: inputGradient, pooled: true),
                                  operands: [node.operands[0], node.operands[1], node.operands[2], pool.operands[2]],
                                  results: node.results, location: node.location, phase: node.phase)
        removed.insert(producer)
        log.append(.init(pass: "fuse-pool-grad", pattern: pattern, fused: true, reason: "", location: pool.location, line: graph.line(pool.location)))
    }
    graph.removeNodes(removed)
}

/// matmul → update(sgd) of the parameter whose gradient it computes ⇒ matmul+update: the GEMM takes
/// the SGD step on each block of the gradient as it finishes, while the block is in cache, instead of a
/// separate pass over the gradient, velocity and parameter afterwards.
///
/// The fused node stays at the matmul's place when no later node reads the parameter or its state
/// (the step may only come after the parameter's last use); otherwise it moves to the update's place,
/// where the matmul's operands are still defined.
func fuseUpdate(_ graph: inout Graph, _ log: inout FusionLog) throws {
    let producers = graph.producers()
    let users = graph.users()
    var removed = IndexMask(count: graph.nodes.count)
    var replacements: [(Int, Node)] = []
    for index in graph.nodes.indices {
        guard case .update(let update) = graph.nodes[index].op, graph.nodes[index].operands.count >= 2 else { continue }
        let node = graph.nodes[index]
        let parameter = node.operands[0], gradient = node.operands[1]
        let pattern = log.isRecording ? "update %\(graph[parameter].name)" : ""
        func skip(_ reason: String) {
            log.append(.init(pass: "fuse-update", pattern: pattern, fused: false, reason: reason, location: node.location, line: graph.line(node.location)))
        }
        guard case .sgd = update else { skip("only sgd steps are fused"); continue }
        guard let producer = producers[gradient.index] else {
            skip("its gradient %\(graph[gradient].name) is not computed by a matmul or an activation's bias gradient"); continue
        }
        guard !removed.contains(producer), producer < index else { skip("its gradient's node is already fused"); continue }
        // Readers of the parameter or its state after the gradient's node, other than this update.
        let touched = [parameter] + node.operands.dropFirst(2)
        let laterReaders = touched.flatMap { users[$0.index] }.filter { $0 > producer && $0 != index }
        if case .activationGradBias(let f, bias: true) = graph.nodes[producer].op, graph.nodes[producer].results[1] == gradient {
            // A bias's step right after the pass that summed its gradient: one instruction less per
            // bias (a tiny network's step is mostly instructions). Its dz is read right after, so the
            // node cannot move to the update's place.
            guard laterReaders.isEmpty else { skip("%\(graph[parameter].name) is read after its gradient"); continue }
            let gradientNode = graph.nodes[producer]
            replacements.append((producer, Node(op: .activationGradBiasUpdate(f, update), operands: ValueList(Array(gradientNode.operands) + touched),
                                                results: gradientNode.results, location: gradientNode.location, phase: gradientNode.phase)))
            removed.insert(index)
            log.append(.init(pass: "fuse-update", pattern: "\(gradientNode.op.name) %\(graph[gradient].name) + " + pattern, fused: true, reason: "",
                             location: node.location, line: graph.line(node.location)))
            continue
        }
        guard case .matmul(let ta, let tb) = graph.nodes[producer].op else {
            skip("its gradient %\(graph[gradient].name) is not computed by a matmul or an activation's bias gradient"); continue
        }
        let matmul = graph.nodes[producer]
        let fused = Node(op: .matmulUpdate(transposeA: ta, transposeB: tb, update),
                         operands: Array(matmul.operands.prefix(2)) + [parameter] + Array(node.operands.dropFirst(2)),
                         results: Array(matmul.results), location: matmul.location, phase: matmul.phase)
        if laterReaders.isEmpty {
            replacements.append((producer, fused))
            removed.insert(index)
        } else {
            // Every user of the gradient must then come after the update's place too.
            guard users[gradient.index].allSatisfy({ $0 >= index }) else {
                skip("%\(graph[parameter].name) is read after its gradient, which is used before the update"); continue
            }
            var moved = fused
            moved.phase = node.phase
            replacements.append((index, moved))
            removed.insert(producer)
        }
        log.append(.init(pass: "fuse-update", pattern: "\(matmul.op.name) %\(graph[gradient].name) + " + pattern, fused: true, reason: "",
                         location: node.location, line: graph.line(node.location)))
    }
    for (index, node) in replacements { graph.nodes[index] = node }
    graph.removeNodes(removed)
    // Optimizer state comes in as source nodes after the backward pass; a fused step that stayed at its
    // matmul's place reads it earlier, so the state sources move to the front (sources run nothing).
    let isState: (Node) -> Bool = { if case .state = $0.op { return true }; return false }
    if let firstOther = graph.nodes.firstIndex(where: { !isState($0) }), graph.nodes[firstOther...].contains(where: isState) {
        graph.nodes = graph.nodes.filter(isState) + graph.nodes.filter { !isState($0) }
    }
}

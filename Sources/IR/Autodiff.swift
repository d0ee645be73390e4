import Parser

/// Autodiff failed: an op on the path from the parameters to the loss has no gradient rule.
public struct AutodiffError: Error, CustomStringConvertible, Sendable {
    public var op: String
    /// The statement the op came from, and its file.
    public var location: SourceRange?
    public var source: SourceFile?
    public var description: String { "no gradient rule for '\(op)'" }
    /// `file:line:col: error[E032]: no gradient rule for '…'` with the statement.
    public var rendered: String {
        guard let location, let source else { return "nnc: error[\(DiagnosticCode.noGradientRule.rawValue)]: \(description)\n" }
        return Diagnostic(.noGradientRule, description, at: location).render(in: source)
    }
}

extension Op {
    /// The gradient rule (vector-Jacobian product) as IR: given the node and the gradient of its
    /// result, emits nodes into the graph and returns one gradient per operand (nil: no gradient,
    /// e.g. for labels and targets). Rules exist only for primitives; fused ops appear after autodiff.
    func gradient(of node: Node, resultGradient g: ValueID, in graph: inout Graph, needs: [Bool]) throws -> [ValueID?] {
        let at = node.location
        let operands = node.operands
        func emit(_ op: Op, _ args: [ValueID], _ name: String) throws -> ValueID {
            try graph.add1(op, args, name: name, at: at, phase: .backward)
        }
        func d(_ value: ValueID) -> String { "d" + graph[value].name }
        switch self {
        case .matmul(let ta, let tb):
            let a = operands[0], b = operands[1]
            var da: ValueID?, db: ValueID?
            switch (ta, tb) {
            case (false, false):
                if needs[0] { da = try emit(.matmul(transposeA: false, transposeB: true), [g, b], d(a)) }
                if needs[1] { db = try emit(.matmul(transposeA: true, transposeB: false), [a, g], d(b)) }
            case (true, false):
                if needs[0] { da = try emit(.matmul(transposeA: false, transposeB: true), [b, g], d(a)) }
                if needs[1] { db = try emit(.matmul(transposeA: false, transposeB: false), [a, g], d(b)) }
            case (false, true):
                if needs[0] { da = try emit(.matmul(transposeA: false, transposeB: false), [g, b], d(a)) }
                if needs[1] { db = try emit(.matmul(transposeA: true, transposeB: false), [g, a], d(b)) }
            case (true, true):
                if needs[0] { da = try emit(.matmul(transposeA: true, transposeB: true), [b, g], d(a)) }
                if needs[1] { db = try emit(.matmul(transposeA: true, transposeB: true), [g, a], d(b)) }
            }
            return [da, db]
        case .biasAdd:
            return [g, needs[1] ? try emit(.biasGrad, [g], d(operands[1])) : nil]
        case .activation(let f):
            let keep = f.derivativeFromOutput ? node.results[0] : operands[0]
            return [try emit(.activationGrad(f), [keep, g], d(operands[0]))]
        case .softmax:
            return [try emit(.softmaxGrad, [node.results[0], g], d(operands[0]))]
        case .add:
            return [g, g]
        case .subtract:
            return [g, needs[1] ? try emit(.scale(-1), [g], d(operands[1])) : nil]
        case .multiply:
            return [needs[0] ? try emit(.multiply, [g, operands[1]], d(operands[0])) : nil,
                    needs[1] ? try emit(.multiply, [g, operands[0]], d(operands[1])) : nil]
        case .scale(let factor):
            return [try emit(.scale(factor), [g], d(operands[0]))]
        case .sumAll:
            return [try emit(.broadcast(mean: false), [g, operands[0]], d(operands[0]))]
        case .meanAll:
            return [try emit(.broadcast(mean: true), [g, operands[0]], d(operands[0]))]
        case .conv2d(let geometry):
            let x = operands[0], w = operands[1]
            return [needs[0] ? try emit(.conv2dInputGrad(geometry), [g, w, x], d(x)) : nil,
                    needs[1] ? try emit(.conv2dWeightGrad(geometry), [x, g, w], d(w)) : nil]
        case .pool(let kind, let window, let stride, let padding):
            return [try emit(.poolGrad(kind, window: window, stride: stride, padding: padding), [operands[0], node.results[0], g], d(operands[0]))]
        case .concat:
            let a = operands[0], b = operands[1]
            let ca = graph[a].shape.dims[0], cb = graph[b].shape.dims[0]
            return [needs[0] ? try emit(.sliceChannels(start: 0, count: ca), [g], d(a)) : nil,
                    needs[1] ? try emit(.sliceChannels(start: ca, count: cb), [g], d(b)) : nil]
        case .batchNorm(_, _, BatchNormEpilogue.none):
            // (x, γ, β, running mean, running var) → (y, mean, invstd): one kernel for dx, dγ, dβ.
            let x = operands[0]
            let results = try graph.add(.batchNormGrad(), [x, operands[1], operands[2], node.results[1], node.results[2], g],
                                        names: [d(x), d(operands[1]), d(operands[2])], at: at, phase: .backward)
            return [results[0], results[1], results[2], nil, nil]
        case .prelu:
            let x = operands[0], slopes = operands[1]
            let results = try graph.add(.preluGrad, [x, slopes, g], names: [d(x), d(slopes)], at: at, phase: .backward)
            return [results[0], results[1]]
        case .pad(let spec):
            return [try emit(.padGrad(spec), [g, operands[0]], d(operands[0]))]
        case .logSoftmax:
            return [try emit(.logSoftmaxGrad, [node.results[0], g], d(operands[0]))]
        case .nllLoss:
            return [try emit(.nllLossGrad, [operands[0], operands[1], g], d(operands[0])), nil]
        case .reshape:
            return [try emit(.reshape(graph[operands[0]].shape), [g], d(operands[0]))]
        case .dropoutMask:
            return [nil]  // the mask is a constant of the step
        case .crossEntropy:
            return [try emit(.crossEntropyGrad, [operands[0], operands[1], g], d(operands[0])), nil]
        case .binaryCrossEntropy:
            return [try emit(.binaryCrossEntropyGrad, [operands[0], operands[1], g], d(operands[0])), nil]
        case .softmaxCrossEntropy:
            return [try emit(.softmaxCrossEntropyGrad, [operands[0], operands[1], g], d(operands[0])), nil]
        case .input, .target, .parameter, .state, .constant:
            return []
        case .activationGrad, .softmaxGrad, .logSoftmaxGrad, .preluGrad, .padGrad, .nllLossGrad, .sliceChannels, .batchNormGrad,
             .batchNormInference, .batchNormFold, .biasGrad, .broadcast, .conv2dInputGrad, .conv2dWeightGrad, .poolGrad,
             .crossEntropyGrad, .binaryCrossEntropyGrad, .softmaxCrossEntropyGrad, .squaredError, .squaredErrorWithGrad, .update,
             .dense, .convFused, .activationGradBias, .activationGradBiasUpdate, .convBackward, .matmulUpdate, .batchNorm:
            throw AutodiffError(op: name, location: at, source: graph.source)
        }
    }
}

extension Graph {
    /// Reverse-mode autodiff: walks the nodes in reverse order from the loss, sums the gradients
    /// of values with several consumers, and records d(loss)/d(parameter) in `gradients`.
    /// The result is more IR (phase `backward`), verified like the forward graph.
    public func differentiated() throws -> Graph {
        guard let loss else { throw IRError("the graph has no loss to differentiate") }
        var graph = self
        // The backward pass is about twice the forward's size: one copy of the graph, no regrowth.
        graph.reserveCapacity(nodes: 3 * nodes.count, values: 3 * values.count)
        // Which values depend on a parameter (only those need gradients).
        var dependsOnParameter = [Bool](repeating: false, count: values.count)
        for node in nodes {
            if case .parameter = node.op { for r in node.results { dependsOnParameter[r.index] = true } }
            if node.operands.contains(where: { dependsOnParameter[$0.index] }) {
                if case .dropoutMask = node.op { continue }
                for r in node.results { dependsOnParameter[r.index] = true }
            }
        }
        var gradient = [ValueID?](repeating: nil, count: values.count)
        gradient[loss.index] = try graph.add1(.constant(1), [], name: "dloss", at: nil, phase: .backward)
        for node in nodes.reversed() {
            // The gradient of an op's first result (a batch norm's other results, its batch statistics,
            // feed only its own backward).
            guard let first = node.results.first, let g = gradient[first.index] else { continue }
            let needs = node.operands.map { dependsOnParameter[$0.index] }
            guard needs.contains(true) else { continue }
            let operandGradients = try node.op.gradient(of: node, resultGradient: g, in: &graph, needs: needs)
            for (operand, operandGradient) in zip(node.operands, operandGradients) {
                guard let operandGradient, dependsOnParameter[operand.index] else { continue }
                if let existing = gradient[operand.index] {
                    gradient[operand.index] = try graph.add1(.add, [existing, operandGradient], name: "d" + graph[operand].name,
                                                             at: node.location, phase: .backward)
                } else {
                    gradient[operand.index] = operandGradient
                }
            }
        }
        graph.gradients = parameters.map { gradient[$0.value.index] }
        return graph
    }

    /// Appends one optimizer update per parameter (and its state tensors: velocity, Adam's moments).
    public consuming func withUpdates(_ update: OptimizerUpdate) throws -> Graph {
        // Consuming: the graph grows in place, not in a copy (models can be long).
        var graph = consume self
        graph.nodes.reserveCapacity(graph.nodes.count + graph.parameters.count * (1 + update.stateNames.count))
        for (index, parameter) in graph.parameters.enumerated() {
            guard index < graph.gradients.count, let g = graph.gradients[index] else { continue }
            var operands = [parameter.value, g]
            for stateName in update.stateNames {
                let name = "\(parameter.name).\(stateName)"
                let state = graph.addSource(.state(name: name), name: graph[parameter.value].name + "." + stateName, shape: parameter.shape, at: parameter.location)
                graph.states.append(PersistentState(name: name, value: state, kind: .optimizer))
                operands.append(state)
            }
            try graph.add(.update(update), operands, names: [], at: parameter.location, phase: .update)
        }
        return graph
    }
}

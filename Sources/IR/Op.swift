import Parser

/// An element-wise activation, as the IR sees it.
public enum ActivationFunction: Hashable, Sendable, CustomStringConvertible {
    case tanh, sigmoid, relu, identity
    case leakyRelu(alpha: Double)
    case pow(Int)
    /// Row-wise over the last axis.
    case softmax

    /// Whether the derivative can be computed from the output y alone (so the input need not be kept).
    public var derivativeFromOutput: Bool {
        switch self {
        case .pow: return false
        default: return true
        }
    }
    /// Activations a GEMM or conv epilogue can apply (element-wise, derivative from the output).
    public var fusable: Bool {
        switch self {
        case .tanh, .sigmoid, .relu, .identity, .leakyRelu: return true
        case .pow, .softmax: return false
        }
    }
    public var description: String {
        switch self {
        case .tanh: return "tanh"
        case .sigmoid: return "sigmoid"
        case .relu: return "relu"
        case .identity: return "identity"
        case .softmax: return "softmax"
        case .leakyRelu(let alpha): return "leakyrelu(\(formatNumber(alpha)))"
        case .pow(let k): return "pow(\(k))"
        }
    }
    /// FLOPs per element (rough: transcendental functions count as several).
    var flopsPerElement: Int {
        switch self {
        case .identity: return 0
        case .relu, .leakyRelu: return 1
        case .pow(let k): return max(1, k - 1)
        case .tanh, .sigmoid: return 4
        case .softmax: return 5
        }
    }
}

public enum PoolKind: String, Hashable, Sendable { case max, average }

/// Hyperparameters of an optimizer update op.
public enum OptimizerUpdate: Hashable, Sendable, CustomStringConvertible {
    case sgd(lr: Double, momentum: Double, nesterov: Bool, decay: Double)
    case adam(lr: Double, beta1: Double, beta2: Double, eps: Double, decay: Double)

    /// Optimizer state tensors kept per parameter, by name suffix.
    public var stateNames: [String] {
        switch self {
        case .sgd(_, let momentum, _, _): return momentum > 0 ? ["velocity"] : []
        case .adam: return ["m", "v"]
        }
    }
    public var description: String {
        switch self {
        case .sgd(let lr, let momentum, let nesterov, let decay):
            var s = "sgd lr=\(formatNumber(lr))"
            if momentum > 0 { s += " momentum=\(formatNumber(momentum))" }
            if nesterov { s += " nesterov" }
            if decay > 0 { s += " decay=\(formatNumber(decay))" }
            return s
        case .adam(let lr, let b1, let b2, let eps, let decay):
            var s = "adam lr=\(formatNumber(lr)) beta1=\(formatNumber(b1)) beta2=\(formatNumber(b2)) eps=\(formatNumber(eps))"
            if decay > 0 { s += " decay=\(formatNumber(decay))" }
            return s
        }
    }
}

/// Convolution geometry shared by the conv ops.
public struct ConvGeometry: Hashable, Sendable {
    public var stride: Int
    public var padding: Int
    public init(stride: Int, padding: Int) { self.stride = stride; self.padding = padding }
}

/// The op table: every op of the IR, with its shape rule, gradient rule, FLOP count and printed
/// name in one place. The interpreter's kernel selection (Runtime) is the only other switch.
public enum Op: Hashable, Sendable {
    // Sources: no operands.
    case input
    case target
    case parameter(name: String)
    case state(name: String)

    // Primitives.
    /// C = op(A)·op(B)
    case matmul(transposeA: Bool, transposeB: Bool)
    /// x + b, b broadcast along axis 1 (features of an fc output, channels of a conv output).
    case biasAdd
    case activation(ActivationFunction)
    /// dx from (y, dy) (or (x, dy) for pow): the activation's vector-Jacobian product.
    case activationGrad(ActivationFunction)
    case add, subtract, multiply
    /// x · factor
    case scale(Double)
    /// A scalar constant (the seed of the backward pass, dL/dL = 1).
    case constant(Double)
    /// Σ over all but axis 1: the gradient of a bias.
    case biasGrad
    case sumAll, meanAll
    /// Broadcasts a scalar to the shape of the second operand (divided by its element count when mean).
    case broadcast(mean: Bool)
    case conv2d(ConvGeometry)
    /// dx from (dy, w); result shape is the third operand's (x).
    case conv2dInputGrad(ConvGeometry)
    /// dw from (x, dy); result shape is the third operand's (w).
    case conv2dWeightGrad(ConvGeometry)
    /// Window and stride are [height, width].
    case pool(PoolKind, window: [Int], stride: [Int])
    /// dx from (x, y, dy).
    case poolGrad(PoolKind, window: [Int], stride: [Int])
    /// Same data, new shape (flatten, and its gradient). The result aliases the operand.
    case reshape(Shape)
    /// A fresh inverted-dropout mask (0 or 1/(1-p)) shaped like the operand; train mode only.
    case dropoutMask(probability: Double)
    /// Mean cross-entropy of probabilities against integer labels.
    case crossEntropy
    /// d(crossEntropy)/dp from (p, labels, dL).
    case crossEntropyGrad
    /// Mean binary cross-entropy of probabilities against 0/1 targets.
    case binaryCrossEntropy
    /// from (p, y, dL)
    case binaryCrossEntropyGrad
    /// Mean softmax cross-entropy of logits against integer labels (numerically stable).
    case softmaxCrossEntropy
    /// from (logits, labels, dL): (softmax(logits) − onehot) · dL / N
    case softmaxCrossEntropyGrad

    /// Updates a parameter in place from its gradient (and its state operands). No results.
    case update(OptimizerUpdate)

    // Fused ops (made by passes).
    /// act(x·W + b): operands x, W[, b]
    case dense(ActivationFunction, bias: Bool)
    /// act(conv(x, W) + b): operands x, W[, b]
    case convFused(ConvGeometry, ActivationFunction, bias: Bool)
    /// One pass over dy: dz = dy ⊙ act'(y) and (when bias) db = Σ dz. Operands y, dy; results dz[, db].
    case activationGradBias(ActivationFunction, bias: Bool)
    /// The whole backward of act(conv(x, W) + b) in one kernel call: operands x, W, y, dy;
    /// results dW, then db (when bias), then dx (when inputGradient).
    case convBackward(ConvGeometry, ActivationFunction, bias: Bool, inputGradient: Bool)
    /// A parameter's gradient computed by a matmul, with the parameter's SGD step taken in the GEMM's
    /// epilogue, tile by tile: operands a, b (as for matmul), the parameter, then its state (velocity);
    /// result the gradient.
    case matmulUpdate(transposeA: Bool, transposeB: Bool, OptimizerUpdate)

    /// The printed name.
    public var name: String {
        switch self {
        case .input: return "input"
        case .target: return "target"
        case .parameter: return "param"
        case .state: return "state"
        case .matmul(let ta, let tb): return "matmul" + (ta ? ".ta" : "") + (tb ? ".tb" : "")
        case .biasAdd: return "bias_add"
        case .activation(let f): return "\(f)"
        case .activationGrad(let f): return "\(f)_grad"
        case .add: return "add"
        case .subtract: return "sub"
        case .multiply: return "mul"
        case .scale(let factor): return "scale \(formatNumber(factor))"
        case .constant(let value): return "constant \(formatNumber(value))"
        case .biasGrad: return "bias_grad"
        case .sumAll: return "sum"
        case .meanAll: return "mean"
        case .broadcast(let mean): return mean ? "broadcast_mean" : "broadcast"
        case .conv2d(let g): return "conv2d stride=\(g.stride) pad=\(g.padding)"
        case .conv2dInputGrad(let g): return "conv2d_input_grad stride=\(g.stride) pad=\(g.padding)"
        case .conv2dWeightGrad(let g): return "conv2d_weight_grad stride=\(g.stride) pad=\(g.padding)"
        case .pool(let kind, let window, let stride): return "\(kind.rawValue)pool \(window[0])x\(window[1]) stride=\(strideText(stride))"
        case .poolGrad(let kind, let window, let stride): return "\(kind.rawValue)pool_grad \(window[0])x\(window[1]) stride=\(strideText(stride))"
        case .reshape: return "reshape"
        case .dropoutMask(let p): return "dropout_mask p=\(formatNumber(p))"
        case .crossEntropy: return "cross_entropy"
        case .crossEntropyGrad: return "cross_entropy_grad"
        case .binaryCrossEntropy: return "bce"
        case .binaryCrossEntropyGrad: return "bce_grad"
        case .softmaxCrossEntropy: return "softmax_cross_entropy"
        case .softmaxCrossEntropyGrad: return "softmax_cross_entropy_grad"
        case .update(let u): return "update \(u)"
        case .matmulUpdate(let ta, let tb, let u): return Op.matmul(transposeA: ta, transposeB: tb).name + "+update \(u)"
        case .dense(let f, let bias): return "dense" + (bias ? "" : ".nobias") + (f == .identity ? "" : " \(f)")
        case .convFused(let g, let f, let bias):
            return "conv2d" + (bias ? ".bias" : "") + (f == .identity ? "" : ".\(f)") + " stride=\(g.stride) pad=\(g.padding)"
        case .activationGradBias(let f, let bias): return "\(f)_grad" + (bias ? "+bias_grad" : "")
        case .convBackward(let g, let f, _, _): return "conv2d_backward" + (f == .identity ? "" : ".\(f)") + " stride=\(g.stride) pad=\(g.padding)"
        }
    }

    /// Element-wise ops whose result may take an operand's buffer (in-place).
    public var elementwise: Bool {
        switch self {
        case .biasAdd, .add, .subtract, .multiply, .scale: return true
        case .activation(let f): return f != .softmax
        case .activationGrad(let f): return f != .softmax
        case .activationGradBias: return true
        default: return false
        }
    }

    /// Ops with an effect beyond their results (never removed as dead code).
    public var hasEffect: Bool {
        switch self {
        case .update, .matmulUpdate: return true
        default: return false
        }
    }

    /// Whether a loss op (the seed of the backward pass).
    public var isLoss: Bool {
        switch self {
        case .meanAll, .sumAll, .crossEntropy, .binaryCrossEntropy, .softmaxCrossEntropy: return true
        default: return false
        }
    }
}

/// `2` for a square stride, `2x3` otherwise.
func strideText(_ stride: [Int]) -> String {
    stride.count == 2 && stride[0] == stride[1] ? "\(stride[0])" : stride.map(String.init).joined(separator: "x")
}

/// A shape error inside the IR: a bug in a pass or in lowering, not in the user's model (lowering
/// reports user errors with their source location before any op is built).
public struct IRError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "internal error: \(message)" }
}

extension Op {
    /// The shape rule: result shapes from operand shapes.
    public func resultShapes(_ operands: [Shape]) throws(IRError) -> [Shape] {
        func need(_ count: Int) throws(IRError) {
            guard operands.count == count else { throw IRError("\(name) takes \(count) operands, got \(operands.count)") }
        }
        func same(_ a: Shape, _ b: Shape) throws(IRError) {
            guard a == b else { throw IRError("\(name): shapes \(a) and \(b) differ") }
        }
        switch self {
        case .input, .target, .parameter, .state:
            throw IRError("\(name) has no shape rule; its shape is declared")
        case .matmul(let ta, let tb):
            try need(2)
            let a = operands[0], b = operands[1]
            guard a.dims.count + (a.batched ? 1 : 0) == 2, b.dims.count + (b.batched ? 1 : 0) == 2 else {
                throw IRError("matmul needs matrices, got \(a) and \(b)")
            }
            let aFull = a.batched ? [-1] + a.dims : a.dims, bFull = b.batched ? [-1] + b.dims : b.dims
            let (m, ka) = ta ? (aFull[1], aFull[0]) : (aFull[0], aFull[1])
            let (kb, n) = tb ? (bFull[1], bFull[0]) : (bFull[0], bFull[1])
            guard ka == kb else { throw IRError("matmul inner dimensions differ: \(a) and \(b)") }
            if ka == -1 {
                // Contraction over the batch: the result is fixed-size.
                return [Shape(batched: false, [m, n])]
            }
            return [m == -1 ? Shape(batched: true, [n]) : Shape(batched: false, [m, n].filter { $0 != -1 })]
        case .biasAdd:
            try need(2)
            guard let channels = operands[0].dims.first, operands[1] == .fixed(channels) else {
                throw IRError("bias_add: bias \(operands[1]) does not match \(operands[0])")
            }
            return [operands[0]]
        case .activation(let f):
            try need(1)
            if f == .softmax, operands[0].dims.count != 1 { throw IRError("softmax needs [N,C], got \(operands[0])") }
            return [operands[0]]
        case .activationGrad:
            try need(2); try same(operands[0], operands[1]); return [operands[0]]
        case .add, .subtract, .multiply:
            try need(2); try same(operands[0], operands[1]); return [operands[0]]
        case .scale:
            try need(1); return [operands[0]]
        case .constant:
            try need(0); return [.scalar]
        case .biasGrad:
            try need(1)
            guard operands[0].batched, let channels = operands[0].dims.first else { throw IRError("bias_grad needs [N,C,…], got \(operands[0])") }
            return [.fixed(channels)]
        case .sumAll, .meanAll:
            try need(1); return [.scalar]
        case .broadcast:
            try need(2)
            guard operands[0] == .scalar else { throw IRError("broadcast needs a scalar, got \(operands[0])") }
            return [operands[1]]
        case .conv2d(let g):
            try need(2)
            let x = operands[0], w = operands[1]
            guard x.batched, x.dims.count == 3, !w.batched, w.dims.count == 4, w.dims[1] == x.dims[0] else {
                throw IRError("conv2d: input \(x) and weight \(w) do not fit")
            }
            let h = (x.dims[1] + 2 * g.padding - w.dims[2]) / g.stride + 1
            let wd = (x.dims[2] + 2 * g.padding - w.dims[3]) / g.stride + 1
            guard h >= 1, wd >= 1 else { throw IRError("conv2d: kernel larger than input") }
            return [.init(batched: true, [w.dims[0], h, wd])]
        case .conv2dInputGrad, .conv2dWeightGrad:
            try need(3); return [operands[2]]
        case .pool(_, let window, let stride):
            try need(1)
            let x = operands[0]
            guard x.batched, x.dims.count == 3, window.count == 2, stride.count == 2, stride.allSatisfy({ $0 >= 1 }),
                  x.dims[1] >= window[0], x.dims[2] >= window[1] else {
                throw IRError("pool: window \(window) does not fit \(x)")
            }
            return [.init(batched: true, [x.dims[0], (x.dims[1] - window[0]) / stride[0] + 1, (x.dims[2] - window[1]) / stride[1] + 1])]
        case .poolGrad:
            try need(3); return [operands[0]]
        case .reshape(let shape):
            try need(1)
            guard shape.batched == operands[0].batched, shape.rowElements == operands[0].rowElements else {
                throw IRError("reshape from \(operands[0]) to \(shape) changes the element count")
            }
            return [shape]
        case .dropoutMask:
            try need(1); return [operands[0]]
        case .crossEntropy, .softmaxCrossEntropy:
            try need(2)
            guard operands[0].batched, operands[0].dims.count == 1, operands[1] == .batch() else {
                throw IRError("\(name) needs logits [N,C] and labels [N], got \(operands[0]) and \(operands[1])")
            }
            return [.scalar]
        case .binaryCrossEntropy:
            try need(2); try same(operands[0], operands[1]); return [.scalar]
        case .crossEntropyGrad, .softmaxCrossEntropyGrad, .binaryCrossEntropyGrad:
            try need(3); return [operands[0]]
        case .update(let u):
            try need(2 + u.stateNames.count)
            for operand in operands.dropFirst() { try same(operands[0], operand) }
            return []
        case .matmulUpdate(let ta, let tb, let u):
            try need(3 + u.stateNames.count)
            let shape = try Op.matmul(transposeA: ta, transposeB: tb).resultShapes(Array(operands.prefix(2)))
            for operand in operands.dropFirst(2) { try same(shape[0], operand) }
            return shape
        case .dense(let f, let bias):
            var shape = try Op.matmul(transposeA: false, transposeB: false).resultShapes(Array(operands.prefix(2)))
            if bias { shape = try Op.biasAdd.resultShapes([shape[0], operands[2]]) }
            try need(bias ? 3 : 2)
            return try Op.activation(f).resultShapes(shape)
        case .convFused(let g, _, let bias):
            try need(bias ? 3 : 2)
            let shape = try Op.conv2d(g).resultShapes(Array(operands.prefix(2)))
            if bias { _ = try Op.biasAdd.resultShapes([shape[0], operands[2]]) }
            return shape
        case .convBackward(let g, _, let bias, let inputGradient):
            try need(4)
            let y = try Op.conv2d(g).resultShapes([operands[0], operands[1]])[0]
            try same(y, operands[2]); try same(y, operands[3])
            return [operands[1]] + (bias ? [.fixed(operands[1].dims[0])] : []) + (inputGradient ? [operands[0]] : [])
        case .activationGradBias(_, let bias):
            try need(2); try same(operands[0], operands[1])
            return bias ? [operands[0], try Op.biasGrad.resultShapes([operands[0]])[0]] : [operands[0]]
        }
    }

    /// FLOPs for one execution with the given concrete operand and result dimensions
    /// (multiply-add counts as 2).
    public func flops(operands: [[Int]], results: [[Int]]) -> Int {
        func count(_ dims: [Int]) -> Int { dims.reduce(1, *) }
        let out = results.first.map(count) ?? 0
        switch self {
        case .input, .target, .parameter, .state, .reshape, .broadcast, .constant: return 0
        case .matmul(let ta, _):
            let k = ta ? operands[0][0] : operands[0].last ?? 0
            return 2 * out * k
        case .dense(let f, let bias):
            let k = operands[0].last ?? 0
            return out * (2 * k + (bias ? 1 : 0) + f.flopsPerElement)
        case .conv2d, .convFused:
            let w = operands[1]
            return 2 * out * w[1] * w[2] * w[3]
        case .convBackward(_, _, _, let inputGradient):
            let w = operands[1]
            return 2 * count(operands[3]) * w[1] * w[2] * w[3] * (inputGradient ? 2 : 1)
        case .conv2dInputGrad, .conv2dWeightGrad:
            // the same multiply-adds as the forward convolution
            let w = self.isWeightGrad ? results[0] : operands[1]
            let y = self.isWeightGrad ? operands[1] : operands[0]
            return 2 * count(y) * w[1] * w[2] * w[3]
        case .pool(_, let window, _): return out * window[0] * window[1]
        case .poolGrad(_, let window, _): return count(operands[2]) * window[0] * window[1]
        case .activation(let f), .activationGrad(let f): return out * max(1, f.flopsPerElement)
        case .activationGradBias(let f, let bias): return out * (max(1, f.flopsPerElement) + (bias ? 1 : 0))
        case .update(let u):
            let n = count(operands[0])
            switch u { case .sgd: return 4 * n; case .adam: return 12 * n }
        case .matmulUpdate(let ta, let tb, let u):
            return Op.matmul(transposeA: ta, transposeB: tb).flops(operands: operands, results: results)
                + Op.update(u).flops(operands: [results[0]], results: [])
        default:
            return operands.map(count).max() ?? 0
        }
    }

    var isWeightGrad: Bool {
        if case .conv2dWeightGrad = self { return true }
        return false
    }
}

import Parser

public enum PoolKind: String, Hashable, Sendable { case max, average }

/// What fills the border a `pad` adds: a constant, the mirror image without the edge (PyTorch's
/// reflection, ONNX's `reflect`), or the edge repeated (replication, ONNX's `edge`).
public enum PadMode: Hashable, Sendable, CustomStringConvertible {
    case constant(Double)
    case reflect
    case replicate

    public var description: String {
        switch self {
        case .constant(let value): return "constant \(formatNumber(value))"
        case .reflect: return "reflect"
        case .replicate: return "replicate"
        }
    }
}

/// The border a `pad` adds to the height and width of [N,C,H,W].
public struct PadSpec: Hashable, Sendable, CustomStringConvertible {
    public var top: Int, bottom: Int, left: Int, right: Int
    public var mode: PadMode
    public init(top: Int, bottom: Int, left: Int, right: Int, mode: PadMode) {
        (self.top, self.bottom, self.left, self.right, self.mode) = (top, bottom, left, right, mode)
    }
    public var description: String { "top=\(top) bottom=\(bottom) left=\(left) right=\(right) \(mode)" }
}

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

/// Convolution geometry shared by the conv ops: per-axis stride, padding and dilation, and groups.
public struct ConvGeometry: Hashable, Sendable, CustomStringConvertible {
    public var strideH: Int, strideW: Int
    public var padH: Int, padW: Int
    public var dilationH: Int, dilationW: Int
    public var groups: Int
    public init(strideH: Int, strideW: Int, padH: Int, padW: Int, dilationH: Int = 1, dilationW: Int = 1, groups: Int = 1) {
        (self.strideH, self.strideW, self.padH, self.padW) = (strideH, strideW, padH, padW)
        (self.dilationH, self.dilationW, self.groups) = (dilationH, dilationW, groups)
    }
    /// Square stride and padding, no dilation, one group.
    public init(stride: Int, padding: Int) { self.init(strideH: stride, strideW: stride, padH: padding, padW: padding) }

    /// `stride=1 pad=1`, with `2x1` for unequal axes, and `groups=G` `dilation=D` when not 1.
    public var description: String {
        func pair(_ a: Int, _ b: Int) -> String { a == b ? "\(a)" : "\(a)x\(b)" }
        var text = "stride=\(pair(strideH, strideW)) pad=\(pair(padH, padW))"
        if dilationH != 1 || dilationW != 1 { text += " dilation=\(pair(dilationH, dilationW))" }
        if groups != 1 { text += " groups=\(groups)" }
        return text
    }
}

/// The output length of a convolution or pooling window along one axis (floor, as PyTorch), or nil
/// when the window does not fit the padded input. Lowering's diagnostics and the shape rules use it.
public func windowOutputSize(input: Int, window: Int, stride: Int, padding: Int, dilation: Int = 1) -> Int? {
    let padded = input + 2 * padding, span = dilation * (window - 1) + 1
    guard span <= padded, stride >= 1, window >= 1, dilation >= 1 else { return nil }
    return (padded - span) / stride + 1
}

/// What a training-mode batch norm's kernel does after normalizing, folded in by fuse-batchnorm:
/// z = bn(x) (+ r, a residual connection's other operand), h = f(z), and the output h or its 2×2,
/// stride-2 max pool. Its backward recomputes h from x: no full-size z or h is kept for it.
public struct BatchNormEpilogue: Hashable, Sendable {
    public var residual: Bool
    public var activation: ActivationFunction
    public var pooled: Bool
    public init(residual: Bool = false, activation: ActivationFunction = .identity, pooled: Bool = false) {
        (self.residual, self.activation, self.pooled) = (residual, activation, pooled)
    }
    public static let none = BatchNormEpilogue()
    /// `+add`, `.relu`, `+maxpool 2x2` after the op's name, as the fused conv names its parts.
    var suffix: String {
        (residual ? "+add" : "") + (activation == .identity ? "" : ".\(activation)") + (pooled ? "+maxpool 2x2" : "")
    }
}

/// The op table: every op of the IR. Each property of an op is one exhaustive switch (no `default:`),
/// so adding an op makes the compiler list every place it must be handled: its printed name and
/// effects here, its shape rule and FLOPs below, its gradient rule in Autodiff.swift, and its kernel
/// binding in the runtime's interpreter (Runtime/Interpreter.swift, `makeExecutable`).
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
    /// dx from (y, dy) (or (x, dy) when the derivative needs the input): the activation's
    /// vector-Jacobian product.
    case activationGrad(ActivationFunction)
    /// Row-wise softmax over the last axis of [N,C].
    case softmax
    /// dx from (y, dy).
    case softmaxGrad
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
    indirect case conv2d(ConvGeometry)
    /// dx from (dy, w); result shape is the third operand's (x).
    indirect case conv2dInputGrad(ConvGeometry)
    /// dw from (x, dy); result shape is the third operand's (w).
    indirect case conv2dWeightGrad(ConvGeometry)
    /// Window, stride and padding are [height, width]. Max pooling pads with −∞, average pooling
    /// counts the padding (PyTorch's count_include_pad=True).
    indirect case pool(PoolKind, window: [Int], stride: [Int], padding: [Int])
    /// dx from (x, y, dy).
    indirect case poolGrad(PoolKind, window: [Int], stride: [Int], padding: [Int])
    /// [a, b] along axis 1 (channels of [N,C,H,W], features of [N,F]).
    case concat
    /// x[:, start..<start+count, …] along axis 1 (the gradient of concat).
    case sliceChannels(start: Int, count: Int)
    /// Training-mode batch normalization over axis 1, PyTorch's semantics: operands x, γ, β, running
    /// mean, running variance; results y, the batch mean and 1/√(biased variance + eps). Updates the
    /// running statistics in place (momentum; the running variance takes the unbiased variance).
    /// With an epilogue (fuse-batchnorm), y is what the epilogue makes, and a residual is a sixth operand.
    case batchNorm(eps: Double, momentum: Double, BatchNormEpilogue = .none)
    /// Its backward: operands x, γ, β, mean, invstd, dy (the gradient of y)[, the residual]; results
    /// dx, dγ, dβ[, the residual's gradient, which is also the gradient of bn(x) + r].
    case batchNormGrad(BatchNormEpilogue = .none)
    /// Evaluation-mode batch normalization: operands x, γ, β, running mean, running variance.
    case batchNormInference(eps: Double)
    /// An evaluation-mode batch norm folded into the layer before it: operands W[, b], γ, β, mean,
    /// variance; results W·s and (b − mean)·s + β, s = γ/√(var + eps), scaling W along its output axis
    /// (axis 0 of a conv weight [O,C,KH,KW], axis 1 of an fc weight [I,O]).
    case batchNormFold(eps: Double, convolution: Bool, bias: Bool)
    /// max(0, x) + a·min(0, x) with a learned slope a: operands x [N,C,…] and the slopes [C] (one
    /// per channel or feature) or [1] (shared), PyTorch's PReLU.
    case prelu
    /// Its backward: operands x, slopes, dy; results dx and d(slopes).
    case preluGrad
    /// A border around the height and width of [N,C,H,W].
    indirect case pad(PadSpec)
    /// Its backward: operands dy, x (for the shape); result dx (reflected and replicated borders add
    /// their gradient to the values they copy).
    indirect case padGrad(PadSpec)
    /// Row-wise log-softmax over the last axis of [N,C].
    case logSoftmax
    /// dx from (y, dy): dy − exp(y)·Σdy.
    case logSoftmaxGrad
    /// Mean negative log-likelihood of log-probabilities against integer labels (PyTorch's NLLLoss).
    case nllLoss
    /// from (logp, labels, dL)
    case nllLossGrad
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
    /// Σ (p − y)² over every element of (p, y), divided by the element count when `mean`: the sub,
    /// pow 2 and mean (or sum) of `loss mse` (`sse`) in one pass.
    case squaredError(mean: Bool)
    /// from (p, y, dL): squaredError and its gradient for p, 2(p − y) · dL (/ the element count when
    /// `mean`), in one op (a training step's loss, its broadcast and pow 2 gradient); results loss, dp.
    case squaredErrorWithGrad(mean: Bool)

    /// Updates a parameter in place from its gradient (and its state operands). No results.
    indirect case update(OptimizerUpdate)

    // Fused ops (made by passes).
    /// act(x·W + b): operands x, W[, b]
    case dense(ActivationFunction, bias: Bool)
    /// act(conv(x, W) + b): operands x, W[, b]. `pooled`: also the 2×2, stride-2 max pool of that,
    /// a second result, pooled in the kernel while each plane is in cache.
    indirect case convFused(ConvGeometry, ActivationFunction, bias: Bool, pooled: Bool = false)
    /// One pass over dy: dz = dy ⊙ act'(y) and (when bias) db = Σ dz. Operands y, dy; results dz[, db].
    case activationGradBias(ActivationFunction, bias: Bool)
    /// The whole backward of act(conv(x, W) + b) in one kernel call: operands x, W, y, dy;
    /// results dW, then db (when bias), then dx (when inputGradient). `pooled`: y went through a 2×2,
    /// stride-2 max pool and dy is the gradient of the pool's output (the pool's gradient fused in).
    indirect case convBackward(ConvGeometry, ActivationFunction, bias: Bool, inputGradient: Bool, pooled: Bool)
    /// A parameter's gradient computed by a matmul, with the parameter's SGD step taken in the GEMM's
    /// epilogue, tile by tile: operands a, b (as for matmul), the parameter, then its state (velocity);
    /// result the gradient.
    indirect case matmulUpdate(transposeA: Bool, transposeB: Bool, OptimizerUpdate)
    /// activationGradBias (with bias) that then takes the bias's SGD step from the db it computed:
    /// operands y, dy, the bias, then its state (velocity); results dz, db.
    indirect case activationGradBiasUpdate(ActivationFunction, OptimizerUpdate)

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
        case .softmax: return "softmax"
        case .softmaxGrad: return "softmax_grad"
        case .add: return "add"
        case .subtract: return "sub"
        case .multiply: return "mul"
        case .scale(let factor): return "scale \(formatNumber(factor))"
        case .constant(let value): return "constant \(formatNumber(value))"
        case .biasGrad: return "bias_grad"
        case .sumAll: return "sum"
        case .meanAll: return "mean"
        case .broadcast(let mean): return mean ? "broadcast_mean" : "broadcast"
        case .conv2d(let g): return "conv2d \(g)"
        case .conv2dInputGrad(let g): return "conv2d_input_grad \(g)"
        case .conv2dWeightGrad(let g): return "conv2d_weight_grad \(g)"
        case .pool(let kind, let window, let stride, let padding):
            return "\(kind.rawValue)pool \(window[0])x\(window[1]) stride=\(strideText(stride))" + (padding.allSatisfy { $0 == 0 } ? "" : " pad=\(strideText(padding))")
        case .poolGrad(let kind, let window, let stride, let padding):
            return "\(kind.rawValue)pool_grad \(window[0])x\(window[1]) stride=\(strideText(stride))" + (padding.allSatisfy { $0 == 0 } ? "" : " pad=\(strideText(padding))")
        case .concat: return "concat"
        case .sliceChannels(let start, let count): return "slice \(start)..<\(start + count)"
        case .batchNorm(let eps, let momentum, let epilogue):
            return "batchnorm\(epilogue.suffix) eps=\(formatNumber(eps)) momentum=\(formatNumber(momentum))"
        case .batchNormGrad(let epilogue):
            return (epilogue.pooled ? "maxpool_grad+" : "") + (epilogue.activation == .identity ? "" : "\(epilogue.activation)_grad+")
                + "batchnorm_grad" + (epilogue.residual ? "+add" : "")
        case .batchNormInference(let eps): return "batchnorm.eval eps=\(formatNumber(eps))"
        case .batchNormFold(let eps, _, _): return "batchnorm_fold eps=\(formatNumber(eps))"
        case .logSoftmax: return "logsoftmax"
        case .logSoftmaxGrad: return "logsoftmax_grad"
        case .prelu: return "prelu"
        case .preluGrad: return "prelu_grad"
        case .pad(let spec): return "pad \(spec)"
        case .padGrad(let spec): return "pad_grad \(spec)"
        case .nllLoss: return "nll"
        case .nllLossGrad: return "nll_grad"
        case .reshape: return "reshape"
        case .dropoutMask(let p): return "dropout_mask p=\(formatNumber(p))"
        case .crossEntropy: return "cross_entropy"
        case .crossEntropyGrad: return "cross_entropy_grad"
        case .binaryCrossEntropy: return "bce"
        case .binaryCrossEntropyGrad: return "bce_grad"
        case .softmaxCrossEntropy: return "softmax_cross_entropy"
        case .softmaxCrossEntropyGrad: return "softmax_cross_entropy_grad"
        case .squaredError(let mean): return mean ? "mse" : "sse"
        case .squaredErrorWithGrad(let mean): return mean ? "mse+grad" : "sse+grad"
        case .update(let u): return "update \(u)"
        case .matmulUpdate(let ta, let tb, let u): return Op.matmul(transposeA: ta, transposeB: tb).name + "+update \(u)"
        case .dense(let f, let bias): return "dense" + (bias ? "" : ".nobias") + (f == .identity ? "" : " \(f)")
        case .convFused(let g, let f, let bias, let pooled):
            return "conv2d" + (bias ? ".bias" : "") + (f == .identity ? "" : ".\(f)") + (pooled ? "+maxpool 2x2" : "") + " \(g)"
        case .activationGradBias(let f, let bias): return "\(f)_grad" + (bias ? "+bias_grad" : "")
        case .activationGradBiasUpdate(let f, let u): return "\(f)_grad+bias_grad+update \(u)"
        case .convBackward(let g, let f, _, _, let pooled):
            return (pooled ? "maxpool_grad+" : "") + "conv2d_backward" + (f == .identity ? "" : ".\(f)") + " \(g)"
        }
    }

    /// Element-wise ops whose result may take an operand's buffer (in-place).
    public var elementwise: Bool {
        switch self {
        case .biasAdd, .add, .subtract, .multiply, .scale, .activation, .activationGrad, .activationGradBias, .activationGradBiasUpdate: return true
        case .input, .target, .parameter, .state, .matmul, .softmax, .softmaxGrad, .constant, .biasGrad, .sumAll, .meanAll,
             .broadcast, .conv2d, .conv2dInputGrad, .conv2dWeightGrad, .pool, .poolGrad, .reshape, .dropoutMask,
             .crossEntropy, .crossEntropyGrad, .binaryCrossEntropy, .binaryCrossEntropyGrad, .softmaxCrossEntropy,
             .softmaxCrossEntropyGrad, .squaredError, .squaredErrorWithGrad, .update, .dense, .convFused, .convBackward, .matmulUpdate, .concat, .sliceChannels,
             .batchNorm, .batchNormGrad, .batchNormInference, .batchNormFold, .logSoftmax, .logSoftmaxGrad, .nllLoss, .nllLossGrad, .prelu, .preluGrad, .pad, .padGrad:
            return false
        }
    }

    /// Ops with an effect beyond their results (never removed as dead code).
    public var hasEffect: Bool {
        switch self {
        // Batch norm in training mode also updates its running statistics.
        case .update, .matmulUpdate, .activationGradBiasUpdate, .batchNorm: return true
        case .concat, .sliceChannels, .batchNormGrad, .batchNormInference, .batchNormFold, .logSoftmax, .logSoftmaxGrad, .nllLoss, .nllLossGrad, .prelu, .preluGrad, .pad, .padGrad,
             .input, .target, .parameter, .state, .matmul, .biasAdd, .activation, .activationGrad, .softmax, .softmaxGrad,
             .add, .subtract, .multiply, .scale, .constant, .biasGrad, .sumAll, .meanAll, .broadcast, .conv2d,
             .conv2dInputGrad, .conv2dWeightGrad, .pool, .poolGrad, .reshape, .dropoutMask, .crossEntropy,
             .crossEntropyGrad, .binaryCrossEntropy, .binaryCrossEntropyGrad, .softmaxCrossEntropy,
             .softmaxCrossEntropyGrad, .squaredError, .squaredErrorWithGrad, .dense, .convFused, .activationGradBias, .convBackward:
            return false
        }
    }

    /// A constant: the plan gives it a buffer of its own, written once, not in every step.
    public var isConstant: Bool { if case .constant = self { return true }; return false }

    /// Source ops: no operands, their values come from outside the step (data, parameters, state).
    public var isSource: Bool {
        switch self {
        case .input, .target, .parameter, .state: return true
        case .matmul, .biasAdd, .activation, .activationGrad, .softmax, .softmaxGrad, .add, .subtract, .multiply, .scale,
             .constant, .biasGrad, .sumAll, .meanAll, .broadcast, .conv2d, .conv2dInputGrad, .conv2dWeightGrad, .pool,
             .poolGrad, .reshape, .dropoutMask, .crossEntropy, .crossEntropyGrad, .binaryCrossEntropy,
             .binaryCrossEntropyGrad, .softmaxCrossEntropy, .softmaxCrossEntropyGrad, .squaredError, .squaredErrorWithGrad, .update, .dense, .convFused,
             .activationGradBias, .activationGradBiasUpdate, .convBackward, .matmulUpdate, .concat, .sliceChannels, .batchNorm, .batchNormGrad,
             .batchNormInference, .batchNormFold, .logSoftmax, .logSoftmaxGrad, .nllLoss, .nllLossGrad, .prelu, .preluGrad, .pad, .padGrad:
            return false
        }
    }
}

/// The channel count of a batch norm's operands: x [N,C,…] and per-channel statistics [C].
func batchNormChannels(_ operands: [Shape]) throws(IRError) -> Int {
    guard operands[0].batched, let channels = operands[0].dims.first else { throw IRError("batchnorm needs [N,C,…], got \(operands[0])") }
    for statistic in operands[1..<5] where statistic != .fixed(channels) {
        throw IRError("batchnorm: \(statistic) does not match \(channels) channels")
    }
    return channels
}

/// `2` for a square stride, `2x3` otherwise.
func strideText(_ stride: [Int]) -> String {
    stride.count == 2 && stride[0] == stride[1] ? "\(stride[0])" : stride.map(String.init).joined(separator: "x")
}

/// A shape error inside the IR: a bug in a pass or in lowering, not in the user's model (lowering
/// reports user errors with their source location before any op is built).
public struct IRError: Error, CustomStringConvertible, Sendable {
    public var message: String
    /// The statement whose node failed, and its file (set by `Graph.add`).
    public var location: SourceRange?
    public var source: SourceFile?
    public init(_ message: String, at location: SourceRange? = nil, in source: SourceFile? = nil) {
        self.message = message; self.location = location; self.source = source
    }
    public var description: String { "internal error: \(message)" }
    /// `file:line:col: error[E031]: internal error: …` with the statement, when the place is known.
    public var rendered: String {
        guard let location, let source else { return "nnc: error[\(DiagnosticCode.internalError.rawValue)]: \(description)\n" }
        return Diagnostic(.internalError, description, at: location).render(in: source)
    }
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
        case .activation:
            try need(1); return [operands[0]]
        case .softmax, .logSoftmax:
            try need(1)
            guard operands[0].batched, operands[0].dims.count == 1 else { throw IRError("\(name) needs [N,C], got \(operands[0])") }
            return [operands[0]]
        case .concat:
            try need(2)
            let a = operands[0], b = operands[1]
            guard a.batched, b.batched, a.dims.count >= 1, a.dims.count == b.dims.count, Array(a.dims.dropFirst()) == Array(b.dims.dropFirst()) else {
                throw IRError("concat: \(a) and \(b) do not fit along axis 1")
            }
            return [Shape(batched: true, [a.dims[0] + b.dims[0]] + a.dims.dropFirst())]
        case .sliceChannels(let start, let count):
            try need(1)
            let x = operands[0]
            guard x.batched, let channels = x.dims.first, start >= 0, count >= 1, start + count <= channels else {
                throw IRError("slice \(start)..<\(start + count) does not fit \(x)")
            }
            return [Shape(batched: true, [count] + x.dims.dropFirst())]
        case .batchNorm(_, _, let epilogue):
            try need(epilogue.residual ? 6 : 5)
            let channels = try batchNormChannels(operands)
            if epilogue.residual { try same(operands[0], operands[5]) }
            let y = epilogue.pooled ? try Op.pool(.max, window: [2, 2], stride: [2, 2], padding: [0, 0]).resultShapes([operands[0]])[0] : operands[0]
            return [y, .fixed(channels), .fixed(channels)]
        case .batchNormInference:
            try need(5)
            _ = try batchNormChannels(operands)
            return [operands[0]]
        case .batchNormGrad(let epilogue):  // (x, γ, β, mean, invstd, dy[, r])
            try need(epilogue.residual ? 7 : 6)
            // The forward's shapes, mean and invstd where the running statistics were.
            let forward = try Op.batchNorm(eps: 0, momentum: 0, epilogue).resultShapes(Array(operands[0...4]) + operands.dropFirst(6))
            try same(forward[0], operands[5])
            return [operands[0], forward[1], forward[2]] + (epilogue.residual ? [operands[0]] : [])
        case .prelu:
            try need(2)
            let x = operands[0], slopes = operands[1]
            guard x.batched, let channels = x.dims.first, slopes == .fixed(1) || slopes == .fixed(channels) else {
                throw IRError("prelu: slopes \(slopes) do not fit \(x)")
            }
            return [x]
        case .preluGrad:  // (x, slopes, dy)
            try need(3)
            try same(operands[0], operands[2])
            return [operands[0], operands[1]]
        case .pad(let spec):
            try need(1)
            let x = operands[0]
            guard x.batched, x.dims.count == 3, min(spec.top, spec.bottom, spec.left, spec.right) >= 0 else {
                throw IRError("pad needs [N,C,H,W] and borders of at least 0, got \(x) and \(spec)")
            }
            if spec.mode == .reflect, max(spec.top, spec.bottom) >= x.dims[1] || max(spec.left, spec.right) >= x.dims[2] {
                throw IRError("pad reflect: borders \(spec) not smaller than \(x)")
            }
            return [.init(batched: true, [x.dims[0], x.dims[1] + spec.top + spec.bottom, x.dims[2] + spec.left + spec.right])]
        case .padGrad:  // (dy, x)
            try need(2)
            return [operands[1]]
        case .batchNormFold(_, let convolution, let bias):
            try need(bias ? 6 : 5)
            let w = operands[0]
            guard !w.batched, w.dims.count == (convolution ? 4 : 2) else { throw IRError("batchnorm_fold: weight \(w) is not a \(convolution ? "conv" : "fc") weight") }
            let channels = convolution ? w.dims[0] : w.dims[1]
            for statistic in operands.dropFirst() where statistic != .fixed(channels) {
                throw IRError("batchnorm_fold: \(statistic) does not match \(channels) channels")
            }
            return [w, .fixed(channels)]
        case .activationGrad, .softmaxGrad, .logSoftmaxGrad:
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
            guard x.batched, x.dims.count == 3, !w.batched, w.dims.count == 4, g.groups >= 1, w.dims[1] * g.groups == x.dims[0],
                  w.dims[0] % g.groups == 0 else {
                throw IRError("conv2d: input \(x) and weight \(w) do not fit (groups \(g.groups))")
            }
            guard let h = windowOutputSize(input: x.dims[1], window: w.dims[2], stride: g.strideH, padding: g.padH, dilation: g.dilationH),
                  let wd = windowOutputSize(input: x.dims[2], window: w.dims[3], stride: g.strideW, padding: g.padW, dilation: g.dilationW) else {
                throw IRError("conv2d: kernel larger than input")
            }
            return [.init(batched: true, [w.dims[0], h, wd])]
        case .conv2dInputGrad, .conv2dWeightGrad:
            try need(3); return [operands[2]]
        case .pool(_, let window, let stride, let padding):
            try need(1)
            let x = operands[0]
            guard x.batched, x.dims.count == 3, window.count == 2, stride.count == 2, padding.count == 2,
                  padding[0] >= 0, padding[1] >= 0, 2 * padding[0] <= window[0], 2 * padding[1] <= window[1],
                  let h = windowOutputSize(input: x.dims[1], window: window[0], stride: stride[0], padding: padding[0]),
                  let w = windowOutputSize(input: x.dims[2], window: window[1], stride: stride[1], padding: padding[1]) else {
                throw IRError("pool: window \(window) does not fit \(x)")
            }
            return [.init(batched: true, [x.dims[0], h, w])]
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
        case .crossEntropy, .softmaxCrossEntropy, .nllLoss:
            try need(2)
            guard operands[0].batched, operands[0].dims.count == 1, operands[1] == .batch() else {
                throw IRError("\(name) needs logits [N,C] and labels [N], got \(operands[0]) and \(operands[1])")
            }
            return [.scalar]
        case .binaryCrossEntropy, .squaredError:
            try need(2); try same(operands[0], operands[1]); return [.scalar]
        case .squaredErrorWithGrad:
            try need(3); try same(operands[0], operands[1]); return [.scalar, operands[0]]
        case .crossEntropyGrad, .softmaxCrossEntropyGrad, .binaryCrossEntropyGrad, .nllLossGrad:
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
        case .convFused(let g, _, let bias, let pooled):
            try need(bias ? 3 : 2)
            let shape = try Op.conv2d(g).resultShapes(Array(operands.prefix(2)))
            if bias { _ = try Op.biasAdd.resultShapes([shape[0], operands[2]]) }
            return pooled ? shape + (try Op.pool(.max, window: [2, 2], stride: [2, 2], padding: [0, 0]).resultShapes(shape)) : shape
        case .convBackward(let g, _, let bias, let inputGradient, let pooled):
            try need(4)
            let y = try Op.conv2d(g).resultShapes([operands[0], operands[1]])[0]
            try same(y, operands[2])
            try same(pooled ? try Op.pool(.max, window: [2, 2], stride: [2, 2], padding: [0, 0]).resultShapes([y])[0] : y, operands[3])
            return [operands[1]] + (bias ? [.fixed(operands[1].dims[0])] : []) + (inputGradient ? [operands[0]] : [])
        case .activationGradBias(_, let bias):
            try need(2); try same(operands[0], operands[1])
            return bias ? [operands[0], try Op.biasGrad.resultShapes([operands[0]])[0]] : [operands[0]]
        case .activationGradBiasUpdate(let f, let u):
            try need(3 + u.stateNames.count)
            let shapes = try Op.activationGradBias(f, bias: true).resultShapes(Array(operands.prefix(2)))
            for operand in operands.dropFirst(2) { try same(shapes[1], operand) }
            return shapes
        }
    }

    /// FLOPs for one execution with the given concrete operand and result dimensions (multiply-add
    /// counts as 2). `nnc check` (per sample, on the forward graph) and `nnc bench` (per op of the
    /// optimized step) both count with this.
    public func flops(operands: [[Int]], results: [[Int]]) -> Int {
        func count(_ dims: [Int]) -> Int { dims.reduce(1, *) }
        let out = results.first.map(count) ?? 0
        switch self {
        case .input, .target, .parameter, .state, .reshape, .broadcast, .constant, .dropoutMask: return 0
        case .matmul(let ta, _):
            let k = ta ? operands[0][0] : operands[0].last ?? 0
            return 2 * out * k
        case .dense(let f, let bias):
            let k = operands[0].last ?? 0
            return out * (2 * k + (bias ? 1 : 0) + f.flopsPerElement)
        case .conv2d:
            let w = operands[1]
            return 2 * out * w[1] * w[2] * w[3]
        case .concat, .sliceChannels, .pad: return 0
        case .padGrad(let spec):
            if case .constant = spec.mode { return 0 }
            return count(operands[0])
        case .prelu: return 2 * out
        case .preluGrad: return 4 * count(operands[0])
        case .batchNorm(_, _, let epilogue), .batchNormGrad(let epilogue):  // (the epilogue: an add, f, a comparison)
            return count(operands[0]) * (6 + (epilogue.residual ? 1 : 0) + epilogue.activation.flopsPerElement + (epilogue.pooled ? 1 : 0))
        case .batchNormInference: return 2 * count(operands[0])
        case .batchNormFold: return 2 * count(operands[0])
        case .logSoftmax, .logSoftmaxGrad: return 5 * out
        case .nllLoss, .nllLossGrad: return count(operands[1])
        case .convFused(_, let f, let bias, let pooled):  // (the pool: one comparison an element of y)
            let w = operands[1]
            return out * (2 * w[1] * w[2] * w[3] + (bias ? 1 : 0) + f.flopsPerElement + (pooled ? 1 : 0))
        case .convBackward(_, _, _, let inputGradient, _):  // (y, not dy, which may be the pool's)
            let w = operands[1]
            return 2 * count(operands[2]) * w[1] * w[2] * w[3] * (inputGradient ? 2 : 1)
        case .conv2dInputGrad:  // (dy, w, x): the forward convolution's multiply-adds
            let w = operands[1]
            return 2 * count(operands[0]) * w[1] * w[2] * w[3]
        case .conv2dWeightGrad:  // (x, dy, w)
            let w = results[0]
            return 2 * count(operands[1]) * w[1] * w[2] * w[3]
        case .pool(_, let window, _, _): return out * window[0] * window[1]
        case .poolGrad(_, let window, _, _): return count(operands[2]) * window[0] * window[1]
        case .activation(let f): return out * f.flopsPerElement
        case .activationGrad(let f): return out * max(1, f.flopsPerElement)
        case .softmax, .softmaxGrad: return 5 * out
        case .activationGradBias(let f, let bias): return out * (max(1, f.flopsPerElement) + (bias ? 1 : 0))
        case .activationGradBiasUpdate(let f, let u):
            return Op.activationGradBias(f, bias: true).flops(operands: operands, results: results) + Op.update(u).flops(operands: [results[1]], results: [])
        case .update(let u):
            let n = count(operands[0])
            switch u { case .sgd: return 4 * n; case .adam: return 12 * n }
        case .matmulUpdate(let ta, let tb, let u):
            return Op.matmul(transposeA: ta, transposeB: tb).flops(operands: operands, results: results)
                + Op.update(u).flops(operands: [results[0]], results: [])
        case .biasAdd, .add, .subtract, .multiply, .scale, .biasGrad, .sumAll, .meanAll:
            // one operation per element of the largest operand
            return operands.map(count).max() ?? 0
        case .crossEntropy, .softmaxCrossEntropy, .binaryCrossEntropy, .crossEntropyGrad, .softmaxCrossEntropyGrad,
             .binaryCrossEntropyGrad, .squaredError:
            return 3 * count(operands[0])
        case .squaredErrorWithGrad:
            return 6 * count(operands[0])
        }
    }
}

import IR

/// The ops whose kernels take more than pointers and counts (convolution, pooling, dropout):
/// their geometry, resolved once when an executable is made.
struct KernelCall<T: KernelScalar> {
    typealias P = UnsafeMutablePointer<T>
    enum Kind {
        case convolution(Conv2DShape, x: P, weight: P, bias: P?, activation: KernelActivation, y: P)
        case convolutionInputGradient(Conv2DShape, dy: P, weight: P, x: P, dx: P)
        case convolutionWeightGradient(Conv2DShape, x: P, dy: P, weight: P, dWeight: P)
        case convolutionBackward(Conv2DShape, x: P, weight: P, y: P, dy: P, activation: KernelActivation, dWeight: P, dBias: P?, dx: P?)
        case maxPool(Pool2DShape, x: P, y: P)
        case maxPoolGradient(Pool2DShape, x: P, dy: P, dx: P)
        case averagePool(Pool2DShape, x: P, y: P)
        case averagePoolGradient(Pool2DShape, dy: P, dx: P)
        case dropoutMask(mask: P, count: Int, probability: Double)
    }
    let kind: Kind

    /// The convolution geometry of a conv op from its input [N,C,H,W] and weight [O,C,KH,KW] dims.
    static func convolutionShape(input: [Int], weight: [Int], _ g: ConvGeometry) -> Conv2DShape {
        Conv2DShape(batch: input[0], inChannels: input[1], height: input[2], width: input[3], outChannels: weight[0],
                    kernelH: weight[2], kernelW: weight[3], stride: g.stride, padding: g.padding)
    }

    static func poolShape(input: [Int], window: [Int], stride: [Int]) -> Pool2DShape {
        Pool2DShape(batch: input[0], channels: input[1], height: input[2], width: input[3], kernelH: window[0], kernelW: window[1],
                    strideH: stride[0], strideW: stride[1])
    }

    init(op: Op, operands: [P], results: [P], operandDims: [[Int]], resultDims: [[Int]], threads: Int) throws {
        switch op {
        case .conv2d(let g):
            kind = .convolution(Self.convolutionShape(input: operandDims[0], weight: operandDims[1], g), x: operands[0], weight: operands[1],
                                bias: nil, activation: .identity, y: results[0])
        case .convFused(let g, let f, let bias):
            guard let activation = KernelActivation(f) else { throw RuntimeError("\(f) cannot be fused into a convolution") }
            kind = .convolution(Self.convolutionShape(input: operandDims[0], weight: operandDims[1], g), x: operands[0], weight: operands[1],
                                bias: bias ? operands[2] : nil, activation: activation, y: results[0])
        case .conv2dInputGrad(let g):  // (dy, w, x) → dx
            kind = .convolutionInputGradient(Self.convolutionShape(input: operandDims[2], weight: operandDims[1], g),
                                             dy: operands[0], weight: operands[1], x: operands[2], dx: results[0])
        case .conv2dWeightGrad(let g):  // (x, dy, w) → dw
            kind = .convolutionWeightGradient(Self.convolutionShape(input: operandDims[0], weight: operandDims[2], g),
                                              x: operands[0], dy: operands[1], weight: operands[2], dWeight: results[0])
        case .convBackward(let g, let f, let bias, let inputGradient):  // (x, w, y, dy) → dw[, db][, dx]
            guard let activation = KernelActivation(f) else { throw RuntimeError("\(f) cannot be fused into a convolution") }
            kind = .convolutionBackward(Self.convolutionShape(input: operandDims[0], weight: operandDims[1], g),
                                        x: operands[0], weight: operands[1], y: operands[2], dy: operands[3], activation: activation,
                                        dWeight: results[0], dBias: bias ? results[1] : nil, dx: inputGradient ? results[bias ? 2 : 1] : nil)
        case .pool(let poolKind, let window, let stride):
            let shape = Self.poolShape(input: operandDims[0], window: window, stride: stride)
            kind = poolKind == .max ? .maxPool(shape, x: operands[0], y: results[0]) : .averagePool(shape, x: operands[0], y: results[0])
        case .poolGrad(let poolKind, let window, let stride):  // (x, y, dy) → dx
            let shape = Self.poolShape(input: operandDims[0], window: window, stride: stride)
            kind = poolKind == .max ? .maxPoolGradient(shape, x: operands[0], dy: operands[2], dx: results[0])
                                    : .averagePoolGradient(shape, dy: operands[2], dx: results[0])
        case .dropoutMask(let p):
            kind = .dropoutMask(mask: results[0], count: resultDims[0].reduce(1, *), probability: p)
        default:
            throw RuntimeError("'\(op.name)' has no kernel")
        }
    }

    /// Scratch memory (elements of T) the plan's convolutions need at most (one call at a time).
    static func scratchElements(plan: Plan, threads: Int) -> Int {
        let graph = plan.graph
        var most = 0
        for node in graph.nodes {
            let dims = node.operands.map { graph[$0].shape.concrete(batch: plan.batch) }
            switch node.op {
            case .conv2d(let g), .convFused(let g, _, _):
                most = max(most, conv2DForwardScratchCount(convolutionShape(input: dims[0], weight: dims[1], g), threads: threads))
            case .conv2dInputGrad(let g):
                most = max(most, conv2DBackwardScratchCount(convolutionShape(input: dims[2], weight: dims[1], g), threads: threads))
            case .conv2dWeightGrad(let g):
                most = max(most, conv2DBackwardScratchCount(convolutionShape(input: dims[0], weight: dims[2], g), threads: threads))
            case .convBackward(let g, _, _, _):
                most = max(most, conv2DBackwardScratchCount(convolutionShape(input: dims[0], weight: dims[1], g), threads: threads))
            default: continue
            }
        }
        return most
    }

    func run(context: GEMMContext, scratch: P, random: inout MT19937) {
        switch kind {
        case let .convolution(shape, x, weight, bias, activation, y):
            conv2DForward(shape, x: x, weight: weight, bias: bias.map { UnsafePointer($0) }, activation: activation, y: y, scratch: scratch, context: context)
        case let .convolutionInputGradient(shape, dy, weight, x, dx):
            conv2DBackward(shape, x: x, weight: weight, dy: dy, dx: dx, dWeight: nil, dBias: nil, scratch: scratch, context: context)
        case let .convolutionWeightGradient(shape, x, dy, weight, dWeight):
            conv2DBackward(shape, x: x, weight: weight, dy: dy, dx: nil, dWeight: dWeight, dBias: nil, scratch: scratch, context: context)
        case let .convolutionBackward(shape, x, weight, y, dy, activation, dWeight, dBias, dx):
            conv2DBackward(shape, x: x, weight: weight, dy: dy, activation: activation, y: y, dx: dx, dWeight: dWeight, dBias: dBias,
                           scratch: scratch, context: context)
        case let .maxPool(shape, x, y): maxPool2DForward(shape, x: x, y: y, context: context)
        case let .maxPoolGradient(shape, x, dy, dx): maxPool2DBackward(shape, x: x, dy: dy, dx: dx, context: context)
        case let .averagePool(shape, x, y): avgPool2DForward(shape, x: x, y: y, context: context)
        case let .averagePoolGradient(shape, dy, dx): avgPool2DBackward(shape, dy: dy, dx: dx, context: context)
        case let .dropoutMask(mask, count, probability):
            Runtime.dropoutMask(count: count, p: probability, rng: &random, into: mask)
        }
    }
}

extension MT19937 {
    /// Seeds from a 32-bit value (what nnc's derived per-epoch and per-step seeds are).
    public init(seed: UInt32) { self.init(seed: UInt64(seed)) }
}

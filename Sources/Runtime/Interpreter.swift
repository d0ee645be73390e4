import Foundation
import IR

/// A failure while preparing or running a plan (not a user-input error in the model file).
public struct RuntimeError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The parameters and optimizer state of a model, kept across steps (and saved in `.nnc` files).
public final class ParameterStore<T: KernelScalar>: @unchecked Sendable {
    public let names: [String]
    public let shapes: [[Int]]
    public let parameters: [UnsafeMutableBufferPointer<T>]
    /// The graph's persistent non-parameter tensors (optimizer state, running statistics), in the
    /// order of `states`; the plan finds each by name.
    public let stateSlots: [StateSlot]
    public let states: [UnsafeMutableBufferPointer<T>]
    /// Optimizer steps taken (Adam's bias correction needs it).
    public var step: Int = 0

    /// One block holds every parameter and state buffer (each 64-byte aligned), so that they share
    /// huge pages.
    private let memory: LargeBuffer

    public init(graph: Graph) {
        names = graph.parameters.map(\.name)
        shapes = graph.parameters.map(\.shape.dims)
        stateSlots = graph.states.map { StateSlot(name: $0.name, kind: $0.kind, shape: graph[$0.value].shape.dims) }
        let parameterCounts = graph.parameters.map(\.shape.rowElements)
        let stateCounts = graph.states.map { graph[$0.value].shape.rowElements }
        // Offsets in elements, each rounded up to 64 bytes.
        let align = max(1, 64 / MemoryLayout<T>.stride)
        var offsets: [Int] = []
        var total = 0
        for count in parameterCounts + stateCounts {
            offsets.append(total)
            total += (count + align - 1) / align * align
        }
        memory = LargeBuffer.allocate(byteCount: max(1, total) * MemoryLayout<T>.stride)
        let base = memory.pointer.bindMemory(to: T.self, capacity: max(1, total))
        base.initialize(repeating: 0, count: max(1, total))
        // Persistent state starts at its initial value (a running variance at 1).
        for (index, state) in graph.states.enumerated() where state.initial != 0 {
            (base + offsets[parameterCounts.count + index]).update(repeating: T(state.initial), count: stateCounts[index])
        }
        parameters = parameterCounts.indices.map { UnsafeMutableBufferPointer(start: base + offsets[$0], count: parameterCounts[$0]) }
        states = stateCounts.indices.map {
            UnsafeMutableBufferPointer(start: base + offsets[parameterCounts.count + $0], count: stateCounts[$0])
        }
    }

    deinit {
        memory.deallocate()
    }

    public func parameter(named name: String) -> UnsafeMutableBufferPointer<T>? {
        names.firstIndex(of: name).map { parameters[$0] }
    }

    public func state(named name: String) -> UnsafeMutableBufferPointer<T>? {
        stateSlots.firstIndex { $0.name == name }.map { states[$0] }
    }
}

/// A persistent non-parameter tensor of a store: its name, kind and shape.
public struct StateSlot: Sendable, Equatable {
    public var name: String
    public var kind: StateKind
    public var shape: [Int]
}

/// One step of a plan with everything resolved: pointers into the arena or the parameter store
/// and concrete sizes. The interpreter's loop is a switch over these.
enum Instruction<T: KernelScalar> {
    typealias P = UnsafeMutablePointer<T>
    /// packedB: B packed once, when B is a parameter of a session whose parameters stay constant.
    case gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: P, lda: Int, b: P, ldb: Int, c: P, ldc: Int,
              bias: P?, activation: ActivationFunction, packedB: UnsafePointer<T>?)
    /// A weight gradient's GEMM that takes the parameter's SGD step in its epilogue.
    case gemmUpdate(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: P, lda: Int, b: P, ldb: Int, c: P, update: SGDStep<T>, lr: Double)
    case biasAdd(x: P, b: P, y: P, outer: Int, channels: Int, inner: Int)
    case activation(ActivationFunction, x: P, y: P, count: Int)
    case softmax(x: P, y: P, rows: Int, columns: Int)
    /// v: the kept value (y, or x when the derivative needs the input).
    case activationGrad(ActivationFunction, v: P, dy: P, dx: P, count: Int)
    case softmaxGrad(y: P, dy: P, dx: P, rows: Int, columns: Int)
    case activationGradBias(ActivationFunction, y: P, dy: P, dz: P, db: P, outer: Int, channels: Int, inner: Int)
    /// activationGradBias, then the bias's SGD step from db (lr: the rate as given, as for gemmUpdate).
    case activationGradBiasUpdate(ActivationFunction, y: P, dy: P, dz: P, db: P, outer: Int, channels: Int, inner: Int, update: SGDStep<T>, lr: Double)
    case add(a: P, b: P, c: P, count: Int)
    case subtract(a: P, b: P, c: P, count: Int)
    case multiply(a: P, b: P, c: P, count: Int)
    case scale(x: P, y: P, factor: T, count: Int)
    case biasGrad(dy: P, db: P, outer: Int, channels: Int, inner: Int)
    case sumAll(x: P, y: P, count: Int, mean: Bool)
    case broadcast(s: P, y: P, count: Int, mean: Bool)
    case copy(x: P, y: P, count: Int)
    case softmaxCrossEntropy(logits: P, labels: P, loss: P, rows: Int, classes: Int)
    case softmaxCrossEntropyGrad(logits: P, labels: P, dLoss: P, dz: P, rows: Int, classes: Int)
    case crossEntropy(p: P, labels: P, loss: P, rows: Int, classes: Int)
    case crossEntropyGrad(p: P, labels: P, dLoss: P, dp: P, rows: Int, classes: Int)
    case binaryCrossEntropy(p: P, y: P, loss: P, count: Int)
    case binaryCrossEntropyGrad(p: P, y: P, dLoss: P, dp: P, count: Int)
    case squaredError(p: P, y: P, loss: P, count: Int, mean: Bool)
    case squaredErrorWithGrad(p: P, y: P, dLoss: P, loss: P, dp: P, count: Int, mean: Bool)
    /// lr: the rate as given; each step takes it times the schedule's factor.
    case sgd(p: P, g: P, velocity: P?, count: Int, lr: Double, momentum: T, nesterov: Bool, decay: T)
    case adam(p: P, g: P, m: P, v: P, count: Int, lr: Double, beta1: Double, beta2: Double, eps: Double, decay: Double)
    /// pooled: also the 2×2 max pool of y (see `conv2DForward`).
    /// outputRead: whether anything reads y (a pooled convolution in inference need not write it);
    /// transformed: the weights prepared once for the Winograd path (constant parameters).
    case convolution(Conv2DShape, x: P, weight: P, bias: P?, activation: ActivationFunction, y: P, pooled: P?, outputRead: Bool,
                     transformed: UnsafePointer<T>?)
    case convolutionInputGradient(Conv2DShape, dy: P, weight: P, x: P, dx: P)
    case convolutionWeightGradient(Conv2DShape, x: P, dy: P, weight: P, dWeight: P)
    /// pooled: dy is the gradient of the 2×2 max pool of y (see `conv2DBackward`).
    case convolutionBackward(Conv2DShape, x: P, weight: P, y: P, dy: P, activation: ActivationFunction, pooled: Bool, dWeight: P, dBias: P?, dx: P?)
    case maxPool(Pool2DShape, x: P, y: P)
    case maxPoolGradient(Pool2DShape, x: P, dy: P, dx: P)
    case averagePool(Pool2DShape, x: P, y: P)
    case averagePoolGradient(Pool2DShape, dy: P, dx: P)
    case dropoutMask(mask: P, count: Int, probability: Double)
    case concat(a: P, b: P, c: P, rows: Int, aRow: Int, bRow: Int)
    case slice(x: P, y: P, rows: Int, row: Int, start: Int, count: Int)
    case batchNorm(x: P, gamma: P, beta: P, runningMean: P, runningVar: P, y: P, mean: P, invstd: P,
                   outer: Int, channels: Int, inner: Int, eps: Double, momentum: Double, epilogue: NormEpilogue<T>)
    case batchNormGrad(x: P, gamma: P, beta: P, mean: P, invstd: P, dy: P, dx: P, dGamma: P, dBeta: P, dResidual: P?,
                       outer: Int, channels: Int, inner: Int, epilogue: NormEpilogue<T>)
    case batchNormInference(x: P, gamma: P, beta: P, mean: P, variance: P, y: P, outer: Int, channels: Int, inner: Int, eps: Double)
    case batchNormFold(weight: P, bias: P?, gamma: P, beta: P, mean: P, variance: P, foldedWeight: P, foldedBias: P,
                       rows: Int, columns: Int, convolution: Bool, eps: Double)
    case logSoftmax(x: P, y: P, rows: Int, columns: Int)
    case logSoftmaxGrad(y: P, dy: P, dx: P, rows: Int, columns: Int)
    case nllLoss(logp: P, labels: P, loss: P, rows: Int, classes: Int)
    case nllLossGrad(labels: P, dLoss: P, dlogp: P, rows: Int, classes: Int)
    case prelu(x: P, slopes: P, y: P, outer: Int, channels: Int, inner: Int, shared: Bool)
    case preluGrad(x: P, slopes: P, dy: P, dx: P, dSlopes: P, outer: Int, channels: Int, inner: Int, shared: Bool)
    case pad(x: P, y: P, planes: Int, height: Int, width: Int, spec: PadSpec)
    case padGrad(dy: P, dx: P, planes: Int, height: Int, width: Int, spec: PadSpec)
}

/// The convolution geometry of a conv op from its input [N,C,H,W] and weight [O,C,KH,KW] dims.
func convolutionShape(input: [Int], weight: [Int], _ g: ConvGeometry) -> Conv2DShape {
    Conv2DShape(batch: input[0], inChannels: input[1], height: input[2], width: input[3], outChannels: weight[0],
                kernelH: weight[2], kernelW: weight[3], strideH: g.strideH, strideW: g.strideW, padH: g.padH, padW: g.padW,
                dilationH: g.dilationH, dilationW: g.dilationW, groups: g.groups)
}

func poolShape(input: [Int], window: [Int], stride: [Int], padding: [Int]) -> Pool2DShape {
    Pool2DShape(batch: input[0], channels: input[1], height: input[2], width: input[3], kernelH: window[0], kernelW: window[1],
                strideH: stride[0], strideW: stride[1], padH: padding[0], padW: padding[1])
}

/// Scratch memory (elements of T) the plan's convolutions need at most (one call at a time).
func convolutionScratchElements(plan: Plan, threads: Int) -> Int {
    let graph = plan.graph
    var most = 0
    for node in graph.nodes {
        let dims = node.operands.map { graph[$0].shape.concrete(batch: plan.batch) }
        if case .conv2d(let g) = node.op {
            most = max(most, conv2DForwardScratchCount(convolutionShape(input: dims[0], weight: dims[1], g), threads: threads))
        } else if case .convFused(let g, _, _, _) = node.op {
            most = max(most, conv2DForwardScratchCount(convolutionShape(input: dims[0], weight: dims[1], g), threads: threads))
        } else if case .conv2dInputGrad(let g) = node.op {
            most = max(most, conv2DBackwardScratchCount(convolutionShape(input: dims[2], weight: dims[1], g), threads: threads))
        } else if case .conv2dWeightGrad(let g) = node.op {
            most = max(most, conv2DBackwardScratchCount(convolutionShape(input: dims[0], weight: dims[2], g), threads: threads))
        } else if case .convBackward(let g, _, _, _, _) = node.op {
            most = max(most, conv2DBackwardScratchCount(convolutionShape(input: dims[0], weight: dims[1], g), threads: threads))
        }
    }
    return most
}

extension MT19937 {
    /// Seeds from a 32-bit value (what nnc's derived per-epoch and per-step seeds are).
    public init(seed: UInt32) { self.init(seed: UInt64(seed)) }
}

/// One instruction as the interpreter's loop runs it (`Session.operation`). A class, so that the loop
/// can call its closure without retaining the closure's context (a closure read from an array is
/// retained and released around each call). The loop was a switch over the instructions, which
/// copied each one, a few hundred bytes, twice: the XOR network's step went from 0.190 to 0.166 µs.
final class Operation<T: KernelScalar> {
    let run: (Session<T>) -> Void
    init(_ run: @escaping (Session<T>) -> Void) { self.run = run }
}

/// A plan made runnable for one batch size: the instruction list and where each value lives.
/// (A class: handing a generic struct to the Session from another module costs a generic-metadata
/// look-up per step, measured at about 10% of the XOR network's step.)
public final class Executable<T: KernelScalar> {
    /// The instructions compiled (`operations` keeps them alive; the loop reads `unretained`).
    let operations: [Operation<T>]
    let unretained: [Unmanaged<Operation<T>>]
    /// The graph node each instruction came from (for per-op timing).
    public let nodeOfInstruction: [Int]
    public let batch: Int

    init(instructions: [Instruction<T>], nodeOfInstruction: [Int], batch: Int) {
        (self.nodeOfInstruction, self.batch) = (nodeOfInstruction, batch)
        operations = instructions.map(Session<T>.operation)
        unretained = operations.map { Unmanaged.passUnretained($0) }
    }
}

/// Runs plans: owns the arena, the worker threads, the dropout RNG, and the compiled executables
/// for the batch sizes in use. Running a step allocates nothing.
public final class Session<T: KernelScalar>: @unchecked Sendable {
    public let plan: Plan
    public let store: ParameterStore<T>
    public let context: GEMMContext
    let arena: UnsafeMutableRawPointer
    let scratch: UnsafeMutablePointer<T>
    /// The memory of the arena and of the kernels' scratch.
    private let arenaMemory: LargeBuffer, scratchMemory: LargeBuffer
    let scratchCount: Int
    var random: MT19937
    private var executables: [Executable<T>] = []
    /// Whether a step updates parameters (counts optimizer steps).
    let updatesParameters: Bool
    /// The learning-rate schedule's factor for the steps to come (the training loop sets it each epoch).
    public var learningRateFactor: Double = 1
    /// The momentum (SGD) or β1 (Adam) a schedule sets for the steps to come (onecycle), instead of
    /// the update's own.
    public var momentumOverride: Double?
    /// Where the loss lands (nil without a loss).
    private var lossPointerStorage: UnsafeMutablePointer<T>?
    /// The parameters do not change while the session runs: weights multiplied as B are packed once,
    /// and the weights of convolutions that run Winograd's algorithm transformed once.
    public let constantParameters: Bool
    /// Those packed weights (kept across executables; see `parametersChanged`).
    private var packedWeights: [PackedWeight] = []
    /// For each state of the plan's graph, its slot in the store, found by name (the store may belong
    /// to another graph of the model: an evaluation plan shares the training run's store).
    private var stateSlots: [Int] = []

    /// A parameter prepared once for a kernel: packed as a GEMM's B (op(B) is k × n), or a
    /// convolution's weights transformed for Winograd's algorithm (f32).
    private struct PackedWeight {
        enum Layout: Equatable { case gemmB(transB: Bool, k: Int, n: Int, ldb: Int), winograd(Conv2DShape) }
        let parameter: Int, layout: Layout
        let memory: LargeBuffer
    }

    /// `context`: the worker threads to run on, shared with another session that runs at other times
    /// (a training run's evaluation on test data); by default (nil), its own, `threads` of them.
    /// `constantParameters` (inference, as ONNX Runtime does with its initializers): the weights that
    /// multiply as a GEMM's B are packed for the kernels once (and those of convolutions that run
    /// Winograd's algorithm transformed once), here, instead of in every step; after changing
    /// parameters, call `parametersChanged()`. Ignored when the plan updates parameters.
    public init(plan: Plan, store: ParameterStore<T>, threads: Int, seed: Int = 0, context: GEMMContext? = nil,
                constantParameters: Bool = false) throws {
        self.plan = plan
        self.store = store
        self.context = context ?? GEMMContext(threads: max(1, threads))
        let threads = self.context.threads
        arenaMemory = LargeBuffer.allocate(byteCount: plan.arenaBytes)
        self.arena = arenaMemory.pointer
        self.scratchCount = max(1, convolutionScratchElements(plan: plan, threads: max(1, threads)))
        scratchMemory = LargeBuffer.allocate(byteCount: scratchCount * MemoryLayout<T>.stride)
        self.scratch = scratchMemory.pointer.bindMemory(to: T.self, capacity: scratchCount)
        self.random = MT19937(seed: UInt32(truncatingIfNeeded: seed &+ 0x5EED))
        self.updatesParameters = plan.graph.nodes.contains { $0.op.hasEffect }
        self.constantParameters = constantParameters && !updatesParameters
        stateSlots = try plan.graph.states.map { state in
            guard let slot = store.stateSlots.firstIndex(where: { $0.name == state.name }),
                  store.states[slot].count == plan.graph[state.value].shape.rowElements else {
                throw RuntimeError("the parameter store has no state '\(state.name)' of \(plan.graph[state.value].shape)")
            }
            return slot
        }
        executables = [try makeExecutable(batch: plan.batch)]
        lossPointerStorage = plan.graph.loss.map(pointer)
    }

    deinit {
        arenaMemory.deallocate()
        scratchMemory.deallocate()
        for weight in packedWeights { weight.memory.deallocate() }
    }

    /// Packs the weights again after the parameters changed (sessions with `constantParameters`).
    public func parametersChanged() {
        for weight in packedWeights { pack(weight) }
    }

    private func pack(_ weight: PackedWeight) {
        guard let b = store.parameters[weight.parameter].baseAddress else { return }
        let into = weight.memory.pointer
        switch weight.layout {
        case let .gemmB(transB, k, n, ldb):
            gemmPackB(transB: transB, k: k, n: n, b: b, ldb: ldb, into: into.assumingMemoryBound(to: T.self), context: context)
        case let .winograd(shape):
            winogradTransformWeights(shape, UnsafeRawPointer(b).assumingMemoryBound(to: Float.self), into: into.assumingMemoryBound(to: Float.self))
        }
    }

    /// B packed once for a GEMM, when B is a parameter and the parameters are constant; else nil.
    private func packedWeight(_ value: ValueID, transB: Bool, k: Int, n: Int, ldb: Int) -> UnsafePointer<T>? {
        prepared(value, .gemmB(transB: transB, k: k, n: n, ldb: ldb), count: gemmPackedBCount(T.self, k: k, n: n, context: context))
    }

    /// A convolution's weights transformed once, where it runs Winograd's algorithm and its weights
    /// are a parameter and constant; else nil.
    private func winogradWeight(_ value: ValueID, _ shape: Conv2DShape) -> UnsafePointer<T>? {
        guard T.self == Float.self, shape.usesWinograd else { return nil }
        var key = shape
        key.batch = 1
        return prepared(value, .winograd(key), count: winogradTransformedWeightsCount(key))
    }

    private func prepared(_ value: ValueID, _ layout: PackedWeight.Layout, count: Int) -> UnsafePointer<T>? {
        guard constantParameters, case .parameter(let index)? = plan.storage[value.index] else { return nil }
        if let made = packedWeights.first(where: { $0.parameter == index && $0.layout == layout }) {
            return UnsafePointer(made.memory.pointer.assumingMemoryBound(to: T.self))
        }
        guard count > 0 else { return nil }
        let weight = PackedWeight(parameter: index, layout: layout, memory: LargeBuffer.allocate(byteCount: count * MemoryLayout<T>.stride))
        packedWeights.append(weight)
        pack(weight)
        return UnsafePointer(weight.memory.pointer.assumingMemoryBound(to: T.self))
    }

    /// Where a value lives (arena or parameter store).
    public func pointer(_ value: ValueID) -> UnsafeMutablePointer<T> {
        switch plan.storage[value.index] {
        case .parameter(let index): return store.parameters[index].baseAddress ?? scratch
        case .state(let index): return store.states[stateSlots[index]].baseAddress ?? scratch
        case .arena(let offset): return (arena + offset).assumingMemoryBound(to: T.self)
        case nil: return scratch
        }
    }

    /// The input tensor to fill before a step (rows × features).
    public var inputPointer: UnsafeMutablePointer<T>? { plan.graph.input.map(pointer) }
    public var targetPointer: UnsafeMutablePointer<T>? { plan.graph.target.map(pointer) }
    /// The loss of the last step. (Read by the type, not through the generic conversion: callers in other
    /// modules run the unspecialised getter, once a step.)
    public var lossValue: Double {
        guard let loss = UnsafeRawPointer(lossPointerStorage) else { return .nan }
        if T.self == Float.self { return Double(loss.load(as: Float.self)) }
        if T.self == Double.self { return loss.load(as: Double.self) }
        return Double(loss.load(as: T.self))
    }

    /// The executable for a batch size (made on first use; training uses at most two).
    public func executable(batch: Int) throws -> Executable<T> {
        if let existing = executables.first(where: { $0.batch == batch }) { return existing }
        guard batch >= 1, batch <= plan.batch else { throw RuntimeError("batch \(batch) is outside the planned 1...\(plan.batch)") }
        let made = try makeExecutable(batch: batch)
        executables.append(made)
        return made
    }

    /// Restarts the dropout RNG (a resumed run draws the same masks as an uninterrupted one).
    public func reseed(_ seed: UInt32) { random = MT19937(seed: seed) }

    /// Runs one step (forward, and backward and updates when the plan has them) on `batch` rows.
    public func run(batch: Int) throws {
        run(try executable(batch: batch))
    }

    /// Runs an executable, recording the time of each instruction (nanoseconds, added to `times`).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func runTimed(_ executable: Executable<T>, times: inout [UInt64]) {
        if updatesParameters { store.step += 1 }
        for (index, operation) in executable.operations.enumerated() {
            let start = DispatchTime.now().uptimeNanoseconds
            operation.run(self)
            times[index] &+= DispatchTime.now().uptimeNanoseconds &- start
        }
    }

    /// Runs an already-made executable without timing.
    ///
    /// Callers in other modules reach the unspecialised entry point, whose prologue instantiates the
    /// generic metadata of everything the interpreter loop uses (about 10% of the XOR network's step),
    /// so this entry point only picks the specialisation by hand.
    public func run(_ executable: Executable<T>) {
        if T.self == Float.self {
            unsafeDowncast(self, to: Session<Float>.self).runInstructions(unsafeDowncast(executable, to: Executable<Float>.self))
        } else if T.self == Double.self {
            unsafeDowncast(self, to: Session<Double>.self).runInstructions(unsafeDowncast(executable, to: Executable<Double>.self))
        } else {
            runInstructions(executable)
        }
    }

    @inline(never)
    func runInstructions(_ executable: Executable<T>) {
        if updatesParameters { store.step += 1 }
        executable.unretained.withUnsafeBufferPointer { operations in
            for index in operations.indices { operations[index]._withUnsafeGuaranteedRef { $0.run(self) } }
        }
    }

    /// The instruction as the loop runs it: a closure over its operands, given the session for what a
    /// step changes (the rate factor, the RNG) and what it shares (threads, scratch).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    static func operation(_ instruction: Instruction<T>) -> Operation<T> {
        switch instruction {
        case let .gemm(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, bias, activation, packedB):
            if m * n * k <= gemmTinyThreshold {
                // The tiny networks' products (and empty ones), as `gemmIfTiny` runs them (see Tiny.swift).
                let product = TinyProduct(transA: ta, transB: tb, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc,
                                          bias: bias.map { UnsafePointer($0) })
                return withTinyKernels(width: n, TinyForwardOperation(product: product, activation: activation))
            }
            return Operation { session in
                gemm(transA: ta, transB: tb, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc,
                     bias: bias.map { UnsafePointer($0) }, activation: activation, packedB: packedB, context: session.context)
            }
        case let .gemmUpdate(ta, tb, m, n, k, a, lda, b, ldb, c, update, lr):
            if m * n * k <= gemmTinyThreshold && update.isPlain {
                let product = TinyProduct(transA: ta, transB: tb, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: n, bias: nil)
                return withTinyKernels(width: n, TinyWeightStepOperation(product: product, parameter: update.parameter, lr: lr))
            }
            // Others (tiny ones with momentum or decay included, which `gemmIfTiny` takes) through gemm.
            return Operation { session in
                gemm(transA: ta, transB: tb, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: n,
                     update: session.scheduled(update, lr: lr), context: session.context)
            }
        case let .biasAdd(x, b, y, outer, channels, inner): return Operation { _ in biasAddForward(x, b, y, outer: outer, channels: channels, inner: inner) }
        case let .activation(f, x, y, count): return Operation { session in activationForward(f, x, y, count, context: session.context) }
        case let .softmax(x, y, rows, columns): return Operation { _ in softmaxForward(x, y, rows: rows, columns: columns) }
        case let .activationGrad(f, v, dy, dx, count): return Operation { session in activationBackward(f, v, dy, dx, count, context: session.context) }
        case let .softmaxGrad(y, dy, dx, rows, columns): return Operation { _ in softmaxBackward(y, dy, dx, rows: rows, columns: columns) }
        case let .activationGradBias(f, y, dy, dz, db, outer, channels, inner):
            return Operation { session in
                activationBackwardBias(f, y, dy, dz, db, outer: outer, channels: channels, inner: inner, context: session.context)
            }
        case let .activationGradBiasUpdate(f, y, dy, dz, db, outer, channels, inner, update, lr):
            // A tiny layer's (as few elements as a tiny product's multiply-adds) with a plain step.
            if inner == 1 && outer * channels <= gemmTinyThreshold && update.isPlain {
                let step = TinyBiasStep(y: y, dy: dy, dz: dz, db: db, rows: outer, channels: channels, bias: update.parameter)
                return withTinyKernels(width: channels, TinyBiasStepOperation(step: step, activation: f, lr: lr))
            }
            return Operation { session in
                activationBackwardBias(f, y, dy, dz, db, outer: outer, channels: channels, inner: inner, context: session.context)
                session.scheduled(update, lr: lr).apply(gradient: db, at: 0, count: channels)
            }
        case let .add(a, b, c, count): return Operation { session in addElements(a, b, c, count, context: session.context) }
        case let .subtract(a, b, c, count): return Operation { session in subtractElements(a, b, c, count, context: session.context) }
        case let .multiply(a, b, c, count): return Operation { session in multiplyElements(a, b, c, count, context: session.context) }
        case let .scale(x, y, factor, count): return Operation { session in scaleElements(x, y, factor, count, context: session.context) }
        case let .biasGrad(dy, db, outer, channels, inner): return Operation { _ in biasGradient(dy, db, outer: outer, channels: channels, inner: inner) }
        case let .sumAll(x, y, count, mean):
            return Operation { _ in
                let sum = sumAll(x, count)
                y.pointee = T(mean ? sum / Double(max(1, count)) : sum)
            }
        case let .broadcast(s, y, count, mean):
            return Operation { _ in
                let value = mean ? s.pointee / T(max(1, count)) : s.pointee
                y.update(repeating: value, count: count)
            }
        case let .copy(x, y, count): return Operation { _ in if x != y { y.update(from: x, count: count) } }
        case let .softmaxCrossEntropy(logits, labels, loss, rows, classes):
            return Operation { _ in loss.pointee = T(softmaxCrossEntropy(logits, labels, rows: rows, classes: classes)) }
        case let .softmaxCrossEntropyGrad(logits, labels, dLoss, dz, rows, classes):
            return Operation { _ in softmaxCrossEntropyBackward(logits, labels, dLoss.pointee, dz, rows: rows, classes: classes) }
        case let .crossEntropy(p, labels, loss, rows, classes):
            return Operation { _ in loss.pointee = T(crossEntropy(p, labels, rows: rows, classes: classes)) }
        case let .crossEntropyGrad(p, labels, dLoss, dp, rows, classes):
            return Operation { _ in crossEntropyBackward(p, labels, dLoss.pointee, dp, rows: rows, classes: classes) }
        case let .binaryCrossEntropy(p, y, loss, count): return Operation { _ in loss.pointee = T(binaryCrossEntropy(p, y, count: count)) }
        case let .binaryCrossEntropyGrad(p, y, dLoss, dp, count): return Operation { _ in binaryCrossEntropyBackward(p, y, dLoss.pointee, dp, count: count) }
        case let .squaredError(p, y, loss, count, mean): return Operation { _ in loss.pointee = T(Runtime.squaredError(p, y, count: count, mean: mean)) }
        case let .squaredErrorWithGrad(p, y, dLoss, loss, dp, count, mean):
            if count < 8 {
                return Operation { _ in tinySquaredErrorWithGrad(p, y, dLoss: dLoss.pointee, loss: loss, dp: dp, count: count, mean: mean) }
            }
            return Operation { _ in
                loss.pointee = T(Runtime.squaredError(p, y, count: count, mean: mean))
                squaredErrorBackward(p, y, dLoss.pointee, dp, count: count, mean: mean)
            }
        case let .sgd(p, g, velocity, count, lr, momentum, nesterov, decay):
            return Operation { session in
                sgdUpdate(p, g, velocity: velocity, count: count, lr: session.scheduledRate(lr), momentum: session.momentumOverride.map { T($0) } ?? momentum,
                          nesterov: nesterov, decay: decay, context: session.context)
            }
        case let .adam(p, g, m, v, count, lr, beta1, beta2, eps, decay):
            return Operation { session in
                adamUpdate(p, g, m, v, count: count, lr: lr * session.learningRateFactor, beta1: session.momentumOverride ?? beta1, beta2: beta2, eps: eps, decay: decay,
                           step: max(1, session.store.step), context: session.context)
            }
        case let .convolution(shape, x, weight, bias, activation, y, pooled, outputRead, transformed):
            return Operation { session in
                conv2DForward(shape, x: x, weight: weight, bias: bias.map { UnsafePointer($0) }, activation: activation, y: y, pooled: pooled,
                              outputRead: outputRead, transformedWeights: transformed, scratch: session.scratch, scratchCount: session.scratchCount, context: session.context)
            }
        case let .convolutionInputGradient(shape, dy, weight, x, dx):
            return Operation { session in
                conv2DBackward(shape, x: x, weight: weight, dy: dy, dx: dx, dWeight: nil, dBias: nil, scratch: session.scratch, context: session.context)
            }
        case let .convolutionWeightGradient(shape, x, dy, weight, dWeight):
            return Operation { session in
                conv2DBackward(shape, x: x, weight: weight, dy: dy, dx: nil, dWeight: dWeight, dBias: nil, scratch: session.scratch, context: session.context)
            }
        case let .convolutionBackward(shape, x, weight, y, dy, activation, pooled, dWeight, dBias, dx):
            return Operation { session in
                conv2DBackward(shape, x: x, weight: weight, dy: dy, activation: activation, y: y, pooled: pooled, dx: dx, dWeight: dWeight, dBias: dBias,
                               scratch: session.scratch, context: session.context)
            }
        case let .maxPool(shape, x, y): return Operation { session in maxPool2DForward(shape, x: x, y: y, context: session.context) }
        case let .maxPoolGradient(shape, x, dy, dx): return Operation { session in maxPool2DBackward(shape, x: x, dy: dy, dx: dx, context: session.context) }
        case let .averagePool(shape, x, y): return Operation { session in avgPool2DForward(shape, x: x, y: y, context: session.context) }
        case let .averagePoolGradient(shape, dy, dx): return Operation { session in avgPool2DBackward(shape, dy: dy, dx: dx, context: session.context) }
        case let .dropoutMask(mask, count, probability):
            return Operation { session in Runtime.dropoutMask(count: count, p: probability, rng: &session.random, into: mask) }
        case let .concat(a, b, c, rows, aRow, bRow): return Operation { _ in concatenate(a, b, c, rows: rows, aRow: aRow, bRow: bRow) }
        case let .slice(x, y, rows, row, start, count): return Operation { _ in sliceRows(x, y, rows: rows, row: row, start: start, count: count) }
        case let .batchNorm(x, gamma, beta, runningMean, runningVar, y, mean, invstd, outer, channels, inner, eps, momentum, epilogue):
            return Operation { session in
                batchNormTrainingForward(x, gamma: gamma, beta: beta, runningMean: runningMean, runningVar: runningVar, y: y, mean: mean,
                                         invstd: invstd, outer: outer, channels: channels, inner: inner, eps: eps, momentum: momentum,
                                         epilogue: epilogue, context: session.context)
            }
        case let .batchNormGrad(x, gamma, beta, mean, invstd, dy, dx, dGamma, dBeta, dResidual, outer, channels, inner, epilogue):
            return Operation { session in
                batchNormTrainingBackward(x, gamma: gamma, mean: mean, invstd: invstd, dy: dy, dx: dx, dGamma: dGamma, dBeta: dBeta,
                                          outer: outer, channels: channels, inner: inner, beta: beta, epilogue: epilogue,
                                          dResidual: dResidual, context: session.context)
            }
        case let .batchNormInference(x, gamma, beta, mean, variance, y, outer, channels, inner, eps):
            return Operation { _ in
                batchNormInferenceForward(x, gamma: gamma, beta: beta, mean: mean, variance: variance, y: y, outer: outer, channels: channels, inner: inner, eps: eps)
            }
        case let .batchNormFold(weight, bias, gamma, beta, mean, variance, foldedWeight, foldedBias, rows, columns, convolution, eps):
            return Operation { _ in
                Runtime.batchNormFold(weight: weight, bias: bias.map { UnsafePointer($0) }, gamma: gamma, beta: beta, mean: mean, variance: variance,
                                      foldedWeight: foldedWeight, foldedBias: foldedBias, rows: rows, columns: columns, convolution: convolution, eps: eps)
            }
        case let .logSoftmax(x, y, rows, columns): return Operation { _ in logSoftmaxForward(x, y, rows: rows, columns: columns) }
        case let .logSoftmaxGrad(y, dy, dx, rows, columns): return Operation { _ in logSoftmaxBackward(y, dy, dx, rows: rows, columns: columns) }
        case let .nllLoss(logp, labels, loss, rows, classes):
            return Operation { _ in loss.pointee = T(Runtime.nllLoss(logp, labels, rows: rows, classes: classes)) }
        case let .nllLossGrad(labels, dLoss, dlogp, rows, classes):
            return Operation { _ in nllLossBackward(labels, dLoss.pointee, dlogp, rows: rows, classes: classes) }
        case let .prelu(x, slopes, y, outer, channels, inner, shared):
            return Operation { _ in preluForward(x, slopes: slopes, y: y, outer: outer, channels: channels, inner: inner, shared: shared) }
        case let .preluGrad(x, slopes, dy, dx, dSlopes, outer, channels, inner, shared):
            return Operation { _ in
                preluBackward(x, slopes: slopes, dy: dy, dx: dx, dSlopes: dSlopes, outer: outer, channels: channels, inner: inner, shared: shared)
            }
        case let .pad(x, y, planes, height, width, spec):
            return Operation { _ in padForward(x, y, planes: planes, height: height, width: width, spec: spec) }
        case let .padGrad(dy, dx, planes, height, width, spec):
            return Operation { _ in padBackward(dy, dx, planes: planes, height: height, width: width, spec: spec) }
        }
    }

    /// This step's rate: the given one times the schedule's factor (what the steps without momentum
    /// to override take alone).
    @inline(__always)
    fileprivate func scheduledRate(_ lr: Double) -> T { T(lr * learningRateFactor) }

    /// A fused SGD step with this step's rate (the schedule's factor) and momentum (onecycle's).
    @inline(__always)
    fileprivate func scheduled(_ update: SGDStep<T>, lr: Double) -> SGDStep<T> {
        var step = update
        step.lr = scheduledRate(lr)
        if let momentumOverride { step.momentum = T(momentumOverride) }
        return step
    }

    private func makeExecutable(batch: Int) throws -> Executable<T> {
        let graph = plan.graph
        // Values something reads after they are made: an operand, the output, the loss.
        var read = Set(graph.nodes.flatMap { $0.operands.map(\.index) })
        for value in [graph.output, graph.loss] { if let value { read.insert(value.index) } }
        var instructions: [Instruction<T>] = []
        var nodeOf: [Int] = []
        for (index, node) in graph.nodes.enumerated() {
            let operands = node.operands.map(pointer)
            let results = node.results.map(pointer)
            let operandDims = node.operands.map { graph[$0].shape.concrete(batch: batch) }
            let resultDims = node.results.map { graph[$0].shape.concrete(batch: batch) }
            func count(_ dims: [Int]) -> Int { dims.reduce(1, *) }
            /// [outer, channels, inner] of a batched tensor with the channel axis after the batch.
            func channelLayout(_ dims: [Int]) -> (Int, Int, Int) {
                (dims.first ?? 1, dims.count > 1 ? dims[1] : 1, dims.count > 2 ? dims[2...].reduce(1, *) : 1)
            }
            /// An activation an epilogue or a fused backward kernel applies (the passes only fuse those).
            func fused(_ f: ActivationFunction, backward: Bool = false) throws -> ActivationFunction {
                guard backward ? f.backwardFusable : f.epilogueFusable else { throw RuntimeError("\(f) cannot be fused here") }
                return f
            }
            /// A fused batch norm's epilogue, for the kernel: the planes' width when pooled (of [N,C,H,W]).
            func normEpilogue(_ epilogue: BatchNormEpilogue, residual: UnsafeMutablePointer<T>?) throws -> NormEpilogue<T> {
                let x = operandDims[0]
                guard !epilogue.pooled || x.count == 4 else { throw RuntimeError("\(node.op.name) pools [N,C,H,W], not \(x)") }
                return NormEpilogue(residual: residual.map { UnsafePointer($0) }, activation: try fused(epilogue.activation, backward: true),
                                    poolWidth: epilogue.pooled ? x[3] : nil)
            }
            /// The SGD step a fused node takes: on its third operand (the parameter), with its fourth
            /// (the velocity) when there is one; and the rate as given.
            func fusedStep(_ update: OptimizerUpdate, _ operands: [UnsafeMutablePointer<T>]) throws -> (SGDStep<T>, Double) {
                guard case let .sgd(lr, momentum, nesterov, decay) = update else { throw RuntimeError("only sgd steps are fused into \(node.op.name)") }
                return (SGDStep(parameter: operands[2], velocity: operands.count > 3 ? operands[3] : nil, lr: T(lr), momentum: T(momentum),
                                nesterov: nesterov, decay: T(decay)), lr)
            }
            var made: Instruction<T>?
            switch node.op {
            case .input, .target, .parameter, .state: break
            case .softmax:
                made = .softmax(x: operands[0], y: results[0], rows: resultDims[0][0], columns: count(resultDims[0]) / max(1, resultDims[0][0]))
            case .softmaxGrad:
                made = .softmaxGrad(y: operands[0], dy: operands[1], dx: results[0], rows: resultDims[0][0], columns: count(resultDims[0]) / max(1, resultDims[0][0]))
            case .matmul(let ta, let tb):
                let a = operandDims[0], b = operandDims[1]
                let m = ta ? a[1] : a[0], k = ta ? a[0] : a[1], n = tb ? b[0] : b[1]
                made = .gemm(transA: ta, transB: tb, m: m, n: n, k: k, a: operands[0], lda: a[1], b: operands[1], ldb: b[1],
                             c: results[0], ldc: n, bias: nil, activation: .identity,
                             packedB: packedWeight(node.operands[1], transB: tb, k: k, n: n, ldb: b[1]))
            case .matmulUpdate(let ta, let tb, let update):
                let a = operandDims[0], b = operandDims[1]
                let m = ta ? a[1] : a[0], k = ta ? a[0] : a[1], n = tb ? b[0] : b[1]
                let (step, lr) = try fusedStep(update, operands)
                made = .gemmUpdate(transA: ta, transB: tb, m: m, n: n, k: k, a: operands[0], lda: a[1], b: operands[1], ldb: b[1],
                                   c: results[0], update: step, lr: lr)
            case .dense(let f, let bias):
                let a = operandDims[0], b = operandDims[1]
                made = .gemm(transA: false, transB: false, m: a[0], n: b[1], k: a[1], a: operands[0], lda: a[1], b: operands[1], ldb: b[1],
                             c: results[0], ldc: b[1], bias: bias ? operands[2] : nil, activation: try fused(f),
                             packedB: packedWeight(node.operands[1], transB: false, k: a[1], n: b[1], ldb: b[1]))
            case .biasAdd:
                let (outer, channels, inner) = channelLayout(operandDims[0])
                made = .biasAdd(x: operands[0], b: operands[1], y: results[0], outer: outer, channels: channels, inner: inner)
            case .activation(let f):
                made = .activation(f, x: operands[0], y: results[0], count: count(resultDims[0]))
            case .activationGrad(let f):
                made = .activationGrad(f, v: operands[0], dy: operands[1], dx: results[0], count: count(resultDims[0]))
            case .activationGradBias(let f, let bias):
                let (outer, channels, inner) = channelLayout(operandDims[0])
                if bias {
                    made = .activationGradBias(try fused(f, backward: true), y: operands[0], dy: operands[1], dz: results[0], db: results[1], outer: outer, channels: channels, inner: inner)
                } else {
                    made = .activationGrad(try fused(f, backward: true), v: operands[0], dy: operands[1], dx: results[0], count: count(resultDims[0]))
                }
            case .activationGradBiasUpdate(let f, let update):
                let (outer, channels, inner) = channelLayout(operandDims[0])
                let (step, lr) = try fusedStep(update, operands)
                made = .activationGradBiasUpdate(try fused(f, backward: true), y: operands[0], dy: operands[1], dz: results[0], db: results[1],
                                                 outer: outer, channels: channels, inner: inner, update: step, lr: lr)
            case .add: made = .add(a: operands[0], b: operands[1], c: results[0], count: count(resultDims[0]))
            case .subtract: made = .subtract(a: operands[0], b: operands[1], c: results[0], count: count(resultDims[0]))
            case .multiply: made = .multiply(a: operands[0], b: operands[1], c: results[0], count: count(resultDims[0]))
            case .scale(let factor): made = .scale(x: operands[0], y: results[0], factor: T(factor), count: count(resultDims[0]))
            case .constant(let value):
                // Written once, here: the plan gives constants buffers of their own.
                results[0].pointee = T(value)
            case .biasGrad:
                let (outer, channels, inner) = channelLayout(operandDims[0])
                made = .biasGrad(dy: operands[0], db: results[0], outer: outer, channels: channels, inner: inner)
            case .sumAll: made = .sumAll(x: operands[0], y: results[0], count: count(operandDims[0]), mean: false)
            case .meanAll: made = .sumAll(x: operands[0], y: results[0], count: count(operandDims[0]), mean: true)
            case .broadcast(let mean): made = .broadcast(s: operands[0], y: results[0], count: count(resultDims[0]), mean: mean)
            case .reshape: made = operands[0] == results[0] ? nil : .copy(x: operands[0], y: results[0], count: count(resultDims[0]))
            case .softmaxCrossEntropy:
                made = .softmaxCrossEntropy(logits: operands[0], labels: operands[1], loss: results[0], rows: operandDims[0][0], classes: operandDims[0][1])
            case .softmaxCrossEntropyGrad:
                made = .softmaxCrossEntropyGrad(logits: operands[0], labels: operands[1], dLoss: operands[2], dz: results[0], rows: operandDims[0][0], classes: operandDims[0][1])
            case .crossEntropy:
                made = .crossEntropy(p: operands[0], labels: operands[1], loss: results[0], rows: operandDims[0][0], classes: operandDims[0][1])
            case .crossEntropyGrad:
                made = .crossEntropyGrad(p: operands[0], labels: operands[1], dLoss: operands[2], dp: results[0], rows: operandDims[0][0], classes: operandDims[0][1])
            case .binaryCrossEntropy: made = .binaryCrossEntropy(p: operands[0], y: operands[1], loss: results[0], count: count(operandDims[0]))
            case .binaryCrossEntropyGrad:
                made = .binaryCrossEntropyGrad(p: operands[0], y: operands[1], dLoss: operands[2], dp: results[0], count: count(operandDims[0]))
            case .squaredError(let mean):
                made = .squaredError(p: operands[0], y: operands[1], loss: results[0], count: count(operandDims[0]), mean: mean)
            case .squaredErrorWithGrad(let mean):
                made = .squaredErrorWithGrad(p: operands[0], y: operands[1], dLoss: operands[2], loss: results[0], dp: results[1],
                                             count: count(operandDims[0]), mean: mean)
            case .update(let update):
                let n = count(operandDims[0])
                switch update {
                case let .sgd(lr, momentum, nesterov, decay):
                    made = .sgd(p: operands[0], g: operands[1], velocity: operands.count > 2 ? operands[2] : nil, count: n,
                                lr: lr, momentum: T(momentum), nesterov: nesterov, decay: T(decay))
                case let .adam(lr, beta1, beta2, eps, decay):
                    made = .adam(p: operands[0], g: operands[1], m: operands[2], v: operands[3], count: n, lr: lr, beta1: beta1, beta2: beta2, eps: eps, decay: decay)
                }
            case .conv2d(let g):
                let shape = convolutionShape(input: operandDims[0], weight: operandDims[1], g)
                made = .convolution(shape, x: operands[0], weight: operands[1], bias: nil, activation: .identity, y: results[0], pooled: nil,
                                    outputRead: true, transformed: winogradWeight(node.operands[1], shape))
            case .convFused(let g, let f, let bias, let pooled):
                let shape = convolutionShape(input: operandDims[0], weight: operandDims[1], g)
                made = .convolution(shape, x: operands[0], weight: operands[1], bias: bias ? operands[2] : nil, activation: try fused(f),
                                    y: results[0], pooled: pooled ? results[1] : nil, outputRead: read.contains(node.results[0].index),
                                    transformed: winogradWeight(node.operands[1], shape))
            case .conv2dInputGrad(let g):  // (dy, w, x) → dx
                made = .convolutionInputGradient(convolutionShape(input: operandDims[2], weight: operandDims[1], g),
                                                 dy: operands[0], weight: operands[1], x: operands[2], dx: results[0])
            case .conv2dWeightGrad(let g):  // (x, dy, w) → dw
                made = .convolutionWeightGradient(convolutionShape(input: operandDims[0], weight: operandDims[2], g),
                                                  x: operands[0], dy: operands[1], weight: operands[2], dWeight: results[0])
            case .convBackward(let g, let f, let bias, let inputGradient, let pooled):  // (x, w, y, dy) → dw[, db][, dx]
                made = .convolutionBackward(convolutionShape(input: operandDims[0], weight: operandDims[1], g),
                                            x: operands[0], weight: operands[1], y: operands[2], dy: operands[3], activation: try fused(f, backward: true),
                                            pooled: pooled,
                                            dWeight: results[0], dBias: bias ? results[1] : nil, dx: inputGradient ? results[bias ? 2 : 1] : nil)
            case .pool(let kind, let window, let stride, let padding):
                let shape = poolShape(input: operandDims[0], window: window, stride: stride, padding: padding)
                switch kind {
                case .max: made = .maxPool(shape, x: operands[0], y: results[0])
                case .average: made = .averagePool(shape, x: operands[0], y: results[0])
                }
            case .poolGrad(let kind, let window, let stride, let padding):  // (x, y, dy) → dx
                let shape = poolShape(input: operandDims[0], window: window, stride: stride, padding: padding)
                switch kind {
                case .max: made = .maxPoolGradient(shape, x: operands[0], dy: operands[2], dx: results[0])
                case .average: made = .averagePoolGradient(shape, dy: operands[2], dx: results[0])
                }
            case .dropoutMask(let p):
                made = .dropoutMask(mask: results[0], count: count(resultDims[0]), probability: p)
            case .concat:
                let rows = operandDims[0][0]
                made = .concat(a: operands[0], b: operands[1], c: results[0], rows: rows,
                               aRow: count(operandDims[0]) / max(1, rows), bRow: count(operandDims[1]) / max(1, rows))
            case .sliceChannels(let start, _):
                // Along axis 1 of [N, C, inner…]: a contiguous run of each sample's row.
                let rows = operandDims[0][0], inner = count(Array(operandDims[0].dropFirst(2)))
                made = .slice(x: operands[0], y: results[0], rows: rows, row: count(operandDims[0]) / max(1, rows),
                              start: start * inner, count: count(resultDims[0]) / max(1, rows))
            case .batchNorm(let eps, let momentum, let epilogue):
                let (outer, channels, inner) = channelLayout(operandDims[0])
                made = .batchNorm(x: operands[0], gamma: operands[1], beta: operands[2], runningMean: operands[3], runningVar: operands[4],
                                  y: results[0], mean: results[1], invstd: results[2], outer: outer, channels: channels, inner: inner,
                                  eps: eps, momentum: momentum, epilogue: try normEpilogue(epilogue, residual: operands.count > 5 ? operands[5] : nil))
            case .batchNormGrad(let epilogue):
                let (outer, channels, inner) = channelLayout(operandDims[0])
                made = .batchNormGrad(x: operands[0], gamma: operands[1], beta: operands[2], mean: operands[3], invstd: operands[4], dy: operands[5],
                                      dx: results[0], dGamma: results[1], dBeta: results[2], dResidual: results.count > 3 ? results[3] : nil,
                                      outer: outer, channels: channels, inner: inner,
                                      epilogue: try normEpilogue(epilogue, residual: operands.count > 6 ? operands[6] : nil))
            case .batchNormInference(let eps):
                let (outer, channels, inner) = channelLayout(operandDims[0])
                made = .batchNormInference(x: operands[0], gamma: operands[1], beta: operands[2], mean: operands[3], variance: operands[4],
                                           y: results[0], outer: outer, channels: channels, inner: inner, eps: eps)
            case .batchNormFold(let eps, let convolution, let bias):
                let w = operandDims[0]
                let s = bias ? 2 : 1
                made = .batchNormFold(weight: operands[0], bias: bias ? operands[1] : nil, gamma: operands[s], beta: operands[s + 1],
                                      mean: operands[s + 2], variance: operands[s + 3], foldedWeight: results[0], foldedBias: results[1],
                                      rows: w[0], columns: count(w) / max(1, w[0]), convolution: convolution, eps: eps)
            case .logSoftmax:
                made = .logSoftmax(x: operands[0], y: results[0], rows: resultDims[0][0], columns: count(resultDims[0]) / max(1, resultDims[0][0]))
            case .logSoftmaxGrad:
                made = .logSoftmaxGrad(y: operands[0], dy: operands[1], dx: results[0], rows: resultDims[0][0], columns: count(resultDims[0]) / max(1, resultDims[0][0]))
            case .nllLoss:
                made = .nllLoss(logp: operands[0], labels: operands[1], loss: results[0], rows: operandDims[0][0], classes: operandDims[0][1])
            case .nllLossGrad:
                made = .nllLossGrad(labels: operands[1], dLoss: operands[2], dlogp: results[0], rows: operandDims[0][0], classes: operandDims[0][1])
            case .prelu:
                let (outer, channels, inner) = channelLayout(operandDims[0])
                made = .prelu(x: operands[0], slopes: operands[1], y: results[0], outer: outer, channels: channels, inner: inner,
                              shared: count(operandDims[1]) == 1)
            case .preluGrad:
                let (outer, channels, inner) = channelLayout(operandDims[0])
                made = .preluGrad(x: operands[0], slopes: operands[1], dy: operands[2], dx: results[0], dSlopes: results[1],
                                  outer: outer, channels: channels, inner: inner, shared: count(operandDims[1]) == 1)
            case .pad(let spec):
                let x = operandDims[0]
                made = .pad(x: operands[0], y: results[0], planes: x[0] * x[1], height: x[2], width: x[3], spec: spec)
            case .padGrad(let spec):
                let x = operandDims[1]
                made = .padGrad(dy: operands[0], dx: results[0], planes: x[0] * x[1], height: x[2], width: x[3], spec: spec)
            }
            if let made {
                instructions.append(made)
                nodeOf.append(index)
            }
        }
        return Executable(instructions: instructions, nodeOfInstruction: nodeOf, batch: batch)
    }
}

// The interpreter's operations for the tiny kernels (Tiny.swift), made with the kernels of the layer's
// width, the tutorials' activations as literals.

struct TinyForwardOperation<T: KernelScalar>: TinyKernelsUser {
    let product: TinyProduct<T>, activation: ActivationFunction

    func use<K: TinyKernels>(_: K.Type) -> Operation<T> {
        let product = product, activation = activation
        switch activation {
        case .identity: return Operation { _ in K.forward(product, .identity) }
        case .tanh: return Operation { _ in K.forward(product, .tanh) }
        case .sigmoid: return Operation { _ in K.forward(product, .sigmoid) }
        case .relu: return Operation { _ in K.forward(product, .relu) }
        default: return Operation { _ in K.forward(product, activation) }
        }
    }
}

struct TinyWeightStepOperation<T: KernelScalar>: TinyKernelsUser {
    let product: TinyProduct<T>, parameter: UnsafeMutablePointer<T>, lr: Double

    func use<K: TinyKernels>(_: K.Type) -> Operation<T> {
        let product = product, parameter = parameter, lr = lr
        return Operation { session in K.weightGradientStep(product, parameter: parameter, lr: session.scheduledRate(lr)) }
    }
}

struct TinyBiasStepOperation<T: KernelScalar>: TinyKernelsUser {
    let step: TinyBiasStep<T>, activation: ActivationFunction, lr: Double

    func use<K: TinyKernels>(_: K.Type) -> Operation<T> {
        let step = step, activation = activation, lr = lr
        switch activation {
        case .identity: return Operation { session in K.biasStep(step, .identity, lr: session.scheduledRate(lr)) }
        case .tanh: return Operation { session in K.biasStep(step, .tanh, lr: session.scheduledRate(lr)) }
        case .sigmoid: return Operation { session in K.biasStep(step, .sigmoid, lr: session.scheduledRate(lr)) }
        case .relu: return Operation { session in K.biasStep(step, .relu, lr: session.scheduledRate(lr)) }
        default: return Operation { session in K.biasStep(step, activation, lr: session.scheduledRate(lr)) }
        }
    }
}

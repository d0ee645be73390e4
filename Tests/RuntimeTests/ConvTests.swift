import Testing
import IR
@testable import Runtime

// MARK: - Helpers (file-private: other test files define their own)

/// Deterministic pseudo-random values in [-1, 1).
private func convValues(_ count: Int, seed: UInt64) -> [Double] {
    var rng = MT19937(seed: seed)
    return (0..<count).map { _ in rng.uniform(-1, 1) }
}

/// Runs `body` with a mutable pointer to a scratch array of `count` elements filled with NaN plus a
/// guard zone; returns whether the guard zone is intact afterwards.
private func withConvScratch<T: KernelScalar>(_ type: T.Type, _ count: Int, _ body: (UnsafeMutablePointer<T>) -> Void) -> Bool {
    let guardCount = 32
    var buf = [T](repeating: T.nan, count: count + guardCount)
    for i in count..<(count + guardCount) { buf[i] = 12345 }
    buf.withUnsafeMutableBufferPointer { b in
        if let base = b.baseAddress { body(base) }
    }
    return buf[count...].allSatisfy { $0 == 12345 }
}

private func convMaxRelError(_ a: [Double], _ b: [Double]) -> Double {
    var worst = 0.0
    let scale = max(1.0, b.map { abs($0) }.max() ?? 0)
    for (x, y) in zip(a, b) {
        let e = abs(x - y) / scale
        if !(e <= worst) { worst = e.isNaN ? .infinity : e }
    }
    return a.count == b.count ? worst : .infinity
}

// MARK: - Naive reference in Double

private struct ConvReference {
    let s: Conv2DShape
    func xIndex(_ n: Int, _ c: Int, _ y: Int, _ x: Int) -> Int { ((n * s.inChannels + c) * s.height + y) * s.width + x }
    func yIndex(_ n: Int, _ c: Int, _ y: Int, _ x: Int) -> Int { ((n * s.outChannels + c) * s.outHeight + y) * s.outWidth + x }
    /// ci: the input channel within the output channel's group (weights are [Cout, Cin/G, kh, kw]).
    func wIndex(_ co: Int, _ ci: Int, _ i: Int, _ j: Int) -> Int { ((co * (s.inChannels / s.groups) + ci) * s.kernelH + i) * s.kernelW + j }
    /// The input channels of output channel co's group.
    func inputs(of co: Int) -> Range<Int> {
        let g = co / (s.outChannels / s.groups), width = s.inChannels / s.groups
        return (g * width)..<((g + 1) * width)
    }

    func forward(x: [Double], w: [Double], b: [Double]?, act: ActivationFunction) -> [Double] {
        var y = [Double](repeating: 0, count: s.outputCount)
        for n in 0..<s.batch {
            for co in 0..<s.outChannels {
                for oy in 0..<s.outHeight {
                    for ox in 0..<s.outWidth {
                        var acc = b?[co] ?? 0
                        let group = inputs(of: co)
                        for ci in group {
                            for i in 0..<s.kernelH {
                                for j in 0..<s.kernelW {
                                    let iy = oy * s.strideH - s.padH + i * s.dilationH, ix = ox * s.strideW - s.padW + j * s.dilationW
                                    if iy < 0 || iy >= s.height || ix < 0 || ix >= s.width { continue }
                                    acc += x[xIndex(n, ci, iy, ix)] * w[wIndex(co, ci - group.lowerBound, i, j)]
                                }
                            }
                        }
                        y[yIndex(n, co, oy, ox)] = act.apply(acc)
                    }
                }
            }
        }
        return y
    }

    func backward(x: [Double], w: [Double], y: [Double], dy: [Double], act: ActivationFunction)
        -> (dx: [Double], dw: [Double], db: [Double]) {
        var dx = [Double](repeating: 0, count: s.inputCount)
        var dw = [Double](repeating: 0, count: s.weightCount)
        var db = [Double](repeating: 0, count: s.outChannels)
        for n in 0..<s.batch {
            for co in 0..<s.outChannels {
                for oy in 0..<s.outHeight {
                    for ox in 0..<s.outWidth {
                        let yi = yIndex(n, co, oy, ox)
                        let g = dy[yi] * act.derivative(kept: y[yi])
                        db[co] += g
                        let group = inputs(of: co)
                        for ci in group {
                            for i in 0..<s.kernelH {
                                for j in 0..<s.kernelW {
                                    let iy = oy * s.strideH - s.padH + i * s.dilationH, ix = ox * s.strideW - s.padW + j * s.dilationW
                                    if iy < 0 || iy >= s.height || ix < 0 || ix >= s.width { continue }
                                    dw[wIndex(co, ci - group.lowerBound, i, j)] += g * x[xIndex(n, ci, iy, ix)]
                                    dx[xIndex(n, ci, iy, ix)] += g * w[wIndex(co, ci - group.lowerBound, i, j)]
                                }
                            }
                        }
                    }
                }
            }
        }
        return (dx, dw, db)
    }
}

// MARK: - Running the kernels on [Double] data in type T

private struct ConvResult {
    var y: [Double]
    var dx: [Double]
    var dw: [Double]
    var db: [Double]
    var scratchIntact: Bool
}

private func runConv<T: KernelScalar>(_ type: T.Type, _ s: Conv2DShape, x xd: [Double], w wd: [Double], b bd: [Double]?,
                                      dy dyd: [Double], act: ActivationFunction, fusedBackward: Bool,
                                      context: GEMMContext, backward: Bool = true) -> ConvResult {
    let x = xd.map { T($0) }, w = wd.map { T($0) }, bias = bd.map { $0.map { T($0) } }, dy = dyd.map { T($0) }
    var y = [T](repeating: T.nan, count: s.outputCount)
    var dx = [T](repeating: T.nan, count: s.inputCount)
    var dw = [T](repeating: T.nan, count: s.weightCount)
    var db = [T](repeating: T.nan, count: s.outChannels)
    var intact = true
    x.withUnsafeBufferPointer { xb in
        w.withUnsafeBufferPointer { wb in
            y.withUnsafeMutableBufferPointer { yb in
                guard let xp = xb.baseAddress, let wp = wb.baseAddress, let yp = yb.baseAddress else { return }
                let ok = withConvScratch(T.self, conv2DForwardScratchCount(s, threads: context.threads)) { scratch in
                    if let bias {
                        bias.withUnsafeBufferPointer { bb in
                            conv2DForward(s, x: xp, weight: wp, bias: bb.baseAddress, activation: act, y: yp,
                                          scratch: scratch, context: context)
                        }
                    } else {
                        conv2DForward(s, x: xp, weight: wp, bias: nil, activation: act, y: yp, scratch: scratch, context: context)
                    }
                }
                intact = intact && ok
            }
        }
    }
    if backward {
        // Unfused backward takes dZ directly: premultiply dY by act'(Y) here in T.
        let dyUsed: [T] = fusedBackward ? dy : zip(dy, y).map { $0 * act.derivative(kept: $1) }
        x.withUnsafeBufferPointer { xb in
            w.withUnsafeBufferPointer { wb in
                dyUsed.withUnsafeBufferPointer { dyb in
                    y.withUnsafeBufferPointer { yb in
                        dx.withUnsafeMutableBufferPointer { dxb in
                            dw.withUnsafeMutableBufferPointer { dwb in
                                db.withUnsafeMutableBufferPointer { dbb in
                                    guard let xp = xb.baseAddress, let wp = wb.baseAddress, let dyp = dyb.baseAddress else { return }
                                    let ok = withConvScratch(T.self, conv2DBackwardScratchCount(s, threads: context.threads)) { scratch in
                                        conv2DBackward(s, x: xp, weight: wp, dy: dyp,
                                                       activation: fusedBackward ? act : .identity,
                                                       y: fusedBackward ? yb.baseAddress : nil,
                                                       dx: dxb.baseAddress, dWeight: dwb.baseAddress, dBias: dbb.baseAddress,
                                                       scratch: scratch, context: context)
                                    }
                                    intact = intact && ok
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    func d(_ a: [T]) -> [Double] { a.map { Double($0) } }
    return ConvResult(y: d(y), dx: d(dx), dw: d(dw), db: d(db), scratchIntact: intact)
}

private let convActivations: [ActivationFunction] = [.identity, .relu, .leakyRelu(alpha: 0.1), .tanh, .sigmoid, .elu(alpha: 0.5), .selu, .clip(low: -0.2, high: 0.3)]

/// (N, Cin, H, W, Cout, kh, kw, stride, pad)
private let convCases: [Conv2DShape] = [
    Conv2DShape(batch: 1, inChannels: 1, height: 1, width: 1, outChannels: 1, kernelH: 1, kernelW: 1),
    Conv2DShape(batch: 3, inChannels: 1, height: 5, width: 7, outChannels: 2, kernelH: 3, kernelW: 3, stride: 1, padding: 1),
    Conv2DShape(batch: 1, inChannels: 3, height: 17, width: 17, outChannels: 1, kernelH: 3, kernelW: 3, stride: 2, padding: 0),
    Conv2DShape(batch: 3, inChannels: 2, height: 8, width: 11, outChannels: 3, kernelH: 2, kernelW: 3, stride: 3, padding: 2),
    Conv2DShape(batch: 3, inChannels: 3, height: 6, width: 5, outChannels: 4, kernelH: 1, kernelW: 1),
    Conv2DShape(batch: 2, inChannels: 2, height: 7, width: 6, outChannels: 3, kernelH: 5, kernelW: 4, stride: 1, padding: 2),
    Conv2DShape(batch: 1, inChannels: 2, height: 3, width: 4, outChannels: 2, kernelH: 3, kernelW: 3, stride: 1, padding: 2),
    Conv2DShape(batch: 3, inChannels: 1, height: 9, width: 4, outChannels: 5, kernelH: 4, kernelW: 2, stride: 2, padding: 1),
    Conv2DShape(batch: 2, inChannels: 3, height: 6, width: 6, outChannels: 2, kernelH: 1, kernelW: 1, stride: 2, padding: 1),
    Conv2DShape(batch: 2, inChannels: 2, height: 10, width: 9, outChannels: 2, kernelH: 3, kernelW: 2, strideH: 2, strideW: 1, padH: 0, padW: 1),
    // Weight gradient computed transposed (K = 9 < Cout = 16), like the first layer of the Fashion-MNIST CNN.
    Conv2DShape(batch: 3, inChannels: 1, height: 6, width: 7, outChannels: 16, kernelH: 3, kernelW: 3, stride: 1, padding: 1),
    // Several samples per weight-gradient GEMM and more than one group per chunk.
    Conv2DShape(batch: 7, inChannels: 3, height: 17, width: 17, outChannels: 4, kernelH: 3, kernelW: 3, stride: 1, padding: 1),
    // Planes large enough that the direct weight gradient holds two samples a pass: full and partial groups.
    Conv2DShape(batch: 7, inChannels: 1, height: 62, width: 62, outChannels: 5, kernelH: 3, kernelW: 3, stride: 1, padding: 1),
    // One image (and two) on more threads than images: the direct path splits the output channels
    // over the threads (ragged: nine channels are three blocks of four, the last short).
    Conv2DShape(batch: 1, inChannels: 3, height: 20, width: 19, outChannels: 9, kernelH: 3, kernelW: 3, stride: 1, padding: 1),
    Conv2DShape(batch: 2, inChannels: 2, height: 16, width: 24, outChannels: 13, kernelH: 3, kernelW: 3, stride: 1, padding: 1),
    // A 7-wide output: im2col and the GEMM rather than the direct path (16-wide rows would waste over half).
    Conv2DShape(batch: 3, inChannels: 5, height: 7, width: 7, outChannels: 6, kernelH: 3, kernelW: 3, stride: 1, padding: 1),
    // Grouped and dilated (the general path): groups, dilation, per-axis stride and padding, depthwise.
    Conv2DShape(batch: 3, inChannels: 4, height: 9, width: 8, outChannels: 6, kernelH: 3, kernelW: 2, strideH: 2, strideW: 1, padH: 1, padW: 0, groups: 2),
    Conv2DShape(batch: 2, inChannels: 3, height: 11, width: 10, outChannels: 2, kernelH: 3, kernelW: 3, strideH: 1, strideW: 1, padH: 2, padW: 2,
                dilationH: 2, dilationW: 2),
    Conv2DShape(batch: 5, inChannels: 6, height: 7, width: 9, outChannels: 6, kernelH: 3, kernelW: 3, strideH: 1, strideW: 2, padH: 1, padW: 3,
                dilationH: 1, dilationW: 3, groups: 6),
    Conv2DShape(batch: 1, inChannels: 4, height: 5, width: 5, outChannels: 8, kernelH: 1, kernelW: 1, strideH: 1, strideW: 1, padH: 0, padW: 0, groups: 4),
] + winogradCases

/// 3×3, stride-1 convolutions with at least eight channels in and out: the Winograd path (f32), single
/// images (output channels split over the threads) and batches (an image per thread; two images on
/// three threads are split). The Fashion CNN's second layer (on a smaller image); odd output sizes
/// (a last tile half outside), input channels not a multiple of eight, output channels not a
/// multiple of the 16-channel blocks, per-axis padding, a 2×3 output.
private let winogradCases: [Conv2DShape] = [
    Conv2DShape(batch: 1, inChannels: 16, height: 10, width: 10, outChannels: 32, kernelH: 3, kernelW: 3, stride: 1, padding: 1),
    Conv2DShape(batch: 1, inChannels: 9, height: 7, width: 5, outChannels: 13, kernelH: 3, kernelW: 3, stride: 1, padding: 1),
    Conv2DShape(batch: 2, inChannels: 17, height: 6, width: 9, outChannels: 8, kernelH: 3, kernelW: 3, strideH: 1, strideW: 1, padH: 2, padW: 0),
    Conv2DShape(batch: 1, inChannels: 8, height: 4, width: 5, outChannels: 33, kernelH: 3, kernelW: 3, stride: 1, padding: 0),
    Conv2DShape(batch: 3, inChannels: 12, height: 7, width: 6, outChannels: 16, kernelH: 3, kernelW: 3, stride: 1, padding: 1),
    // Outputs of 128 positions or more: the weight gradient by Winograd too (even output sizes: dZ
    // transposed at once, without padding; odd ones: row by row, with padded channels).
    Conv2DShape(batch: 2, inChannels: 8, height: 16, width: 12, outChannels: 16, kernelH: 3, kernelW: 3, stride: 1, padding: 0),
    Conv2DShape(batch: 2, inChannels: 9, height: 11, width: 13, outChannels: 13, kernelH: 3, kernelW: 3, stride: 1, padding: 1),
]

@Suite struct ConvTests {
    @Test func outputSizeFollowsPyTorch() {
        let s = Conv2DShape(batch: 1, inChannels: 1, height: 28, width: 28, outChannels: 1, kernelH: 3, kernelW: 3, stride: 2, padding: 1)
        #expect(s.outHeight == 14 && s.outWidth == 14)
        let t = Conv2DShape(batch: 1, inChannels: 1, height: 8, width: 11, outChannels: 1, kernelH: 2, kernelW: 3, stride: 3, padding: 2)
        #expect(t.outHeight == 4 && t.outWidth == 5)
        #expect(!Conv2DShape(batch: 1, inChannels: 1, height: 2, width: 2, outChannels: 1, kernelH: 5, kernelW: 5).isValid)
        #expect(Conv2DShape(batch: 1, inChannels: 1, height: 6, width: 7, outChannels: 16, kernelH: 3, kernelW: 3).weightGradientTransposed)
        #expect(!Conv2DShape(batch: 1, inChannels: 1, height: 6, width: 7, outChannels: 2, kernelH: 3, kernelW: 3).weightGradientTransposed)
        #expect(conv2DForwardScratchCount(Conv2DShape(batch: 1, inChannels: 1, height: 2, width: 2, outChannels: 1, kernelH: 5, kernelW: 5), threads: 2) == 0)
        // Both forward orientations occur among the reference cases (the 16- and 2-channel shapes here).
        #expect(Conv2DShape(batch: 1, inChannels: 1, height: 6, width: 7, outChannels: 16, kernelH: 3, kernelW: 3, stride: 1, padding: 1).forwardTransposed)
        #expect(!Conv2DShape(batch: 1, inChannels: 1, height: 5, width: 7, outChannels: 2, kernelH: 3, kernelW: 3, stride: 1, padding: 1).forwardTransposed)
    }

    @Test func transposeMatchesDefinition() {
        for (rows, columns) in [(1, 1), (8, 8), (13, 16), (17, 5), (196, 32), (3, 24)] {
            let src = (0..<rows * columns).map { Float($0) * 0.5 - 3 }
            var dst = [Float](repeating: .nan, count: rows * columns)
            src.withUnsafeBufferPointer { s in
                dst.withUnsafeMutableBufferPointer { d in transpose(s.baseAddress!, rows: rows, columns: columns, into: d.baseAddress!) }
            }
            #expect((0..<rows).allSatisfy { r in (0..<columns).allSatisfy { c in dst[c * rows + r] == src[r * columns + c] } },
                    "\(rows)×\(columns)")
        }
    }

    /// A single image split over the threads gives each part a zone of the scratch at
    /// `ScratchZones`' stride: on every case and thread count, a zone holds what its part writes
    /// (the direct path's layout and the Winograd path's), so parts never share memory.
    @Test func scratchZonesHoldEachPart() {
        for s in convCases where s.directForward || s.usesWinograd {
            for threads in 1...3 {
                let stride = ScratchZones(count: conv2DForwardScratchCount(s, threads: threads), threads: threads).stride
                let d = DirectForward(s)
                #expect(!s.directForward || stride >= d.weights + d.perThread, "\(s) \(threads)")
                #expect(!s.usesWinograd || stride >= WinogradForward(s).zone, "\(s) \(threads)")
            }
        }
    }

    /// The Winograd cases take that path, and no other case does.
    @Test func winogradCasesTakeTheWinogradPath() {
        #expect(winogradCases.allSatisfy { $0.usesWinograd })
        #expect(winogradCases.filter { $0.directWeightGradient && $0.winogradWeightGradient }.count == 2)
        #expect(!convCases.dropLast(winogradCases.count).contains { $0.usesWinograd })
    }

    /// Every case and activation against the f64 reference, on one, two and three threads (the
    /// reference computed once for all three: it dominated the suite's time).
    @Test func matchesReference() {
        let contexts = [1, 2, 3].map { threads in
            let context = GEMMContext(threads: threads)
            // Small images split over the threads too (in use, only large ones are).
            context.directSplitMinimum = 0
            return context
        }
        for (ci, s) in convCases.enumerated() {
            let ref = ConvReference(s: s)
            let x = convValues(s.inputCount, seed: UInt64(10 + ci))
            let w = convValues(s.weightCount, seed: UInt64(100 + ci))
            let b = convValues(s.outChannels, seed: UInt64(200 + ci))
            let dy = convValues(s.outputCount, seed: UInt64(300 + ci))
            for (ai, act) in convActivations.enumerated() {
                let bias: [Double]? = (ci + ai) % 3 == 2 ? nil : b
                let fused = (ci + ai) % 2 == 0
                let yRef = ref.forward(x: x, w: w, b: bias, act: act)
                let gRef = ref.backward(x: x, w: w, y: yRef, dy: dy, act: act)
                var g32: (y: [Double], gradients: (dx: [Double], dw: [Double], db: [Double]))? = nil
                for context in contexts {
                    let label = "\(s) \(act) \(context.threads) threads"
                    let r64 = runConv(Double.self, s, x: x, w: w, b: bias, dy: dy, act: act, fusedBackward: fused, context: context)
                    #expect(r64.scratchIntact, "\(label)")
                    #expect(convMaxRelError(r64.y, yRef) < 1e-12, "f64 y \(label)")
                    #expect(convMaxRelError(r64.dx, gRef.dx) < 1e-12, "f64 dx \(label)")
                    #expect(convMaxRelError(r64.dw, gRef.dw) < 1e-12, "f64 dw \(label)")
                    #expect(convMaxRelError(r64.db, gRef.db) < 1e-12, "f64 db \(label)")
                    let r32 = runConv(Float.self, s, x: x, w: w, b: bias, dy: dy, act: act, fusedBackward: fused, context: context)
                    // f32 backward sees act'(y) of the f32 forward output; compare with the reference run on
                    // that y (again only where this thread count's y differs from the last one's).
                    if g32?.y != r32.y { g32 = (r32.y, ref.backward(x: x, w: w, y: r32.y, dy: dy, act: act)) }
                    guard let g = g32?.gradients else { continue }
                    #expect(r32.scratchIntact, "\(label)")
                    #expect(convMaxRelError(r32.y, yRef) < 1e-5, "f32 y \(label)")
                    #expect(convMaxRelError(r32.dx, g.dx) < 1e-4, "f32 dx \(label)")
                    #expect(convMaxRelError(r32.dw, g.dw) < 1e-4, "f32 dw \(label)")
                    #expect(convMaxRelError(r32.db, g.db) < 1e-4, "f32 db \(label)")
                    // The other vector width (256- or 512-bit kernels, whichever the build does not pick):
                    // the same values, bit for bit.
                    context.wideKernels.toggle()
                    let other = runConv(Float.self, s, x: x, w: w, b: bias, dy: dy, act: act, fusedBackward: fused, context: context)
                    context.wideKernels.toggle()
                    #expect(other.y == r32.y && other.dx == r32.dx && other.dw == r32.dw && other.db == r32.db, "f32 widths \(label)")
                }
            }
        }
    }

    /// A convolution with its 2×2 max pool fused (forward: the pool as a second output; backward: dY
    /// given as the pool's output gradient) gives the values of the separate kernels bit for bit, on
    /// every path (direct, split over the threads, GEMM, general) and both scalar types.
    @Test(arguments: [1, 2, 3])
    func pooledMatchesSeparateKernels(threads: Int) {
        let context = GEMMContext(threads: threads)
        context.directSplitMinimum = 0
        func check<T: KernelScalar>(_: T.Type, _ s: Conv2DShape, seed: UInt64) {
            let pool = Pool2DShape(batch: s.batch, channels: s.outChannels, height: s.outHeight, width: s.outWidth, kernelH: 2, kernelW: 2)
            let x = convValues(s.inputCount, seed: seed).map { T($0) }, w = convValues(s.weightCount, seed: seed + 1).map { T($0) }
            let b = convValues(s.outChannels, seed: seed + 2).map { T($0) }
            let dp = convValues(pool.outputCount, seed: seed + 3).map { T($0) }
            var y = [T](repeating: .nan, count: s.outputCount), yFused = y
            var p = [T](repeating: .nan, count: pool.outputCount), pFused = p, pAlone = p
            var yUnread = [T](repeating: .nan, count: s.outputCount)
            var dh = [T](repeating: .nan, count: s.outputCount)
            var grads = [[T]](repeating: [], count: 2)
            var scratch = [T](repeating: .nan, count: max(conv2DForwardScratchCount(s, threads: threads), conv2DBackwardScratchCount(s, threads: threads)))
            scratch.withUnsafeMutableBufferPointer { sc in
                let sp = sc.baseAddress!
                conv2DForward(s, x: x, weight: w, bias: b, activation: .relu, y: &y, scratch: sp, context: context)
                maxPool2DForward(pool, x: y, y: &p, context: context)
                conv2DForward(s, x: x, weight: w, bias: b, activation: .relu, y: &yFused, pooled: &pFused, scratch: sp, context: context)
                // y read by nothing (inference): the direct and Winograd paths make the pool alone.
                conv2DForward(s, x: x, weight: w, bias: b, activation: .relu, y: &yUnread, pooled: &pAlone, outputRead: false,
                              scratch: sp, context: context)
                // The pool alone with no activation, and with NaNs in the input (relu makes them zero,
                // the pool of no activation lets them win): the same bits as y and its pool.
                var xNaN = x
                for i in stride(from: 3, to: xNaN.count, by: 17) { xNaN[i] = .nan }
                for activation in [ActivationFunction.relu, .identity] {
                    for input in [x, xNaN] {
                        var yPlain = [T](repeating: .nan, count: s.outputCount), yIgnored = yPlain
                        var pPlain = [T](repeating: 0, count: pool.outputCount), pOnly = pPlain
                        conv2DForward(s, x: input, weight: w, bias: b, activation: activation, y: &yPlain, scratch: sp, context: context)
                        maxPool2DForward(pool, x: yPlain, y: &pPlain, context: context)
                        conv2DForward(s, x: input, weight: w, bias: b, activation: activation, y: &yIgnored, pooled: &pOnly, outputRead: false,
                                      scratch: sp, context: context)
                        // (Equal with the same sign, or both NaN.)
                        #expect(zip(pPlain, pOnly).allSatisfy { ($0 == $1 && $0.sign == $1.sign) || ($0.isNaN && $1.isNaN) },
                                "pool alone \(s) \(T.self) \(threads) \(activation)")
                    }
                }
                maxPool2DBackward(pool, x: y, dy: dp, dx: &dh, context: context)
                for (i, fused) in [false, true].enumerated() {
                    var dx = [T](repeating: .nan, count: s.inputCount), dw = [T](repeating: .nan, count: s.weightCount)
                    var db = [T](repeating: .nan, count: s.outChannels)
                    conv2DBackward(s, x: x, weight: w, dy: fused ? dp : dh, activation: .relu, y: y, pooled: fused,
                                   dx: &dx, dWeight: &dw, dBias: &db, scratch: sp, context: context)
                    grads[i] = dx + dw + db
                }
            }
            #expect(y == yFused && p == pFused && p == pAlone, "forward \(s) \(T.self) \(threads)")
            #expect(grads[0] == grads[1], "backward \(s) \(T.self) \(threads)")
        }
        for (ci, s) in convCases.enumerated() where s.outHeight >= 2 && s.outWidth >= 2 {
            check(Float.self, s, seed: UInt64(500 + 10 * ci))
            check(Double.self, s, seed: UInt64(500 + 10 * ci))
        }
    }

    /// Gradients of L = Σ r ⊙ act(conv(x, w) + b) against central differences of the forward kernel (f64).
    @Test func gradientsMatchFiniteDifferences() {
        let context = GEMMContext(threads: 2)
        let shapes = [
            Conv2DShape(batch: 2, inChannels: 2, height: 5, width: 4, outChannels: 3, kernelH: 3, kernelW: 2, stride: 1, padding: 1),
            Conv2DShape(batch: 3, inChannels: 1, height: 6, width: 7, outChannels: 2, kernelH: 3, kernelW: 3, stride: 2, padding: 2),
        ]
        for (si, s) in shapes.enumerated() {
            for act in [ActivationFunction.tanh, .sigmoid, .identity] {
                let x = convValues(s.inputCount, seed: UInt64(7 + si))
                let w = convValues(s.weightCount, seed: UInt64(8 + si))
                let b = convValues(s.outChannels, seed: UInt64(9 + si))
                let r = convValues(s.outputCount, seed: UInt64(11 + si))
                func loss(_ x: [Double], _ w: [Double], _ b: [Double]) -> Double {
                    let y = runConv(Double.self, s, x: x, w: w, b: b, dy: r, act: act, fusedBackward: true,
                                    context: context, backward: false).y
                    return zip(y, r).reduce(0) { $0 + $1.0 * $1.1 }
                }
                let g = runConv(Double.self, s, x: x, w: w, b: b, dy: r, act: act, fusedBackward: true, context: context)
                let h = 1e-6
                func check(_ analytic: [Double], _ perturbed: (Int, Double) -> Double, _ what: String) {
                    for i in 0..<analytic.count {
                        let fd = (perturbed(i, h) - perturbed(i, -h)) / (2 * h)
                        #expect(abs(fd - analytic[i]) <= 1e-6 * max(1, abs(fd)), "\(what)[\(i)] \(s) \(act): \(fd) vs \(analytic[i])")
                    }
                }
                check(g.dx, { i, d in var xx = x; xx[i] += d; return loss(xx, w, b) }, "dx")
                check(g.dw, { i, d in var ww = w; ww[i] += d; return loss(x, ww, b) }, "dw")
                check(g.db, { i, d in var bb = b; bb[i] += d; return loss(x, w, bb) }, "db")
            }
        }
    }

    @Test func deterministicForSameThreadCount() {
        let s = Conv2DShape(batch: 13, inChannels: 3, height: 17, width: 15, outChannels: 5, kernelH: 3, kernelW: 3, stride: 1, padding: 1)
        let x = convValues(s.inputCount, seed: 1), w = convValues(s.weightCount, seed: 2)
        let b = convValues(s.outChannels, seed: 3), dy = convValues(s.outputCount, seed: 4)
        for threads in [1, 2] {
            let context = GEMMContext(threads: threads)
            let a = runConv(Float.self, s, x: x, w: w, b: b, dy: dy, act: .relu, fusedBackward: true, context: context)
            let c = runConv(Float.self, s, x: x, w: w, b: b, dy: dy, act: .relu, fusedBackward: true, context: context)
            #expect(a.y == c.y && a.dx == c.dx && a.dw == c.dw && a.db == c.db)
        }
    }

    /// With dZ = dY (no activation, no pool) the kernels read dY in place instead of copying it; each
    /// gradient asked for alone (as the separate input- and weight-gradient ops ask) must equal, bit
    /// for bit, the same gradient from the call that makes all three: the Winograd shapes whose weight
    /// gradient is Winograd's, a direct weight gradient with its bias, and the GEMM path.
    @Test(arguments: [1, 2])
    func eachGradientAloneMatchesTheFullCall(threads: Int) {
        let shapes = winogradCases.suffix(2) + [
            Conv2DShape(batch: 3, inChannels: 2, height: 12, width: 13, outChannels: 5, kernelH: 3, kernelW: 3, stride: 1, padding: 1),
            Conv2DShape(batch: 2, inChannels: 3, height: 7, width: 7, outChannels: 4, kernelH: 3, kernelW: 3, stride: 2, padding: 1),
        ]
        for s in shapes {
            let x = convValues(s.inputCount, seed: 8).map { Float($0) }, w = convValues(s.weightCount, seed: 9).map { Float($0) }
            let dy = convValues(s.outputCount, seed: 10).map { Float($0) }
            let context = GEMMContext(threads: threads)
            /// (dx, dW, dB), each only when asked for.
            func gradients(dx wantDX: Bool, dWeight wantDW: Bool, dBias wantDB: Bool) -> ([Float], [Float], [Float], Bool) {
                var dx = [Float](repeating: .nan, count: s.inputCount), dw = [Float](repeating: .nan, count: s.weightCount)
                var db = [Float](repeating: .nan, count: s.outChannels)
                let intact = withConvScratch(Float.self, conv2DBackwardScratchCount(s, threads: threads)) { scratch in
                    x.withUnsafeBufferPointer { xb in w.withUnsafeBufferPointer { wb in dy.withUnsafeBufferPointer { dyb in
                        dx.withUnsafeMutableBufferPointer { dxb in dw.withUnsafeMutableBufferPointer { dwb in db.withUnsafeMutableBufferPointer { dbb in
                            guard let xp = xb.baseAddress, let wp = wb.baseAddress, let dyp = dyb.baseAddress else { return }
                            conv2DBackward(s, x: xp, weight: wp, dy: dyp, dx: wantDX ? dxb.baseAddress : nil,
                                           dWeight: wantDW ? dwb.baseAddress : nil, dBias: wantDB ? dbb.baseAddress : nil,
                                           scratch: scratch, context: context)
                        } } }
                    } } }
                }
                return (dx, dw, db, intact)
            }
            let all = gradients(dx: true, dWeight: true, dBias: true)
            let inputOnly = gradients(dx: true, dWeight: false, dBias: false)
            let weightOnly = gradients(dx: false, dWeight: true, dBias: false)
            let biasOnly = gradients(dx: false, dWeight: false, dBias: true)
            #expect(all.3 && inputOnly.3 && weightOnly.3 && biasOnly.3, "\(s)")
            #expect(inputOnly.0 == all.0 && weightOnly.1 == all.1 && biasOnly.2 == all.2, "\(s)")
            #expect(!all.0.contains { $0.isNaN } && !all.1.contains { $0.isNaN } && !all.2.contains { $0.isNaN }, "\(s)")
            // Against the f64 reference.
            let reference = runConv(Double.self, s, x: x.map { Double($0) }, w: w.map { Double($0) }, b: nil, dy: dy.map { Double($0) },
                                    act: .identity, fusedBackward: false, context: GEMMContext(threads: 1))
            #expect(convMaxRelError(all.0.map { Double($0) }, reference.dx) < 1e-5, "\(s)")
            #expect(convMaxRelError(all.1.map { Double($0) }, reference.dw) < 1e-5, "\(s)")
            #expect(convMaxRelError(all.2.map { Double($0) }, reference.db) < 1e-5, "\(s)")
        }
    }

    @Test func optionalGradientsAndScratchSizedForMoreThreads() {
        let s = Conv2DShape(batch: 3, inChannels: 2, height: 9, width: 8, outChannels: 3, kernelH: 3, kernelW: 3, stride: 2, padding: 1)
        let x = convValues(s.inputCount, seed: 5).map { Float($0) }, w = convValues(s.weightCount, seed: 6).map { Float($0) }
        let dy = convValues(s.outputCount, seed: 7).map { Float($0) }
        let full = runConv(Float.self, s, x: x.map { Double($0) }, w: w.map { Double($0) }, b: nil, dy: dy.map { Double($0) },
                           act: .identity, fusedBackward: false, context: GEMMContext(threads: 1))
        var dw = [Float](repeating: .nan, count: s.weightCount)
        let context = GEMMContext(threads: 1)
        let intact = withConvScratch(Float.self, conv2DBackwardScratchCount(s, threads: 4)) { scratch in
            x.withUnsafeBufferPointer { xb in
                w.withUnsafeBufferPointer { wb in
                    dy.withUnsafeBufferPointer { dyb in
                        dw.withUnsafeMutableBufferPointer { dwb in
                            guard let xp = xb.baseAddress, let wp = wb.baseAddress, let dyp = dyb.baseAddress else { return }
                            conv2DBackward(s, x: xp, weight: wp, dy: dyp, dx: nil, dWeight: dwb.baseAddress, dBias: nil,
                                           scratch: scratch, context: context)
                        }
                    }
                }
            }
        }
        #expect(intact)
        #expect(dw.map { Double($0) } == full.dw)
    }
}

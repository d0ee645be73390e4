import Testing
import Foundation
import IR
@testable import Runtime

/// Batch norm, log-softmax, nll and channel concatenation kernels against naive Double references, on
/// awkward sizes, one and two threads (the larger cases split their channels over both).
@Suite struct NormalizationTests {
    static func values(_ count: Int, seed: UInt64, low: Double = -1, high: Double = 1) -> [Double] {
        var random = MT19937(seed: seed)
        return (0..<count).map { _ in random.uniform(low, high) }
    }

    /// (outer = N, channels, inner = H·W)
    static let layouts = [(3, 5, 7), (4, 3, 1), (1, 2, 9), (8, 16, 196), (2, 1, 1)]

    struct Forward { var y: [Double], mean: [Double], invstd: [Double], runningMean: [Double], runningVar: [Double] }

    static func reference(_ x: [Double], gamma: [Double], beta: [Double], runningMean: [Double], runningVar: [Double],
                          _ n: Int, _ c: Int, _ inner: Int, eps: Double, momentum: Double) -> Forward {
        var out = Forward(y: x, mean: [], invstd: [], runningMean: runningMean, runningVar: runningVar)
        let m = Double(n * inner)
        for ch in 0..<c {
            var values: [Double] = []
            for s in 0..<n { for i in 0..<inner { values.append(x[(s * c + ch) * inner + i]) } }
            let mean = values.reduce(0, +) / m
            let variance = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / m
            let invstd = 1 / (variance + eps).squareRoot()
            out.mean.append(mean)
            out.invstd.append(invstd)
            out.runningMean[ch] = (1 - momentum) * runningMean[ch] + momentum * mean
            out.runningVar[ch] = (1 - momentum) * runningVar[ch] + momentum * (m > 1 ? variance * m / (m - 1) : variance)
            for s in 0..<n { for i in 0..<inner { let k = (s * c + ch) * inner + i; out.y[k] = (x[k] - mean) * invstd * gamma[ch] + beta[ch] } }
        }
        return out
    }

    static func run<T: KernelScalar>(_ type: T.Type, _ x: [Double], gamma: [Double], beta: [Double], runningMean: [Double], runningVar: [Double],
                                     dy: [Double], _ n: Int, _ c: Int, _ inner: Int, eps: Double, momentum: Double, threads: Int)
        -> (forward: Forward, dx: [Double], dGamma: [Double], dBeta: [Double]) {
        let xt = x.map { T($0) }, g = gamma.map { T($0) }, b = beta.map { T($0) }, dyt = dy.map { T($0) }
        var rm = runningMean.map { T($0) }, rv = runningVar.map { T($0) }
        var y = [T](repeating: .nan, count: x.count), mean = [T](repeating: .nan, count: c), invstd = [T](repeating: .nan, count: c)
        var dx = [T](repeating: .nan, count: x.count), dg = [T](repeating: .nan, count: c), db = [T](repeating: .nan, count: c)
        let context = GEMMContext(threads: threads)
        batchNormTrainingForward(xt, gamma: g, beta: b, runningMean: &rm, runningVar: &rv, y: &y, mean: &mean, invstd: &invstd,
                                 outer: n, channels: c, inner: inner, eps: eps, momentum: momentum, context: context)
        batchNormTrainingBackward(xt, gamma: g, mean: mean, invstd: invstd, dy: dyt, dx: &dx, dGamma: &dg, dBeta: &db,
                                  outer: n, channels: c, inner: inner, context: context)
        func d(_ a: [T]) -> [Double] { a.map { Double($0) } }
        return (Forward(y: d(y), mean: d(mean), invstd: d(invstd), runningMean: d(rm), runningVar: d(rv)), d(dx), d(dg), d(db))
    }

    static func close(_ a: [Double], _ b: [Double], _ tolerance: Double) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= tolerance * max(1, abs($1)) }
    }

    @Test(arguments: [1, 2])
    func trainingForwardAndRunningStatistics(threads: Int) {
        for (index, (n, c, inner)) in Self.layouts.enumerated() {
            let seed = UInt64(10 * index)
            // Values around a large offset: the one-pass statistics must not lose the variance.
            let x = Self.values(n * c * inner, seed: seed).map { $0 + 50 }
            let gamma = Self.values(c, seed: seed + 1, low: 0.5, high: 1.5), beta = Self.values(c, seed: seed + 2)
            let rm = Self.values(c, seed: seed + 3), rv = Self.values(c, seed: seed + 4, low: 0.5, high: 2)
            let dy = Self.values(n * c * inner, seed: seed + 5)
            let ref = Self.reference(x, gamma: gamma, beta: beta, runningMean: rm, runningVar: rv, n, c, inner, eps: 1e-5, momentum: 0.1)
            let r64 = Self.run(Double.self, x, gamma: gamma, beta: beta, runningMean: rm, runningVar: rv, dy: dy, n, c, inner, eps: 1e-5, momentum: 0.1, threads: threads)
            #expect(Self.close(r64.forward.y, ref.y, 1e-10), "f64 y \(n)x\(c)x\(inner)")
            #expect(Self.close(r64.forward.mean, ref.mean, 1e-12) && Self.close(r64.forward.invstd, ref.invstd, 1e-9))
            #expect(Self.close(r64.forward.runningMean, ref.runningMean, 1e-12) && Self.close(r64.forward.runningVar, ref.runningVar, 1e-10))
            let r32 = Self.run(Float.self, x, gamma: gamma, beta: beta, runningMean: rm, runningVar: rv, dy: dy, n, c, inner, eps: 1e-5, momentum: 0.1, threads: threads)
            #expect(Self.close(r32.forward.y, ref.y, 2e-3), "f32 y \(n)x\(c)x\(inner)")
            #expect(Self.close(r32.forward.runningVar, ref.runningVar, 1e-4))
        }
    }

    /// The backward against central differences of Σ r ⊙ y (batch statistics recomputed each time).
    @Test func backwardMatchesFiniteDifferences() {
        let (n, c, inner) = (3, 2, 5)
        let x = Self.values(n * c * inner, seed: 71), gamma = Self.values(c, seed: 72, low: 0.5, high: 1.5), beta = Self.values(c, seed: 73)
        let r = Self.values(n * c * inner, seed: 74), zeros = [Double](repeating: 0, count: c), ones = [Double](repeating: 1, count: c)
        func loss(_ x: [Double], _ gamma: [Double], _ beta: [Double]) -> Double {
            let y = Self.reference(x, gamma: gamma, beta: beta, runningMean: zeros, runningVar: ones, n, c, inner, eps: 1e-5, momentum: 0.1).y
            return zip(y, r).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let got = Self.run(Double.self, x, gamma: gamma, beta: beta, runningMean: zeros, runningVar: ones, dy: r, n, c, inner, eps: 1e-5, momentum: 0.1, threads: 1)
        let h = 1e-6
        func numeric(_ f: (Double) -> Double) -> Double { (f(h) - f(-h)) / (2 * h) }
        for i in x.indices {
            let fd = numeric { d in var p = x; p[i] += d; return loss(p, gamma, beta) }
            #expect(abs(fd - got.dx[i]) < 1e-7, "dx[\(i)] \(fd) vs \(got.dx[i])")
        }
        for k in 0..<c {
            #expect(abs(numeric { d in var p = gamma; p[k] += d; return loss(x, p, beta) } - got.dGamma[k]) < 1e-7)
            #expect(abs(numeric { d in var p = beta; p[k] += d; return loss(x, gamma, p) } - got.dBeta[k]) < 1e-7)
        }
    }

    /// The epilogues fuse-batchnorm folds in (a residual add, an activation, a 2×2 max pool) against the
    /// kernels they replace, run one after another: the forward and the residual's gradient bit for
    /// bit (the same operations), dx, dγ, dβ to rounding (sums taken in other groups). Odd planes leave
    /// a row and a column outside every window; 8×5×23×21 is split over two threads, with 10-wide
    /// pooled rows for the f32 row kernels; 5×600 planes take several segments, the last one row.
    @Test(arguments: [1, 2])
    func epiloguesMatchTheKernelsTheyReplace(threads: Int) {
        let activations: [ActivationFunction] = [.identity, .relu, .tanh, .leakyRelu(alpha: 0.1)]
        for (index, (n, c, h, w)) in [(3, 4, 7, 9), (8, 5, 23, 21), (2, 3, 6, 10), (2, 3, 5, 600)].enumerated() {
            for f in activations {
                for residual in [false, true] {
                    for pooled in [false, true] {
                        let epilogue = "\(n)x\(c)x\(h)x\(w) \(f) residual \(residual) pooled \(pooled) threads \(threads)"
                        Self.checkEpilogue(Double.self, n, c, h, w, f, residual, pooled, threads, seed: UInt64(100 + index), 1e-12, epilogue)
                        Self.checkEpilogue(Float.self, n, c, h, w, f, residual, pooled, threads, seed: UInt64(100 + index), 2e-4, epilogue)
                    }
                }
            }
        }
    }

    static func checkEpilogue<T: KernelScalar>(_: T.Type, _ n: Int, _ c: Int, _ h: Int, _ w: Int, _ f: ActivationFunction,
                                               _ residual: Bool, _ pooled: Bool, _ threads: Int, seed: UInt64, _ tolerance: Double, _ what: String) {
        let count = n * c * h * w, inner = h * w
        let x = values(count, seed: seed).map { T($0) }, r = values(count, seed: seed + 1).map { T($0) }
        let gamma = values(c, seed: seed + 2, low: 0.5, high: 1.5).map { T($0) }, beta = values(c, seed: seed + 3).map { T($0) }
        let pool = Pool2DShape(batch: n, channels: c, height: h, width: w, kernelH: 2, kernelW: 2)
        let dOut = values(pooled ? pool.outputCount : count, seed: seed + 4).map { T($0) }
        let context = GEMMContext(threads: threads)
        let zeros = [T](repeating: 0, count: c), ones = [T](repeating: 1, count: c)

        // The separate kernels.
        var rm = zeros, rv = ones, mean = zeros, invstd = zeros
        var y = [T](repeating: 0, count: count), z = y, a = y, out = [T](repeating: 0, count: dOut.count)
        batchNormTrainingForward(x, gamma: gamma, beta: beta, runningMean: &rm, runningVar: &rv, y: &y, mean: &mean, invstd: &invstd,
                                 outer: n, channels: c, inner: inner, eps: 1e-5, momentum: 0.1, context: context)
        if residual { addElements(y, r, &z, count) } else { z = y }
        activationForward(f, z, &a, count)
        if pooled { maxPool2DForward(pool, x: a, y: &out) } else { out = a }
        var da = pooled ? y : dOut, dz = y, dx = y, dGamma = zeros, dBeta = zeros
        if pooled { maxPool2DBackward(pool, x: a, dy: dOut, dx: &da) }
        activationBackward(f, a, da, &dz, count)
        batchNormTrainingBackward(x, gamma: gamma, mean: mean, invstd: invstd, dy: dz, dx: &dx, dGamma: &dGamma, dBeta: &dBeta,
                                  outer: n, channels: c, inner: inner, context: context)

        // One kernel each way.
        var rm2 = zeros, rv2 = ones, mean2 = zeros, invstd2 = zeros, out2 = out.map { _ in T.nan }
        var dx2 = y.map { _ in T.nan }, dr = dx2, dGamma2 = zeros, dBeta2 = zeros
        r.withUnsafeBufferPointer { rp in
            let epilogue = NormEpilogue(residual: residual ? rp.baseAddress : nil, activation: f, poolWidth: pooled ? w : nil)
            batchNormTrainingForward(x, gamma: gamma, beta: beta, runningMean: &rm2, runningVar: &rv2, y: &out2, mean: &mean2, invstd: &invstd2,
                                     outer: n, channels: c, inner: inner, eps: 1e-5, momentum: 0.1, epilogue: epilogue, context: context)
            dr.withUnsafeMutableBufferPointer { drp in
                batchNormTrainingBackward(x, gamma: gamma, mean: mean2, invstd: invstd2, dy: dOut, dx: &dx2, dGamma: &dGamma2, dBeta: &dBeta2,
                                          outer: n, channels: c, inner: inner, beta: beta, epilogue: epilogue,
                                          dResidual: residual ? drp.baseAddress : nil, context: context)
            }
        }
        #expect(out2 == out && mean2 == mean && invstd2 == invstd && rm2 == rm && rv2 == rv, "forward \(T.self) \(what)")
        if residual { #expect(dr == dz, "residual's gradient \(T.self) \(what)") }
        func d(_ a: [T]) -> [Double] { a.map { Double($0) } }
        #expect(Self.close(d(dx2), d(dx), tolerance) && Self.close(d(dGamma2), d(dGamma), tolerance) && Self.close(d(dBeta2), d(dBeta), tolerance),
                "backward \(T.self) \(what)")
    }

    /// Evaluation mode, and its fold into the weights before it: conv or fc with the folded weights
    /// equals the layer followed by the batch norm.
    @Test func inferenceAndFold() {
        let (n, c, inner) = (2, 3, 4)
        let x = Self.values(n * c * inner, seed: 81), gamma = Self.values(c, seed: 82, low: 0.5, high: 1.5), beta = Self.values(c, seed: 83)
        let mean = Self.values(c, seed: 84), variance = Self.values(c, seed: 85, low: 0.5, high: 2)
        var y = [Double](repeating: .nan, count: x.count)
        batchNormInferenceForward(x, gamma: gamma, beta: beta, mean: mean, variance: variance, y: &y, outer: n, channels: c, inner: inner, eps: 1e-3)
        for k in x.indices {
            let ch = (k / inner) % c
            #expect(abs(y[k] - ((x[k] - mean[ch]) / (variance[ch] + 1e-3).squareRoot() * gamma[ch] + beta[ch])) < 1e-12)
        }
        // An fc weight [I = 2, O = 3] with a bias: (x·W + b) then the batch norm, per output column.
        let w = Self.values(6, seed: 86), b = Self.values(3, seed: 87)
        var fw = [Double](repeating: .nan, count: 6), fb = [Double](repeating: .nan, count: 3)
        batchNormFold(weight: w, bias: b, gamma: gamma, beta: beta, mean: mean, variance: variance, foldedWeight: &fw, foldedBias: &fb,
                      rows: 2, columns: 3, convolution: false, eps: 1e-3)
        let input = [0.3, -1.2]
        for o in 0..<3 {
            let z = input[0] * w[o] + input[1] * w[3 + o] + b[o]
            let expected = (z - mean[o]) / (variance[o] + 1e-3).squareRoot() * gamma[o] + beta[o]
            #expect(abs(input[0] * fw[o] + input[1] * fw[3 + o] + fb[o] - expected) < 1e-12)
        }
        // A conv weight [O = 3, K = 2] without a bias scales rows.
        batchNormFold(weight: w, bias: nil, gamma: gamma, beta: beta, mean: mean, variance: variance, foldedWeight: &fw, foldedBias: &fb,
                      rows: 3, columns: 2, convolution: true, eps: 1e-3)
        for o in 0..<3 {
            let s = gamma[o] / (variance[o] + 1e-3).squareRoot()
            #expect(abs(fw[o * 2] - w[o * 2] * s) < 1e-12 && abs(fb[o] - (beta[o] - mean[o] * s)) < 1e-12)
        }
    }

    @Test func logSoftmaxAndNLL() {
        let (rows, columns) = (3, 5)
        var x = Self.values(rows * columns, seed: 91)
        x[7] = 800  // stability: a large logit
        var y = [Double](repeating: .nan, count: x.count), dx = [Double](repeating: .nan, count: x.count)
        logSoftmaxForward(x, &y, rows: rows, columns: columns)
        for r in 0..<rows {
            let row = Array(x[(r * columns)..<((r + 1) * columns)])
            let top = row.max()!, logSum = top + Foundation.log(row.map { Foundation.exp($0 - top) }.reduce(0, +))
            for j in 0..<columns { #expect(abs(y[r * columns + j] - (row[j] - logSum)) < 1e-12) }
        }
        let dy = Self.values(rows * columns, seed: 92)
        logSoftmaxBackward(y, dy, &dx, rows: rows, columns: columns)
        for r in 0..<rows {
            let sum = dy[(r * columns)..<((r + 1) * columns)].reduce(0, +)
            for j in 0..<columns { #expect(abs(dx[r * columns + j] - (dy[r * columns + j] - Foundation.exp(y[r * columns + j]) * sum)) < 1e-12) }
        }
        let labels: [Double] = [4, 0, 2]
        let loss = nllLoss(y, labels, rows: rows, classes: columns)
        #expect(abs(loss - -(y[4] + y[5] + y[12]) / 3) < 1e-12)
        var dlogp = [Double](repeating: .nan, count: x.count)
        nllLossBackward(labels, 2.0, &dlogp, rows: rows, classes: columns)
        #expect(dlogp.enumerated().allSatisfy { [4, 5, 12].contains($0.offset) ? $0.element == -2.0 / 3 : $0.element == 0 })
    }

    @Test func concatenationAndItsSlices() {
        let a = Self.values(2 * 3 * 4, seed: 1), b = Self.values(2 * 2 * 4, seed: 2)
        var c = [Double](repeating: .nan, count: a.count + b.count)
        concatenate(a, b, &c, rows: 2, aRow: 12, bRow: 8)
        #expect(Array(c[0..<12]) == Array(a[0..<12]) && Array(c[12..<20]) == Array(b[0..<8]))
        #expect(Array(c[20..<32]) == Array(a[12..<24]) && Array(c[32..<40]) == Array(b[8..<16]))
        var back = [Double](repeating: .nan, count: b.count)
        sliceRows(c, &back, rows: 2, row: 20, start: 12, count: 8)
        #expect(back == b)
    }
}

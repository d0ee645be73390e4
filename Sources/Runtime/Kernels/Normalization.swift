import Foundation
import IR

/// Batch normalization (PyTorch's BatchNorm1d/2d) over [outer = N, channels, inner = H·W] tensors,
/// log-softmax and the negative log-likelihood loss, and the channel concatenation of graphs.
/// Channels are independent: threads split them, so every sum is taken in one order whatever the
/// thread count (bit-identical results).

/// Training mode: per channel, the batch mean and biased variance over the N·H·W values (one pass,
/// sums of the values shifted by the channel's first value, in Double), then y = (x − mean)·invstd·γ + β
/// in a second pass. The running statistics move by `momentum` towards the batch's, the variance
/// towards the unbiased one (·M/(M−1), M = N·H·W; the biased one when M = 1).
@_specialize(where T == Float)
@_specialize(where T == Double)
func batchNormTrainingForward<T: KernelScalar>(_ x: UnsafePointer<T>, gamma: UnsafePointer<T>, beta: UnsafePointer<T>,
                                               runningMean: UnsafeMutablePointer<T>, runningVar: UnsafeMutablePointer<T>,
                                               y: UnsafeMutablePointer<T>, mean: UnsafeMutablePointer<T>, invstd: UnsafeMutablePointer<T>,
                                               outer: Int, channels: Int, inner: Int, eps: Double, momentum: Double,
                                               context: GEMMContext? = nil) {
    typealias Operands = (UnsafePointer<T>, UnsafePointer<T>, UnsafePointer<T>, UnsafeMutablePointer<T>, UnsafeMutablePointer<T>,
                          UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, Int, Int, Int, Double, Double, Int)
    let parts = min(elementwiseParts(outer * channels * inner, context), channels)
    let operands: Operands = (x, gamma, beta, runningMean, runningVar, y, mean, invstd, outer, channels, inner, eps, momentum, parts)
    parallelFor(parts, on: context, sharing: operands) { shared, part, _ in
        let (x, gamma, beta, runningMean, runningVar, y, mean, invstd, outer, channels, inner, eps, momentum, parts) =
            shared.assumingMemoryBound(to: Operands.self).pointee
        let count = outer * inner
        guard count > 0 else { return }
        for c in (channels * part / parts)..<(channels * (part + 1) / parts) {
            let shift = Double(x[c * inner])
            // Four interleaved partial sums per row (one chain of additions was bound by the adder's
            // latency: 2.3 ms of the residual CNN's step for its first batch norm), added in a fixed order.
            var sum = 0.0, squares = 0.0
            for n in 0..<outer {
                let row = x + (n * channels + c) * inner
                var s = SIMD4<Double>(), q = SIMD4<Double>()
                var i = 0
                while i + 4 <= inner {
                    let d = SIMD4<Double>(Double(row[i]), Double(row[i + 1]), Double(row[i + 2]), Double(row[i + 3])) - shift
                    s += d
                    q += d * d
                    i += 4
                }
                var rowSum = (s[0] + s[1]) + (s[2] + s[3]), rowSquares = (q[0] + q[1]) + (q[2] + q[3])
                while i < inner {
                    let d = Double(row[i]) - shift
                    rowSum += d
                    rowSquares += d * d
                    i += 1
                }
                sum += rowSum
                squares += rowSquares
            }
            let m = Double(count)
            let centred = sum / m
            let variance = max(0, squares / m - centred * centred)
            let batchMean = shift + centred
            let inv = 1 / (variance + eps).squareRoot()
            mean[c] = T(batchMean)
            invstd[c] = T(inv)
            let unbiased = count > 1 ? variance * m / (m - 1) : variance
            runningMean[c] = T((1 - momentum) * Double(runningMean[c]) + momentum * batchMean)
            runningVar[c] = T((1 - momentum) * Double(runningVar[c]) + momentum * unbiased)
            let scale = gamma[c] * T(inv), shiftOut = beta[c] - T(batchMean) * scale
            for n in 0..<outer {
                let offset = (n * channels + c) * inner
                for i in 0..<inner { y[offset + i] = x[offset + i] * scale + shiftOut }
            }
        }
    }
}

/// The backward of training-mode batch norm: dβ = Σ dy, dγ = Σ dy·x̂ (x̂ = (x − mean)·invstd), and
/// dx = γ·invstd/M · (M·dy − dβ − x̂·dγ).
@_specialize(where T == Float)
@_specialize(where T == Double)
func batchNormTrainingBackward<T: KernelScalar>(_ x: UnsafePointer<T>, gamma: UnsafePointer<T>, mean: UnsafePointer<T>,
                                                invstd: UnsafePointer<T>, dy: UnsafePointer<T>, dx: UnsafeMutablePointer<T>,
                                                dGamma: UnsafeMutablePointer<T>, dBeta: UnsafeMutablePointer<T>,
                                                outer: Int, channels: Int, inner: Int, context: GEMMContext? = nil) {
    typealias Operands = (UnsafePointer<T>, UnsafePointer<T>, UnsafePointer<T>, UnsafePointer<T>, UnsafePointer<T>,
                          UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, Int, Int, Int, Int)
    let parts = min(elementwiseParts(outer * channels * inner, context), channels)
    let operands: Operands = (x, gamma, mean, invstd, dy, dx, dGamma, dBeta, outer, channels, inner, parts)
    parallelFor(parts, on: context, sharing: operands) { shared, part, _ in
        let (x, gamma, mean, invstd, dy, dx, dGamma, dBeta, outer, channels, inner, parts) = shared.assumingMemoryBound(to: Operands.self).pointee
        let count = outer * inner
        for c in (channels * part / parts)..<(channels * (part + 1) / parts) {
            let mu = mean[c], inv = invstd[c]
            // Four interleaved partial sums per row, as in the forward pass.
            var sumDy: T = 0, sumDyXhat: T = 0
            for n in 0..<outer {
                let offset = (n * channels + c) * inner
                var s = SIMD4<T>(), q = SIMD4<T>()
                var i = 0
                while i + 4 <= inner {
                    let g = SIMD4<T>(dy[offset + i], dy[offset + i + 1], dy[offset + i + 2], dy[offset + i + 3])
                    let v = SIMD4<T>(x[offset + i], x[offset + i + 1], x[offset + i + 2], x[offset + i + 3])
                    s += g
                    q += g * ((v - mu) * inv)
                    i += 4
                }
                var rowDy = (s[0] + s[1]) + (s[2] + s[3]), rowDyXhat = (q[0] + q[1]) + (q[2] + q[3])
                while i < inner {
                    let g = dy[offset + i]
                    rowDy += g
                    rowDyXhat += g * ((x[offset + i] - mu) * inv)
                    i += 1
                }
                sumDy += rowDy
                sumDyXhat += rowDyXhat
            }
            dBeta[c] = sumDy
            dGamma[c] = sumDyXhat
            guard count > 0 else { continue }
            let m = T(count)
            let factor = gamma[c] * inv / m
            for n in 0..<outer {
                let offset = (n * channels + c) * inner
                for i in 0..<inner {
                    let xhat = (x[offset + i] - mu) * inv
                    dx[offset + i] = factor * (m * dy[offset + i] - sumDy - xhat * sumDyXhat)
                }
            }
        }
    }
}

/// Evaluation mode: y = x·s + (β − mean·s), s = γ/√(running var + eps), per channel.
func batchNormInferenceForward<T: KernelScalar>(_ x: UnsafePointer<T>, gamma: UnsafePointer<T>, beta: UnsafePointer<T>,
                                                mean: UnsafePointer<T>, variance: UnsafePointer<T>, y: UnsafeMutablePointer<T>,
                                                outer: Int, channels: Int, inner: Int, eps: Double) {
    for c in 0..<channels {
        let scale = gamma[c] / (variance[c] + T(eps)).squareRoot(), shift = beta[c] - mean[c] * scale
        for n in 0..<outer {
            let offset = (n * channels + c) * inner
            for i in 0..<inner { y[offset + i] = x[offset + i] * scale + shift }
        }
    }
}

/// An evaluation-mode batch norm folded into the conv or fc before it: W' = W·s along the output
/// axis, b' = (b − mean)·s + β, s = γ/√(var + eps). A conv weight [O, C·KH·KW] scales rows; an fc
/// weight [I, O] scales columns.
func batchNormFold<T: KernelScalar>(weight: UnsafePointer<T>, bias: UnsafePointer<T>?, gamma: UnsafePointer<T>, beta: UnsafePointer<T>,
                                    mean: UnsafePointer<T>, variance: UnsafePointer<T>, foldedWeight: UnsafeMutablePointer<T>,
                                    foldedBias: UnsafeMutablePointer<T>, rows: Int, columns: Int, convolution: Bool, eps: Double) {
    let channels = convolution ? rows : columns
    // The scales first, in the bias's place, then the weights, then the bias from its scale.
    for c in 0..<channels { foldedBias[c] = gamma[c] / (variance[c] + T(eps)).squareRoot() }
    for r in 0..<rows {
        for j in 0..<columns { foldedWeight[r * columns + j] = weight[r * columns + j] * foldedBias[convolution ? r : j] }
    }
    for c in 0..<channels { foldedBias[c] = ((bias?[c] ?? 0) - mean[c]) * foldedBias[c] + beta[c] }
}

/// c = [a, b] along axis 1: per sample, a's `aRow` values then b's `bRow`.
func concatenate<T: KernelScalar>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ c: UnsafeMutablePointer<T>, rows: Int, aRow: Int, bRow: Int) {
    for r in 0..<rows {
        (c + r * (aRow + bRow)).update(from: a + r * aRow, count: aRow)
        (c + r * (aRow + bRow) + aRow).update(from: b + r * bRow, count: bRow)
    }
}

/// y = x[:, start…] per sample: `count` values from offset `start` of each row of `row` values.
func sliceRows<T: KernelScalar>(_ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, rows: Int, row: Int, start: Int, count: Int) {
    for r in 0..<rows { (y + r * count).update(from: x + r * row + start, count: count) }
}

/// y = x − max − log Σ exp(x − max), row by row (numerically stable).
func logSoftmaxForward<T: KernelScalar>(_ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, rows: Int, columns: Int) {
    for r in 0..<rows {
        let xr = x + r * columns, yr = y + r * columns
        var largest = -T.infinity
        for j in 0..<columns where xr[j] > largest || xr[j].isNaN { largest = xr[j] }
        var sum: T = 0
        for j in 0..<columns { sum += T.exp(xr[j] - largest) }
        let logSum = T.log(sum)
        for j in 0..<columns { yr[j] = xr[j] - largest - logSum }
    }
}

/// dx = dy − exp(y)·Σ dy, row by row.
func logSoftmaxBackward<T: KernelScalar>(_ y: UnsafePointer<T>, _ dy: UnsafePointer<T>, _ dx: UnsafeMutablePointer<T>, rows: Int, columns: Int) {
    for r in 0..<rows {
        let yr = y + r * columns, dyr = dy + r * columns, dxr = dx + r * columns
        var sum: T = 0
        for j in 0..<columns { sum += dyr[j] }
        for j in 0..<columns { dxr[j] = dyr[j] - T.exp(yr[j]) * sum }
    }
}

/// Mean over the rows of −logp[label] (PyTorch's NLLLoss; labels as the cross-entropy reads them).
func nllLoss<T: KernelScalar>(_ logp: UnsafePointer<T>, _ labels: UnsafePointer<T>, rows: Int, classes: Int) -> Double {
    var total = 0.0
    for r in 0..<rows { total -= Double(logp[r * classes + label(labels, r, classes: classes)]) }
    return total / Double(max(1, rows))
}

/// d(nll)/d(logp): −dL/N at each row's label, 0 elsewhere.
func nllLossBackward<T: KernelScalar>(_ labels: UnsafePointer<T>, _ dLoss: T, _ dlogp: UnsafeMutablePointer<T>, rows: Int, classes: Int) {
    dlogp.update(repeating: 0, count: rows * classes)
    let g = -dLoss / T(max(1, rows))
    for r in 0..<rows { dlogp[r * classes + label(labels, r, classes: classes)] = g }
}

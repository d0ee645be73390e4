import Foundation
import IR

/// Batch normalization (PyTorch's BatchNorm1d/2d) over [outer = N, channels, inner = H·W] tensors,
/// log-softmax and the negative log-likelihood loss, and the channel concatenation of graphs.
/// Channels are independent: threads split them, so every sum is taken in one order whatever the
/// thread count (bit-identical results).

/// What a training-mode batch norm's kernel does after normalizing (the ops the `fuse-batchnorm`
/// pass folds into it): z = x̂·γ + β (+ r, a residual connection's other operand), h = f(z), and
/// the output h or, with `poolWidth` (the planes' width), h's 2×2, stride-2 max pool. The backward
/// pass recomputes h from x, so no full-size z or h is written for it.
struct NormEpilogue<T: KernelScalar> {
    var residual: UnsafePointer<T>? = nil
    var activation: ActivationFunction = .identity
    var poolWidth: Int? = nil
    var isPlain: Bool {
        if case .identity = activation { return residual == nil && poolWidth == nil }
        return false
    }
    /// The elements of a plane the kernels handle at a time, in scratch that stays in L1: about 1,024,
    /// whole row pairs when pooled (a 28×28 plane at once). Per-call costs were a third of the fused
    /// backward's time with one row pair at a time.
    func segment(_ inner: Int) -> Int {
        guard let w = poolWidth else { return min(inner, 1024) }
        return min(inner, 2 * w * max(1, 512 / max(1, w)))
    }
}

/// h = f(x·scale + shift [+ r]) over one segment of a plane. Forward and backward both make h here,
/// so the backward's recomputed h is the forward's, bit for bit.
@inline(__always)
private func normalizeSegment<T: KernelScalar>(_ x: UnsafePointer<T>, _ r: UnsafePointer<T>?, _ h: UnsafeMutablePointer<T>, _ count: Int,
                                               scale: T, shift: T, _ f: ActivationFunction) {
    if case .relu = f {
        // The common case in one pass (the same values as normalizing, then activating).
        let vScale = Lanes<T>(repeating: scale), vShift = Lanes<T>(repeating: shift)
        var i = 0
        while i + 8 <= count {
            var v = loadLanes(x + i) * vScale + vShift
            if let r { v += loadLanes(r + i) }
            storeLanes(T.selectPositive(v, v, Lanes<T>()), h + i)
            i += 8
        }
        while i < count {
            var v = x[i] * scale + shift
            if let r { v += r[i] }
            h[i] = v > 0 ? v : 0
            i += 1
        }
        return
    }
    if let r {
        for i in 0..<count { h[i] = x[i] * scale + shift + r[i] }
    } else {
        for i in 0..<count { h[i] = x[i] * scale + shift }
    }
    if case .identity = f { return }
    activationForwardPart(f, UnsafePointer(h), h, count)
}

/// Training mode: per channel, the batch mean and biased variance over the N·H·W values (one pass,
/// sums of the values shifted by the channel's first value, in Double), then y = (x − mean)·invstd·γ + β
/// and the epilogue in a second pass. The running statistics move by `momentum` towards the batch's,
/// the variance towards the unbiased one (·M/(M−1), M = N·H·W; the biased one when M = 1).
@_specialize(where T == Float)
@_specialize(where T == Double)
func batchNormTrainingForward<T: KernelScalar>(_ x: UnsafePointer<T>, gamma: UnsafePointer<T>, beta: UnsafePointer<T>,
                                               runningMean: UnsafeMutablePointer<T>, runningVar: UnsafeMutablePointer<T>,
                                               y: UnsafeMutablePointer<T>, mean: UnsafeMutablePointer<T>, invstd: UnsafeMutablePointer<T>,
                                               outer: Int, channels: Int, inner: Int, eps: Double, momentum: Double,
                                               epilogue: NormEpilogue<T> = .init(), context: GEMMContext? = nil) {
    typealias Operands = (UnsafePointer<T>, UnsafePointer<T>, UnsafePointer<T>, UnsafeMutablePointer<T>, UnsafeMutablePointer<T>,
                          UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, Int, Int, Int, Double, Double, Int,
                          NormEpilogue<T>)
    let parts = min(elementwiseParts(outer * channels * inner, context), channels)
    let operands: Operands = (x, gamma, beta, runningMean, runningVar, y, mean, invstd, outer, channels, inner, eps, momentum, parts, epilogue)
    parallelFor(parts, on: context, sharing: operands) { shared, part, _ in
        let (x, gamma, beta, runningMean, runningVar, y, mean, invstd, outer, channels, inner, eps, momentum, parts, epilogue) =
            shared.assumingMemoryBound(to: Operands.self).pointee
        let count = outer * inner
        guard count > 0 else { return }
        let segment = epilogue.segment(inner)
        withUnsafeTemporaryAllocation(of: T.self, capacity: segment) { scratch in
            guard let h = scratch.baseAddress else { return }
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
                    let r = epilogue.residual.map { $0 + offset }
                    guard let w = epilogue.poolWidth else {
                        normalizeSegment(x + offset, r, y + offset, inner, scale: scale, shift: shiftOut, epilogue.activation)
                        continue
                    }
                    // Pooled: h a segment of rows at a time in scratch, then their pool's output rows.
                    let ho = inner / w / 2, wo = w / 2
                    var start = 0
                    while start < inner {
                        let length = min(segment, inner - start)
                        guard length >= 2 * w else { break }  // an odd height's last row, in no window
                        normalizeSegment(x + offset + start, r.map { $0 + start }, h, length, scale: scale, shift: shiftOut, epilogue.activation)
                        maxPool2x2ForwardPlane(Pool2DShape(batch: 1, channels: 1, height: length / w, width: w, kernelH: 2, kernelW: 2),
                                               x: h, y: y + ((n * channels + c) * ho + start / (2 * w)) * wo)
                        start += length
                    }
                }
            }
        }
    }
}

/// The backward of training-mode batch norm: dβ = Σ dz, dγ = Σ dz·x̂ (x̂ = (x − mean)·invstd), and
/// dx = γ·invstd/M · (M·dz − dβ − x̂·dγ), where dz = dy for a plain batch norm; after an epilogue,
/// dz = f'(h) ⊙ (dy, or dy routed to each window's first maximum of h when pooled), h recomputed from
/// x, and with a residual dz is also the residual's gradient (written to `dResidual`).
@_specialize(where T == Float)
@_specialize(where T == Double)
func batchNormTrainingBackward<T: KernelScalar>(_ x: UnsafePointer<T>, gamma: UnsafePointer<T>, mean: UnsafePointer<T>,
                                                invstd: UnsafePointer<T>, dy: UnsafePointer<T>, dx: UnsafeMutablePointer<T>,
                                                dGamma: UnsafeMutablePointer<T>, dBeta: UnsafeMutablePointer<T>,
                                                outer: Int, channels: Int, inner: Int,
                                                beta: UnsafePointer<T>? = nil, epilogue: NormEpilogue<T> = .init(),
                                                dResidual: UnsafeMutablePointer<T>? = nil, context: GEMMContext? = nil) {
    typealias Operands = (UnsafePointer<T>, UnsafePointer<T>, UnsafePointer<T>, UnsafePointer<T>, UnsafePointer<T>,
                          UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, Int, Int, Int, Int,
                          UnsafePointer<T>?, NormEpilogue<T>, UnsafeMutablePointer<T>?)
    let parts = min(elementwiseParts(outer * channels * inner, context), channels)
    let operands: Operands = (x, gamma, mean, invstd, dy, dx, dGamma, dBeta, outer, channels, inner, parts, beta, epilogue, dResidual)
    parallelFor(parts, on: context, sharing: operands) { shared, part, _ in
        let (x, gamma, mean, invstd, dy, dx, dGamma, dBeta, outer, channels, inner, parts, beta, epilogue, dResidual) =
            shared.assumingMemoryBound(to: Operands.self).pointee
        let count = outer * inner
        let segment = epilogue.segment(inner), plain = epilogue.isPlain
        guard segment > 0 else { return }
        withUnsafeTemporaryAllocation(of: T.self, capacity: 2 * segment) { scratch in
            guard let h = scratch.baseAddress else { return }
            let routed = h + segment
            for c in (channels * part / parts)..<(channels * (part + 1) / parts) {
                let mu = mean[c], inv = invstd[c]
                // The forward pass's scale and shift, from the same stored values.
                let scale = gamma[c] * inv, shift = (beta?[c] ?? 0) - mu * scale
                /// Σ dz and Σ dz·x̂ over elements start..<start+length of sample n's plane. dz is dy for a
                /// plain batch norm; after an epilogue it is f'(h) ⊙ g, g = dy or, pooled, dy routed to each
                /// window's first maximum of h (in `routed`), h made here from x, and it is written as it is
                /// summed: to the residual's gradient, else to dx, where pass 2 reads it and overwrites it
                /// element by element (the stem's backward 5.1–6.5 → 3.9–5.3 ms against making it again).
                func gradientSums(_ n: Int, _ start: Int, _ length: Int) -> (T, T) {
                    let offset = (n * channels + c) * inner + start
                    if plain { return gradientSegmentSums(dy + offset, dy + offset, x + offset, nil, length, mean: mu, invstd: inv, { g, _ in g }, { g, _ in g }) }
                    normalizeSegment(x + offset, epilogue.residual.map { $0 + offset }, h, length, scale: scale, shift: shift, epilogue.activation)
                    var g = dy + offset
                    if let w = epilogue.poolWidth {
                        // Whole row pairs; an odd height's last row, in no window, gets no gradient (its own
                        // segment when the others fill the scratch).
                        if length < 2 * w {
                            routed.update(repeating: 0, count: length)
                        } else {
                            let ho = inner / w / 2, wo = w / 2
                            maxPool2x2BackwardPlane(Pool2DShape(batch: 1, channels: 1, height: length / w, width: w, kernelH: 2, kernelW: 2),
                                                    x: h, dy: dy + ((n * channels + c) * ho + start / (2 * w)) * wo, dx: routed)
                        }
                        g = UnsafePointer(routed)
                    }
                    return withDerivative(epilogue.activation) { vector, scalar in
                        gradientSegmentSums(g, h, x + offset, (dResidual ?? dx) + offset, length, mean: mu, invstd: inv, vector, scalar)
                    }
                }
                var sumDy: T = 0, sumDyXhat: T = 0
                for n in 0..<outer {
                    var start = 0
                    while start < inner {
                        let length = min(segment, inner - start)
                        let (partDy, partDyXhat) = gradientSums(n, start, length)
                        sumDy += partDy
                        sumDyXhat += partDyXhat
                        start += length
                    }
                }
                dBeta[c] = sumDy
                dGamma[c] = sumDyXhat
                guard count > 0 else { continue }
                let m = T(count)
                let factor = gamma[c] * inv / m
                // In vectors (after an epilogue dz is dx itself, and the compiler left the loop scalar), the
                // same operations in the same order in each lane as in the scalar tail.
                let vFactor = Lanes<T>(repeating: factor), vM = Lanes<T>(repeating: m), vSumDy = Lanes<T>(repeating: sumDy)
                let vMu = Lanes<T>(repeating: mu), vInv = Lanes<T>(repeating: inv), vSumDyXhat = Lanes<T>(repeating: sumDyXhat)
                // Samples in reverse: the last ones pass 1 read are still in cache (a channel of a large
                // batch norm does not fit in L2).
                for n in (0..<outer).reversed() {
                    var start = 0
                    while start < inner {
                        let length = min(segment, inner - start)
                        let offset = (n * channels + c) * inner + start
                        let dz = plain ? dy + offset : UnsafePointer((dResidual ?? dx) + offset)
                        let xs = x + offset, dxs = dx + offset
                        var i = 0
                        while i + 8 <= length {
                            let v = vFactor * (vM * loadLanes(dz + i) - vSumDy - (loadLanes(xs + i) - vMu) * vInv * vSumDyXhat)
                            storeLanes(v, dxs + i)
                            i += 8
                        }
                        while i < length {
                            dxs[i] = factor * (m * dz[i] - sumDy - (xs[i] - mu) * inv * sumDyXhat)
                            i += 1
                        }
                        start += length
                    }
                }
            }
        }
    }
}

/// Σ dz and Σ dz·(x − mean)·invstd over one segment, dz = vector(g, h) (eight lanes, then the scalar
/// tail: a fixed order of additions), each dz also written to `out` when given.
@inline(__always)
private func gradientSegmentSums<T: KernelScalar>(_ g: UnsafePointer<T>, _ h: UnsafePointer<T>, _ x: UnsafePointer<T>,
                                                  _ out: UnsafeMutablePointer<T>?, _ count: Int, mean mu: T, invstd inv: T,
                                                  _ vector: (Lanes<T>, Lanes<T>) -> Lanes<T>, _ scalar: (T, T) -> T) -> (T, T) {
    // Eight interleaved partial sums (one chain of additions is bound by the adder's latency).
    var s = Lanes<T>(), q = Lanes<T>()
    var i = 0
    while i + 8 <= count {
        let dz = vector(loadLanes(g + i), loadLanes(h + i))
        if let out { storeLanes(dz, out + i) }
        s += dz
        q += dz * ((loadLanes(x + i) - mu) * inv)
        i += 8
    }
    var sumDz = s.sum(), sumDzXhat = q.sum()
    while i < count {
        let dz = scalar(g[i], h[i])
        out?[i] = dz
        sumDz += dz
        sumDzXhat += dz * ((x[i] - mu) * inv)
        i += 1
    }
    return (sumDz, sumDzXhat)
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

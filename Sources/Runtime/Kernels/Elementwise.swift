import Foundation

/// Element-wise, reduction, loss and optimizer kernels. Each works on raw pointers into the arena
/// or the parameter store, allocates nothing, and is generic over Float and Double.

@inline(__always) func activationForward<T: KernelScalar>(_ f: KernelActivation, _ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ count: Int) {
    switch f {
    case .identity: if UnsafePointer(y) != x { y.update(from: x, count: count) }
    case .relu: for i in 0..<count { let v = x[i]; y[i] = v > 0 ? v : 0 }
    case .leakyRelu(let alpha): let a = T(alpha); for i in 0..<count { let v = x[i]; y[i] = v > 0 ? v : a * v }
    case .tanh: for i in 0..<count { y[i] = T.tanh(x[i]) }
    case .sigmoid: for i in 0..<count { y[i] = 1 / (1 + T.exp(-x[i])) }
    }
}

/// y = x^k
func powForward<T: KernelScalar>(_ k: Int, _ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ count: Int) {
    for i in 0..<count {
        let v = x[i]
        var r: T = 1
        for _ in 0..<k { r *= v }
        y[i] = r
    }
}

/// dx = dy · k · x^(k−1)
func powBackward<T: KernelScalar>(_ k: Int, _ x: UnsafePointer<T>, _ dy: UnsafePointer<T>, _ dx: UnsafeMutablePointer<T>, _ count: Int) {
    let factor = T(k)
    for i in 0..<count {
        let v = x[i]
        var r: T = 1
        for _ in 0..<(k - 1) { r *= v }
        dx[i] = dy[i] * (factor * r)
    }
}

/// dx = dy ⊙ f'(y)
func activationBackward<T: KernelScalar>(_ f: KernelActivation, _ y: UnsafePointer<T>, _ dy: UnsafePointer<T>, _ dx: UnsafeMutablePointer<T>, _ count: Int) {
    switch f {
    case .identity: if UnsafePointer(dx) != dy { dx.update(from: dy, count: count) }
    case .relu: for i in 0..<count { dx[i] = y[i] > 0 ? dy[i] : 0 }
    case .leakyRelu(let alpha): let a = T(alpha); for i in 0..<count { dx[i] = y[i] > 0 ? dy[i] : a * dy[i] }
    case .tanh: for i in 0..<count { let v = y[i]; dx[i] = dy[i] * (1 - v * v) }
    case .sigmoid: for i in 0..<count { let v = y[i]; dx[i] = dy[i] * (v * (1 - v)) }
    }
}

/// dz = dy ⊙ f'(y) and db[c] = Σ dz over rows and the inner (spatial) axis, in one pass.
/// Layout [outer, channels, inner].
func activationBackwardBias<T: KernelScalar>(_ f: KernelActivation, _ y: UnsafePointer<T>, _ dy: UnsafePointer<T>, _ dz: UnsafeMutablePointer<T>,
                                            _ db: UnsafeMutablePointer<T>, outer: Int, channels: Int, inner: Int) {
    db.update(repeating: 0, count: channels)
    if inner == 1 {
        for r in 0..<outer {
            let base = r * channels
            activationBackward(f, y + base, dy + base, dz + base, channels)
            for c in 0..<channels { db[c] += dz[base + c] }
        }
    } else {
        for r in 0..<outer {
            for c in 0..<channels {
                let base = (r * channels + c) * inner
                activationBackward(f, y + base, dy + base, dz + base, inner)
                var sum: T = 0
                for i in 0..<inner { sum += dz[base + i] }
                db[c] += sum
            }
        }
    }
}

/// y = x + b, b broadcast along the channel axis of [outer, channels, inner].
func biasAddForward<T: KernelScalar>(_ x: UnsafePointer<T>, _ b: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, outer: Int, channels: Int, inner: Int) {
    for r in 0..<outer {
        for c in 0..<channels {
            let base = (r * channels + c) * inner, bias = b[c]
            for i in 0..<inner { y[base + i] = x[base + i] + bias }
        }
    }
}

/// db[c] = Σ dy over the outer and inner axes.
func biasGradient<T: KernelScalar>(_ dy: UnsafePointer<T>, _ db: UnsafeMutablePointer<T>, outer: Int, channels: Int, inner: Int) {
    db.update(repeating: 0, count: channels)
    for r in 0..<outer {
        for c in 0..<channels {
            let base = (r * channels + c) * inner
            var sum: T = 0
            for i in 0..<inner { sum += dy[base + i] }
            db[c] += sum
        }
    }
}

/// Row-wise softmax over the last axis, max-subtracted.
func softmaxForward<T: KernelScalar>(_ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, rows: Int, columns: Int) {
    for r in 0..<rows {
        let row = x + r * columns, out = y + r * columns
        var maximum = row[0]
        for c in 1..<max(1, columns) where row[c] > maximum { maximum = row[c] }
        var sum: T = 0
        for c in 0..<columns { let e = T.exp(row[c] - maximum); out[c] = e; sum += e }
        let inverse = 1 / sum
        for c in 0..<columns { out[c] *= inverse }
    }
}

/// dx = y ⊙ (dy − Σ dy⊙y) per row.
func softmaxBackward<T: KernelScalar>(_ y: UnsafePointer<T>, _ dy: UnsafePointer<T>, _ dx: UnsafeMutablePointer<T>, rows: Int, columns: Int) {
    for r in 0..<rows {
        let base = r * columns
        var dot: T = 0
        for c in 0..<columns { dot += dy[base + c] * y[base + c] }
        for c in 0..<columns { dx[base + c] = y[base + c] * (dy[base + c] - dot) }
    }
}

/// Σ x, accumulated in Double.
func sumAll<T: KernelScalar>(_ x: UnsafePointer<T>, _ count: Int) -> Double {
    var sum = 0.0
    for i in 0..<count { sum += Double(x[i]) }
    return sum
}

/// The class index stored (as a float) in a label tensor, clamped into range.
@inline(__always) func label<T: KernelScalar>(_ labels: UnsafePointer<T>, _ row: Int, classes: Int) -> Int {
    let value = labels[row]
    guard value >= 0, value < T(classes) else { return 0 }
    return Int(value)
}

/// Mean over rows of −log softmax(z)[label], stable (log-sum-exp with the max subtracted).
func softmaxCrossEntropy<T: KernelScalar>(_ logits: UnsafePointer<T>, _ labels: UnsafePointer<T>, rows: Int, classes: Int) -> Double {
    var total = 0.0
    for r in 0..<rows {
        let row = logits + r * classes
        var maximum = row[0]
        for c in 1..<max(1, classes) where row[c] > maximum { maximum = row[c] }
        var sum = 0.0
        for c in 0..<classes { sum += Double(T.exp(row[c] - maximum)) }
        total += Foundation.log(sum) + Double(maximum) - Double(row[label(labels, r, classes: classes)])
    }
    return total / Double(max(1, rows))
}

/// d/dz = (softmax(z) − onehot(label)) · dL / rows
func softmaxCrossEntropyBackward<T: KernelScalar>(_ logits: UnsafePointer<T>, _ labels: UnsafePointer<T>, _ dLoss: T, _ dz: UnsafeMutablePointer<T>, rows: Int, classes: Int) {
    softmaxForward(logits, dz, rows: rows, columns: classes)
    let scale = dLoss / T(max(1, rows))
    for r in 0..<rows {
        let base = r * classes
        dz[base + label(labels, r, classes: classes)] -= 1
        for c in 0..<classes { dz[base + c] *= scale }
    }
}

/// log clamped at −100, as PyTorch does for (binary) cross-entropy on probabilities.
@inline(__always) func clampedLog(_ x: Double) -> Double { x > 0 ? max(Foundation.log(x), -100) : -100 }

/// Mean over rows of −log p[label].
func crossEntropy<T: KernelScalar>(_ p: UnsafePointer<T>, _ labels: UnsafePointer<T>, rows: Int, classes: Int) -> Double {
    var total = 0.0
    for r in 0..<rows { total -= clampedLog(Double(p[r * classes + label(labels, r, classes: classes)])) }
    return total / Double(max(1, rows))
}

func crossEntropyBackward<T: KernelScalar>(_ p: UnsafePointer<T>, _ labels: UnsafePointer<T>, _ dLoss: T, _ dp: UnsafeMutablePointer<T>, rows: Int, classes: Int) {
    dp.update(repeating: 0, count: rows * classes)
    let scale = Double(dLoss) / Double(max(1, rows))
    for r in 0..<rows {
        let index = r * classes + label(labels, r, classes: classes)
        dp[index] = T(-scale / max(Double(p[index]), 1e-44))
    }
}

/// Mean of −(y log p + (1−y) log(1−p)).
func binaryCrossEntropy<T: KernelScalar>(_ p: UnsafePointer<T>, _ y: UnsafePointer<T>, count: Int) -> Double {
    var total = 0.0
    for i in 0..<count {
        let pi = Double(p[i]), yi = Double(y[i])
        total -= yi * clampedLog(pi) + (1 - yi) * clampedLog(1 - pi)
    }
    return total / Double(max(1, count))
}

func binaryCrossEntropyBackward<T: KernelScalar>(_ p: UnsafePointer<T>, _ y: UnsafePointer<T>, _ dLoss: T, _ dp: UnsafeMutablePointer<T>, count: Int) {
    let scale = Double(dLoss) / Double(max(1, count))
    for i in 0..<count {
        let pi = Double(p[i]), yi = Double(y[i])
        dp[i] = T(scale * (pi - yi) / max(pi * (1 - pi), 1e-12))
    }
}

/// SGD (PyTorch's semantics): g += decay·p; v = μv + g; p −= lr·(nesterov ? g + μv : v).
func sgdUpdate<T: KernelScalar>(_ p: UnsafeMutablePointer<T>, _ g: UnsafePointer<T>, velocity: UnsafeMutablePointer<T>?, count: Int,
                                lr: T, momentum: T, nesterov: Bool, decay: T) {
    if let v = velocity {
        for i in 0..<count {
            var gi = g[i]
            if decay != 0 { gi += decay * p[i] }
            let vi = momentum * v[i] + gi
            v[i] = vi
            p[i] -= lr * (nesterov ? gi + momentum * vi : vi)
        }
    } else {
        for i in 0..<count {
            var gi = g[i]
            if decay != 0 { gi += decay * p[i] }
            p[i] -= lr * gi
        }
    }
}

/// Adam (Kingma & Ba, PyTorch's semantics) at step t ≥ 1.
func adamUpdate<T: KernelScalar>(_ p: UnsafeMutablePointer<T>, _ g: UnsafePointer<T>, _ m: UnsafeMutablePointer<T>, _ v: UnsafeMutablePointer<T>, count: Int,
                                 lr: Double, beta1: Double, beta2: Double, eps: Double, decay: Double, step: Int) {
    let correction1 = 1 - Foundation.pow(beta1, Double(step)), correction2 = 1 - Foundation.pow(beta2, Double(step))
    let stepSize = T(lr / correction1), b1 = T(beta1), b2 = T(beta2), e = T(eps), d = T(decay)
    let inverseRootCorrection2 = T(1 / correction2.squareRoot())
    for i in 0..<count {
        var gi = g[i]
        if d != 0 { gi += d * p[i] }
        let mi = b1 * m[i] + (1 - b1) * gi
        let vi = b2 * v[i] + (1 - b2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= stepSize * mi / (vi.squareRoot() * inverseRootCorrection2 + e)
    }
}

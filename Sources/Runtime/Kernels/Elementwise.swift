import Foundation
import IR

/// Element-wise, reduction, loss and optimizer kernels. Each works on raw pointers into the arena
/// or the parameter store, allocates nothing, and is generic over Float and Double.

/// Element-wise loops run 8 lanes at a time (one AVX register of f32) and finish in scalar code; the
/// two forms compute the same IEEE operations, so a value does not depend on where a split falls.
typealias Lanes<T: SIMDScalar> = SIMD8<T>

@inline(__always) func loadLanes<T: KernelScalar>(_ p: UnsafePointer<T>) -> Lanes<T> {
    UnsafeRawPointer(p).loadUnaligned(as: Lanes<T>.self)
}

@inline(__always) func storeLanes<T: KernelScalar>(_ v: Lanes<T>, _ p: UnsafeMutablePointer<T>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Lanes<T>.self)
}

/// body(vector, scalar) with the two forms of g ⊙ f'(v) for f, where v is what the backward pass
/// keeps (the output y, or the input x when f's derivative needs it); the switch is taken once,
/// outside the caller's loop.
@inline(__always)
func withDerivative<T: KernelScalar, R>(_ f: ActivationFunction,
                                        _ body: ((Lanes<T>, Lanes<T>) -> Lanes<T>, (T, T) -> T) -> R) -> R {
    switch f {
    case .identity:
        return body({ g, _ in g }, { g, _ in g })
    case .relu:
        return body({ g, y in T.selectPositive(y, g, Lanes<T>()) }, { g, y in y > 0 ? g : 0 })
    case .leakyRelu(let alpha):
        let a = T(alpha)
        return body({ g, y in T.selectPositive(y, g, g * a) }, { g, y in y > 0 ? g : g * a })
    case .tanh:
        return body({ g, y in g * (1 - y * y) }, { g, y in g * (1 - y * y) })
    case .sigmoid:
        return body({ g, y in g * (y * (1 - y)) }, { g, y in g * (y * (1 - y)) })
    case .pow, .gelu, .elu, .selu, .softplus, .clip, .silu, .neg, .abs, .exp, .softsign, .scale:
        // Lane by lane: the same operations as the scalar form.
        return body({ g, v in
            var r = g
            for lane in 0..<Lanes<T>.scalarCount { r[lane] = g[lane] * f.derivative(kept: v[lane]) }
            return r
        }, { g, v in g * f.derivative(kept: v) })
    }
}

/// body(operands, range) over parts of 0..<count: one part, on this thread, below
/// `elementwiseParallelMinimum` elements or without a context, else one per thread, cut at whole lane
/// groups so that every element takes the same vector or scalar form as in one part (the same results
/// for any split). `body` must capture nothing: it travels to the workers with the operands.
///
/// Large element-wise ops must not run on one thread while the other waits (and has just written
/// half their operands): a relu gradient over 3.2M elements after a two-thread GEMM, measured on a
/// 2-core Zen 4 VM, took 1.4 ms on one thread and 0.3 ms split, and 13.6 ms on one thread while the
/// machine made cross-core traffic slow (1.0 ms in a one-thread session then).
@inline(__always)
func elementwiseInParts<Operands>(_ count: Int, _ context: GEMMContext?, _ operands: Operands,
                                  _ body: @escaping (Operands, Range<Int>) -> Void) {
    let parts = elementwiseParts(count, context)
    if parts == 1 { return body(operands, 0..<count) }
    typealias Shared = (Operands, (Operands, Range<Int>) -> Void, Int, Int)
    let shared: Shared = (operands, body, count, parts)
    parallelFor(parts, on: context, sharing: shared) { shared, part, _ in
        let (operands, body, count, parts) = shared.assumingMemoryBound(to: Shared.self).pointee
        body(operands, laneRange(count, part: part, of: parts))
    }
}

/// y = f(x) over `count` elements, in parts over the context's threads when large.
func activationForward<T: KernelScalar>(_ f: ActivationFunction, _ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ count: Int,
                                        context: GEMMContext? = nil) {
    elementwiseInParts(count, context, (f, x, y)) { operands, range in
        let (f, x, y) = operands
        activationForwardPart(f, x + range.lowerBound, y + range.lowerBound, range.count)
    }
}

@inline(__always) func activationForwardPart<T: KernelScalar>(_ f: ActivationFunction, _ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ count: Int) {
    switch f {
    case .identity: if UnsafePointer(y) != x { y.update(from: x, count: count) }
    case .relu:
        var i = 0
        while i + 8 <= count {
            let v = loadLanes(x + i)
            storeLanes(T.selectPositive(v, v, Lanes<T>()), y + i)
            i += 8
        }
        while i < count { let v = x[i]; y[i] = v > 0 ? v : 0; i += 1 }
    case .leakyRelu(let alpha): let a = T(alpha); for i in 0..<count { let v = x[i]; y[i] = v > 0 ? v : a * v }
    case .sigmoid: for i in 0..<count { y[i] = 1 / (1 + T.exp(-x[i])) }
    case .tanh, .gelu, .pow, .elu, .selu, .softplus, .clip, .silu, .neg, .abs, .exp, .softsign, .scale: applyActivation(f, x, y, count)
    }
}

/// y[i] = f(x[i]) for i in 0..<count (y may be x): whole vectors of lanes in f's vector form where it
/// has one (tanh, gelu), the rest one by one; each element gets the value `f.apply` gives either way.
@inline(__always) func applyActivation<T: KernelScalar>(_ f: ActivationFunction, _ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ count: Int) {
    var i = 0
    @inline(__always) func inLanes(_ form: (Lanes<T>) -> Lanes<T>) {
        while i + Lanes<T>.scalarCount <= count {
            storeLanes(form(loadLanes(x + i)), y + i)
            i += Lanes<T>.scalarCount
        }
    }
    switch f {
    case .tanh: inLanes(T.tanh)
    case .gelu: inLanes(gelu)
    default: break
    }
    while i < count {
        y[i] = f.apply(x[i])
        i += 1
    }
}

/// c[i] = op(a[i], b[i]) over `range`, in lanes (a loop of the scalar form stays scalar: c may be a or
/// b, the planner's in-place reuse, so the compiler cannot vectorize it), then the scalar tail.
@inline(__always)
private func combineElements<T: KernelScalar>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ c: UnsafeMutablePointer<T>, _ range: Range<Int>,
                                              _ vector: (Lanes<T>, Lanes<T>) -> Lanes<T>, _ scalar: (T, T) -> T) {
    var i = range.lowerBound
    while i + Lanes<T>.scalarCount <= range.upperBound {
        storeLanes(vector(loadLanes(a + i), loadLanes(b + i)), c + i)
        i += Lanes<T>.scalarCount
    }
    while i < range.upperBound { c[i] = scalar(a[i], b[i]); i += 1 }
}

/// c = a + b (a residual connection's sum, a gradient's two parts), in parts when large.
func addElements<T: KernelScalar>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ c: UnsafeMutablePointer<T>, _ count: Int,
                                  context: GEMMContext? = nil) {
    elementwiseInParts(count, context, (a, b, c)) { operands, range in
        let (a, b, c) = operands
        combineElements(a, b, c, range, { $0 + $1 }, { $0 + $1 })
    }
}

/// c = a − b, in parts when large.
func subtractElements<T: KernelScalar>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ c: UnsafeMutablePointer<T>, _ count: Int,
                                       context: GEMMContext? = nil) {
    elementwiseInParts(count, context, (a, b, c)) { operands, range in
        let (a, b, c) = operands
        combineElements(a, b, c, range, { $0 - $1 }, { $0 - $1 })
    }
}

/// c = a ⊙ b (a dropout mask and its gradient), in parts when large.
func multiplyElements<T: KernelScalar>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ c: UnsafeMutablePointer<T>, _ count: Int,
                                       context: GEMMContext? = nil) {
    elementwiseInParts(count, context, (a, b, c)) { operands, range in
        let (a, b, c) = operands
        combineElements(a, b, c, range, { $0 * $1 }, { $0 * $1 })
    }
}

/// y = x · factor, in parts when large.
func scaleElements<T: KernelScalar>(_ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ factor: T, _ count: Int,
                                    context: GEMMContext? = nil) {
    elementwiseInParts(count, context, (x, y, factor)) { operands, range in
        let (x, y, factor) = operands
        let lanes = Lanes<T>(repeating: factor)
        var i = range.lowerBound
        while i + Lanes<T>.scalarCount <= range.upperBound {
            storeLanes(loadLanes(x + i) * lanes, y + i)
            i += Lanes<T>.scalarCount
        }
        while i < range.upperBound { y[i] = x[i] * factor; i += 1 }
    }
}

/// dx = dy ⊙ f'(v), v the kept value (y, or x for pow and gelu), in parts over the context's threads
/// when large.
func activationBackward<T: KernelScalar>(_ f: ActivationFunction, _ y: UnsafePointer<T>, _ dy: UnsafePointer<T>, _ dx: UnsafeMutablePointer<T>,
                                         _ count: Int, context: GEMMContext? = nil) {
    elementwiseInParts(count, context, (f, y, dy, dx)) { operands, range in
        let (f, y, dy, dx) = operands
        let at = range.lowerBound
        activationBackwardPart(f, y + at, dy + at, dx + at, range.count)
    }
}

@inline(__always)
func activationBackwardPart<T: KernelScalar>(_ f: ActivationFunction, _ y: UnsafePointer<T>, _ dy: UnsafePointer<T>,
                                             _ dx: UnsafeMutablePointer<T>, _ count: Int) {
    if case .identity = f {
        if UnsafePointer(dx) != dy { dx.update(from: dy, count: count) }
        return
    }
    withDerivative(f) { vector, scalar in
        var i = 0
        while i + 8 <= count {
            storeLanes(vector(loadLanes(dy + i), loadLanes(y + i)), dx + i)
            i += 8
        }
        while i < count { dx[i] = scalar(dy[i], y[i]); i += 1 }
    }
}

/// dz = dy ⊙ f'(y) over `count` elements (y nil: dz = dy); returns Σ dz, from eight lane sums
/// added in a fixed order (deterministic).
@inline(__always)
func activationBackwardSum<T: KernelScalar>(_ f: ActivationFunction, _ y: UnsafePointer<T>?, _ dy: UnsafePointer<T>,
                                           _ dz: UnsafeMutablePointer<T>, _ count: Int) -> T {
    withDerivative(y == nil ? .identity : f) { (vector: (Lanes<T>, Lanes<T>) -> Lanes<T>, scalar: (T, T) -> T) -> T in
        let yp = y ?? dy
        var lanes = Lanes<T>()
        var i = 0
        while i + 8 <= count {
            let v = vector(loadLanes(dy + i), loadLanes(yp + i))
            storeLanes(v, dz + i)
            lanes += v
            i += 8
        }
        var sum = lanes.sum()
        while i < count {
            let v = scalar(dy[i], yp[i])
            dz[i] = v
            sum += v
            i += 1
        }
        return sum
    }
}

/// From this many elements on, element-wise kernels split their work over the context's threads.
let elementwiseParallelMinimum = 1 << 14

/// dz = dy ⊙ f'(y) and db[c] = Σ dz over rows and the inner (spatial) axis, in one pass.
/// Layout [outer, channels, inner]. Threads split the channels (whole 8-lane groups), so each sum is
/// taken in the same order whatever the thread count.
@_specialize(where T == Float)
@_specialize(where T == Double)
func activationBackwardBias<T: KernelScalar>(_ f: ActivationFunction, _ y: UnsafePointer<T>, _ dy: UnsafePointer<T>, _ dz: UnsafeMutablePointer<T>,
                                            _ db: UnsafeMutablePointer<T>, outer: Int, channels: Int, inner: Int,
                                            context: GEMMContext? = nil) {
    typealias Operands = (ActivationFunction, UnsafePointer<T>, UnsafePointer<T>, UnsafeMutablePointer<T>, UnsafeMutablePointer<T>,
                          Int, Int, Int, Int)
    let parts = min(elementwiseParts(outer * channels * inner, context), (channels + 7) / 8)
    // One part (small layers, a batch of one): no shared tuple, no cut to compute.
    if parts <= 1 { return activationBackwardBiasColumns(f, y, dy, dz, db, outer: outer, channels: channels, inner: inner, 0..<channels) }
    let operands: Operands = (f, y, dy, dz, db, outer, channels, inner, parts)
    parallelFor(parts, on: context, sharing: operands) { shared, part, _ in
        let (f, y, dy, dz, db, outer, channels, inner, parts) = shared.assumingMemoryBound(to: Operands.self).pointee
        activationBackwardBiasColumns(f, y, dy, dz, db, outer: outer, channels: channels, inner: inner, laneRange(channels, part: part, of: parts))
    }
}

/// activationBackwardBias on the channels `columns`.
@inline(__always)
private func activationBackwardBiasColumns<T: KernelScalar>(_ f: ActivationFunction, _ y: UnsafePointer<T>, _ dy: UnsafePointer<T>, _ dz: UnsafeMutablePointer<T>,
                                                           _ db: UnsafeMutablePointer<T>, outer: Int, channels: Int, inner: Int, _ columns: Range<Int>) {
    let c0 = columns.lowerBound, c1 = columns.upperBound
    if c0 >= c1 { return }
    if inner == 1 && outer > 0 {
        withDerivative(f) { vector, scalar in
            for r in 0..<outer {
                let base = r * channels
                // db starts as 0 + the first row's terms: the same sums, without a zeroing pass first
                // (a call to memset, for the tutorials' one-row steps).
                let first = r == 0
                var c = c0
                while c + 8 <= c1 {
                    let v = vector(loadLanes(dy + base + c), loadLanes(y + base + c))
                    storeLanes(v, dz + base + c)
                    storeLanes((first ? Lanes<T>() : loadLanes(db + c)) + v, db + c)
                    c += 8
                }
                while c < c1 {
                    let v = scalar(dy[base + c], y[base + c])
                    dz[base + c] = v
                    db[c] = (first ? 0 : db[c]) + v
                    c += 1
                }
            }
        }
    } else {
        (db + c0).update(repeating: 0, count: c1 - c0)
        for r in 0..<outer {
            for c in c0..<c1 {
                let base = (r * channels + c) * inner
                db[c] += activationBackwardSum(f, y + base, dy + base, dz + base, inner)
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
        if inner == 1 {
            let row = dy + r * channels
            var c = 0
            while c + 8 <= channels { storeLanes(loadLanes(db + c) + loadLanes(row + c), db + c); c += 8 }
            while c < channels { db[c] += row[c]; c += 1 }
        } else {
            for c in 0..<channels { db[c] += laneSum(dy + (r * channels + c) * inner, inner) }
        }
    }
}

/// Σ x, from eight lane sums added in a fixed order.
@inline(__always) func laneSum<T: KernelScalar>(_ x: UnsafePointer<T>, _ count: Int) -> T {
    var lanes = Lanes<T>()
    var i = 0
    while i + 8 <= count { lanes += loadLanes(x + i); i += 8 }
    var sum = lanes.sum()
    while i < count { sum += x[i]; i += 1 }
    return sum
}

/// Row-wise softmax over the last axis, max-subtracted.
func softmaxForward<T: KernelScalar>(_ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, rows: Int, columns: Int) {
    if T.self == Float.self {
        softmaxForwardF32(UnsafeRawPointer(x).assumingMemoryBound(to: Float.self),
                          UnsafeMutableRawPointer(y).assumingMemoryBound(to: Float.self), rows: rows, columns: columns)
        return
    }
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

// MARK: - f32 softmax with a vector exp

/// e^x for eight f32 lanes: x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-7 polynomial (Cephes'
/// expf coefficients), 2^n put together from its exponent bits. Relative error within 2 ulp of expf.
/// Results below the smallest normal float (x < −87.3) flush to 0; NaN stays NaN; +∞ stays +∞.
@inline(__always) func expLanes(_ x: SIMD8<Float>) -> SIMD8<Float> {
    // Written with compares, blends and bit casts only: the standard library's SIMD clamped(), rounded()
    // and integer conversions compile to calls here.
    let low = SIMD8<Float>(repeating: -87.3), high = SIMD8<Float>(repeating: 88.3)
    let clamped = x.replacing(with: low, where: x .< low).replacing(with: high, where: x .> high)
    // n = round(x·log2 e) by the 1.5·2²³ trick: adding it leaves n in the low mantissa bits.
    let shifter = SIMD8<Float>(repeating: 12_582_912)
    let shifted = clamped * 1.44269504088896341 + shifter
    let n = shifted - shifter
    var r = clamped - n * 0.693359375          // ln2 split in two: n·C1 is exact
    r = r + n * 2.12194440e-4
    var p = SIMD8<Float>(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    p = p * (r * r) + r + 1
    let nBits = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- unsafeBitCast(shifter, to: SIMD8<Int32>.self)
    var result = p * unsafeBitCast((nBits &+ 127) &<< 23, to: SIMD8<Float>.self)
    result.replace(with: SIMD8(), where: x .< low)
    result.replace(with: SIMD8(repeating: .infinity), where: x .> high)
    result.replace(with: x, where: x .!= x)
    return result
}

/// A row's maximum and Σ e^(x − max), optionally storing the e^(x − max) (f32, eight lanes at a time;
/// rows shorter than eight in scalar code).
@inline(__always) private func rowMaxAndExpSum(_ row: UnsafePointer<Float>, _ count: Int, into out: UnsafeMutablePointer<Float>?) -> (max: Float, sum: Float) {
    var maximum = row[0]
    for c in 1..<max(1, count) where row[c] > maximum { maximum = row[c] }
    if count < 8 {
        var sum: Float = 0
        for c in 0..<count {
            let e = Foundation.exp(row[c] - maximum)
            out?[c] = e
            sum += e
        }
        return (maximum, sum)
    }
    // Eight lanes at a time; a ragged tail is done as the row's last eight lanes, with the lanes
    // already summed masked out of the sum (the store rewrites them with the same values).
    var sums = SIMD8<Float>()
    let lane = SIMD8<Float>(0, 1, 2, 3, 4, 5, 6, 7)   // (an Int32 compare builds its mask lane by lane)
    var c = 0
    while c < count {
        let start = min(c, count - 8)
        let e = expLanes(loadLanes(row + start) - maximum)
        if let out { storeLanes(e, out + start) }
        sums += e.replacing(with: SIMD8(), where: lane .< Float(c - start))
        c = start + 8
    }
    return (maximum, sums.sum())
}

private func softmaxForwardF32(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
    guard columns > 0 else { return }
    for r in 0..<rows {
        let out = y + r * columns
        let inverse = 1 / rowMaxAndExpSum(x + r * columns, columns, into: out).sum
        var c = 0
        while c + 8 <= columns { storeLanes(loadLanes(out + c) * inverse, out + c); c += 8 }
        while c < columns { out[c] *= inverse; c += 1 }
    }
}

private func softmaxCrossEntropyF32(_ logits: UnsafePointer<Float>, _ labels: UnsafePointer<Float>, rows: Int, classes: Int) -> Double {
    guard classes > 0 else { return 0 }
    var total = 0.0
    for r in 0..<rows {
        let row = logits + r * classes
        let (maximum, sum) = rowMaxAndExpSum(row, classes, into: nil)
        total += Foundation.log(Double(sum)) + Double(maximum) - Double(row[label(labels, r, classes: classes)])
    }
    return total / Double(max(1, rows))
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
    sumInDouble(T.self, count) { x[$0] }
}

/// Σ element(i) for i in 0..<count, in Double: for f32 in eight running sums (one chain of dependent
/// adds took 1 ns an element: the fc 1024 benchmark's loss, a sum over 1M outputs, took 1 ms), for
/// f64 in order (the tutorials' losses are reproduced digit for digit). Every loss sum takes this
/// order, so a fused loss gives the same value as its unfused ops.
@inline(__always)
func sumInDouble<T: KernelScalar>(_: T.Type, _ count: Int, _ element: (Int) -> T) -> Double {
    guard T.self == Float.self else {
        var sum = 0.0
        for i in 0..<count { sum += Double(element(i)) }
        return sum
    }
    var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0, s5 = 0.0, s6 = 0.0, s7 = 0.0
    var i = 0
    while i + 8 <= count {
        s0 += Double(element(i)); s1 += Double(element(i + 1)); s2 += Double(element(i + 2)); s3 += Double(element(i + 3))
        s4 += Double(element(i + 4)); s5 += Double(element(i + 5)); s6 += Double(element(i + 6)); s7 += Double(element(i + 7))
        i += 8
    }
    while i < count { s0 += Double(element(i)); i += 1 }
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}

/// Σ (p − y)² (divided by count when `mean`): the same operations, in the same order, as the sub,
/// pow 2 and mean (sum) it replaces, so the loss is the same bit for bit.
func squaredError<T: KernelScalar>(_ p: UnsafePointer<T>, _ y: UnsafePointer<T>, count: Int, mean: Bool) -> Double {
    let sum = sumInDouble(T.self, count) { i in
        let d = p[i] - y[i]
        return d * d
    }
    return mean ? sum / Double(max(1, count)) : sum
}

/// dp = (dL (/ count when `mean`)) · (2 (p − y)): what broadcast and pow 2's gradient computed.
func squaredErrorBackward<T: KernelScalar>(_ p: UnsafePointer<T>, _ y: UnsafePointer<T>, _ dLoss: T, _ dp: UnsafeMutablePointer<T>,
                                           count: Int, mean: Bool) {
    let g = mean ? dLoss / T(max(1, count)) : dLoss
    for i in 0..<count { dp[i] = g * (2 * (p[i] - y[i])) }
}

/// The class index stored (as a float) in a label tensor, clamped into range.
@inline(__always) func label<T: KernelScalar>(_ labels: UnsafePointer<T>, _ row: Int, classes: Int) -> Int {
    let value = labels[row]
    guard value >= 0, value < T(classes) else { return 0 }
    return Int(value)
}

/// Mean over rows of −log softmax(z)[label], stable (log-sum-exp with the max subtracted).
func softmaxCrossEntropy<T: KernelScalar>(_ logits: UnsafePointer<T>, _ labels: UnsafePointer<T>, rows: Int, classes: Int) -> Double {
    if T.self == Float.self {
        return softmaxCrossEntropyF32(UnsafeRawPointer(logits).assumingMemoryBound(to: Float.self),
                                      UnsafeRawPointer(labels).assumingMemoryBound(to: Float.self), rows: rows, classes: classes)
    }
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

/// How many parts an element-wise kernel over `count` elements splits into (1 below the threshold).
@inline(__always) func elementwiseParts(_ count: Int, _ context: GEMMContext?) -> Int {
    guard let context, count >= elementwiseParallelMinimum else { return 1 }
    return context.threads
}

/// Part `part` of `parts` of 0..<count, cut at multiples of 8 (whole lane groups).
@inline(__always) func laneRange(_ count: Int, part: Int, of parts: Int) -> Range<Int> {
    let groups = (count + 7) / 8
    return min(count, groups * part / parts * 8)..<min(count, groups * (part + 1) / parts * 8)
}

/// One SGD step (PyTorch's semantics) on a parameter, its gradient and velocity: g += decay·p;
/// v = momentum·v + g; p −= lr·(nesterov ? g + momentum·v : v) (without velocity: p −= lr·g). The vector
/// and scalar forms do the same IEEE operations, so results do not depend on where a split falls, and
/// the GEMM epilogue (`gemm(update:)`) gives the same parameters as `sgdUpdate`.
public struct SGDStep<T: KernelScalar> {
    public var parameter: UnsafeMutablePointer<T>
    public var velocity: UnsafeMutablePointer<T>?
    public var lr: T, momentum: T, nesterov: Bool, decay: T

    public init(parameter: UnsafeMutablePointer<T>, velocity: UnsafeMutablePointer<T>?, lr: T, momentum: T, nesterov: Bool, decay: T) {
        (self.parameter, self.velocity, self.lr, self.momentum, self.nesterov, self.decay) = (parameter, velocity, lr, momentum, nesterov, decay)
    }

    /// Without momentum and decay: p −= lr·g.
    var isPlain: Bool { velocity == nil && decay == 0 }

    /// The step for elements offset..<offset+count of the parameter, with their gradient at g.
    @inline(__always)
    func apply(gradient g: UnsafePointer<T>, at offset: Int, count: Int) {
        let p = parameter + offset
        var i = 0
        if let velocity {
            let v = velocity + offset
            while i + 8 <= count {
                var gi = loadLanes(g + i)
                if decay != 0 { gi += decay * loadLanes(p + i) }
                let vi = momentum * loadLanes(v + i) + gi
                storeLanes(vi, v + i)
                storeLanes(loadLanes(p + i) - lr * (nesterov ? gi + momentum * vi : vi), p + i)
                i += 8
            }
            while i < count {
                var gi = g[i]
                if decay != 0 { gi += decay * p[i] }
                let vi = momentum * v[i] + gi
                v[i] = vi
                p[i] -= lr * (nesterov ? gi + momentum * vi : vi)
                i += 1
            }
        } else {
            while i + 8 <= count {
                var gi = loadLanes(g + i)
                if decay != 0 { gi += decay * loadLanes(p + i) }
                storeLanes(loadLanes(p + i) - lr * gi, p + i)
                i += 8
            }
            while i < count {
                var gi = g[i]
                if decay != 0 { gi += decay * p[i] }
                p[i] -= lr * gi
                i += 1
            }
        }
    }
}

/// SGD over count elements (see `SGDStep`), split over the context's threads for large tensors.
@_specialize(where T == Float)
@_specialize(where T == Double)
func sgdUpdate<T: KernelScalar>(_ p: UnsafeMutablePointer<T>, _ g: UnsafePointer<T>, velocity: UnsafeMutablePointer<T>?, count: Int,
                                lr: T, momentum: T, nesterov: Bool, decay: T, context: GEMMContext? = nil) {
    let step = SGDStep(parameter: p, velocity: velocity, lr: lr, momentum: momentum, nesterov: nesterov, decay: decay)
    elementwiseInParts(count, context, (step, g)) { operands, range in
        let (step, g) = operands
        step.apply(gradient: g + range.lowerBound, at: range.lowerBound, count: range.count)
    }
}

/// Adam (Kingma & Ba, PyTorch's semantics) at step t ≥ 1.
@_specialize(where T == Float)
@_specialize(where T == Double)
func adamUpdate<T: KernelScalar>(_ p: UnsafeMutablePointer<T>, _ g: UnsafePointer<T>, _ m: UnsafeMutablePointer<T>, _ v: UnsafeMutablePointer<T>, count: Int,
                                 lr: Double, beta1: Double, beta2: Double, eps: Double, decay: Double, step: Int,
                                 context: GEMMContext? = nil) {
    let correction1 = 1 - Foundation.pow(beta1, Double(step)), correction2 = 1 - Foundation.pow(beta2, Double(step))
    let stepSize = T(lr / correction1), b1 = T(beta1), b2 = T(beta2), e = T(eps), d = T(decay)
    let inverseRootCorrection2 = T(1 / correction2.squareRoot())
    typealias Operands = (UnsafeMutablePointer<T>, UnsafePointer<T>, UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, Int, T, T, T, T, T, T, Int)
    let parts = elementwiseParts(count, context)
    let operands: Operands = (p, g, m, v, count, stepSize, b1, b2, e, d, inverseRootCorrection2, parts)
    parallelFor(parts, on: context, sharing: operands) { shared, part, _ in
        let (p, g, m, v, count, stepSize, b1, b2, e, d, inverseRootCorrection2, parts) =
            shared.assumingMemoryBound(to: Operands.self).pointee
        let range = laneRange(count, part: part, of: parts)
        var i = range.lowerBound
        while i + 8 <= range.upperBound {
            var gi = loadLanes(g + i)
            if d != 0 { gi += d * loadLanes(p + i) }
            let mi = b1 * loadLanes(m + i) + (1 - b1) * gi
            let vi = b2 * loadLanes(v + i) + (1 - b2) * gi * gi
            storeLanes(mi, m + i)
            storeLanes(vi, v + i)
            storeLanes(loadLanes(p + i) - stepSize * mi / (T.squareRoot(vi) * inverseRootCorrection2 + e), p + i)
            i += 8
        }
        while i < range.upperBound {
            var gi = g[i]
            if d != 0 { gi += d * p[i] }
            let mi = b1 * m[i] + (1 - b1) * gi
            let vi = b2 * v[i] + (1 - b2) * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] -= stepSize * mi / (vi.squareRoot() * inverseRootCorrection2 + e)
            i += 1
        }
    }
}

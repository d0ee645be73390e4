import IR

// The tutorials' networks (XOR's 2-3-1, the seed's 3-4-1): products of at most `gemmTinyThreshold`
// multiply-adds and layers of a few units, whose step is mostly the cost of the general kernels'
// decisions — transposes, the activation, the optimizer's options, the sizes — taken again in every
// call. These kernels take them once, when the executable is made (`Session.operation`), and compute
// exactly what the general ones compute, operation for operation: the same values.

/// One tiny product c = f(op(a)·op(b) + bias), as `gemmReference` computes it (C is not read), its
/// strides resolved from the transposes.
struct TinyProduct<T: KernelScalar> {
    let m: Int, n: Int, k: Int
    let a: UnsafePointer<T>, aRow: Int, aColumn: Int
    let b: UnsafePointer<T>, bRow: Int, bColumn: Int
    let c: UnsafeMutablePointer<T>, ldc: Int
    let bias: UnsafePointer<T>?

    init(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
         c: UnsafeMutablePointer<T>, ldc: Int, bias: UnsafePointer<T>?) {
        (self.m, self.n, self.k, self.a, self.b, self.c, self.ldc, self.bias) = (m, n, k, a, b, c, ldc, bias)
        (aRow, aColumn) = transA ? (1, lda) : (lda, 1)
        (bRow, bColumn) = transB ? (1, ldb) : (ldb, 1)
    }

    /// Row i, column j of op(a)·op(b), summed over k in order from 0.
    @inline(__always)
    func product(_ i: Int, _ j: Int) -> T {
        let ai = a + i &* aRow, bj = b + j &* bColumn
        // One term (a batch of one's gradients): the loop's 0 + a·b, without the loop.
        if k == 1 { return 0 + ai[0] * bj[0] }
        var s: T = 0
        var p = 0
        while p < k {
            s += ai[p &* aColumn] * bj[p &* bRow]
            p &+= 1
        }
        return s
    }

    /// Row i of op(a)·op(b) when n == N, each column summed over k in order from 0 as in `product`,
    /// the N sums side by side (in registers).
    @inline(__always)
    func row<let N: Int>(_ i: Int) -> InlineArray<N, T> {
        var sums = InlineArray<N, T>(repeating: 0)
        let ai = a + i &* aRow
        if k == 1 {
            for j in 0..<N { sums[j] = 0 + ai[0] * b[j &* bColumn] }
            return sums
        }
        for p in 0..<k {
            let x = ai[p &* aColumn], bp = b + p &* bRow
            for j in 0..<N { sums[j] += x * bp[j &* bColumn] }
        }
        return sums
    }
}

/// dz = dy ⊙ f'(y) and db = Σ over rows of dz for a [rows, channels] tensor, as `activationBackwardBias`
/// computes them (inner == 1), then the bias's plain SGD step (no momentum, no decay: b −= lr·db, as
/// `SGDStep.apply` takes it).
struct TinyBiasStep<T: KernelScalar> {
    let y: UnsafeMutablePointer<T>, dy: UnsafeMutablePointer<T>, dz: UnsafeMutablePointer<T>, db: UnsafeMutablePointer<T>
    let rows: Int, channels: Int
    let bias: UnsafeMutablePointer<T>

    /// `width`: the channels, a constant where the caller's is.
    @inline(__always)
    func run(_ f: ActivationFunction, lr: T, width: Int) {
        withDerivative(f) { (_: (Lanes<T>, Lanes<T>) -> Lanes<T>, scalar: (T, T) -> T) in
            for r in 0..<rows {
                let base = r &* width
                for c in 0..<width {
                    let v = scalar(dy[base &+ c], y[base &+ c])
                    dz[base &+ c] = v
                    db[c] = (r == 0 ? 0 : db[c]) + v
                }
            }
        }
        for c in 0..<width { bias[c] -= lr * db[c] }
    }
}

/// The tiny kernels for one output width (a product's n, a bias's channels). `f`: the activation, a
/// literal at the call sites that matter, so that its per-element switch folds away.
protocol TinyKernels {
    /// c = f(op(a)·op(b) + bias).
    static func forward<T: KernelScalar>(_ g: TinyProduct<T>, _ f: ActivationFunction)
    /// A weight gradient (C laid out like the parameter, ldc = n) and the parameter's plain SGD step.
    static func weightGradientStep<T: KernelScalar>(_ g: TinyProduct<T>, parameter: UnsafeMutablePointer<T>, lr: T)
    static func biasStep<T: KernelScalar>(_ s: TinyBiasStep<T>, _ f: ActivationFunction, lr: T)
}

/// Width N, known when the executable is made: the loops over the columns unrolled, their sums in
/// registers (for the tutorials' layers, widths 1–4: each width is a copy of these in the binary).
enum TinyFixedWidth<let N: Int>: TinyKernels {
    @inline(__always)
    static func forward<T: KernelScalar>(_ g: TinyProduct<T>, _ f: ActivationFunction) {
        for i in 0..<g.m {
            let sums: InlineArray<N, T> = g.row(i)
            for j in 0..<N {
                var y = sums[j]
                if let bias = g.bias { y += bias[j] }
                g.c[i &* g.ldc &+ j] = f.apply(y)
            }
        }
    }

    @inline(__always)
    static func weightGradientStep<T: KernelScalar>(_ g: TinyProduct<T>, parameter: UnsafeMutablePointer<T>, lr: T) {
        for i in 0..<g.m {
            let sums: InlineArray<N, T> = g.row(i)
            for j in 0..<N {
                g.c[i &* N &+ j] = sums[j]
                parameter[i &* N &+ j] -= lr * sums[j]
            }
        }
    }

    @inline(__always)
    static func biasStep<T: KernelScalar>(_ s: TinyBiasStep<T>, _ f: ActivationFunction, lr: T) {
        s.run(f, lr: lr, width: N)
    }
}

/// Any width: the loops over the columns as they come.
enum TinyAnyWidth: TinyKernels {
    @inline(__always)
    static func forward<T: KernelScalar>(_ g: TinyProduct<T>, _ f: ActivationFunction) {
        for i in 0..<g.m {
            for j in 0..<g.n {
                var y = g.product(i, j)
                if let bias = g.bias { y += bias[j] }
                g.c[i &* g.ldc &+ j] = f.apply(y)
            }
        }
    }

    @inline(__always)
    static func weightGradientStep<T: KernelScalar>(_ g: TinyProduct<T>, parameter: UnsafeMutablePointer<T>, lr: T) {
        for i in 0..<g.m {
            for j in 0..<g.n {
                let sum = g.product(i, j)
                g.c[i &* g.n &+ j] = sum
                parameter[i &* g.n &+ j] -= lr * sum
            }
        }
    }

    @inline(__always)
    static func biasStep<T: KernelScalar>(_ s: TinyBiasStep<T>, _ f: ActivationFunction, lr: T) {
        s.run(f, lr: lr, width: s.channels)
    }
}

/// Makes something with the tiny kernels of one width (a generic function over them, which Swift's
/// closures cannot be).
protocol TinyKernelsUser {
    associatedtype Result
    func use<K: TinyKernels>(_ kernels: K.Type) -> Result
}

/// user's result with the kernels for `width`: fixed for 1–4, any beyond.
@inline(__always)
func withTinyKernels<User: TinyKernelsUser>(width: Int, _ user: User) -> User.Result {
    switch width {
    case 1: return user.use(TinyFixedWidth<1>.self)
    case 2: return user.use(TinyFixedWidth<2>.self)
    case 3: return user.use(TinyFixedWidth<3>.self)
    case 4: return user.use(TinyFixedWidth<4>.self)
    default: return user.use(TinyAnyWidth.self)
    }
}

/// `squaredError` and `squaredErrorBackward` for fewer than 8 elements: the former's eight partial sums
/// leave one, the others' +0 adding nothing (the sum is ≥ +0 or NaN), so one sum in order gives the
/// same loss.
@inline(__always)
func tinySquaredErrorWithGrad<T: KernelScalar>(_ p: UnsafePointer<T>, _ y: UnsafePointer<T>, dLoss: T, loss: UnsafeMutablePointer<T>,
                                                dp: UnsafeMutablePointer<T>, count: Int, mean: Bool) {
    var sum = 0.0
    for i in 0..<count {
        let d = p[i] - y[i]
        sum += Double(d * d)
    }
    loss.pointee = T(mean ? sum / Double(max(1, count)) : sum)
    squaredErrorBackward(p, y, dLoss, dp, count: count, mean: mean)
}

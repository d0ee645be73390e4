import Testing
@testable import Runtime

/// Tests of the GEMM kernel against a naive triple loop in Double.
@Suite struct GEMMTests {

    /// Deterministic pseudo-random values in [-1, 1).
    struct LCG {
        var state: UInt64
        mutating func next() -> Double {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Double(state >> 11) / Double(1 << 53) * 2 - 1
        }
    }

    struct Case {
        var m: Int, n: Int, k: Int
        var transA = false, transB = false
        var padA = 0, padB = 0, padC = 0
        var accumulate = false
        var bias = false
        var activation: KernelActivation = .identity
        var gradient: KernelActivation? = nil
        var threads = 1
        var worker: Int? = nil
    }

    /// Runs one case in T and checks it against the Double reference; returns C (with its padding).
    @discardableResult
    static func check<T: KernelScalar>(_ t: T.Type, _ cs: Case, context: GEMMContext? = nil,
                                       seed: UInt64 = 1) -> [T] {
        let m = cs.m, n = cs.n, k = cs.k
        var rng = LCG(state: seed &+ UInt64(m * 1_000_003 + n * 1009 + k))
        // Stored shapes: A is m×k (k×m if transA), B is k×n (n×k if transB).
        let aRows = cs.transA ? k : m, aCols = cs.transA ? m : k
        let bRows = cs.transB ? n : k, bCols = cs.transB ? k : n
        let lda = aCols + cs.padA, ldb = bCols + cs.padB, ldc = n + cs.padC, ldg = n + 2
        let a = (0..<max(1, aRows * lda)).map { _ in T(rng.next()) }
        let b = (0..<max(1, bRows * ldb)).map { _ in T(rng.next()) }
        let c0 = (0..<max(1, m * ldc)).map { _ in T(rng.next()) }
        let bias = (0..<max(1, n)).map { _ in T(rng.next()) }
        // Y for the gradient epilogue: outputs of an activation, in (0, 1).
        let y = (0..<max(1, m * ldg)).map { _ in T(rng.next() * 0.45 + 0.5) }
        let ctx = context ?? GEMMContext(threads: cs.threads)

        var c = c0
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                bias.withUnsafeBufferPointer { pbias in
                    y.withUnsafeBufferPointer { py in
                        c.withUnsafeMutableBufferPointer { pc in
                            gemm(transA: cs.transA, transB: cs.transB, m: m, n: n, k: k,
                                 a: pa.baseAddress!, lda: lda, b: pb.baseAddress!, ldb: ldb,
                                 c: pc.baseAddress!, ldc: ldc, accumulate: cs.accumulate,
                                 bias: cs.bias ? pbias.baseAddress! : nil,
                                 activation: cs.activation,
                                 gradientThrough: cs.gradient ?? .identity,
                                 gradientOutput: cs.gradient != nil ? py.baseAddress! : nil, ldg: ldg,
                                 context: ctx, worker: cs.worker)
                        }
                    }
                }
            }
        }

        let tol = T.self == Float.self ? 2e-6 : 1e-14
        var bad = 0
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0, mag = 0.0
                for p in 0..<k {
                    let av = Double(cs.transA ? a[p * lda + i] : a[i * lda + p])
                    let bv = Double(cs.transB ? b[j * ldb + p] : b[p * ldb + j])
                    s += av * bv
                    mag += abs(av * bv)
                }
                if cs.accumulate { s += Double(c0[i * ldc + j]); mag += abs(Double(c0[i * ldc + j])) }
                if cs.bias { s += Double(bias[j]); mag += abs(Double(bias[j])) }
                s = cs.activation.apply(s)
                if let g = cs.gradient { s *= g.derivative(output: Double(y[i * ldg + j])) }
                let got = Double(c[i * ldc + j])
                if !(abs(got - s) <= tol * (mag + 1) * Double(k + 4)) {
                    if bad < 5 {
                        Issue.record("\(T.self) \(cs) at (\(i), \(j)): got \(got), expected \(s)")
                    }
                    bad += 1
                }
            }
            // The padding of C is left alone.
            for j in n..<ldc where i * ldc + j < c.count {
                if c[i * ldc + j] != c0[i * ldc + j] {
                    Issue.record("\(T.self) \(cs): padding of C written at (\(i), \(j))")
                    return c
                }
            }
        }
        return c
    }

    static let sizes = [1, 3, 17, 129]

    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func allSizesF32(transA: Bool, transB: Bool) {
        let ctx = GEMMContext(threads: 2)
        for m in Self.sizes {
            for n in Self.sizes {
                for k in Self.sizes where m * n * k < 129 * 129 * 129 {
                    Self.check(Float.self, Case(m: m, n: n, k: k, transA: transA, transB: transB), context: ctx)
                }
            }
        }
    }

    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func allSizesF64(transA: Bool, transB: Bool) {
        let ctx = GEMMContext(threads: 1)
        for m in Self.sizes {
            for n in Self.sizes {
                for k in Self.sizes where m * n * k < 129 * 129 * 17 {
                    Self.check(Double.self, Case(m: m, n: n, k: k, transA: transA, transB: transB), context: ctx)
                }
            }
        }
    }

    /// Sizes past the cache blocks: k > kc (several k blocks), m > mc, n > nc (f32 nc = 2048).
    @Test func largeBlocks() {
        let ctx = GEMMContext(threads: 2)
        Self.check(Float.self, Case(m: 7, n: 21, k: 1000, accumulate: true, bias: true, activation: .relu), context: ctx)
        Self.check(Float.self, Case(m: 300, n: 20, k: 5, transA: true, bias: true, activation: .tanh), context: ctx)
        Self.check(Float.self, Case(m: 3, n: 2100, k: 4, transB: true, accumulate: true), context: ctx)
        Self.check(Double.self, Case(m: 150, n: 1030, k: 3, accumulate: true, bias: true), context: ctx)
        Self.check(Double.self, Case(m: 13, n: 10, k: 600, transA: true, transB: true,
                                     gradient: .sigmoid), context: ctx)
        Self.check(Float.self, Case(m: 1000, n: 33, k: 40, transA: true, padA: 3, padC: 1,
                                    bias: true, activation: .leakyRelu(alpha: 0.1)), context: ctx)
    }

    @Test func leadingDimensions() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for (m, n, k) in [(3, 17, 5), (17, 33, 20), (20, 16, 129)] {
                Self.check(Float.self, Case(m: m, n: n, k: k, transA: ta, transB: tb, padA: 3, padB: 5, padC: 7))
                Self.check(Double.self, Case(m: m, n: n, k: k, transA: ta, transB: tb, padA: 1, padB: 2, padC: 3))
            }
        }
    }

    static let activations: [KernelActivation] = [.identity, .relu, .leakyRelu(alpha: 0.01), .tanh, .sigmoid]

    @Test(arguments: activations)
    func epilogues(activation: KernelActivation) {
        for (m, n, k) in [(1, 3, 2), (3, 1, 1), (17, 33, 20), (13, 40, 300), (6, 16, 8), (12, 32, 256)] {
            for accumulate in [false, true] {
                for bias in [false, true] {
                    Self.check(Float.self, Case(m: m, n: n, k: k, padC: 2, accumulate: accumulate, bias: bias,
                                                activation: activation))
                    Self.check(Double.self, Case(m: m, n: n, k: k, transA: true, accumulate: accumulate, bias: bias,
                                                 activation: activation))
                }
            }
        }
    }

    @Test(arguments: activations)
    func gradientEpilogue(through: KernelActivation) {
        for (m, n, k) in [(1, 2, 3), (17, 33, 20), (6, 16, 8), (30, 50, 260)] {
            Self.check(Float.self, Case(m: m, n: n, k: k, transB: true, gradient: through))
            Self.check(Double.self, Case(m: m, n: n, k: k, transB: true, accumulate: true, bias: true, gradient: through))
        }
    }

    @Test func zeroSizes() {
        // k == 0 gives C = epilogue(0); m == 0 or n == 0 does nothing.
        Self.check(Float.self, Case(m: 3, n: 5, k: 0))
        Self.check(Float.self, Case(m: 3, n: 5, k: 0, accumulate: true, bias: true, activation: .sigmoid))
        Self.check(Double.self, Case(m: 4, n: 2, k: 0, bias: true, gradient: .tanh))
        Self.check(Float.self, Case(m: 0, n: 5, k: 3))
        Self.check(Float.self, Case(m: 3, n: 0, k: 3))
        Self.check(Double.self, Case(m: 0, n: 0, k: 0))
    }

    @Test func threadsAndWorkers() {
        for threads in [1, 2, 3] {
            let ctx = GEMMContext(threads: threads)
            #expect(ctx.threads == threads)
            for (m, n, k) in [(129, 129, 17), (200, 10, 150), (10, 300, 100), (1, 1000, 300)] {
                Self.check(Float.self, Case(m: m, n: n, k: k, bias: true, activation: .relu), context: ctx)
                Self.check(Double.self, Case(m: m, n: n, k: k, transA: true, accumulate: true), context: ctx)
                for w in 0..<threads {
                    Self.check(Float.self, Case(m: m, n: n, k: k, transB: true, worker: w), context: ctx)
                }
            }
        }
    }

    /// Calls with worker: w made from inside parallelFor, each on its own output.
    @Test func insideParallelFor() {
        let ctx = GEMMContext(threads: 2)
        let m = 40, n = 50, k = 60, count = 6
        var rng = LCG(state: 7)
        let a = (0..<count * m * k).map { _ in Float(rng.next()) }
        let b = (0..<k * n).map { _ in Float(rng.next()) }
        var c = [Float](repeating: 0, count: count * m * n)
        var expected = c
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    let base = pc.baseAddress!
                    ctx.parallelFor(count) { i, w in
                        gemm(transA: false, transB: false, m: m, n: n, k: k, a: pa.baseAddress! + i * m * k, lda: k,
                             b: pb.baseAddress!, ldb: n, c: base + i * m * n, ldc: n, context: ctx, worker: w)
                    }
                }
                expected.withUnsafeMutableBufferPointer { pe in
                    for i in 0..<count {
                        gemm(transA: false, transB: false, m: m, n: n, k: k, a: pa.baseAddress! + i * m * k, lda: k,
                             b: pb.baseAddress!, ldb: n, c: pe.baseAddress! + i * m * n, ldc: n,
                             context: GEMMContext(threads: 1))
                    }
                }
            }
        }
        #expect(c == expected)
    }

    @Test func determinism() {
        let big = Case(m: 150, n: 140, k: 300, transA: true, accumulate: true, bias: true, activation: .tanh)
        for threads in [1, 2] {
            let ctx = GEMMContext(threads: threads)
            let r1 = Self.check(Float.self, big, context: ctx)
            let r2 = Self.check(Float.self, big, context: ctx)
            #expect(r1 == r2)
            let d1 = Self.check(Double.self, big, context: ctx)
            let d2 = Self.check(Double.self, big, context: ctx)
            #expect(d1 == d2)
        }
        // The split never changes the arithmetic of an element: 1 and 2 threads agree bit for bit.
        let one = Self.check(Float.self, big, context: GEMMContext(threads: 1))
        let two = Self.check(Float.self, big, context: GEMMContext(threads: 2))
        #expect(one == two)
    }

    @Test func parallelForCoversEachIndexOnce() {
        for threads in [1, 2, 4] {
            let ctx = GEMMContext(threads: threads)
            for count in [0, 1, 2, 3, 7, 100] {
                var hits = [Int](repeating: 0, count: count)
                var owner = [Int](repeating: -1, count: count)
                hits.withUnsafeMutableBufferPointer { h in
                    owner.withUnsafeMutableBufferPointer { o in
                        let hp = h.baseAddress, op = o.baseAddress
                        ctx.parallelFor(count) { i, w in
                            hp?[i] += 1
                            op?[i] = w
                        }
                    }
                }
                #expect(hits.allSatisfy { $0 == 1 })
                #expect(owner.allSatisfy { $0 >= 0 && $0 < threads })
                // Static partition: the same assignment every time.
                var again = [Int](repeating: -1, count: count)
                again.withUnsafeMutableBufferPointer { o in
                    let op = o.baseAddress
                    ctx.parallelFor(count) { i, w in op?[i] = w }
                }
                #expect(again == owner)
            }
        }
    }

    @Test func manyParallelForCalls() {
        let ctx = GEMMContext(threads: 2)
        var total = [Int](repeating: 0, count: 2)
        total.withUnsafeMutableBufferPointer { t in
            let tp = t.baseAddress
            for _ in 0..<20_000 {
                ctx.parallelFor(2) { i, _ in tp?[i] += 1 }
            }
        }
        #expect(total == [20_000, 20_000])
    }
}

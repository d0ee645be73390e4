import Foundation
import Synchronization
import Testing
import IR
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
        var activation: ActivationFunction = .identity
        var threads = 1
        var worker: Int? = nil
    }

    /// Inputs of one case, stored with the case's transposes and leading dimensions.
    struct Inputs<T: KernelScalar> {
        var a: [T], b: [T], c0: [T], bias: [T]
        var lda: Int, ldb: Int, ldc: Int
    }

    static func inputs<T: KernelScalar>(_ t: T.Type, _ cs: Case, seed: UInt64) -> Inputs<T> {
        let m = cs.m, n = cs.n, k = cs.k
        var rng = LCG(state: seed &+ UInt64(m * 1_000_003 + n * 1009 + k))
        // Stored shapes: A is m×k (k×m if transA), B is k×n (n×k if transB).
        let aRows = cs.transA ? k : m, aCols = cs.transA ? m : k
        let bRows = cs.transB ? n : k, bCols = cs.transB ? k : n
        let lda = aCols + cs.padA, ldb = bCols + cs.padB, ldc = n + cs.padC
        let a = (0..<max(1, aRows * lda)).map { _ in T(rng.next()) }
        let b = (0..<max(1, bRows * ldb)).map { _ in T(rng.next()) }
        let c0 = (0..<max(1, m * ldc)).map { _ in T(rng.next()) }
        let bias = (0..<max(1, n)).map { _ in T(rng.next()) }
        return Inputs(a: a, b: b, c0: c0, bias: bias, lda: lda, ldb: ldb, ldc: ldc)
    }

    /// Runs the case's GEMM on the inputs; returns C (with its padding).
    static func run<T: KernelScalar>(_ cs: Case, _ x: Inputs<T>, context: GEMMContext) -> [T] {
        var c = x.c0
        x.a.withUnsafeBufferPointer { pa in
            x.b.withUnsafeBufferPointer { pb in
                x.bias.withUnsafeBufferPointer { pbias in
                    c.withUnsafeMutableBufferPointer { pc in
                        gemm(transA: cs.transA, transB: cs.transB, m: cs.m, n: cs.n, k: cs.k,
                             a: pa.baseAddress!, lda: x.lda, b: pb.baseAddress!, ldb: x.ldb,
                             c: pc.baseAddress!, ldc: x.ldc, accumulate: cs.accumulate,
                             bias: cs.bias ? pbias.baseAddress! : nil,
                             activation: cs.activation,
                             context: context, worker: cs.worker)
                    }
                }
            }
        }
        return c
    }

    /// Runs one case in T and checks it against the Double reference; returns C (with its padding).
    @discardableResult
    static func check<T: KernelScalar>(_ t: T.Type, _ cs: Case, context: GEMMContext? = nil,
                                       seed: UInt64 = 1) -> [T] {
        let m = cs.m, n = cs.n, k = cs.k
        let x = inputs(T.self, cs, seed: seed)
        let context = context ?? GEMMContext(threads: cs.threads)
        let c = run(cs, x, context: context)
        // f32 runs on the 256-bit or the 512-bit kernel (by the build's target): both, on any machine,
        // give the same C bit for bit.
        if T.self == Float.self {
            context.wideKernels.toggle()
            let other = run(cs, x, context: context)
            context.wideKernels.toggle()
            if !zip(c, other).allSatisfy({ $0 == $1 || $0.isNaN && $1.isNaN }) {
                Issue.record("\(cs): the 256-bit and 512-bit kernels differ")
            }
        }

        // op(A) as m×k and op(B) as k×n, in Double.
        var opA = [Double](repeating: 0, count: m * k), opB = [Double](repeating: 0, count: k * n)
        for i in 0..<m {
            for p in 0..<k { opA[i * k + p] = Double(cs.transA ? x.a[p * x.lda + i] : x.a[i * x.lda + p]) }
        }
        for p in 0..<k {
            for j in 0..<n { opB[p * n + j] = Double(cs.transB ? x.b[j * x.ldb + p] : x.b[p * x.ldb + j]) }
        }
        let tol = T.self == Float.self ? 2e-6 : 1e-14
        var bad = 0
        var row = [Double](repeating: 0, count: n), mag = [Double](repeating: 0, count: n)
        for i in 0..<m {
            for j in 0..<n { row[j] = 0; mag[j] = 0 }
            for p in 0..<k {
                let av = opA[i * k + p]
                for j in 0..<n {
                    let t = av * opB[p * n + j]
                    row[j] += t
                    mag[j] += abs(t)
                }
            }
            for j in 0..<n {
                var s = row[j], e = mag[j]
                if cs.accumulate { let v = Double(x.c0[i * x.ldc + j]); s += v; e += abs(v) }
                if cs.bias { let v = Double(x.bias[j]); s += v; e += abs(v) }
                s = cs.activation.apply(s)
                let got = Double(c[i * x.ldc + j])
                if !(abs(got - s) <= tol * (e + 1) * Double(k + 4)) {
                    if bad < 5 {
                        Issue.record("\(T.self) \(cs) at (\(i), \(j)): got \(got), expected \(s)")
                    }
                    bad += 1
                }
            }
            // The padding of C is left alone.
            for j in n..<x.ldc where i * x.ldc + j < c.count {
                if c[i * x.ldc + j] != x.c0[i * x.ldc + j] {
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
                                     activation: .sigmoid), context: ctx)
        Self.check(Float.self, Case(m: 1000, n: 33, k: 40, transA: true, padA: 3, padC: 1,
                                    bias: true, activation: .leakyRelu(alpha: 0.1)), context: ctx)
        // Few rows, long k, split by columns: A packed once for both workers (gemmParallelColumnsSharedA).
        for transA in [false, true] {
            Self.check(Float.self, Case(m: 100, n: 300, k: 421, transA: transA, padA: 2, padC: 3, accumulate: transA,
                                        bias: true, activation: .relu), context: ctx)
            Self.check(Double.self, Case(m: 61, n: 200, k: 700, transA: transA, bias: true), context: ctx)
        }
    }

    /// Tiles cut short by the last rows (m = 6q + r, r = 1...5) run a kernel for only those rows: whole and
    /// ragged panels of B, several k blocks, every part of the epilogue; and splits by rows into shares
    /// that are not whole tiles (1030 rows: 515 each; the shared-B path: 1024 rows, 512 each).
    @Test func shortEdgeTiles() {
        for r in 1...5 {
            for n in [32, 37] {
                Self.check(Float.self, Case(m: 12 + r, n: n, k: 390, padC: 1, accumulate: r % 2 == 0, bias: true, activation: .relu))
                Self.check(Float.self, Case(m: 6 + r, n: n, k: 40, transB: true, activation: .tanh))
                Self.check(Double.self, Case(m: 12 + r, n: n, k: 300, transA: true, accumulate: r % 2 == 1, bias: true, activation: .relu))
            }
        }
        let two = GEMMContext(threads: 2)
        Self.check(Float.self, Case(m: 1030, n: 64, k: 390, bias: true, activation: .relu), context: two)
        Self.check(Double.self, Case(m: 1030, n: 40, k: 70, transA: true, accumulate: true), context: two)
        let shared = GEMMContext(threads: 2)
        shared.sharedPackMinWork = 0
        Self.check(Float.self, Case(m: 1024, n: 200, k: 390, transB: true, bias: true, activation: .relu), context: shared)
        Self.check(Double.self, Case(m: 1019, n: 200, k: 30), context: shared)
    }

    /// gemm(update:) takes the same SGD step as a plain GEMM followed by sgdUpdate over C, bit for bit,
    /// on every path: tiny loops, dot rows, one thread, split over threads, shared packing, k > kc.
    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func updateEpilogueMatchesSeparateStep(transA: Bool, transB: Bool) {
        func check<T: KernelScalar>(_ t: T.Type, _ cs: Case, context: GEMMContext, velocity: Bool, nesterov: Bool, decay: Double) {
            let x = Self.inputs(T.self, cs, seed: 7)
            var rng = LCG(state: 99)
            let count = cs.m * x.ldc
            let p0 = (0..<count).map { _ in T(rng.next()) }, v0 = (0..<count).map { _ in T(rng.next()) }
            let (lr, momentum) = (T(0.05), T(0.9))
            // Separately: C, then the step over C (padding columns included: they are C's too).
            let c = Self.run(cs, x, context: context)
            var pA = p0, vA = v0
            c.withUnsafeBufferPointer { g in pA.withUnsafeMutableBufferPointer { pp in vA.withUnsafeMutableBufferPointer { pv in
                sgdUpdate(pp.baseAddress!, g.baseAddress!, velocity: velocity ? pv.baseAddress! : nil, count: count, lr: lr,
                          momentum: momentum, nesterov: nesterov, decay: T(decay))
            }}}
            // Fused.
            var pB = p0, vB = v0, cB = x.c0
            pB.withUnsafeMutableBufferPointer { pp in vB.withUnsafeMutableBufferPointer { pv in
                let step = SGDStep(parameter: pp.baseAddress!, velocity: velocity ? pv.baseAddress! : nil, lr: lr, momentum: momentum,
                                   nesterov: nesterov, decay: T(decay))
                x.a.withUnsafeBufferPointer { pa in x.b.withUnsafeBufferPointer { pb in cB.withUnsafeMutableBufferPointer { pc in
                    gemm(transA: cs.transA, transB: cs.transB, m: cs.m, n: cs.n, k: cs.k, a: pa.baseAddress!, lda: x.lda,
                         b: pb.baseAddress!, ldb: x.ldb, c: pc.baseAddress!, ldc: x.ldc, accumulate: cs.accumulate,
                         update: step, context: context, worker: cs.worker)
                }}}
            }}
            // Only the columns GEMM writes are stepped; compare those, and C itself.
            for i in 0..<cs.m {
                for j in 0..<cs.n {
                    let e = i * x.ldc + j
                    #expect(cB[e] == c[e], "C \(cs) [\(i),\(j)]")
                    #expect(pB[e] == pA[e], "parameter \(cs) [\(i),\(j)]: \(pB[e]) vs \(pA[e])")
                    if velocity { #expect(vB[e] == vA[e], "velocity \(cs) [\(i),\(j)]") }
                }
            }
        }
        let two = GEMMContext(threads: 2)
        let sharing = GEMMContext(threads: 2)
        sharing.sharedPackMinWork = 1
        let sizes = [(1, 1, 1), (3, 17, 5), (2, 40, 9), (17, 33, 129), (129, 20, 17), (40, 300, 390)]
        for (m, n, k) in sizes {
            for (velocity, nesterov, decay) in [(true, false, 0.0), (true, true, 0.01), (false, false, 0.001)] {
                let cs = Case(m: m, n: n, k: k, transA: transA, transB: transB, padC: 3, accumulate: m == 17)
                check(Float.self, cs, context: two, velocity: velocity, nesterov: nesterov, decay: decay)
                check(Double.self, cs, context: GEMMContext(threads: 1), velocity: velocity, nesterov: nesterov, decay: decay)
            }
            check(Float.self, Case(m: m, n: n, k: k, transA: transA, transB: transB), context: sharing, velocity: true, nesterov: false, decay: 0)
            check(Float.self, Case(m: m, n: n, k: k, transA: transA, transB: transB, worker: 1), context: two, velocity: true, nesterov: false, decay: 0)
        }
    }

    @Test func leadingDimensions() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for (m, n, k) in [(3, 17, 5), (17, 33, 20), (20, 16, 129)] {
                Self.check(Float.self, Case(m: m, n: n, k: k, transA: ta, transB: tb, padA: 3, padB: 5, padC: 7))
                Self.check(Double.self, Case(m: m, n: n, k: k, transA: ta, transB: tb, padA: 1, padB: 2, padC: 3))
            }
        }
    }

    static let activations: [ActivationFunction] = [.identity, .relu, .leakyRelu(alpha: 0.01), .tanh, .sigmoid, .gelu]

    @Test(arguments: activations)
    func epilogues(activation: ActivationFunction) {
        for (m, n, k) in [(1, 3, 2), (3, 1, 1), (17, 33, 20), (13, 40, 400), (6, 16, 8), (12, 32, 256)] {
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

    /// One or two rows of C with a transposed B (dot-product path), also split over threads.
    @Test func fewRowsTransposedB() {
        let ctx = GEMMContext(threads: 2)
        for (m, n, k) in [(1, 7, 5), (2, 9, 37), (1, 600, 500), (2, 33, 1000)] {
            Self.check(Float.self, Case(m: m, n: n, k: k, transB: true, bias: true, activation: .sigmoid), context: ctx)
            Self.check(Float.self, Case(m: m, n: n, k: k, transA: true, transB: true, padA: 1, padB: 3,
                                        accumulate: true), context: ctx)
            Self.check(Double.self, Case(m: m, n: n, k: k, transB: true, padC: 2, activation: .relu), context: ctx)
        }
    }

    @Test func zeroSizes() {
        // k == 0 gives C = epilogue(0); m == 0 or n == 0 does nothing.
        Self.check(Float.self, Case(m: 3, n: 5, k: 0))
        Self.check(Float.self, Case(m: 3, n: 5, k: 0, accumulate: true, bias: true, activation: .sigmoid))
        Self.check(Double.self, Case(m: 4, n: 2, k: 0, bias: true, activation: .tanh))
        Self.check(Float.self, Case(m: 0, n: 5, k: 3))
        Self.check(Float.self, Case(m: 3, n: 0, k: 3))
        Self.check(Double.self, Case(m: 0, n: 0, k: 0))
    }

    @Test func threadsAndWorkers() {
        for threads in [1, 2, 3] {
            let ctx = GEMMContext(threads: threads)
            #expect(ctx.threads == threads)
            // Each above the parallel threshold: split by rows, by columns, and m == 1.
            for (m, n, k) in [(70, 70, 60), (200, 10, 140), (1, 1000, 270)] {
                Self.check(Float.self, Case(m: m, n: n, k: k, bias: true, activation: .relu), context: ctx)
            }
            Self.check(Double.self, Case(m: 10, n: 300, k: 90, transA: true, accumulate: true), context: ctx)
            for w in 0..<threads {
                Self.check(Float.self, Case(m: 70, n: 70, k: 60, transB: true, worker: w), context: ctx)
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
        // Above the parallel threshold, with several k blocks.
        let big = Case(m: 70, n: 60, k: 390, transA: true, accumulate: true, bias: true, activation: .tanh)
        let xf = Self.inputs(Float.self, big, seed: 3)
        let xd = Self.inputs(Double.self, big, seed: 3)
        Self.check(Float.self, big, context: GEMMContext(threads: 2))
        var results: [[Float]] = []
        for threads in [1, 2] {
            let ctx = GEMMContext(threads: threads)
            let r1 = Self.run(big, xf, context: ctx)
            let r2 = Self.run(big, xf, context: ctx)
            #expect(r1 == r2)
            results.append(r1)
            let d1 = Self.run(big, xd, context: ctx)
            let d2 = Self.run(big, xd, context: ctx)
            #expect(d1 == d2)
        }
        // The split never changes the arithmetic of an element: 1 and 2 threads agree bit for bit,
        // also when the workers share the packed B blocks (the path of large GEMMs).
        #expect(results[0] == results[1])
        let shared = GEMMContext(threads: 2)
        shared.sharedPackMinWork = 0
        #expect(Self.run(big, xf, context: shared) == results[0])
        Self.check(Float.self, big, context: shared)
        Self.check(Double.self, Case(m: 40, n: 1030, k: 260, transB: true, bias: true, activation: .relu),
                   context: shared)
        Self.check(Float.self, Case(m: 25, n: 2100, k: 3, accumulate: true, activation: .tanh), context: shared)
    }

    /// Packing an A block writes its mPad × kc values and nothing past them: the shared A of a column
    /// split packs its k blocks end to end, in parallel, and a store past one block's end would
    /// overwrite the start of the next one (it did: rows 0 and 1 of a 96-row batch came out wrong
    /// on two threads, but only when the first block was packed last).
    @Test func packingABlockStaysInsideIt() {
        for transA in [false, true] {
            for (mc, kc) in [(6, 1), (6, 8), (12, 16), (96, 200), (96, 9), (5, 8), (7, 24)] {
                let m = mc + 8, k = kc + 3
                let a = (0..<(m * k)).map { Float($0 % 251) + 1 }
                let mPad = (mc + 5) / 6 * 6
                let guardValue: Float = -7
                var dst = [Float](repeating: guardValue, count: mPad * kc + 16)
                a.withUnsafeBufferPointer { pa in
                    dst.withUnsafeMutableBufferPointer { pd in
                        let g = GEMMArgs<Float>(GEMMCall(
                            transA: transA, transB: false, m: m, n: 1, k: k,
                            a: UnsafeRawPointer(pa.baseAddress!), lda: transA ? m : k,
                            b: UnsafeRawPointer(pa.baseAddress!), ldb: 1,
                            c: UnsafeMutableRawPointer(pd.baseAddress!), ldc: 1, accumulate: false, bias: nil,
                            activation: .identity, worker: -1))
                        packABlock(g, 6, i0: 1, mc: mc, p0: 2, kc: kc, dst: pd.baseAddress!)
                    }
                }
                for r in 0..<mPad {
                    for p in 0..<kc {
                        let i = 1 + r, q = 2 + p
                        let expected = r < mc ? (transA ? a[q * m + i] : a[i * k + q]) : 0
                        let got = dst[(r / 6) * 6 * kc + p * 6 + r % 6]
                        if got != expected {
                            Issue.record("transA \(transA) mc \(mc) kc \(kc): row \(r) p \(p) is \(got), expected \(expected)")
                            return
                        }
                    }
                }
                #expect(dst[(mPad * kc)...].allSatisfy { $0 == guardValue }, "transA \(transA) mc \(mc) kc \(kc): written past the block")
            }
        }
    }

    /// The MLP's first layer on a short last batch (96 rows: whole 6-row tiles, k = 784 in four
    /// blocks) takes the shared-A column split: right, and the same bits on one thread and two.
    @Test func sharedAOnWholeTiles() {
        for m in [96, 120] {
            for cs in [Case(m: m, n: 256, k: 784, bias: true, activation: .relu),
                       Case(m: m, n: 256, k: 784, transA: true)] {
                let x = Self.inputs(Float.self, cs, seed: 4)
                let one = Self.run(cs, x, context: GEMMContext(threads: 1))
                for _ in 0..<3 {
                    let same = Self.run(cs, x, context: GEMMContext(threads: 2)) == one
                    #expect(same, "\(cs)")
                }
            }
        }
        Self.check(Float.self, Case(m: 96, n: 256, k: 784, bias: true, activation: .relu), context: GEMMContext(threads: 2))
    }

    /// The shared packed B when the parts of the job run one after another on one thread (a GEMM
    /// called inside a parallel job runs its parts inline): a part that needs a share nobody packed
    /// yet packs it itself instead of waiting for it, and the result is the same.
    @Test func sharedPackingWhenPartsRunInline() {
        let cs = Case(m: 60, n: 300, k: 530, bias: true, activation: .relu)
        let x = Self.inputs(Float.self, cs, seed: 9)
        let one = Self.run(cs, x, context: GEMMContext(threads: 1))
        let ctx = GEMMContext(threads: 2)
        ctx.sharedPackMinWork = 0
        nonisolated(unsafe) var nested: [Float] = []
        ctx.parallelFor(2) { i, _ in
            if i == 0 { nested = Self.run(cs, x, context: ctx) }
        }
        #expect(nested == one)
        #expect(Self.run(cs, x, context: ctx) == one)
    }

    /// B packed once (`gemmPackB`, constant weights) gives the same C, bit for bit, as B read and packed
    /// by the call: ragged panels, several k blocks, more columns than one block (f32 2048, f64 1024),
    /// transposed B, epilogues, one thread and two.
    @Test func prepackedB() {
        func check<T: KernelScalar>(_ t: T.Type, _ cs: Case, threads: Int, wide: Bool = false) {
            let x = Self.inputs(T.self, cs, seed: 5)
            let context = GEMMContext(threads: threads)
            context.wideKernels = wide
            let expected = Self.run(cs, x, context: context)
            var packed = [T](repeating: .nan, count: gemmPackedBCount(T.self, k: cs.k, n: cs.n, context: context))
            x.b.withUnsafeBufferPointer { pb in
                packed.withUnsafeMutableBufferPointer { pp in
                    gemmPackB(transB: cs.transB, k: cs.k, n: cs.n, b: pb.baseAddress!, ldb: x.ldb, into: pp.baseAddress!, context: context)
                }
            }
            var c = x.c0
            // Tiny products, one or two rows times a transposed B, and threaded products with too few
            // rows to split by rows still read B; otherwise B is not read at all: NaNs stand in for it.
            let work = cs.m * cs.n * cs.k
            let readsB = work <= gemmTinyThreshold || (cs.transB && cs.m <= gemmDotMaxRows)
                || (threads > 1 && work >= gemmParallelThreshold && (cs.m + 5) / 6 < 2 * threads)
            let b = readsB ? x.b : [T](repeating: .nan, count: x.b.count)
            x.a.withUnsafeBufferPointer { pa in x.bias.withUnsafeBufferPointer { pbias in packed.withUnsafeBufferPointer { pp in
                c.withUnsafeMutableBufferPointer { pc in b.withUnsafeBufferPointer { pb in
                    gemm(transA: cs.transA, transB: cs.transB, m: cs.m, n: cs.n, k: cs.k, a: pa.baseAddress!, lda: x.lda,
                         b: pb.baseAddress!, ldb: x.ldb, c: pc.baseAddress!, ldc: x.ldc, accumulate: cs.accumulate,
                         bias: cs.bias ? pbias.baseAddress! : nil, activation: cs.activation,
                         packedB: pp.baseAddress!, context: context)
                }}
            }}}
            let same = c == expected
            #expect(same, "\(T.self) \(cs) on \(threads) threads\(wide ? ", 512-bit kernel" : "")")
        }
        let cases = [Case(m: 3, n: 17, k: 5), Case(m: 13, n: 37, k: 390, accumulate: true),
                     Case(m: 129, n: 100, k: 129, transB: true, bias: true, activation: .relu),
                     Case(m: 40, n: 2100, k: 20, transA: true, bias: true, activation: .tanh),
                     Case(m: 2, n: 33, k: 17, transB: true), Case(m: 1, n: 40, k: 1000, padA: 1, padB: 2, padC: 3),
                     // One row: the matrix-vector path (threaded from n·k = 2^17), ragged groups of
                     // panels, several k blocks, more than one block of columns.
                     Case(m: 1, n: 300, k: 784, bias: true, activation: .relu), Case(m: 1, n: 5, k: 600, accumulate: true),
                     Case(m: 1, n: 2100, k: 70, padB: 3, bias: true, activation: .tanh), Case(m: 1, n: 37, k: 9, transB: true),
                     // Four 32-column panels (one group) split over two threads, two panels each.
                     Case(m: 1, n: 128, k: 1100, bias: true, activation: .relu)]
        for cs in cases {
            for threads in [1, 2] {
                check(Float.self, cs, threads: threads)
                check(Float.self, cs, threads: threads, wide: true)
                check(Double.self, cs, threads: threads)
            }
        }
    }

    /// Runs parallelFor(count); returns how many times each index ran and the worker that ran it last.
    /// `body(i, w)` runs first in each index.
    private func hitsAndWorkers(_ ctx: GEMMContext, _ count: Int, _ body: @escaping (Int, Int) -> Void = { _, _ in }) -> ([Int], [Int]) {
        var hits = [Int](repeating: 0, count: count)
        var ranBy = [Int](repeating: -1, count: count)
        hits.withUnsafeMutableBufferPointer { h in
            ranBy.withUnsafeMutableBufferPointer { r in
                let hp = h.baseAddress, rp = r.baseAddress
                ctx.parallelFor(count) { i, w in
                    body(i, w)
                    hp?[i] += 1
                    rp?[i] = w
                }
            }
        }
        return (hits, ranBy)
    }

    @Test func parallelForCoversEachIndexOnce() {
        for threads in [1, 2, 3, 4] {
            let ctx = GEMMContext(threads: threads)
            for count in [0, 1, 2, 3, 7, 100, 1001] {
                let (hits, ranBy) = hitsAndWorkers(ctx, count)
                #expect(hits.allSatisfy { $0 == 1 })
                #expect(ranBy.allSatisfy { $0 >= 0 && $0 < threads })
            }
        }
    }

    /// Each thread owns a contiguous share of the indices; a thread held up in its share has the
    /// rest of it taken over by the others (from its back), and every index still runs once.
    @Test func aDelayedThreadsShareIsTakenOver() {
        final class Done: Sendable { let count = Atomic<Int>(0) }
        let ctx = GEMMContext(threads: 2)
        let count = 8, done = Done()
        let (hits, ranBy) = hitsAndWorkers(ctx, count) { i, w in
            // The calling thread's share is 0..<4, the other's 4..<8. If the calling thread takes
            // index 0, it holds it until every other index has run (10 s at most).
            if i == 0 && w == 0 {
                let deadline = DispatchTime.now().uptimeNanoseconds + 10_000_000_000
                while done.count.load(ordering: .acquiring) < count - 1 && DispatchTime.now().uptimeNanoseconds < deadline { usleep(100) }
            } else if i != 0 {
                done.count.add(1, ordering: .releasing)
            }
        }
        #expect(hits.allSatisfy { $0 == 1 })
        // Held up in index 0, the calling thread ran nothing else: the other thread ran its own share
        // and then the rest of the held-up one's.
        if ranBy[0] == 0 { #expect(ranBy[1...].allSatisfy { $0 == 1 }) }
    }

    @Test func nestedParallelForRunsInline() {
        let ctx = GEMMContext(threads: 2)
        var hits = [Int](repeating: 0, count: 6)
        hits.withUnsafeMutableBufferPointer { h in
            let hp = h.baseAddress
            ctx.parallelFor(2) { i, _ in
                ctx.parallelFor(3) { j, w in
                    hp?[i * 3 + j] += 1 + w
                }
            }
        }
        // Either inner loop may be the one that ran inline (as worker 0); each index ran once.
        #expect(hits.allSatisfy { $0 >= 1 && $0 <= 2 })
    }

    @Test func manyParallelForCalls() {
        let ctx = GEMMContext(threads: 2)
        var total = [Int](repeating: 0, count: 2)
        total.withUnsafeMutableBufferPointer { t in
            let tp = t.baseAddress
            for _ in 0..<2_000 {
                ctx.parallelFor(2) { i, _ in tp?[i] += 1 }
            }
        }
        #expect(total == [2_000, 2_000])
    }
}

import Testing
import IR
@testable import Runtime

/// The tiny networks' kernels (Tiny.swift), at every width they are made for (fixed 1...4, any width
/// beyond), against the general kernels they stand in for: the same values, bit for bit.
@Suite struct TinyKernelTests {
    static let activations: [ActivationFunction] = [.identity, .tanh, .sigmoid, .relu, .leakyRelu(alpha: 0.1), .gelu]

    /// Values in [-2, 2) with exact zeros and negative zeros among them (the sums' signs of zero).
    static func values<T: KernelScalar>(_: T.Type, _ count: Int, seed: Int) -> [T] {
        var rng = GEMMTests.LCG(state: UInt64(seed) &* 7919 &+ 17)
        return (0..<max(1, count)).map { i in
            switch (i &* 7 &+ seed) % 11 { case 0: return 0; case 1: return -0.0; default: return T(rng.next() * 2) }
        }
    }

    struct Forward<T: KernelScalar>: TinyKernelsUser {
        let product: TinyProduct<T>, f: ActivationFunction
        func use<K: TinyKernels>(_: K.Type) { K.forward(product, f) }
    }

    struct WeightStep<T: KernelScalar>: TinyKernelsUser {
        let product: TinyProduct<T>, parameter: UnsafeMutablePointer<T>, lr: T
        func use<K: TinyKernels>(_: K.Type) { K.weightGradientStep(product, parameter: parameter, lr: lr) }
    }

    struct BiasStep<T: KernelScalar>: TinyKernelsUser {
        let step: TinyBiasStep<T>, f: ActivationFunction, lr: T
        func use<K: TinyKernels>(_: K.Type) { K.biasStep(step, f, lr: lr) }
    }

    static func same<T: KernelScalar>(_ x: [T], _ y: [T]) -> Bool {
        x.count == y.count && zip(x, y).allSatisfy { $0.isNaN && $1.isNaN || $0 == $1 && $0.sign == $1.sign }
    }

    /// Every width 1...6, rows 1 and 3, k 0, 1, 2 and 5, both transposes, with and without a bias.
    static func checkForward<T: KernelScalar>(_ t: T.Type) {
        let context = GEMMContext(threads: 1)
        var seed = 0
        for n in 1...6 {
            for m in [1, 3] {
                for k in [0, 1, 2, 5] {
                    for (transA, transB) in [(false, false), (true, false), (false, true), (true, true)] {
                        for withBias in [false, true] {
                            for f in activations {
                                seed += 1
                                // Stored with padded leading dimensions (the transposes' strides).
                                let lda = (transA ? m : k) + 1, ldb = (transB ? k : n) + 2, ldc = n + 1
                                let a = values(T.self, (transA ? k : m) * lda, seed: seed)
                                let b = values(T.self, (transB ? n : k) * ldb, seed: seed + 1)
                                let bias = values(T.self, n, seed: seed + 2)
                                var expected = values(T.self, m * ldc, seed: seed + 3), ours = expected
                                a.withUnsafeBufferPointer { a in
                                    b.withUnsafeBufferPointer { b in
                                        bias.withUnsafeBufferPointer { bias in
                                            let biasPointer = withBias ? bias.baseAddress! : nil
                                            expected.withUnsafeMutableBufferPointer { c in
                                                gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a.baseAddress!, lda: lda,
                                                     b: b.baseAddress!, ldb: ldb, c: c.baseAddress!, ldc: ldc, bias: biasPointer,
                                                     activation: f, context: context)
                                            }
                                            ours.withUnsafeMutableBufferPointer { c in
                                                let product = TinyProduct(transA: transA, transB: transB, m: m, n: n, k: k, a: a.baseAddress!,
                                                                          lda: lda, b: b.baseAddress!, ldb: ldb, c: c.baseAddress!, ldc: ldc,
                                                                          bias: biasPointer)
                                                withTinyKernels(width: n, Forward(product: product, f: f))
                                            }
                                        }
                                    }
                                }
                                #expect(same(ours, expected), "\(T.self) m \(m) n \(n) k \(k) transA \(transA) transB \(transB) bias \(withBias) \(f)")
                            }
                        }
                    }
                }
            }
        }
    }

    /// A weight gradient dW = op(A)·op(B) (ldc = n) and its SGD step, as gemm(update:) takes them.
    static func checkWeightStep<T: KernelScalar>(_ t: T.Type) {
        let context = GEMMContext(threads: 1)
        var seed = 100
        for n in 1...6 {
            for m in [1, 2, 3, 4, 7] {
                for k in [1, 2, 4] {
                    for (transA, transB) in [(true, false), (false, false), (true, true)] {
                        seed += 1
                        let lda = (transA ? m : k) + 1, ldb = (transB ? k : n) + 1
                        let a = values(T.self, (transA ? k : m) * lda, seed: seed)
                        let b = values(T.self, (transB ? n : k) * ldb, seed: seed + 1)
                        let start = values(T.self, m * n, seed: seed + 2)
                        let lr = T(0.3)
                        var expectedGradient = [T](repeating: 7, count: m * n), expectedParameter = start
                        var gradient = expectedGradient, parameter = start
                        a.withUnsafeBufferPointer { a in
                            b.withUnsafeBufferPointer { b in
                                expectedGradient.withUnsafeMutableBufferPointer { c in
                                    expectedParameter.withUnsafeMutableBufferPointer { p in
                                        let step = SGDStep(parameter: p.baseAddress!, velocity: nil, lr: lr, momentum: 0, nesterov: false, decay: 0)
                                        gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a.baseAddress!, lda: lda,
                                             b: b.baseAddress!, ldb: ldb, c: c.baseAddress!, ldc: n, update: step, context: context)
                                    }
                                }
                                gradient.withUnsafeMutableBufferPointer { c in
                                    parameter.withUnsafeMutableBufferPointer { p in
                                        let product = TinyProduct(transA: transA, transB: transB, m: m, n: n, k: k, a: a.baseAddress!, lda: lda,
                                                                  b: b.baseAddress!, ldb: ldb, c: c.baseAddress!, ldc: n, bias: nil)
                                        withTinyKernels(width: n, WeightStep(product: product, parameter: p.baseAddress!, lr: lr))
                                    }
                                }
                            }
                        }
                        let label = "\(T.self) m \(m) n \(n) k \(k) transA \(transA) transB \(transB)"
                        #expect(same(gradient, expectedGradient), "gradient, \(label)")
                        #expect(same(parameter, expectedParameter), "parameter, \(label)")
                    }
                }
            }
        }
    }

    /// dz, db and the bias's step for 1...6 channels and 1, 2 and 5 rows, as activationBackwardBias
    /// and SGDStep.apply make them.
    static func checkBiasStep<T: KernelScalar>(_ t: T.Type) {
        var seed = 200
        for channels in 1...6 {
            for rows in [1, 2, 5] {
                for f in activations {
                    seed += 1
                    let count = rows * channels
                    // y as the forward pass kept it (f's output, or its input where the derivative needs it).
                    let y = values(T.self, count, seed: seed).map { f.derivativeFromOutput ? f.apply($0) : $0 }
                    let dy = values(T.self, count, seed: seed + 1)
                    let start = values(T.self, channels, seed: seed + 2)
                    let lr = T(0.25)
                    var expectedDz = [T](repeating: 5, count: count), expectedDb = [T](repeating: 5, count: channels), expectedBias = start
                    var dz = expectedDz, db = expectedDb, bias = start
                    var yCopy = y, dyCopy = dy
                    y.withUnsafeBufferPointer { y in
                        dy.withUnsafeBufferPointer { dy in
                            expectedDz.withUnsafeMutableBufferPointer { dz in
                                expectedDb.withUnsafeMutableBufferPointer { db in
                                    activationBackwardBias(f, y.baseAddress!, dy.baseAddress!, dz.baseAddress!, db.baseAddress!,
                                                           outer: rows, channels: channels, inner: 1)
                                    expectedBias.withUnsafeMutableBufferPointer { b in
                                        SGDStep(parameter: b.baseAddress!, velocity: nil, lr: lr, momentum: 0, nesterov: false, decay: 0)
                                            .apply(gradient: db.baseAddress!, at: 0, count: channels)
                                    }
                                }
                            }
                        }
                    }
                    yCopy.withUnsafeMutableBufferPointer { y in
                        dyCopy.withUnsafeMutableBufferPointer { dy in
                            dz.withUnsafeMutableBufferPointer { dz in
                                db.withUnsafeMutableBufferPointer { db in
                                    bias.withUnsafeMutableBufferPointer { b in
                                        let step = TinyBiasStep(y: y.baseAddress!, dy: dy.baseAddress!, dz: dz.baseAddress!, db: db.baseAddress!,
                                                                rows: rows, channels: channels, bias: b.baseAddress!)
                                        withTinyKernels(width: channels, BiasStep(step: step, f: f, lr: lr))
                                    }
                                }
                            }
                        }
                    }
                    let label = "\(T.self) rows \(rows) channels \(channels) \(f)"
                    #expect(same(dz, expectedDz), "dz, \(label)")
                    #expect(same(db, expectedDb), "db, \(label)")
                    #expect(same(bias, expectedBias), "bias, \(label)")
                }
            }
        }
    }

    /// The loss and its gradient for 1...7 elements (NaN and infinite differences included), as
    /// squaredError and squaredErrorBackward give them.
    static func checkSquaredError<T: KernelScalar>(_ t: T.Type) {
        for count in 1...7 {
            for mean in [false, true] {
                var p = values(T.self, count, seed: count), y = values(T.self, count, seed: count + 50)
                if count == 5 { p[2] = .nan }
                if count == 6 { y[1] = .infinity }
                let dLoss = T(0.75)
                var expectedGradient = [T](repeating: 3, count: count), gradient = expectedGradient
                var expectedLoss: T = 0, loss: T = 0
                p.withUnsafeBufferPointer { p in
                    y.withUnsafeBufferPointer { y in
                        expectedLoss = T(squaredError(p.baseAddress!, y.baseAddress!, count: count, mean: mean))
                        expectedGradient.withUnsafeMutableBufferPointer {
                            squaredErrorBackward(p.baseAddress!, y.baseAddress!, dLoss, $0.baseAddress!, count: count, mean: mean)
                        }
                        gradient.withUnsafeMutableBufferPointer { dp in
                            withUnsafeMutablePointer(to: &loss) { loss in
                                tinySquaredErrorWithGrad(p.baseAddress!, y.baseAddress!, dLoss: dLoss, loss: loss, dp: dp.baseAddress!,
                                                         count: count, mean: mean)
                            }
                        }
                    }
                }
                #expect(same([loss], [expectedLoss]), "\(T.self) loss, count \(count) mean \(mean)")
                #expect(same(gradient, expectedGradient), "\(T.self) gradient, count \(count) mean \(mean)")
            }
        }
    }

    @Test func forwardProductsMatchGEMM() {
        Self.checkForward(Float.self)
        Self.checkForward(Double.self)
    }

    @Test func weightGradientStepsMatchGEMMWithUpdate() {
        Self.checkWeightStep(Float.self)
        Self.checkWeightStep(Double.self)
    }

    @Test func biasStepsMatchActivationBackwardBias() {
        Self.checkBiasStep(Float.self)
        Self.checkBiasStep(Double.self)
    }

    @Test func squaredErrorMatchesTheGeneralKernels() {
        Self.checkSquaredError(Float.self)
        Self.checkSquaredError(Double.self)
    }
}

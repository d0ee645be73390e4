import Foundation
import Testing
@testable import Runtime
import TestSupport

/// The f32 vector exp and the softmax kernels built on it, against Foundation's exp in f64.
@Suite struct SoftmaxTests {
    /// Relative error of expLanes against exp in f64, over the whole range where e^x is a normal f32.
    @Test func vectorExpIsWithinTwoUlp() {
        var worst = 0.0
        var x: Float = -87.25
        while x < 88.25 {
            let lanes = SIMD8<Float>((0..<8).map { x + Float($0) * 0.001 })
            let e = expLanes(lanes)
            for i in 0..<8 {
                let exact = Foundation.exp(Double(lanes[i]))
                worst = max(worst, abs(Double(e[i]) - exact) / exact)
            }
            x += 0.0371
        }
        #expect(worst < 2.5e-7, "worst relative error \(worst)")
    }

    @Test func vectorExpSpecialValues() {
        let e = expLanes(SIMD8<Float>(0, -0.0, .infinity, -.infinity, .nan, -200, 200, 1))
        #expect(e[0] == 1 && e[1] == 1)
        #expect(e[2] == .infinity)
        #expect(e[3] == 0)
        #expect(e[4].isNaN)
        #expect(e[5] == 0)
        #expect(e[6] == .infinity)
        #expect(abs(Double(e[7]) - M_E) < 1e-6)
    }

    /// Rows of awkward lengths (shorter than, equal to, and ragged past the 8 lanes) against f64.
    @Test(arguments: [1, 3, 7, 8, 9, 10, 17, 129])
    func softmaxAndCrossEntropyMatchF64(classes: Int) {
        let rows = 5
        var rng = SplitMix64(seed: UInt64(classes))
        // The f64 reference starts from the same (f32) logits, so only the kernels' own rounding differs.
        let logits32 = (0..<(rows * classes)).map { _ in Float.random(in: -20...20, using: &rng) }
        let labels32 = (0..<rows).map { Float($0 * 7 % classes) }
        let logits64 = logits32.map(Double.init), labels64 = labels32.map(Double.init)
        var y64 = [Double](repeating: 0, count: rows * classes), y32 = [Float](repeating: 0, count: rows * classes)
        softmaxForward(logits64, &y64, rows: rows, columns: classes)
        softmaxForward(logits32, &y32, rows: rows, columns: classes)
        for i in 0..<(rows * classes) { #expect(abs(Double(y32[i]) - y64[i]) <= 1e-6 * max(y64[i], 1e-30) + 1e-12) }
        let loss64 = softmaxCrossEntropy(logits64, labels64, rows: rows, classes: classes)
        let loss32 = softmaxCrossEntropy(logits32, labels32, rows: rows, classes: classes)
        #expect(abs(loss32 - loss64) <= 1e-5 * max(1, abs(loss64)), "\(loss32) vs \(loss64)")
        var dz64 = [Double](repeating: 0, count: rows * classes), dz32 = [Float](repeating: 0, count: rows * classes)
        softmaxCrossEntropyBackward(logits64, labels64, 1, &dz64, rows: rows, classes: classes)
        softmaxCrossEntropyBackward(logits32, labels32, 1, &dz32, rows: rows, classes: classes)
        for i in 0..<(rows * classes) { #expect(abs(Double(dz32[i]) - dz64[i]) <= 1e-6) }
    }

    @Test func nanLogitsGiveNaNLoss() {
        let logits: [Float] = [0, 1, .nan, 2, 3, 4, 5, 6, 7, 8]
        #expect(softmaxCrossEntropy(logits, [Float(1)], rows: 1, classes: 10).isNaN)
    }
}

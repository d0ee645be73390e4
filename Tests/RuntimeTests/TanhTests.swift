import Foundation
import IR
import Testing
@testable import Runtime

/// f32 tanh (computed through f64) against f64's tanh rounded to f32, over a sweep of f32 values
/// spread over every binade from 2⁻¹⁴⁹ to 16, both signs, and at the special values; its vector form
/// against its scalar form, bit for bit; the exp it runs on against glibc's.
@Suite struct TanhTests {
    @Test func f32TanhIsCorrectlyRoundedAlmostEverywhere() {
        var checked = 0, differing = 0
        // Every 1021st bit pattern of the positive floats below 16 (a prime stride: every binade, and
        // mantissas of every shape).
        for bits in stride(from: UInt32(1), to: (16 as Float).bitPattern, by: 1021) {
            for x in [Float(bitPattern: bits), -Float(bitPattern: bits)] {
                let ours = Float.tanh(x)
                let exact = Float(Foundation.tanh(Double(x)))
                checked += 1
                if ours != exact {
                    differing += 1
                    // Never more than one ulp away.
                    #expect(ours == exact.nextUp || ours == exact.nextDown, "tanh(\(x)) = \(ours), f64 gives \(exact)")
                }
            }
        }
        #expect(checked > 2_000_000)
        #expect(differing * 10_000 <= checked, "\(differing) of \(checked) differ from f64's tanh rounded")
    }

    @Test func f32TanhSpecialValues() {
        #expect(Float.tanh(.nan).isNaN)
        #expect(Float.tanh(0) == 0 && Float.tanh(0).sign == .plus)
        #expect(Float.tanh(-0.0) == 0 && Float.tanh(-0.0).sign == .minus)
        #expect(Float.tanh(.infinity) == 1 && Float.tanh(-.infinity) == -1)
        #expect(Float.tanh(.leastNonzeroMagnitude) == .leastNonzeroMagnitude)
        #expect(Float.tanh(10) == 1 && Float.tanh(-1e30) == -1)
        #expect(Float.tanh(9.5) == Float(Foundation.tanh(9.5)))
        #expect(Float.tanh(0x1p-12) == Float(Foundation.tanh(Double(0x1p-12 as Float))))
    }

    /// Each lane of the vector form (element-wise kernels, GEMM and convolution epilogues) is the scalar
    /// form's value (tiny kernels, tails), bit for bit: lanes of mixed magnitudes and the special values
    /// (NaN compared by its bits too: the input's NaN comes through).
    @Test func f32TanhVectorFormIsTheScalarForm() {
        var values: [Float] = [0, -0.0, .nan, .infinity, -.infinity, .leastNonzeroMagnitude, 0x1p-12, -0x1p-12, (0x1p-12 as Float).nextDown, 10, -10, (10 as Float).nextDown, 1e30]
        for bits in stride(from: UInt32(1), to: (24 as Float).bitPattern, by: 4099) { values += [Float(bitPattern: bits), -Float(bitPattern: bits)] }
        while values.count % 8 != 0 { values.append(0.5) }
        for start in stride(from: 0, to: values.count, by: 8) {
            let lanes = Float.tanh(SIMD8<Float>(values[start..<(start + 8)]))
            for lane in 0..<8 {
                let x = values[start + lane]
                #expect(lanes[lane].bitPattern == Float.tanh(x).bitPattern, "tanh(\(x)): vector \(lanes[lane]), scalar \(Float.tanh(x))")
            }
        }
        // applyActivation (tanh, and gelu through it): whole vectors, then the rest one by one, in place
        // or not, for counts around the lanes, against the scalar form element by element.
        for f in [ActivationFunction.tanh, .gelu] {
            for count in [0, 1, 7, 8, 9, 16, 23, values.count] {
                let x = values.prefix(count).map { $0 }
                var y = [Float](repeating: 7, count: count), inPlace = x
                x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { applyActivation(f, xp.baseAddress!, $0.baseAddress!, count) } }
                inPlace.withUnsafeMutableBufferPointer { applyActivation(f, $0.baseAddress!, $0.baseAddress!, count) }
                #expect(y.map(\.bitPattern) == x.map { f.apply($0).bitPattern }, "\(f), \(count) elements")
                #expect(inPlace.map(\.bitPattern) == y.map(\.bitPattern), "\(f), \(count) elements in place")
            }
        }
    }

    /// The f64 exp under f32 tanh, over its whole range |x| ≤ 20: within 3 ulp of glibc's (itself within
    /// half an ulp of the exact value), and exact at 0.
    @Test func expBelow20IsWithinThreeUlp() {
        var worst = 0.0
        for i in -200_000...200_000 {
            let x = Double(i) / 10_000 + Double(i % 7) * 1e-9
            let ours = expBelow20(SIMD4(repeating: x))[0], glibc = Foundation.exp(x)
            worst = max(worst, abs(ours - glibc) / glibc.ulp)
        }
        #expect(worst <= 3, "worst \(worst) ulp")
        #expect(expBelow20(SIMD4(repeating: 0))[0] == 1)
    }
}

import Foundation
import Testing
@testable import Runtime

/// f32 tanh (computed through f64) against f64's tanh rounded to f32, over a sweep of f32 values
/// spread over every binade from 2⁻¹⁴⁹ to 16, both signs, and at the special values.
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
}

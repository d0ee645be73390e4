import Testing
@testable import Runtime

/// Optimizer updates against steps computed by hand.
@Suite struct OptimizerTests {
    @Test func plainSGD() {
        var p: [Double] = [1, -2]
        let g: [Double] = [0.5, 0.25]
        sgdUpdate(&p, g, velocity: nil, count: 2, lr: 0.1, momentum: 0, nesterov: false, decay: 0)
        #expect(p == [1 - 0.05, -2 - 0.025])
    }

    @Test func sgdWithMomentumTwoSteps() {
        var p: [Double] = [1]
        var v: [Double] = [0]
        sgdUpdate(&p, [2], velocity: &v, count: 1, lr: 0.1, momentum: 0.9, nesterov: false, decay: 0)
        #expect(v == [2]); #expect(abs(p[0] - 0.8) < 1e-15)
        sgdUpdate(&p, [1], velocity: &v, count: 1, lr: 0.1, momentum: 0.9, nesterov: false, decay: 0)
        // v = 0.9·2 + 1 = 2.8; p = 0.8 − 0.28
        #expect(abs(v[0] - 2.8) < 1e-15); #expect(abs(p[0] - 0.52) < 1e-15)
    }

    @Test func nesterovAndDecay() {
        var p: [Double] = [1]
        var v: [Double] = [1]
        sgdUpdate(&p, [2], velocity: &v, count: 1, lr: 0.1, momentum: 0.5, nesterov: true, decay: 0.1)
        // g = 2 + 0.1·1 = 2.1; v = 0.5·1 + 2.1 = 2.6; step = g + 0.5·v = 3.4; p = 1 − 0.34
        #expect(abs(v[0] - 2.6) < 1e-15); #expect(abs(p[0] - 0.66) < 1e-15)
    }

    @Test func adamFirstTwoSteps() {
        var p: [Double] = [1]
        var m: [Double] = [0], v: [Double] = [0]
        adamUpdate(&p, [0.5], &m, &v, count: 1, lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, decay: 0, step: 1)
        // m = 0.05, v = 0.00025; m̂ = 0.5, v̂ = 0.25; p = 1 − 0.01·0.5/(0.5 + 1e-8)
        #expect(abs(m[0] - 0.05) < 1e-15); #expect(abs(v[0] - 0.00025) < 1e-15)
        #expect(abs(p[0] - (1 - 0.01 * 0.5 / (0.5 + 1e-8))) < 1e-12)
        let before = p[0]
        adamUpdate(&p, [-1], &m, &v, count: 1, lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, decay: 0, step: 2)
        let m2 = 0.9 * 0.05 + 0.1 * -1.0, v2 = 0.999 * 0.00025 + 0.001 * 1.0
        let mHat = m2 / (1 - 0.81), vHat = v2 / (1 - 0.999 * 0.999)
        #expect(abs(p[0] - (before - 0.01 * mHat / (vHat.squareRoot() + 1e-8))) < 1e-12)
    }

    @Test func float32MatchesFloat64ToRounding() {
        var p32: [Float] = [0.3, -0.7]
        var v32: [Float] = [0, 0]
        var p64: [Double] = [0.3, -0.7]
        var v64: [Double] = [0, 0]
        for step in 0..<5 {
            let g = [Double(step) * 0.1, -0.2]
            sgdUpdate(&p32, g.map(Float.init), velocity: &v32, count: 2, lr: 0.05, momentum: 0.9, nesterov: false, decay: 0)
            sgdUpdate(&p64, g, velocity: &v64, count: 2, lr: 0.05, momentum: 0.9, nesterov: false, decay: 0)
        }
        #expect(abs(Double(p32[0]) - p64[0]) < 1e-6)
        #expect(abs(Double(p32[1]) - p64[1]) < 1e-6)
    }
}

import Testing
@testable import Runtime

private func poolValues(_ count: Int, seed: UInt64) -> [Double] {
    var rng = MT19937(seed: seed)
    return (0..<count).map { _ in rng.uniform(-1, 1) }
}

private enum PoolKind { case max, avg }

/// Naive Double reference: forward and backward (first maximum in row-major window order wins).
private func poolReference(_ s: Pool2DShape, _ kind: PoolKind, x: [Double], dy: [Double]) -> (y: [Double], dx: [Double]) {
    var y = [Double](repeating: 0, count: s.outputCount)
    var dx = [Double](repeating: 0, count: s.inputCount)
    for n in 0..<s.batch {
        for c in 0..<s.channels {
            let xb = (n * s.channels + c) * s.height * s.width
            let yb = (n * s.channels + c) * s.outHeight * s.outWidth
            for oy in 0..<s.outHeight {
                for ox in 0..<s.outWidth {
                    var best = -Double.infinity, arg = -1, sum = 0.0
                    var inside: [Int] = []
                    for i in 0..<s.kernelH {
                        for j in 0..<s.kernelW {
                            // Padding: −∞ for the maximum, zeros counted in the average.
                            let iy = oy * s.strideH - s.padH + i, ix = ox * s.strideW - s.padW + j
                            guard iy >= 0, iy < s.height, ix >= 0, ix < s.width else { continue }
                            let idx = xb + iy * s.width + ix
                            inside.append(idx)
                            sum += x[idx]
                            if arg < 0 || x[idx] > best { best = x[idx]; arg = idx }
                        }
                    }
                    let g = dy[yb + oy * s.outWidth + ox]
                    switch kind {
                    case .max:
                        y[yb + oy * s.outWidth + ox] = best
                        dx[arg] += g
                    case .avg:
                        let area = Double(s.kernelH * s.kernelW)
                        y[yb + oy * s.outWidth + ox] = sum / area
                        for idx in inside { dx[idx] += g / area }
                    }
                }
            }
        }
    }
    return (y, dx)
}

private func runPool<T: KernelScalar>(_ type: T.Type, _ s: Pool2DShape, _ kind: PoolKind, x xd: [Double], dy dyd: [Double],
                                      context: GEMMContext?) -> (y: [Double], dx: [Double]) {
    let x = xd.map { T($0) }, dy = dyd.map { T($0) }
    var y = [T](repeating: .nan, count: s.outputCount)
    var dx = [T](repeating: .nan, count: s.inputCount)
    x.withUnsafeBufferPointer { xb in
        dy.withUnsafeBufferPointer { dyb in
            y.withUnsafeMutableBufferPointer { yb in
                dx.withUnsafeMutableBufferPointer { dxb in
                    guard let xp = xb.baseAddress, let dyp = dyb.baseAddress, let yp = yb.baseAddress,
                          let dxp = dxb.baseAddress else { return }
                    switch kind {
                    case .max:
                        maxPool2DForward(s, x: xp, y: yp, context: context)
                        maxPool2DBackward(s, x: xp, dy: dyp, dx: dxp, context: context)
                    case .avg:
                        avgPool2DForward(s, x: xp, y: yp, context: context)
                        avgPool2DBackward(s, dy: dyp, dx: dxp, context: context)
                    }
                }
            }
        }
    }
    return (y.map { Double($0) }, dx.map { Double($0) })
}

private let poolCases: [Pool2DShape] = [
    Pool2DShape(batch: 1, channels: 1, height: 1, width: 1, kernelH: 1, kernelW: 1),
    Pool2DShape(batch: 3, channels: 2, height: 28, width: 28, kernelH: 2, kernelW: 2),
    Pool2DShape(batch: 3, channels: 3, height: 7, width: 9, kernelH: 2, kernelW: 2),          // odd sizes: last row/col dropped
    Pool2DShape(batch: 1, channels: 2, height: 17, width: 13, kernelH: 3, kernelW: 3, stride: 2), // overlapping windows
    Pool2DShape(batch: 3, channels: 1, height: 10, width: 11, kernelH: 3, kernelW: 2, strideH: 3, strideW: 1),
    Pool2DShape(batch: 2, channels: 3, height: 5, width: 6, kernelH: 2, kernelW: 3, stride: 3),
    Pool2DShape(batch: 1, channels: 1, height: 4, width: 4, kernelH: 4, kernelW: 4),
    Pool2DShape(batch: 2, channels: 2, height: 14, width: 14, kernelH: 2, kernelW: 2),        // f32 vector rows: 7 windows
    Pool2DShape(batch: 1, channels: 2, height: 5, width: 11, kernelH: 2, kernelW: 2),         // 5 windows, odd width and height
    Pool2DShape(batch: 2, channels: 2, height: 6, width: 35, kernelH: 2, kernelW: 2),         // f32 rows of 8: 17 windows
    Pool2DShape(batch: 1, channels: 1, height: 4, width: 16, kernelH: 2, kernelW: 2),         // exactly one chunk of 8
    // Padded (PyTorch's padding: −∞ for max, counted zeros for average).
    Pool2DShape(batch: 2, channels: 2, height: 7, width: 6, kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padH: 1, padW: 1),
    Pool2DShape(batch: 1, channels: 3, height: 5, width: 8, kernelH: 2, kernelW: 4, strideH: 1, strideW: 3, padH: 1, padW: 2),
    Pool2DShape(batch: 3, channels: 1, height: 4, width: 4, kernelH: 3, kernelW: 2, strideH: 1, strideW: 1, padH: 1, padW: 0),
]

@Suite struct PoolTests {
    @Test func outputSize() {
        #expect(Pool2DShape(batch: 1, channels: 1, height: 7, width: 9, kernelH: 2, kernelW: 2).outHeight == 3)
        #expect(Pool2DShape(batch: 1, channels: 1, height: 7, width: 9, kernelH: 2, kernelW: 2).outWidth == 4)
        #expect(Pool2DShape(batch: 1, channels: 1, height: 17, width: 13, kernelH: 3, kernelW: 3, stride: 2).outWidth == 6)
        #expect(!Pool2DShape(batch: 1, channels: 1, height: 2, width: 9, kernelH: 3, kernelW: 3).isValid)
    }

    @Test(arguments: [0, 1, 2])
    func matchesReference(threads: Int) {
        let context: GEMMContext? = threads == 0 ? nil : GEMMContext(threads: threads)
        for (ci, s) in poolCases.enumerated() {
            var x = poolValues(s.inputCount, seed: UInt64(40 + ci))
            // Quantise some inputs so windows contain ties (first maximum must win).
            if ci % 2 == 0 { x = x.map { ($0 * 2).rounded() / 2 } }
            let dy = poolValues(s.outputCount, seed: UInt64(60 + ci))
            for kind in [PoolKind.max, .avg] {
                let ref = poolReference(s, kind, x: x, dy: dy)
                let r64 = runPool(Double.self, s, kind, x: x, dy: dy, context: context)
                #expect(zip(r64.y, ref.y).allSatisfy { abs($0 - $1) < 1e-14 }, "f64 y \(s) \(kind)")
                #expect(zip(r64.dx, ref.dx).allSatisfy { abs($0 - $1) < 1e-14 }, "f64 dx \(s) \(kind)")
                let x32 = x.map { Double(Float($0)) }
                let ref32 = poolReference(s, kind, x: x32, dy: dy)
                let r32 = runPool(Float.self, s, kind, x: x32, dy: dy, context: context)
                #expect(zip(r32.y, ref32.y).allSatisfy { abs($0 - $1) < 1e-6 }, "f32 y \(s) \(kind)")
                #expect(zip(r32.dx, ref32.dx).allSatisfy { abs($0 - $1) < 1e-6 }, "f32 dx \(s) \(kind)")
            }
        }
    }

    @Test func maxTiesGoToFirstMaximum() {
        let s = Pool2DShape(batch: 1, channels: 1, height: 2, width: 2, kernelH: 2, kernelW: 2)
        let r = runPool(Double.self, s, .max, x: [1, 3, 3, 3], dy: [5], context: nil)
        #expect(r.y == [3])
        #expect(r.dx == [0, 5, 0, 0])
    }

    /// The f32 vector paths (rows of four to seven 2×2 windows, and of eight or more) route NaNs as
    /// the scalar f64 path does.
    @Test(arguments: [12, 20])
    func maxPoolNaNsMatchScalarPath(width: Int) {
        let s = Pool2DShape(batch: 1, channels: 1, height: 4, width: width, kernelH: 2, kernelW: 2)
        var x = poolValues(s.inputCount, seed: 5)
        for i in [1, 2, 12, 13, 26, 27, 40] { x[i] = .nan }
        let dy = poolValues(s.outputCount, seed: 6)
        let r64 = runPool(Double.self, s, .max, x: x, dy: dy, context: nil)
        let r32 = runPool(Float.self, s, .max, x: x.map { Double(Float($0)) }, dy: dy, context: nil)
        #expect(zip(r64.y, r32.y).allSatisfy { $0.isNaN ? $1.isNaN : abs($0 - $1) < 1e-6 })
        #expect(zip(r64.dx, r32.dx).allSatisfy { abs($0 - $1) < 1e-6 })
    }

    /// Central differences of Σ r ⊙ pool(x) (f64; max-pool inputs are distinct so the argmax is stable).
    @Test func gradientsMatchFiniteDifferences() {
        let s = Pool2DShape(batch: 2, channels: 2, height: 7, width: 6, kernelH: 3, kernelW: 2, strideH: 2, strideW: 1)
        let x = poolValues(s.inputCount, seed: 91), r = poolValues(s.outputCount, seed: 92)
        for kind in [PoolKind.max, .avg] {
            let g = runPool(Double.self, s, kind, x: x, dy: r, context: nil).dx
            let h = 1e-6
            for i in 0..<x.count {
                var xp = x, xm = x
                xp[i] += h; xm[i] -= h
                let lp = zip(runPool(Double.self, s, kind, x: xp, dy: r, context: nil).y, r).reduce(0) { $0 + $1.0 * $1.1 }
                let lm = zip(runPool(Double.self, s, kind, x: xm, dy: r, context: nil).y, r).reduce(0) { $0 + $1.0 * $1.1 }
                let fd = (lp - lm) / (2 * h)
                #expect(abs(fd - g[i]) < 1e-7, "\(kind) dx[\(i)]: \(fd) vs \(g[i])")
            }
        }
    }
}

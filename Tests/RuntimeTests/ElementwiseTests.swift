import Testing
import IR
@testable import Runtime

/// Element-wise kernels split over threads give the same values, bit for bit, as on one thread:
/// counts below, at and above the split threshold, ragged against the 8-lane groups, several
/// thread counts, every activation form (vector, scalar, lane by lane) and in place.
@Suite struct ElementwiseTests {
    static let counts = [1, 7, elementwiseParallelMinimum - 1, elementwiseParallelMinimum, elementwiseParallelMinimum + 13, 100_003]
    static let functions: [ActivationFunction] = [.relu, .tanh, .sigmoid, .gelu, .leakyRelu(alpha: 0.1), .pow(2), .identity]

    /// A value per element, with a few exact zeros, negatives and a NaN-free spread.
    static func values(_ count: Int, seed: Int) -> [Float] {
        (0..<count).map { i in Float((i &* 7919 &+ seed &* 104_729) % 2001 - 1000) / 250 }
    }

    func run(threads: Int, _ body: (GEMMContext?) -> [Float]) -> ([Float], [Float]) {
        (body(nil), body(GEMMContext(threads: threads)))
    }

    @Test(arguments: [2, 3])
    func splitsGiveTheSameValues(threads: Int) {
        for count in Self.counts {
            let x = Self.values(count, seed: 1), dy = Self.values(count, seed: 2)
            for f in Self.functions {
                let (one, split) = run(threads: threads) { context in
                    var y = [Float](repeating: .nan, count: count), dx = y
                    x.withUnsafeBufferPointer { xp in
                        y.withUnsafeMutableBufferPointer { activationForward(f, xp.baseAddress!, $0.baseAddress!, count, context: context) }
                        dy.withUnsafeBufferPointer { gp in
                            dx.withUnsafeMutableBufferPointer { activationBackward(f, xp.baseAddress!, gp.baseAddress!, $0.baseAddress!, count, context: context) }
                        }
                    }
                    return y + dx
                }
                #expect(one.map(\.bitPattern) == split.map(\.bitPattern), "\(f), \(count) elements, \(threads) threads")
            }
            let (one, split) = run(threads: threads) { context in
                var sum = x, difference = x, product = x, scaled = x
                x.withUnsafeBufferPointer { a in
                    dy.withUnsafeBufferPointer { b in
                        // In place over a copy of x, as the planner may place them.
                        sum.withUnsafeMutableBufferPointer { addElements(UnsafePointer($0.baseAddress!), b.baseAddress!, $0.baseAddress!, count, context: context) }
                        difference.withUnsafeMutableBufferPointer { subtractElements(a.baseAddress!, b.baseAddress!, $0.baseAddress!, count, context: context) }
                        product.withUnsafeMutableBufferPointer { multiplyElements(a.baseAddress!, b.baseAddress!, $0.baseAddress!, count, context: context) }
                        scaled.withUnsafeMutableBufferPointer { scaleElements(a.baseAddress!, $0.baseAddress!, 0.3, count, context: context) }
                    }
                }
                return sum + difference + product + scaled
            }
            #expect(one.map(\.bitPattern) == split.map(\.bitPattern), "add/sub/mul/scale, \(count) elements, \(threads) threads")
            // And against the definition.
            let expected = zip(x, dy).map { $0 + $1 } + zip(x, dy).map { $0 - $1 } + zip(x, dy).map { $0 * $1 } + x.map { $0 * 0.3 }
            #expect(split == expected)
        }
    }

    /// dz = dy ⊙ f'(y) and db = the sum of dz over the rows (and the inner axis), from 0 in row order
    /// (so a row of −0 gives +0, as a zeroed db plus it did): every shape the kernel treats apart (no
    /// rows, one row, vector groups and tails of channels, an inner axis), on one and several threads.
    @Test func activationGradientAndBiasSumAgainstTheDefinition() {
        for (outer, channels, inner) in [(0, 5, 1), (1, 1, 1), (1, 3, 1), (3, 13, 1), (2, 20, 1), (4, 8, 1), (2, 3, 5), (70, 300, 1)] {
            let count = outer * channels * inner
            let y = Self.values(count, seed: 3).map { $0 / 5 }
            var dy = Self.values(count, seed: 4)
            if count > 0 { for c in 0..<min(channels, 2) { dy[c] = -0.0 } }  // a first row of −0 in two channels
            for f in [ActivationFunction.tanh, .relu, .identity] {
                // dz as the element-wise gradient kernel makes it (tested above), db summed here.
                var dzExpected = [Float](repeating: 0, count: count), dbExpected = [Float](repeating: 0, count: channels)
                y.withUnsafeBufferPointer { yp in dy.withUnsafeBufferPointer { dyp in dzExpected.withUnsafeMutableBufferPointer { dzp in
                    if count > 0 { activationBackward(f, yp.baseAddress!, dyp.baseAddress!, dzp.baseAddress!, count) }
                } } }
                for c in 0..<channels {
                    var sum: Float = 0
                    for r in 0..<outer {
                        var rowSum: Float = 0
                        for i in 0..<inner { rowSum += dzExpected[(r * channels + c) * inner + i] }
                        sum += inner == 1 ? dzExpected[r * channels + c] : rowSum
                    }
                    dbExpected[c] = sum
                }
                for threads in [1, 2, 3] {
                    var dz = [Float](repeating: .nan, count: count), db = [Float](repeating: .nan, count: channels)
                    y.withUnsafeBufferPointer { yp in dy.withUnsafeBufferPointer { dyp in dz.withUnsafeMutableBufferPointer { dzp in
                        db.withUnsafeMutableBufferPointer { dbp in
                            activationBackwardBias(f, yp.baseAddress!, dyp.baseAddress!, dzp.baseAddress!, dbp.baseAddress!,
                                                   outer: outer, channels: channels, inner: inner, context: GEMMContext(threads: threads))
                        }
                    } } }
                    let shape = "\(f), \(outer)×\(channels)×\(inner), \(threads) threads"
                    #expect(dz.map(\.bitPattern) == dzExpected.map(\.bitPattern), "dz: \(shape)")
                    if inner == 1 { #expect(db.map(\.bitPattern) == dbExpected.map(\.bitPattern), "db: \(shape)") }
                    else { #expect(zip(db, dbExpected).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) }, "db: \(shape)") }
                }
            }
        }
    }
}

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
}

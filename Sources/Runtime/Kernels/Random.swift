#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The Mersenne Twister MT19937, bit-compatible with NumPy's legacy `np.random.RandomState` /
/// `np.random.seed(s)` for an integer seed `s`:
///
/// - `init(seed:)` is `init_genrand(s & 0xffffffff)` (NumPy's `_legacy_seeding` for a scalar int),
/// - `next32()` is `genrand_int32`,
/// - `randomSample()` is `random_sample` / `np.random.random` (53 bits from two draws),
/// - `uniform(_:_:)` is `np.random.uniform(a, b)` = a + (b−a)·u,
/// - `normal(mean:std:)` is the legacy `np.random.normal` (polar Box–Muller that caches the second value),
/// - `randomInt(below:)` is NumPy's `random_interval(n−1)` (masked rejection sampling) and
///   `shuffle(_:count:)` is the legacy `np.random.shuffle` of a 1-D array (Fisher–Yates from the end),
///   so `np.random.permutation(n)` and `shuffle` of `0..<n` give the same order.
///
/// A value type: copying it forks the stream. Drawing never allocates (the state array is uniquely owned).
public struct MT19937: Sendable {
    @usableFromInline static let n = 624
    @usableFromInline static let m = 397

    @usableFromInline var state: [UInt32]
    @usableFromInline var index: Int
    @usableFromInline var hasGauss: Bool = false
    @usableFromInline var gauss: Double = 0

    /// NumPy's `np.random.seed(seed)` for an integer seed (only the low 32 bits are used, like NumPy's
    /// `init_genrand(seed & 0xffffffff)`; NumPy rejects seeds outside 0..<2³², we truncate).
    public init(seed: UInt64) {
        var s = UInt32(truncatingIfNeeded: seed)
        var st = [UInt32](repeating: 0, count: MT19937.n)
        for i in 0..<MT19937.n {
            st[i] = s
            s = 1_812_433_253 &* (s ^ (s >> 30)) &+ UInt32(i + 1)
        }
        state = st
        index = MT19937.n
    }

    /// Convenience for `Int` seeds (negative seeds are taken modulo 2³²).
    public init(seed: Int) { self.init(seed: UInt64(bitPattern: Int64(seed))) }

    @usableFromInline mutating func twist() {
        state.withUnsafeMutableBufferPointer { MT19937.twist($0.baseAddress!) }
        index = 0
    }

    /// The next n state words from the current ones (`mt` holds n).
    @usableFromInline static func twist(_ mt: UnsafeMutablePointer<UInt32>) {
        let n = MT19937.n, m = MT19937.m
        @inline(__always) func mix(_ a: UInt32, _ b: UInt32, _ c: UInt32) -> UInt32 {
            let y = (a & 0x8000_0000) | (b & 0x7fff_ffff)
            return c ^ (y >> 1) ^ ((y & 1) &* 0x9908_b0df)
        }
        for k in 0..<(n - m) { mt[k] = mix(mt[k], mt[k + 1], mt[k + m]) }
        for k in (n - m)..<(n - 1) { mt[k] = mix(mt[k], mt[k + 1], mt[k + m - n]) }
        mt[n - 1] = mix(mt[n - 1], mt[0], mt[m - 1])
    }

    /// The output for a state word (`genrand_int32`'s tempering).
    @inlinable static func temper(_ word: UInt32) -> UInt32 {
        var y = word
        y ^= y >> 11
        y ^= (y << 7) & 0x9d2c_5680
        y ^= (y << 15) & 0xefc6_0000
        y ^= y >> 18
        return y
    }

    /// The next 32-bit output (`genrand_int32`).
    @inlinable public mutating func next32() -> UInt32 {
        if index >= MT19937.n { twist() }
        let y = state[index]
        index += 1
        return MT19937.temper(y)
    }

    /// NumPy's `random_sample`: a double in [0, 1) with 53 random bits.
    @inlinable public mutating func randomSample() -> Double {
        let a = Double(next32() >> 5), b = Double(next32() >> 6)
        return (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }

    /// NumPy's `uniform(low, high)` = low + (high − low)·random_sample().
    @inlinable public mutating func uniform(_ low: Double, _ high: Double) -> Double {
        low + (high - low) * randomSample()
    }

    /// NumPy's legacy `gauss`: polar Box–Muller; every second call returns the cached value.
    public mutating func standardNormal() -> Double {
        if hasGauss {
            hasGauss = false
            let g = gauss
            gauss = 0
            return g
        }
        var x1 = 0.0, x2 = 0.0, r2 = 0.0
        repeat {
            x1 = 2 * randomSample() - 1
            x2 = 2 * randomSample() - 1
            r2 = x1 * x1 + x2 * x2
        } while r2 >= 1 || r2 == 0
        let f = sqrt(-2 * log(r2) / r2)
        gauss = f * x1
        hasGauss = true
        return f * x2
    }

    /// NumPy's legacy `normal(loc, scale)` = loc + scale·gauss().
    public mutating func normal(mean: Double, std: Double) -> Double {
        mean + std * standardNormal()
    }

    /// A uniform integer in `0..<bound` (bound ≥ 1; returns 0 for bound ≤ 1). NumPy's
    /// `random_interval(bound − 1)`: draw 32 (or 64 = two draws, high word first) bits, mask them to the
    /// smallest all-ones mask ≥ bound − 1 and reject values above it — unbiased, on average < 2 draws.
    @inlinable public mutating func randomInt(below bound: Int) -> Int {
        if bound <= 1 { return 0 }
        let max = UInt64(bound - 1)
        var mask = max
        mask |= mask >> 1; mask |= mask >> 2; mask |= mask >> 4
        mask |= mask >> 8; mask |= mask >> 16; mask |= mask >> 32
        if max <= 0xffff_ffff {
            let m32 = UInt32(truncatingIfNeeded: mask)
            while true {
                let v = next32() & m32
                if UInt64(v) <= max { return Int(v) }
            }
        }
        while true {
            let hi = UInt64(next32()), lo = UInt64(next32())
            let v = ((hi << 32) | lo) & mask
            if v <= max { return Int(v) }
        }
    }

    /// In-place Fisher–Yates shuffle of `count` elements, identical to NumPy's legacy
    /// `np.random.shuffle` on a 1-D array: for i = count−1 down to 1, swap a[i] with a[random_interval(i)].
    @inlinable public mutating func shuffle<E>(_ a: UnsafeMutablePointer<E>, count: Int) {
        var i = count - 1
        while i >= 1 {
            let j = randomInt(below: i + 1)
            let t = a[i]; a[i] = a[j]; a[j] = t
            i -= 1
        }
    }

    /// Shuffles an array in place (same order as `shuffle(_:count:)`).
    public mutating func shuffle<E>(_ array: inout [E]) {
        let n = array.count
        array.withUnsafeMutableBufferPointer { buf in
            if let base = buf.baseAddress { shuffle(base, count: n) }
        }
    }

    /// NumPy's `np.random.permutation(n)`.
    public mutating func permutation(_ n: Int) -> [Int] {
        var a = Array(0..<max(n, 0))
        shuffle(&a)
        return a
    }
}

/// Inverted dropout mask: for each of `count` elements, draws u = `rng.randomSample()` and writes
/// 1/(1−p) when u < 1−p (kept) and 0 otherwise — the NumPy idiom
/// `(np.random.rand(n) < 1 - p) / (1 - p)`, so a seeded NumPy script gives the same mask.
/// p ≤ 0 writes all 1 (no draws), p ≥ 1 writes all 0 (no draws). Deterministic from the RNG; no allocation.
@_specialize(where T == Float)
@_specialize(where T == Double)
public func dropoutMask<T: KernelScalar>(count: Int, p: Double, rng: inout MT19937, into mask: UnsafeMutablePointer<T>) {
    if p <= 0 {
        for i in 0..<max(count, 0) { mask[i] = 1 }
        return
    }
    if p >= 1 {
        for i in 0..<max(count, 0) { mask[i] = 0 }
        return
    }
    let keep = 1 - p
    let scale = T(1 / keep)
    // randomSample() < keep, in integers: the sample is K / 2⁵³ with K = (a >> 5)·2²⁶ + (b >> 6) < 2⁵³,
    // exact in a Double, and scaling by 2⁵³ is exact, so it holds exactly when K < ⌈keep·2⁵³⌉.
    let threshold = UInt64((keep * 9_007_199_254_740_992.0).rounded(.up))
    @inline(__always) func kept(_ a: UInt32, _ b: UInt32) -> Bool { UInt64(a >> 5) << 26 | UInt64(b >> 6) < threshold }
    // The state words are read in place, the pairs within one twist's words in a loop without the
    // per-draw checks (2.7 ns an element, was 10 on a Zen 3: 2 ms of a residual CNN's step for a
    // 128 × 1568 mask); a pair split by a twist draws the usual way. The same draws in the same order
    // as randomSample(). (One helper for both paths' K < threshold measured 20% slower here.)
    let n = MT19937.n
    var index = rng.index
    rng.state.withUnsafeMutableBufferPointer { words in
        let mt = words.baseAddress!
        var i = 0
        while i < count {
            let pairs = min(count - i, max(0, n - index) / 2)
            if pairs > 0 {
                for j in 0..<pairs {
                    let a = MT19937.temper(mt[index + 2 * j]), b = MT19937.temper(mt[index + 2 * j + 1])
                    // scale or +0 without a branch (a kept element is a coin flip the predictor misses):
                    // K − threshold is negative exactly when K < threshold (both below 2⁵⁴).
                    let k = UInt64(a >> 5) << 26 | UInt64(b >> 6)
                    mask[i + j] = scale * T(Int((k &- threshold) >> 63))
                }
                i += pairs
                index += 2 * pairs
            } else {
                @inline(__always) func draw() -> UInt32 {
                    if index >= n { MT19937.twist(mt); index = 0 }
                    index += 1
                    return MT19937.temper(mt[index - 1])
                }
                let a = draw(), b = draw()
                mask[i] = kept(a, b) ? scale : 0
                i += 1
            }
        }
    }
    rng.index = index
}

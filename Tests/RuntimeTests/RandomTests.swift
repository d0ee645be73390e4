import Testing
@testable import Runtime

/// Reference values printed by NumPy 2.4 (`np.random.seed(s)` legacy RandomState).
@Suite struct RandomTests {
    @Test func tutorialWeights() {
        // np.random.seed(1); 2*np.random.random((3,1)) - 1
        var rng = MT19937(seed: 1)
        let w = (0..<3).map { _ in 2 * rng.randomSample() - 1 }
        #expect(w == [-0.165955990594852, 0.4406489868843162, -0.9997712503653102])
        var rng2 = MT19937(seed: 1)
        #expect((0..<3).map { _ in rng2.uniform(-1, 1) } == w)
    }

    @Test func stateAfterSeed() {
        // np.random.seed(0); np.random.get_state()[1][:3]
        let rng = MT19937(seed: 0)
        #expect(Array(rng.state.prefix(3)) == [0, 1, 1_812_433_255])
    }

    @Test func randomSampleSeed0And42() {
        var r0 = MT19937(seed: 0)
        #expect((0..<5).map { _ in r0.randomSample() } ==
            [0.5488135039273248, 0.7151893663724195, 0.6027633760716439, 0.5448831829968969, 0.4236547993389047])
        var r42 = MT19937(seed: 42)
        #expect((0..<5).map { _ in r42.randomSample() } ==
            [0.3745401188473625, 0.9507143064099162, 0.7319939418114051, 0.5986584841970366, 0.15601864044243652])
        var big = MT19937(seed: 4_294_967_295)
        #expect(big.randomSample() == 0.0976320289940138)
    }

    @Test func normalSeed0And42() {
        var r0 = MT19937(seed: 0)
        #expect((0..<4).map { _ in r0.normal(mean: 0, std: 1) } ==
            [1.764052345967664, 0.4001572083672233, 0.9787379841057392, 2.240893199201458])
        var r42 = MT19937(seed: 42)
        #expect((0..<4).map { _ in r42.normal(mean: 0, std: 1) } ==
            [0.4967141530112327, -0.13826430117118466, 0.6476885381006925, 1.5230298564080254])
        // np.random.seed(5); np.random.normal(2, 3, 3); np.random.random_sample()
        // (the third normal leaves a cached gauss; random_sample does not consume it)
        var r5 = MT19937(seed: 5)
        #expect((0..<3).map { _ in r5.normal(mean: 2, std: 3) } == [3.3236824606551245, 1.007389544317737, 9.29231356102334])
        #expect(r5.randomSample() == 0.7659078564803156)
    }

    @Test func uniformSeed0And42() {
        var r0 = MT19937(seed: 0)
        #expect((0..<4).map { _ in r0.uniform(-0.5, 0.5) } ==
            [0.04881350392732475, 0.21518936637241948, 0.10276337607164387, 0.044883182996896864])
        var r42 = MT19937(seed: 42)
        #expect((0..<4).map { _ in r42.uniform(-0.5, 0.5) } ==
            [-0.1254598811526375, 0.45071430640991617, 0.2319939418114051, 0.0986584841970366])
    }

    @Test func shuffleMatchesNumPy() {
        // np.random.seed(0); a = np.arange(10); np.random.shuffle(a)
        var r0 = MT19937(seed: 0)
        var a = Array(0..<10)
        r0.shuffle(&a)
        #expect(a == [2, 8, 4, 9, 1, 6, 7, 3, 0, 5])
        // np.random.seed(0); np.random.permutation(1000)[:10]
        var r1 = MT19937(seed: 0)
        #expect(Array(r1.permutation(1000).prefix(10)) == [993, 859, 298, 553, 672, 971, 27, 231, 306, 706])
    }

    @Test func randomIntRangeAndCoverage() {
        var rng = MT19937(seed: 7)
        var seen = [Int](repeating: 0, count: 7)
        for _ in 0..<7000 {
            let v = rng.randomInt(below: 7)
            #expect(v >= 0 && v < 7)
            if v >= 0 && v < 7 { seen[v] += 1 }
        }
        #expect(seen.allSatisfy { $0 > 800 && $0 < 1200 })
        #expect(rng.randomInt(below: 1) == 0)
        #expect(rng.randomInt(below: 0) == 0)
        let big = rng.randomInt(below: 1 << 40)
        #expect(big >= 0 && big < 1 << 40)
    }

    @Test func copiesForkAndStreamIsDeterministic() {
        var a = MT19937(seed: 123)
        for _ in 0..<1000 { _ = a.next32() }  // crosses a twist
        var b = a
        #expect((0..<700).map { _ in a.next32() } == (0..<700).map { _ in b.next32() })
    }

    @Test func dropoutMaskMatchesNumPyIdiom() {
        // mask = (np.random.rand(n) < 1 - p) / (1 - p)
        let n = 1000, p = 0.3
        var rng = MT19937(seed: 3)
        var mask = [Float](repeating: -1, count: n)
        mask.withUnsafeMutableBufferPointer { buf in
            if let base = buf.baseAddress { dropoutMask(count: n, p: p, rng: &rng, into: base) }
        }
        var ref = MT19937(seed: 3)
        var kept = 0
        for i in 0..<n {
            let keep = ref.randomSample() < 1 - p
            if keep { kept += 1 }
            #expect(mask[i] == (keep ? Float(1 / (1 - p)) : 0))
        }
        #expect(kept > 620 && kept < 780)
        // The generator advanced exactly as far as the reference.
        #expect(rng.next32() == ref.next32())
        var d = [Double](repeating: -1, count: 4)
        d.withUnsafeMutableBufferPointer { buf in
            if let base = buf.baseAddress { dropoutMask(count: 4, p: 0, rng: &rng, into: base) }
        }
        #expect(d == [1, 1, 1, 1])
        d.withUnsafeMutableBufferPointer { buf in
            if let base = buf.baseAddress { dropoutMask(count: 4, p: 1, rng: &rng, into: base) }
        }
        #expect(d == [0, 0, 0, 0])
    }

    /// The mask's bulk draws (state words read in place between twists) against randomSample() per
    /// element: starts at every parity and near a twist, counts that cross one or several twists,
    /// probabilities whose threshold keep·2⁵³ is and is not a whole number.
    @Test func dropoutMaskDrawsAsRandomSampleDoes() {
        for p in [0.3, 0.5, 0.75, 1e-9, 1 - 1e-9] {
            for skip in [0, 1, 2, 622, 623, 624, 625] {
                for n in [1, 2, 311, 312, 313, 1000, 2000] {
                    var rng = MT19937(seed: 11)
                    for _ in 0..<skip { _ = rng.next32() }
                    var ref = rng
                    var mask = [Double](repeating: -1, count: n)
                    mask.withUnsafeMutableBufferPointer { dropoutMask(count: n, p: p, rng: &rng, into: $0.baseAddress!) }
                    let expected = (0..<n).map { _ in ref.randomSample() < 1 - p ? 1 / (1 - p) : 0 }
                    #expect(mask == expected, "p \(p) skip \(skip) n \(n)")
                    #expect(rng.next32() == ref.next32(), "p \(p) skip \(skip) n \(n)")
                }
            }
        }
    }
}

import IR

/// The ops whose kernels take more than pointers and counts (convolution, pooling, dropout):
/// their geometry, resolved once when an executable is made.
struct KernelCall<T: KernelScalar> {
    typealias P = UnsafeMutablePointer<T>
    enum Kind {
        case dropoutMask(mask: P, count: Int, probability: Double)
    }
    let kind: Kind

    init(op: Op, operands: [P], results: [P], operandDims: [[Int]], resultDims: [[Int]], threads: Int) throws {
        switch op {
        case .dropoutMask(let p):
            kind = .dropoutMask(mask: results[0], count: resultDims[0].reduce(1, *), probability: p)
        default:
            throw RuntimeError("'\(op.name)' is not supported yet")
        }
    }

    /// Scratch memory (elements of T) the plan's kernels need at most.
    static func scratchElements(plan: Plan, threads: Int) -> Int { 0 }

    func run(context: GEMMContext, scratch: P, random: inout MT19937) {
        switch kind {
        case let .dropoutMask(mask, count, probability):
            Runtime.dropoutMask(count: count, p: probability, rng: &random, into: mask)
        }
    }
}

extension MT19937 {
    /// Seeds from a 32-bit value (what nnc's derived per-epoch and per-step seeds are).
    public init(seed: UInt32) { self.init(seed: UInt64(seed)) }
}

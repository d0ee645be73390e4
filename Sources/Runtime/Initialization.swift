import IR

/// Initial parameter values, drawn from one MT19937 seeded like NumPy's `np.random.seed(seed)`, in
/// statement order, for each layer the weights (row-major) then the bias. `uniform(a,b)` is
/// a + (b−a)·u with u from NumPy's 53-bit `random_sample`, so `init uniform(-1,1)` with seed 1
/// starts from exactly the weights the NumPy tutorials print.
public func initialValues(for parameters: [Parameter], seed: Int) -> [[Double]] {
    var random = MT19937(seed: UInt32(truncatingIfNeeded: seed))
    return parameters.map { parameter in
        let count = parameter.shape.rowElements
        switch parameter.initializer {
        case .zeros:
            return [Double](repeating: 0, count: count)
        case .ones:
            return [Double](repeating: 1, count: count)
        case .constant(let value):
            return [Double](repeating: value, count: count)
        case .uniform(let low, let high):
            return (0..<count).map { _ in low + (high - low) * random.randomSample() }
        case .normal(let mean, let std):
            return (0..<count).map { _ in random.normal(mean: mean, std: std) }
        }
    }
}

extension ParameterStore {
    /// Copies values into a parameter or state tensor (converting to T).
    public func load(_ values: [Double], into buffer: UnsafeMutableBufferPointer<T>) {
        for (i, value) in values.prefix(buffer.count).enumerated() { buffer[i] = T(value) }
    }

    /// The values of a tensor as Doubles (for saving).
    public func values(_ buffer: UnsafeMutableBufferPointer<T>) -> [Double] { buffer.map { Double($0) } }
}

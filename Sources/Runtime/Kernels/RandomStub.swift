// TEMPORARY stand-in until Random.swift lands (deleted then).
public struct MT19937: Sendable {
    var state: UInt64
    public init(seed: UInt32) { state = UInt64(seed) &+ 1 }
    public mutating func randomSample() -> Double {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Double(state >> 11) / 9007199254740992.0
    }
}
extension MT19937 {
    public mutating func normal(mean: Double, std: Double) -> Double { mean + std * (randomSample() - 0.5) }
}
extension MT19937 {
    public mutating func uniform(_ low: Double, _ high: Double) -> Double { low + (high - low) * randomSample() }
}

/// Element type of a graph's tensors.
public enum DType: String, Sendable, CaseIterable {
    case f32, f64
    public var byteSize: Int { self == .f32 ? 4 : 8 }
}

/// A static shape. When `batched`, the full shape is `[N] + dims`, where the batch size N is
/// symbolic until a plan is made; otherwise it is `dims` (parameters, the loss, bias gradients).
public struct Shape: Hashable, Sendable, CustomStringConvertible {
    public var batched: Bool
    public var dims: [Int]

    public init(batched: Bool, _ dims: [Int]) { self.batched = batched; self.dims = dims }
    public static func batch(_ dims: Int...) -> Shape { Shape(batched: true, dims) }
    public static func fixed(_ dims: Int...) -> Shape { Shape(batched: false, dims) }
    public static let scalar = Shape(batched: false, [])

    /// Elements per batch row (or in total, when not batched).
    public var rowElements: Int { dims.reduce(1, *) }
    /// Elements for a concrete batch size.
    public func elements(batch: Int) -> Int { batched ? batch * rowElements : rowElements }
    /// The concrete dimensions for a batch size.
    public func concrete(batch: Int) -> [Int] { batched ? [batch] + dims : dims }

    public var description: String {
        let parts = (batched ? ["N"] : []) + dims.map(String.init)
        return "[" + parts.joined(separator: ",") + "]"
    }
    /// Without brackets, the batch written as N: `N×3×26×26`.
    public var plain: String { ((batched ? ["N"] : []) + dims.map(String.init)).joined(separator: "×") }
}

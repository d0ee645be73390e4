import Foundation

/// The element types the kernels run on: `Float` (f32, the default) and `Double` (f64, gradcheck and
/// exact reproduction of the NumPy tutorials). Kernels are generic over this protocol and are
/// specialised by the compiler inside the Runtime module.
public protocol KernelScalar: BinaryFloatingPoint, SIMDScalar, Sendable, Codable, CustomStringConvertible {
    static func exp(_ x: Self) -> Self
    static func log(_ x: Self) -> Self
    static func tanh(_ x: Self) -> Self
    static func pow(_ x: Self, _ y: Self) -> Self
    /// a where y > 0, else b, lane by lane. Written per type: in generic code the standard library's
    /// SIMD comparisons fall back to a loop over the lanes, while these compile to one compare and
    /// one blend.
    static func selectPositive(_ y: SIMD8<Self>, _ a: SIMD8<Self>, _ b: SIMD8<Self>) -> SIMD8<Self>
    /// √x, lane by lane (one vector instruction, for the same reason).
    static func squareRoot(_ x: SIMD8<Self>) -> SIMD8<Self>
}

extension Float: KernelScalar {
    @inline(__always) public static func exp(_ x: Float) -> Float { Foundation.exp(x) }
    @inline(__always) public static func log(_ x: Float) -> Float { Foundation.log(x) }
    @inline(__always) public static func tanh(_ x: Float) -> Float { Foundation.tanh(x) }
    @inline(__always) public static func pow(_ x: Float, _ y: Float) -> Float { Foundation.pow(x, y) }
    @inline(__always) public static func selectPositive(_ y: SIMD8<Float>, _ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
        b.replacing(with: a, where: y .> SIMD8<Float>())
    }
    @inline(__always) public static func squareRoot(_ x: SIMD8<Float>) -> SIMD8<Float> { x.squareRoot() }
}

extension Double: KernelScalar {
    @inline(__always) public static func exp(_ x: Double) -> Double { Foundation.exp(x) }
    @inline(__always) public static func log(_ x: Double) -> Double { Foundation.log(x) }
    @inline(__always) public static func tanh(_ x: Double) -> Double { Foundation.tanh(x) }
    @inline(__always) public static func pow(_ x: Double, _ y: Double) -> Double { Foundation.pow(x, y) }
    @inline(__always) public static func selectPositive(_ y: SIMD8<Double>, _ a: SIMD8<Double>, _ b: SIMD8<Double>) -> SIMD8<Double> {
        b.replacing(with: a, where: y .> SIMD8<Double>())
    }
    @inline(__always) public static func squareRoot(_ x: SIMD8<Double>) -> SIMD8<Double> { x.squareRoot() }
}

/// An element-wise activation as the kernels see it (fused into GEMM and conv epilogues).
public enum KernelActivation: Equatable, Sendable {
    case identity
    case relu
    case leakyRelu(alpha: Double)
    case tanh
    case sigmoid

    /// f(x)
    @inline(__always) public func apply<T: KernelScalar>(_ x: T) -> T {
        switch self {
        case .identity: return x
        case .relu: return x > 0 ? x : 0
        case .leakyRelu(let alpha): return x > 0 ? x : T(alpha) * x
        case .tanh: return T.tanh(x)
        case .sigmoid: return 1 / (1 + T.exp(-x))
        }
    }

    /// f'(x) expressed through the activation's output y = f(x), which is what the backward pass keeps.
    @inline(__always) public func derivative<T: KernelScalar>(output y: T) -> T {
        switch self {
        case .identity: return 1
        case .relu: return y > 0 ? 1 : 0
        case .leakyRelu(let alpha): return y > 0 ? 1 : T(alpha)
        case .tanh: return 1 - y * y
        case .sigmoid: return y * (1 - y)
        }
    }
}

import Foundation
import IR

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
    @inline(__always) public static func tanh(_ x: Float) -> Float { tanhThroughDouble(x) }
    @inline(__always) public static func pow(_ x: Float, _ y: Float) -> Float { Foundation.pow(x, y) }
    @inline(__always) public static func selectPositive(_ y: SIMD8<Float>, _ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
        b.replacing(with: a, where: y .> SIMD8<Float>())
    }
    @inline(__always) public static func squareRoot(_ x: SIMD8<Float>) -> SIMD8<Float> { x.squareRoot() }
}

/// tanh of an f32 as (e − 1)/(e + 1), e = exp(2x), in f64, rounded once to f32: a third of the time
/// of glibc's tanhf (which goes through expm1f; the tiny networks' steps spent a sixth of their time
/// there), and correctly rounded but for values within 2⁻⁴² of a rounding boundary (f64's exp errs
/// by under 2⁻⁵², and e − 1 loses at most 11 more bits above 2⁻¹²). Below 2⁻¹² tanh x rounds to x
/// (x³/3 is under half an ulp), and from 10 on to ±1; NaN stays NaN.
@inline(__always) func tanhThroughDouble(_ x: Float) -> Float {
    let magnitude = Swift.abs(x)
    guard magnitude >= 0x1p-12 else { return x }
    guard magnitude < 10 else { return x > 0 ? 1 : -1 }
    let e = Foundation.exp(2 * Double(x))
    return Float((e - 1) / (e + 1))
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

extension ActivationFunction {
    /// f(x), as every kernel and epilogue computes it.
    @inline(__always) public func apply<T: KernelScalar>(_ x: T) -> T {
        switch self {
        case .identity: return x
        case .relu: return x > 0 ? x : 0
        case .leakyRelu(let alpha): return x > 0 ? x : T(alpha) * x
        case .tanh: return T.tanh(x)
        case .sigmoid: return 1 / (1 + T.exp(-x))
        case .pow(let k):
            var r: T = 1
            for _ in 0..<k { r *= x }
            return r
        case .gelu:
            // PyTorch's gelu(approximate='tanh'): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
            let inner = T(geluBeta) * (x + T(geluKappa) * (x * x * x))
            return T(0.5) * x * (1 + T.tanh(inner))
        case .elu(let alpha): return x > 0 ? x : T(alpha) * (T.exp(x) - 1)
        case .selu: return x > 0 ? T(seluScale) * x : T(seluScale * seluAlpha) * (T.exp(x) - 1)
        case .softplus: return x > 20 ? x : T.log(1 + T.exp(x))
        case .clip(let low, let high): return x < T(low) ? T(low) : (x > T(high) ? T(high) : x)
        case .silu: return x / (1 + T.exp(-x))
        case .neg: return -x
        case .abs: return Swift.abs(x)
        case .exp: return T.exp(x)
        case .softsign: return x / (1 + Swift.abs(x))
        case .scale(let k): return T(k) * x
        }
    }

    /// f'(v) where v is what the backward pass keeps: the output y = f(x) when `derivativeFromOutput`,
    /// else the input x.
    @inline(__always) public func derivative<T: KernelScalar>(kept v: T) -> T {
        switch self {
        case .identity: return 1
        case .relu: return v > 0 ? 1 : 0
        case .leakyRelu(let alpha): return v > 0 ? 1 : T(alpha)
        case .tanh: return 1 - v * v
        case .sigmoid: return v * (1 - v)
        case .pow(let k):
            var r: T = 1
            for _ in 0..<(k - 1) { r *= v }
            return T(k) * r
        case .gelu:
            // d/dx of 0.5·x·(1 + tanh(u)), u = β(x + κx³): 0.5(1 + t) + 0.5·x·(1 − t²)·β(1 + 3κx²)
            let x2 = v * v
            let t = T.tanh(T(geluBeta) * (v + T(geluKappa) * (x2 * v)))
            return T(0.5) * (1 + t) + T(0.5) * v * (1 - t * t) * (T(geluBeta) * (1 + 3 * T(geluKappa) * x2))
        case .elu(let alpha): return v > 0 ? 1 : v + T(alpha)  // from y: α·eˣ = y + α
        case .selu: return v > 0 ? T(seluScale) : v + T(seluScale * seluAlpha)
        case .softplus:  // from x, as PyTorch: eˣ/(eˣ + 1) below the threshold
            if v > 20 { return 1 }
            let z = T.exp(v)
            return z / (z + 1)
        case .clip(let low, let high): return v > T(low) && v < T(high) ? 1 : 0  // from y, as PyTorch's hardtanh_backward
        case .silu:  // from x: s·(1 + x·(1 − s)), s = sigmoid(x)
            let s = 1 / (1 + T.exp(-v))
            return s * (1 + v * (1 - s))
        case .neg: return -1
        case .abs: return v > 0 ? 1 : (v < 0 ? -1 : 0)  // from x: sign(x), 0 at 0 as PyTorch
        case .exp: return v  // from y
        case .softsign:  // from y: 1/(1 + |x|)² = (1 − |y|)²
            let r = 1 - Swift.abs(v)
            return r * r
        case .scale(let k): return T(k)
        }
    }
}

/// SELU's λ and α (PyTorch's).
let seluScale = 1.0507009873554804934193349852946
let seluAlpha = 1.6732632423543772848170429916717

/// √(2/π) and 0.044715, the constants of GELU's tanh approximation.
let geluBeta = 0.7978845608028654
let geluKappa = 0.044715

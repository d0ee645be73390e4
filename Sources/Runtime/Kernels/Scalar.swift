import Foundation
import IR

/// The element types the kernels run on: `Float` (f32, the default) and `Double` (f64, gradcheck and
/// exact reproduction of the NumPy tutorials). Kernels are generic over this protocol and are
/// specialised by the compiler inside the Runtime module.
public protocol KernelScalar: BinaryFloatingPoint, SIMDScalar, Sendable, Codable, CustomStringConvertible {
    static func exp(_ x: Self) -> Self
    static func log(_ x: Self) -> Self
    static func tanh(_ x: Self) -> Self
    /// tanh lane by lane, each lane the value `tanh` gives (element-wise kernels take whole vectors).
    static func tanh(_ x: SIMD8<Self>) -> SIMD8<Self>
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
    /// One lane of `tanhThroughDouble`, its cases taken by branches (one element: the tiny networks).
    @inline(__always) public static func tanh(_ x: Float) -> Float {
        let magnitude = Swift.abs(x)
        guard magnitude >= 0x1p-12 else { return x }
        guard magnitude < 10 else { return x > 0 ? 1 : -1 }
        let e = expBelow20(SIMD4(repeating: 2 * Double(x)))[0]
        return Float((e - 1) / (e + 1))
    }
    @inline(__always) public static func tanh(_ x: SIMD8<Float>) -> SIMD8<Float> {
        SIMD8(lowHalf: tanhThroughDouble(x.lowHalf), highHalf: tanhThroughDouble(x.highHalf))
    }
    @inline(__always) public static func pow(_ x: Float, _ y: Float) -> Float { Foundation.pow(x, y) }
    @inline(__always) public static func selectPositive(_ y: SIMD8<Float>, _ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
        b.replacing(with: a, where: y .> SIMD8<Float>())
    }
    @inline(__always) public static func squareRoot(_ x: SIMD8<Float>) -> SIMD8<Float> { x.squareRoot() }
}

/// tanh of f32 lanes as (e − 1)/(e + 1), e = exp(2x), in f64, rounded once to f32: correctly rounded
/// but for values within 2⁻⁴⁰ of a rounding boundary (`expBelow20` errs by under 4 ulp of f64, and
/// e − 1 loses at most 11 more bits above 2⁻¹²). Below 2⁻¹² tanh x rounds to x (x³/3 is under half an
/// ulp), and from 10 on to ±1; NaN stays NaN. The scalar `Float.tanh` computes a lane's value (the
/// same whichever form a kernel takes). glibc's tanhf (through expm1f) took three times as long as
/// glibc's exp in f64, whose call spills the caller's registers (a fifth of the XOR network's step's
/// instructions); this form, eight floats at a time, 2.7 ns a float on the Zen 3 instead of 13.
@inline(__always) func tanhThroughDouble(_ x: SIMD4<Float>) -> SIMD4<Float> {
    let bits = unsafeBitCast(x, to: SIMD4<UInt32>.self)
    let magnitude = unsafeBitCast(bits & 0x7fff_ffff, to: SIMD4<Float>.self)
    let small = .!(magnitude .>= 0x1p-12)  // NaN too
    let saturated = magnitude .>= 10
    // The lanes replaced below go through exp as 0.
    let e = expBelow20(2 * SIMD4<Double>(x.replacing(with: 0, where: small .| saturated)))
    let y = SIMD4<Float>((e - 1) / (e + 1))
    let one = unsafeBitCast((bits & 0x8000_0000) | (1 as Float).bitPattern, to: SIMD4<Float>.self)  // ±1
    return y.replacing(with: x, where: small).replacing(with: one, where: saturated)
}

/// eˣ for |x| ≤ 20 (tanhThroughDouble's range): x = k·ln 2 + r with |r| ≤ ln 2 / 2, eʳ by its Taylor
/// series to r¹³ (the rest is under 2⁻⁵⁷ of the sum) in Estrin's scheme (a short chain of dependent
/// operations), times 2ᵏ. Within 3 ulp of glibc's exp.
@inline(__always) func expBelow20(_ x: SIMD4<Double>) -> SIMD4<Double> {
    // k = x / ln 2 rounded to an integer, by adding 1.5·2⁵²: k lands in the low bits of `shifted`.
    let shifted = SIMD4<Double>(repeating: 0x1.8p52).addingProduct(x, SIMD4(repeating: 0x1.71547652b82fep0))
    let k = shifted - 0x1.8p52
    // ln 2 = ln2High + ln2Low, ln2High with eleven trailing zero bits so that k·ln2High is exact.
    let r = x.addingProduct(-k, SIMD4(repeating: 0x1.62e42fefa3800p-1))
    let r2 = r * r, r4 = r2 * r2, r8 = r4 * r4
    /// a + b·r: the pairs of terms rⁱ/i!, then pairs of those, …
    @inline(__always) func pair(_ a: SIMD4<Double>, _ b: SIMD4<Double>, _ r: SIMD4<Double>) -> SIMD4<Double> { a.addingProduct(b, r) }
    @inline(__always) func pair(_ a: Double, _ b: Double, _ r: SIMD4<Double>) -> SIMD4<Double> { pair(SIMD4(repeating: a), SIMD4(repeating: b), r) }
    let q0 = pair(pair(1, 1, r), pair(1.0 / 2, 1.0 / 6, r), r2)
    let q1 = pair(pair(1.0 / 24, 1.0 / 120, r), pair(1.0 / 720, 1.0 / 5040, r), r2)
    let q2 = pair(pair(1.0 / 40320, 1.0 / 362880, r), pair(1.0 / 3628800, 1.0 / 39916800, r), r2)
    let q3 = pair(1.0 / 479001600, 1.0 / 6227020800, r)
    let p = pair(pair(q0, q1, r4), pair(q2, q3, r4), r8)
    // 2ᵏ: k + 1023 in the exponent's bits (k's two's complement is the low bits of `shifted`).
    let scale = unsafeBitCast(unsafeBitCast(shifted, to: SIMD4<UInt64>.self) &<< 52 &+ (1023 << 52), to: SIMD4<Double>.self)
    // e^(r − k·ln2Low) = eʳ·(1 − k·ln2Low): the second factor goes with the scale, beside the
    // polynomial instead of before it (the tiny networks' steps wait on each tanh).
    return p * scale.addingProduct(-k * 0x1.ef35793c76730p-45, scale)
}

extension Double: KernelScalar {
    @inline(__always) public static func exp(_ x: Double) -> Double { Foundation.exp(x) }
    @inline(__always) public static func log(_ x: Double) -> Double { Foundation.log(x) }
    @inline(__always) public static func tanh(_ x: Double) -> Double { Foundation.tanh(x) }
    @inline(__always) public static func tanh(_ x: SIMD8<Double>) -> SIMD8<Double> {
        var y = x
        for lane in 0..<8 { y[lane] = Foundation.tanh(x[lane]) }
        return y
    }
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

/// GELU's vector form: `apply`'s operations, in the same order, lane by lane.
@inline(__always) func gelu<T: KernelScalar>(_ x: SIMD8<T>) -> SIMD8<T> {
    let inner = T(geluBeta) * (x + T(geluKappa) * (x * x * x))
    return T(0.5) * x * (1 + T.tanh(inner))
}

/// SELU's λ and α (PyTorch's).
let seluScale = 1.0507009873554804934193349852946
let seluAlpha = 1.6732632423543772848170429916717

/// √(2/π) and 0.044715, the constants of GELU's tanh approximation.
let geluBeta = 0.7978845608028654
let geluKappa = 0.044715

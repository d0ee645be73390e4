/// 2-D max and average pooling over NCHW tensors: window kh×kw, stride sh×sw, no padding,
/// output Ho = ⌊(H − kh)/sh⌋ + 1, Wo = ⌊(W − kw)/sw⌋ + 1 (PyTorch's `MaxPool2d`/`AvgPool2d` with
/// `ceil_mode=False`, `padding=0`); input rows/columns past the last full window are ignored.
///
/// Max-pool backward *recomputes* the argmax of each window from the forward input `x` (no index buffer
/// to plan): the gradient goes to the first maximum in row-major window order (PyTorch's tie rule; a NaN
/// counts as a maximum, like PyTorch). Overlapping windows (stride < window) accumulate. Average pooling
/// divides by kh·kw. Planes (n, c) are independent and are spread over `context.parallelFor` by sample
/// when a context is given. Nothing allocates; backward overwrites dx.
public struct Pool2DShape: Equatable, Sendable, CustomStringConvertible {
    public var batch: Int
    public var channels: Int
    public var height: Int
    public var width: Int
    public var kernelH: Int
    public var kernelW: Int
    public var strideH: Int
    public var strideW: Int
    /// Implicit padding (at most half the window): −∞ for max pooling; zeros counted in the average
    /// (PyTorch's defaults, count_include_pad=True).
    public var padH: Int = 0
    public var padW: Int = 0

    public init(batch: Int, channels: Int, height: Int, width: Int, kernelH: Int, kernelW: Int, strideH: Int, strideW: Int,
                padH: Int = 0, padW: Int = 0) {
        self.batch = batch; self.channels = channels; self.height = height; self.width = width
        self.kernelH = kernelH; self.kernelW = kernelW; self.strideH = strideH; self.strideW = strideW
        self.padH = padH; self.padW = padW
    }

    /// `stride == nil` means stride = window (the `.nn` default).
    public init(batch: Int, channels: Int, height: Int, width: Int, kernelH: Int, kernelW: Int, stride: Int? = nil) {
        self.init(batch: batch, channels: channels, height: height, width: width, kernelH: kernelH, kernelW: kernelW,
                  strideH: stride ?? kernelH, strideW: stride ?? kernelW)
    }

    public var outHeight: Int { strideH > 0 ? (height + 2 * padH - kernelH) / strideH + 1 : 0 }
    public var outWidth: Int { strideW > 0 ? (width + 2 * padW - kernelW) / strideW + 1 : 0 }
    public var inputCount: Int { batch * channels * height * width }
    public var outputCount: Int { batch * channels * outHeight * outWidth }

    public var isValid: Bool {
        batch >= 0 && channels > 0 && kernelH > 0 && kernelW > 0 && strideH > 0 && strideW > 0
            && padH >= 0 && padW >= 0 && 2 * padH <= kernelH && 2 * padW <= kernelW
            && height + 2 * padH >= kernelH && width + 2 * padW >= kernelW
    }

    var isPadded: Bool { padH > 0 || padW > 0 }

    /// The rows and columns of window (oy, ox) inside the image.
    @inline(__always) func window(_ oy: Int, _ ox: Int) -> (rows: Range<Int>, columns: Range<Int>) {
        let y0 = oy * strideH - padH, x0 = ox * strideW - padW
        return (max(0, y0)..<min(height, y0 + kernelH), max(0, x0)..<min(width, x0 + kernelW))
    }

    public var description: String {
        "pool[\(batch)x\(channels)x\(height)x\(width) k\(kernelH)x\(kernelW) s\(strideH)x\(strideW)]"
    }
}

/// How a max-pooling job is spread over the threads: a sample's planes an index, or, with fewer samples
/// than threads (batch-1 inference), one plane an index, so that each core pools the channels it has
/// just computed (a convolution of one image splits its channels the same way) and no core waits.
private struct PoolJob {
    let count: Int, planesPerIndex: Int
    init(_ s: Pool2DShape, _ context: GEMMContext?) {
        let byPlane = s.batch < (context?.threads ?? 1)
        count = byPlane ? s.batch * s.channels : s.batch
        planesPerIndex = byPlane ? 1 : s.channels
    }
}

/// y[n,c,oy,ox] = max over the window of x.
@_specialize(where T == Float)
@_specialize(where T == Double)
public func maxPool2DForward<T: KernelScalar>(_ s: Pool2DShape, x: UnsafePointer<T>, y: UnsafeMutablePointer<T>,
                                              context: GEMMContext? = nil) {
    guard s.isValid else { return }
    if s.isPadded { paddedPoolForward(s, max: true, x: x, y: y); return }
    typealias Operands = (Pool2DShape, UnsafePointer<T>, UnsafeMutablePointer<T>, Int)
    let job = PoolJob(s, context)
    let operands: Operands = (s, x, y, job.planesPerIndex)
    parallelFor(job.count, on: context, sharing: operands) { shared, index, _ in
        let (s, x, y, planesPerIndex) = shared.assumingMemoryBound(to: Operands.self).pointee
        let h = s.height, w = s.width, ho = s.outHeight, wo = s.outWidth, kh = s.kernelH, kw = s.kernelW
        let sh = s.strideH, sw = s.strideW
        for plane in (index * planesPerIndex)..<((index + 1) * planesPerIndex) {
            let xp = x + plane * h * w
            let yp = y + plane * ho * wo
            if kh == 2 && kw == 2 && sh == 2 && sw == 2 {
                maxPool2x2ForwardPlane(s, x: xp, y: yp)
                continue
            }
            for oy in 0..<ho {
                for ox in 0..<wo {
                    let win = xp + oy * sh * w + ox * sw
                    var m = win[0]
                    for i in 0..<kh {
                        let r = win + i * w
                        for j in 0..<kw {
                            let v = r[j]
                            if v > m || v.isNaN { m = v }
                        }
                    }
                    yp[oy * wo + ox] = m
                }
            }
        }
    }
}

/// One plane of a 2×2, stride-2 max pool (s gives the plane's size; its rows `rowStride` apart, by
/// default the width); also the epilogue of a convolution fused with its pool. With `relu`, the pool
/// of relu(x), made from x: the largest of zero and the window, a NaN never winning (relu makes it
/// zero) — a convolution's pool made straight from its sums where nothing reads its output.
@inline(__always)
func maxPool2x2ForwardPlane<T: KernelScalar>(_ s: Pool2DShape, x xp: UnsafePointer<T>, rowStride: Int? = nil,
                                             y yp: UnsafeMutablePointer<T>, relu: Bool = false) {
    let w = rowStride ?? s.width, ho = s.outHeight, wo = s.outWidth
    for oy in 0..<ho {
        let r0 = xp + 2 * oy * w, r1 = r0 + w, yr = yp + oy * wo
        if T.self == Float.self && wo >= 4 {
            maxPool2x2RowF32(UnsafeRawPointer(r0), UnsafeRawPointer(r1), UnsafeMutableRawPointer(yr), outWidth: wo, relu: relu)
            continue
        }
        for ox in 0..<wo {
            var m: T = relu ? 0 : r0[2 * ox]
            @inline(__always) func consider(_ v: T) { if v > m || (!relu && v.isNaN) { m = v } }
            if relu { consider(r0[2 * ox]) }
            consider(r0[2 * ox + 1]); consider(r1[2 * ox]); consider(r1[2 * ox + 1])
            yr[ox] = m
        }
    }
}

/// dx = Σ over windows of dy routed to the window's first maximum of x (recomputed). Overwrites dx.
@_specialize(where T == Float)
@_specialize(where T == Double)
public func maxPool2DBackward<T: KernelScalar>(_ s: Pool2DShape, x: UnsafePointer<T>, dy: UnsafePointer<T>,
                                               dx: UnsafeMutablePointer<T>, context: GEMMContext? = nil) {
    guard s.isValid else { return }
    if s.isPadded { paddedPoolBackward(s, max: true, x: x, dy: dy, dx: dx); return }
    typealias Operands = (Pool2DShape, UnsafePointer<T>, UnsafePointer<T>, UnsafeMutablePointer<T>, Int)
    let job = PoolJob(s, context)
    let operands: Operands = (s, x, dy, dx, job.planesPerIndex)
    parallelFor(job.count, on: context, sharing: operands) { shared, index, _ in
        let (s, x, dy, dx, planesPerIndex) = shared.assumingMemoryBound(to: Operands.self).pointee
        let h = s.height, w = s.width, ho = s.outHeight, wo = s.outWidth, kh = s.kernelH, kw = s.kernelW
        let sh = s.strideH, sw = s.strideW
        for plane in (index * planesPerIndex)..<((index + 1) * planesPerIndex) {
            let xp = x + plane * h * w
            let dxp = dx + plane * h * w
            let dyp = dy + plane * ho * wo
            if kh == 2 && kw == 2 && sh == 2 && sw == 2 {
                maxPool2x2BackwardPlane(s, x: xp, dy: dyp, dx: dxp)
                continue
            }
            for i in 0..<(h * w) { dxp[i] = 0 }
            for oy in 0..<ho {
                for ox in 0..<wo {
                    let off = oy * sh * w + ox * sw
                    let win = xp + off
                    var m = win[0]
                    var arg = 0
                    for i in 0..<kh {
                        let r = win + i * w
                        for j in 0..<kw {
                            let v = r[j]
                            if v > m || (v.isNaN && !m.isNaN) { m = v; arg = i * w + j }
                        }
                    }
                    dxp[off + arg] += dyp[oy * wo + ox]
                }
            }
        }
    }
}

/// One plane of a 2×2, stride-2 max pool's gradient (s gives the plane's size): dx = dy routed to each
/// window's first maximum of x. Non-overlapping windows: each input element is written once (no zero
/// fill, no scatter). Also the first step of a convolution's backward pass fused with the pool's.
@inline(__always)
func maxPool2x2BackwardPlane<T: KernelScalar>(_ s: Pool2DShape, x xp: UnsafePointer<T>, dy dyp: UnsafePointer<T>,
                                              dx dxp: UnsafeMutablePointer<T>) {
    let h = s.height, w = s.width, ho = s.outHeight, wo = s.outWidth
    for oy in 0..<ho {
        let r0 = xp + 2 * oy * w, r1 = r0 + w, d0 = dxp + 2 * oy * w, d1 = d0 + w
        if T.self == Float.self && wo >= 4 {
            maxPool2x2GradRowF32(UnsafeRawPointer(r0), UnsafeRawPointer(r1), UnsafeRawPointer(dyp + oy * wo),
                                 UnsafeMutableRawPointer(d0), UnsafeMutableRawPointer(d1), outWidth: wo)
            if w > 2 * wo { d0[w - 1] = 0; d1[w - 1] = 0 }
            continue
        }
        for ox in 0..<wo {
            let a = r0[2 * ox], b = r0[2 * ox + 1], cc = r1[2 * ox], d = r1[2 * ox + 1]
            var m = a, arg = 0
            if b > m || (b.isNaN && !m.isNaN) { m = b; arg = 1 }
            if cc > m || (cc.isNaN && !m.isNaN) { m = cc; arg = 2 }
            if d > m || (d.isNaN && !m.isNaN) { m = d; arg = 3 }
            let g = dyp[oy * wo + ox]
            d0[2 * ox] = arg == 0 ? g : 0
            d0[2 * ox + 1] = arg == 1 ? g : 0
            d1[2 * ox] = arg == 2 ? g : 0
            d1[2 * ox + 1] = arg == 3 ? g : 0
        }
        // An odd width leaves a last column that no window covers.
        if w > 2 * wo { d0[w - 1] = 0; d1[w - 1] = 0 }
    }
    // An odd height leaves a last row that no window covers.
    for i in (2 * ho * w)..<(h * w) { dxp[i] = 0 }
}

/// y[n,c,oy,ox] = mean of the kh×kw window of x.
@_specialize(where T == Float)
@_specialize(where T == Double)
public func avgPool2DForward<T: KernelScalar>(_ s: Pool2DShape, x: UnsafePointer<T>, y: UnsafeMutablePointer<T>,
                                              context: GEMMContext? = nil) {
    guard s.isValid else { return }
    if s.isPadded { paddedPoolForward(s, max: false, x: x, y: y); return }
    typealias Operands = (Pool2DShape, UnsafePointer<T>, UnsafeMutablePointer<T>)
    let operands: Operands = (s, x, y)
    parallelFor(s.batch, on: context, sharing: operands) { shared, n, _ in
        let (s, x, y) = shared.assumingMemoryBound(to: Operands.self).pointee
        let h = s.height, w = s.width, ho = s.outHeight, wo = s.outWidth, kh = s.kernelH, kw = s.kernelW
        let sh = s.strideH, sw = s.strideW, c = s.channels
        let scale = 1 / T(kh * kw)
        for ch in 0..<c {
            let xp = x + (n * c + ch) * h * w
            let yp = y + (n * c + ch) * ho * wo
            for oy in 0..<ho {
                for ox in 0..<wo {
                    let win = xp + oy * sh * w + ox * sw
                    var acc: T = 0
                    for i in 0..<kh {
                        let r = win + i * w
                        for j in 0..<kw { acc += r[j] }
                    }
                    yp[oy * wo + ox] = acc * scale
                }
            }
        }
    }
}

/// dx = Σ over windows of dy/(kh·kw) spread over the window. Overwrites dx.
@_specialize(where T == Float)
@_specialize(where T == Double)
public func avgPool2DBackward<T: KernelScalar>(_ s: Pool2DShape, dy: UnsafePointer<T>, dx: UnsafeMutablePointer<T>,
                                               context: GEMMContext? = nil) {
    guard s.isValid else { return }
    if s.isPadded { paddedPoolBackward(s, max: false, x: nil, dy: dy, dx: dx); return }
    typealias Operands = (Pool2DShape, UnsafePointer<T>, UnsafeMutablePointer<T>)
    let operands: Operands = (s, dy, dx)
    parallelFor(s.batch, on: context, sharing: operands) { shared, n, _ in
        let (s, dy, dx) = shared.assumingMemoryBound(to: Operands.self).pointee
        let h = s.height, w = s.width, ho = s.outHeight, wo = s.outWidth, kh = s.kernelH, kw = s.kernelW
        let sh = s.strideH, sw = s.strideW, c = s.channels
        let scale = 1 / T(kh * kw)
        for ch in 0..<c {
            let dxp = dx + (n * c + ch) * h * w
            let dyp = dy + (n * c + ch) * ho * wo
            for i in 0..<(h * w) { dxp[i] = 0 }
            for oy in 0..<ho {
                for ox in 0..<wo {
                    let g = dyp[oy * wo + ox] * scale
                    let win = dxp + oy * sh * w + ox * sw
                    for i in 0..<kh {
                        let r = win + i * w
                        for j in 0..<kw { r[j] += g }
                    }
                }
            }
        }
    }
}

// MARK: - Padded pooling (plain loops over the clipped windows)

/// Max over the window's elements inside the image (the −∞ padding never wins), or their sum divided
/// by kh·kw (the zero padding counted).
func paddedPoolForward<T: KernelScalar>(_ s: Pool2DShape, max: Bool, x: UnsafePointer<T>, y: UnsafeMutablePointer<T>) {
    let ho = s.outHeight, wo = s.outWidth, plane = s.height * s.width
    let scale = 1 / T(s.kernelH * s.kernelW)
    for p in 0..<(s.batch * s.channels) {
        let xp = x + p * plane, yp = y + p * ho * wo
        for oy in 0..<ho {
            for ox in 0..<wo {
                let (rows, columns) = s.window(oy, ox)
                var m = -T.infinity, sum: T = 0
                for i in rows {
                    for j in columns {
                        let v = xp[i * s.width + j]
                        if v > m || v.isNaN { m = v }
                        sum += v
                    }
                }
                yp[oy * wo + ox] = max ? m : sum * scale
            }
        }
    }
}

/// dy routed to each window's first maximum (max), or spread as dy/(kh·kw) (average). Overwrites dx.
func paddedPoolBackward<T: KernelScalar>(_ s: Pool2DShape, max: Bool, x: UnsafePointer<T>?, dy: UnsafePointer<T>, dx: UnsafeMutablePointer<T>) {
    let ho = s.outHeight, wo = s.outWidth, plane = s.height * s.width
    let scale = 1 / T(s.kernelH * s.kernelW)
    dx.update(repeating: 0, count: s.batch * s.channels * plane)
    for p in 0..<(s.batch * s.channels) {
        let dxp = dx + p * plane, dyp = dy + p * ho * wo
        for oy in 0..<ho {
            for ox in 0..<wo {
                let (rows, columns) = s.window(oy, ox)
                let g = dyp[oy * wo + ox]
                if max, let x {
                    let xp = x + p * plane
                    var m = -T.infinity, arg = -1
                    for i in rows {
                        for j in columns {
                            let v = xp[i * s.width + j]
                            if arg < 0 || v > m || (v.isNaN && !m.isNaN) { m = v; arg = i * s.width + j }
                        }
                    }
                    if arg >= 0 { dxp[arg] += g }
                } else {
                    for i in rows { for j in columns { dxp[i * s.width + j] += g * scale } }
                }
            }
        }
    }
}

// MARK: - f32 2×2 max pooling, eight or four windows at a time

private typealias F4 = SIMD4<Float>
private typealias F16 = SIMD16<Float>

// The forward pass takes a row of wo ≥ 8 windows in chunks of eight (16 input columns a load), a
// shorter one and the backward pass in chunks of four; the last chunk starts at wo − 8 (or wo − 4),
// overlapping the one before, whose windows are computed again to the same values. Plain loops: chunk
// by chunk through a closure, four at a time, the two kernels took 12% of a Fashion CNN training step.
// The helpers come in concrete widths: generic over SIMD, the comparisons and selects compile to
// scalar loops.

/// The maximum of each window's four candidates (top left, top right, bottom left, bottom right), a
/// NaN winning as in the scalar loop.
@inline(__always) func windowMaxima(_ c0: F8, _ c1: F8, _ c2: F8, _ c3: F8) -> F8 {
    @inline(__always) func larger(_ m: F8, _ v: F8) -> F8 { m.replacing(with: v, where: (v .> m) .| (v .!= v)) }
    return larger(larger(larger(c0, c1), c2), c3)
}

@inline(__always) private func windowMaxima(_ c0: F4, _ c1: F4, _ c2: F4, _ c3: F4) -> F4 {
    @inline(__always) func larger(_ m: F4, _ v: F4) -> F4 { m.replacing(with: v, where: (v .> m) .| (v .!= v)) }
    return larger(larger(larger(c0, c1), c2), c3)
}

/// The maximum of each window's relu(candidates), without making them: the largest of zero and the
/// candidates, a NaN never winning (relu makes a NaN zero). The same values, +0 included.
@inline(__always) func reluWindowMaxima(_ c0: F8, _ c1: F8, _ c2: F8, _ c3: F8) -> F8 {
    @inline(__always) func larger(_ m: F8, _ v: F8) -> F8 { m.replacing(with: v, where: v .> m) }
    return larger(larger(larger(larger(F8(), c0), c1), c2), c3)
}

@inline(__always) private func reluWindowMaxima(_ c0: F4, _ c1: F4, _ c2: F4, _ c3: F4) -> F4 {
    @inline(__always) func larger(_ m: F4, _ v: F4) -> F4 { m.replacing(with: v, where: v .> m) }
    return larger(larger(larger(larger(F4(), c0), c1), c2), c3)
}

/// Each window's dy at its first maximum among the four candidates (the scalar loop's rule, NaNs
/// included), zero at the other three: four windows' 2×2 gradients as two 8-wide rows. (Eight
/// windows into 16-wide rows, in either halves or pairs of lanes, took two to ten times as long:
/// Swift lowers those SIMD16 selects and shuffles to scalar loops.)
@inline(__always) private func routedToFirstMaximum(_ top: F8, _ bottom: F8, dy: F4) -> (upper: F8, lower: F8) {
    var m = top.evenHalf, arg = SIMD4<Int32>()
    @inline(__always) func consider(_ v: F4, _ index: Int32) {
        let better = (v .> m) .| ((v .!= v) .& (m .== m))
        m.replace(with: v, where: better)
        arg.replace(with: index, where: better)
    }
    consider(top.oddHalf, 1); consider(bottom.evenHalf, 2); consider(bottom.oddHalf, 3)
    var upper = F8(), lower = F8()
    upper.evenHalf = F4().replacing(with: dy, where: arg .== 0); upper.oddHalf = F4().replacing(with: dy, where: arg .== 1)
    lower.evenHalf = F4().replacing(with: dy, where: arg .== 2); lower.oddHalf = F4().replacing(with: dy, where: arg .== 3)
    return (upper, lower)
}

/// One output row of a 2×2, stride-2 max pool (wo ≥ 4): y[ox] = max of r0[2ox], r0[2ox+1], r1[2ox], r1[2ox+1]
/// (with `relu`, of their relu: see `maxPool2x2ForwardPlane`).
private func maxPool2x2RowF32(_ r0: UnsafeRawPointer, _ r1: UnsafeRawPointer, _ y: UnsafeMutableRawPointer, outWidth wo: Int, relu: Bool) {
    var ox = 0
    if wo >= 8 {
        while ox < wo {
            let at = min(ox, wo - 8)
            let top = r0.loadUnaligned(fromByteOffset: 8 * at, as: F16.self)
            let bottom = r1.loadUnaligned(fromByteOffset: 8 * at, as: F16.self)
            let m = relu ? reluWindowMaxima(top.evenHalf, top.oddHalf, bottom.evenHalf, bottom.oddHalf)
                         : windowMaxima(top.evenHalf, top.oddHalf, bottom.evenHalf, bottom.oddHalf)
            y.storeBytes(of: m, toByteOffset: 4 * at, as: F8.self)
            ox += 8
        }
    } else {
        while ox < wo {
            let at = min(ox, wo - 4)
            let top = r0.loadUnaligned(fromByteOffset: 8 * at, as: F8.self)
            let bottom = r1.loadUnaligned(fromByteOffset: 8 * at, as: F8.self)
            let m = relu ? reluWindowMaxima(top.evenHalf, top.oddHalf, bottom.evenHalf, bottom.oddHalf)
                         : windowMaxima(top.evenHalf, top.oddHalf, bottom.evenHalf, bottom.oddHalf)
            y.storeBytes(of: m, toByteOffset: 4 * at, as: F4.self)
            ox += 4
        }
    }
}

/// The gradient through one output row of a 2×2, stride-2 max pool (wo ≥ 4): each window's dy goes
/// to its first maximum, zeros elsewhere.
private func maxPool2x2GradRowF32(_ r0: UnsafeRawPointer, _ r1: UnsafeRawPointer, _ dy: UnsafeRawPointer,
                                  _ d0: UnsafeMutableRawPointer, _ d1: UnsafeMutableRawPointer, outWidth wo: Int) {
    var ox = 0
    while ox < wo {
        let at = min(ox, wo - 4)
        let top = r0.loadUnaligned(fromByteOffset: 8 * at, as: F8.self)
        let bottom = r1.loadUnaligned(fromByteOffset: 8 * at, as: F8.self)
        let g = routedToFirstMaximum(top, bottom, dy: dy.loadUnaligned(fromByteOffset: 4 * at, as: F4.self))
        d0.storeBytes(of: g.upper, toByteOffset: 8 * at, as: F8.self)
        d1.storeBytes(of: g.lower, toByteOffset: 8 * at, as: F8.self)
        ox += 4
    }
}

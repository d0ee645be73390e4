import IR

/// 2-D convolution (cross-correlation, like PyTorch's `Conv2d`) over NCHW tensors.
///
/// - x: [N, Cin, H, W], weight: [Cout, Cin, kh, kw], bias: [Cout], y: [N, Cout, Ho, Wo] with
///   Ho = ⌊(H + 2·padH − kh)/strideH⌋ + 1 and Wo likewise; zero padding.
/// - Forward: y = act(conv(x, w) + b), im2col + `gemm` per sample ([Cout × K]·[K × Ho·Wo], K = Cin·kh·kw),
///   bias pre-filled into y and the activation fused into the GEMM epilogue. Samples are spread over
///   `context.parallelFor`; each GEMM runs single-threaded on its worker. Stride-1 convolutions in f32
///   run directly on zero-padded planes instead (`DirectForward`), and 3×3 ones with at least eight
///   channels in and out by Winograd's F(2×2, 3×3) (Winograd.swift).
/// - Stride-1 in f32, the backward pass also avoids im2col: the weight gradient of 3-wide kernels is
///   summed directly from padded planes (`directWeightGradient`), and the input gradient is the
///   forward convolution of dZ with the flipped kernel (`directInputGradient`; by Winograd's
///   algorithm where that applies).
/// - Backward: dZ = dY ⊙ act'(Y) (when the forward output `y` is given), db = Σ dZ, dW = Σₙ dZₙ·colₙᵀ,
///   dX = col2im(Wᵀ·dZ). Samples are processed in groups of B (sized to stay in cache): the group's dZ and
///   im2col matrices are laid out side by side ([Cout × B·P], [K × B·P]) so dW and Wᵀ·dZ are one GEMM each
///   per group. (Measured on the Fashion-MNIST CNN: col2im beats the stride-1 transposed-convolution
///   formulation — im2col of the padded dZ plus a GEMM with m = Cin — by ~40%.)
/// - Memory: every call takes caller-provided scratch of `conv2DForwardScratchCount` /
///   `conv2DBackwardScratchCount` elements (sized for a thread count ≥ `context.threads`); nothing allocates.
/// - Determinism: the batch is split into `min(context.threads, N)` fixed contiguous chunks; each chunk
///   accumulates its own dW/db partials in sample order and the partials are summed in chunk order, so the
///   same thread count gives bit-identical results.
public struct Conv2DShape: Equatable, Sendable, CustomStringConvertible {
    public var batch: Int
    public var inChannels: Int
    public var height: Int
    public var width: Int
    public var outChannels: Int
    public var kernelH: Int
    public var kernelW: Int
    public var strideH: Int
    public var strideW: Int
    public var padH: Int
    public var padW: Int
    /// Dilation (spacing of the kernel's taps) and groups (Cin and Cout split into `groups` independent
    /// convolutions, the weight [Cout, Cin/groups, kh, kw]), as PyTorch's.
    public var dilationH: Int = 1
    public var dilationW: Int = 1
    public var groups: Int = 1

    public init(batch: Int, inChannels: Int, height: Int, width: Int, outChannels: Int,
                kernelH: Int, kernelW: Int, strideH: Int, strideW: Int, padH: Int, padW: Int,
                dilationH: Int = 1, dilationW: Int = 1, groups: Int = 1) {
        self.batch = batch; self.inChannels = inChannels; self.height = height; self.width = width
        self.outChannels = outChannels; self.kernelH = kernelH; self.kernelW = kernelW
        self.strideH = strideH; self.strideW = strideW; self.padH = padH; self.padW = padW
        self.dilationH = dilationH; self.dilationW = dilationW; self.groups = groups
    }

    /// Square stride and padding (the `.nn` language's `conv … stride S pad P`).
    public init(batch: Int, inChannels: Int, height: Int, width: Int, outChannels: Int,
                kernelH: Int, kernelW: Int, stride: Int = 1, padding: Int = 0) {
        self.init(batch: batch, inChannels: inChannels, height: height, width: width, outChannels: outChannels,
                  kernelH: kernelH, kernelW: kernelW, strideH: stride, strideW: stride, padH: padding, padW: padding)
    }

    public var outHeight: Int { strideH > 0 ? (height + 2 * padH - dilationH * (kernelH - 1) - 1) / strideH + 1 : 0 }
    public var outWidth: Int { strideW > 0 ? (width + 2 * padW - dilationW * (kernelW - 1) - 1) / strideW + 1 : 0 }
    /// K = Cin·kh·kw, the GEMM depth of the forward pass.
    public var patchSize: Int { inChannels * kernelH * kernelW }
    public var inputCount: Int { batch * inChannels * height * width }
    public var outputCount: Int { batch * outChannels * outHeight * outWidth }
    public var weightCount: Int { outChannels * inChannels / max(1, groups) * kernelH * kernelW }

    /// All sizes positive, padding non-negative, the groups dividing the channels, and the (padded)
    /// input at least one (dilated) window large.
    public var isValid: Bool {
        batch >= 0 && inChannels > 0 && height > 0 && width > 0 && outChannels > 0 && kernelH > 0 && kernelW > 0
            && strideH > 0 && strideW > 0 && padH >= 0 && padW >= 0 && dilationH > 0 && dilationW > 0 && groups > 0
            && inChannels % groups == 0 && outChannels % groups == 0
            && height + 2 * padH >= dilationH * (kernelH - 1) + 1 && width + 2 * padW >= dilationW * (kernelW - 1) + 1
    }

    /// Grouped or dilated: run by the general path (ConvGeneral.swift), not the fast ones.
    var isGeneral: Bool { groups != 1 || dilationH != 1 || dilationW != 1 }

    public var description: String {
        "conv[\(batch)x\(inChannels)x\(height)x\(width) -> \(outChannels) k\(kernelH)x\(kernelW) s\(strideH)x\(strideW) p\(padH)x\(padW)]"
    }

    /// A 1×1, stride-1, unpadded convolution reads x directly as its im2col matrix.
    var isPointwise: Bool { kernelH == 1 && kernelW == 1 && strideH == 1 && strideW == 1 && padH == 0 && padW == 0 }
    /// The forward GEMM computes Yᵀ [P × Cout] (then transposed into Y) instead of Y [Cout × P] when
    /// that wastes less of the 6×16 register tiles (e.g. Cout = 32, P = 196: 6,336 slots against
    /// 7,488); the bias then runs along the GEMM's columns, in its epilogue.
    var forwardTransposed: Bool {
        let p = outHeight * outWidth
        return !isPointwise && Self.tileSlots(p, outChannels) < Self.tileSlots(outChannels, p)
    }
    /// The weight-gradient GEMM computes dWᵀ [K × Cout] instead of dW [Cout × K] when that wastes less of
    /// the GEMM's 6×16 register tiles (e.g. K = 9, Cout = 16 for a first 3×3 layer on one channel).
    var weightGradientTransposed: Bool {
        Self.tileSlots(patchSize, outChannels) < Self.tileSlots(outChannels, patchSize)
    }
    /// Output slots an m × n f32 GEMM computes: rows padded to the 6-row and columns to the 16-column
    /// register tile.
    static func tileSlots(_ m: Int, _ n: Int) -> Int {
        (m + GEMMKernelF32.mr - 1) / GEMMKernelF32.mr * GEMMKernelF32.mr * ((n + GEMMKernelF32.nr - 1) / GEMMKernelF32.nr * GEMMKernelF32.nr)
    }
}

// MARK: - im2col / col2im

/// The output columns lo...hi whose input column ox·stride − pad + j lies in 0..<width (lo > hi: none).
@inline(__always) func validColumns(_ j: Int, width: Int, outWidth: Int, stride: Int, pad: Int) -> (lo: Int, hi: Int) {
    let lo = j >= pad ? 0 : (pad - j + stride - 1) / stride
    let hiRaw = width - 1 + pad - j
    return (lo, hiRaw < 0 ? -1 : min(outWidth - 1, hiRaw / stride))
}

/// Gathers the patches of one image into col[K × Ho·Wo] (row (c, i, j), leading dimension `ldcol`).
/// The image has `channels` planes of `height × width`, plane stride `channelStride`, rows contiguous.
/// Works for any padding sign (negative padding crops).
@inline(__always)
func im2col<T: KernelScalar>(_ src: UnsafePointer<T>, channels: Int, channelStride: Int, height: Int, width: Int,
                             kernelH: Int, kernelW: Int, strideH: Int, strideW: Int, padH: Int, padW: Int,
                             outHeight: Int, outWidth: Int, col: UnsafeMutablePointer<T>, ldcol: Int) {
    var row = 0
    for c in 0..<channels {
        let plane = src + c * channelStride
        for i in 0..<kernelH {
            for j in 0..<kernelW {
                let dstRow = col + row * ldcol
                row += 1
                let (lo, hi) = validColumns(j, width: width, outWidth: outWidth, stride: strideW, pad: padW)
                for oy in 0..<outHeight {
                    let dst = dstRow + oy * outWidth
                    let iy = oy * strideH - padH + i
                    if iy < 0 || iy >= height || lo > hi {
                        zeroShort(dst, outWidth)
                        continue
                    }
                    zeroShort(dst, lo)
                    let srcRow = plane + iy * width - padW + j
                    if strideW == 1 {
                        copyShort(dst + lo, srcRow + lo, hi + 1 - lo)
                    } else {
                        for ox in lo..<(hi + 1) { dst[ox] = srcRow[ox * strideW] }
                    }
                    zeroShort(dst + hi + 1, outWidth - hi - 1)
                }
            }
        }
    }
}

/// dst[0..<count] = src[0..<count] for the short rows of im2col (a library memmove call costs more
/// than the copy at image widths of 7–28): eight lanes at a time, the last eight overlapping.
@inline(__always) func copyShort<T: KernelScalar>(_ dst: UnsafeMutablePointer<T>, _ src: UnsafePointer<T>, _ count: Int) {
    if count < 8 {
        for i in 0..<count { dst[i] = src[i] }
        return
    }
    var i = 0
    while i + 8 <= count { storeLanes(loadLanes(src + i), dst + i); i += 8 }
    if i < count { storeLanes(loadLanes(src + count - 8), dst + count - 8) }
}

/// dst[0..<count] = 0, like copyShort.
@inline(__always) func zeroShort<T: KernelScalar>(_ dst: UnsafeMutablePointer<T>, _ count: Int) {
    if count < 8 {
        for i in 0..<count { dst[i] = 0 }
        return
    }
    var i = 0
    while i + 8 <= count { storeLanes(Lanes<T>(), dst + i); i += 8 }
    if i < count { storeLanes(Lanes<T>(), dst + count - 8) }
}

/// dst[c × rows + r] = src[r × columns + c]: a rows × columns matrix transposed (f32: 8×8 blocks).
func transpose<T: KernelScalar>(_ src: UnsafePointer<T>, rows: Int, columns: Int, into dst: UnsafeMutablePointer<T>) {
    if T.self == Float.self {
        transposeF32(UnsafeRawPointer(src).assumingMemoryBound(to: Float.self), ldSrc: columns, rows: rows, columns: columns,
                     UnsafeMutableRawPointer(dst).assumingMemoryBound(to: Float.self), ldDst: rows)
        return
    }
    for r in 0..<rows {
        for c in 0..<columns { dst[c * rows + r] = src[r * columns + c] }
    }
}

/// Scatters-adds col[K × Ho·Wo] back into an image (dst must be zeroed first by the caller).
@inline(__always)
func col2im<T: KernelScalar>(_ col: UnsafePointer<T>, ldcol: Int, channels: Int, height: Int, width: Int,
                             kernelH: Int, kernelW: Int, strideH: Int, strideW: Int, padH: Int, padW: Int,
                             outHeight: Int, outWidth: Int, dst: UnsafeMutablePointer<T>) {
    var row = 0
    for c in 0..<channels {
        let plane = dst + c * height * width
        for i in 0..<kernelH {
            for j in 0..<kernelW {
                let srcRow = col + row * ldcol
                row += 1
                let (lo, hi) = validColumns(j, width: width, outWidth: outWidth, stride: strideW, pad: padW)
                if lo > hi { continue }
                for oy in 0..<outHeight {
                    let iy = oy * strideH - padH + i
                    if iy < 0 || iy >= height { continue }
                    let s = srcRow + oy * outWidth
                    let d = plane + iy * width - padW + j
                    if strideW == 1 {
                        for ox in lo..<(hi + 1) { d[ox] += s[ox] }
                    } else {
                        for ox in lo..<(hi + 1) { d[ox * strideW] += s[ox] }
                    }
                }
            }
        }
    }
}

// MARK: - Activation gradient

// MARK: - Forward

/// Scratch elements `conv2DForward` needs with up to `threads` threads: one im2col buffer [K × Ho·Wo]
/// per thread (none for pointwise convolutions), or the direct path's buffers.
public func conv2DForwardScratchCount(_ s: Conv2DShape, threads: Int) -> Int {
    guard s.isValid else { return 0 }
    if s.isGeneral { return generalForwardScratchCount(s, threads: threads) }
    guard !s.isPointwise else { return 0 }
    // (f32 only, but the count is the same for both types.)
    let winograd = s.usesWinograd ? WinogradForward(s).scratchCount(threads: threads) : 0
    if s.forwardSamplesPerGEMM > 1 {
        return max(winograd, max(threads, 1) * (s.patchSize + s.outChannels) * s.forwardSamplesPerGEMM * s.outHeight * s.outWidth)
    }
    let perThread = (s.patchSize + (s.forwardTransposed ? s.outChannels : 0)) * s.outHeight * s.outWidth
    let im2col = max(threads, 1) * perThread
    guard s.directForward else { return max(im2col, winograd) }
    let d = DirectForward(s)
    // (Split over the threads, each part has a zone of its own, on whole cache lines: see `ScratchZones`.)
    return max(im2col, winograd, max(threads, 1) * ((d.weights + d.perThread + 15) / 16 * 16))
}

extension Conv2DShape {
    /// Small output planes (fewer than 128 positions) run several samples through one GEMM, so that its
    /// columns (samples × positions) fill the register tiles and the weights are packed once per group
    /// rather than per sample. (64 channels at 7×7, batch 128: 6.0 → ? ms.)
    var forwardSamplesPerGEMM: Int {
        let p = outHeight * outWidth
        guard !isPointwise, !directForward, p < 128 else { return 1 }
        return max(1, min(batch, 384 / max(p, 1)))
    }

    /// Stride-1 convolutions run directly on zero-padded input planes (no im2col, no packing): see
    /// `DirectForward`. f32 only.
    /// Only where the padded rows waste little: a 7-wide output in 16-wide rows computes more than
    /// twice what it keeps, and im2col with the GEMM is faster there (64 channels at 7×7: 6.3 → ? ms).
    var directForward: Bool {
        strideH == 1 && strideW == 1 && !isPointwise && outWidth * 8 >= directRowLength * 5
    }

    /// The direct path's row length: Wo + kw − 1 rounded up to whole 8-wide vectors.
    var directRowLength: Int { (outWidth + kernelW - 1 + 7) / 8 * 8 }
}

/// The forward pass of `forwardSamplesPerGEMM` samples at a time: their patches side by side in one
/// im2col matrix [K × G·P], one GEMM Y = W·col (bias and activation in its epilogue) into scratch,
/// then each sample's [Cout × P] block copied to y. Groups are independent (any thread count gives
/// the same values).
private func conv2DForwardGrouped<T: KernelScalar>(_ s: Conv2DShape, x: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>?,
                                                   activation: ActivationFunction, y: UnsafeMutablePointer<T>,
                                                   scratch: UnsafeMutablePointer<T>, context: GEMMContext) {
    let group = s.forwardSamplesPerGEMM
    typealias Forward = (Conv2DShape, UnsafePointer<T>, UnsafePointer<T>, UnsafePointer<T>?, ActivationFunction,
                         UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, GEMMContext, Int)
    let forward: Forward = (s, x, weight, bias, activation, y, scratch, context, group)
    context.parallelFor((s.batch + group - 1) / group, sharing: forward) { shared, index, worker in
        let (s, x, weight, bias, activation, y, scratch, context, group) = shared.assumingMemoryBound(to: Forward.self).pointee
        let cin = s.inChannels, cout = s.outChannels, h = s.height, w = s.width
        let p = s.outHeight * s.outWidth, k = s.patchSize
        let first = index * group, samples = min(group, s.batch - first), columns = samples * p
        let col = scratch + worker * (k + cout) * group * p
        let out = col + k * group * p
        for j in 0..<samples {
            im2col(x + (first + j) * cin * h * w, channels: cin, channelStride: h * w, height: h, width: w,
                   kernelH: s.kernelH, kernelW: s.kernelW, strideH: s.strideH, strideW: s.strideW,
                   padH: s.padH, padW: s.padW, outHeight: s.outHeight, outWidth: s.outWidth, col: col + j * p, ldcol: columns)
        }
        if let bias {
            for co in 0..<cout { (out + co * columns).update(repeating: bias[co], count: columns) }
        }
        gemm(transA: false, transB: false, m: cout, n: columns, k: k, a: weight, lda: k, b: UnsafePointer(col), ldb: columns,
             c: out, ldc: columns, accumulate: bias != nil, activation: activation, context: context, worker: worker)
        for j in 0..<samples {
            let yn = y + (first + j) * cout * p
            for co in 0..<cout { (yn + co * p).update(from: out + co * columns + j * p, count: p) }
        }
    }
}

/// The direct stride-1 convolution. Input planes are copied into rows of `rowLength` (a multiple of
/// eight, at least Wo + kw − 1) with zero padding, and the output is computed over planes with the
/// same row length, so that output position f = oy·rowLength + ox reads input position
/// f + i·rowLength + j for every (c, i, j): the convolution becomes a sum over K shifted copies of
/// the flat plane. Positions with ox ≥ Wo are computed and dropped. Four output channels by three
/// chunks (8 wide in 256-bit vectors, 16 in 512-bit ones) are accumulated at a time in twelve vector
/// registers; each loaded input vector feeds four multiply-adds, each broadcast weight three; the
/// plane's last chunks go one at a time, so only whole 16-wide chunks are computed (a 14-row plane of
/// 16-wide rows is 14 chunks, not 15). (The 512-bit kernel and the single chunks: conv 16→32 at
/// 14×14, batch 64, 848 → 630–800 µs on the 2-core Zen 4; batch 1, 22.8 → 20.4 µs.)
extension Conv2DShape {
    /// The 2×2, stride-2 max pool of this convolution's output (a fused conv's second result).
    var outputPool: Pool2DShape {
        Pool2DShape(batch: batch, channels: outChannels, height: outHeight, width: outWidth, kernelH: 2, kernelW: 2)
    }
}

struct DirectForward {
    static let channelBlock = 4, chunkBlock = 3
    let rowLength: Int
    /// Rows of a padded input plane: Ho + kh − 1.
    let inputRows: Int
    /// Elements of one padded input plane (plus slack for the reads past the last row).
    let inputPlane: Int
    /// Elements of one output plane: Ho·rowLength rounded up to whole chunk blocks.
    let outputPlane: Int
    /// Output channels rounded up to the channel block.
    let channels: Int
    /// Shared: the weights transposed to [K × channels] (zero past Cout).
    let weights: Int
    /// Per thread: the padded input planes, then the output planes.
    let perThread: Int

    init(_ s: Conv2DShape) {
        rowLength = s.directRowLength
        inputRows = s.outHeight + s.kernelH - 1
        // Whole 16-wide chunks (the kernels run blocks of three chunks, then single chunks).
        outputPlane = (s.outHeight * rowLength + 15) / 16 * 16
        // Reads reach (kh − 1)·rowLength + kw − 1 past an output position, and the last block of the
        // output plane may extend past Ho·rowLength.
        inputPlane = max(inputRows * rowLength, outputPlane + (s.kernelH - 1) * rowLength) + s.kernelW - 1 + 8
        channels = (s.outChannels + DirectForward.channelBlock - 1) / DirectForward.channelBlock * DirectForward.channelBlock
        weights = s.patchSize * channels
        perThread = s.inChannels * inputPlane + channels * outputPlane
    }
}

/// A convolution of one image split over the threads gives each part a zone of the scratch at a
/// stride that is the same for every convolution of a session (its scratch size over the threads),
/// so that each core keeps writing the same memory from op to op. (Zones sized per op made one
/// core's writes land on lines the other core wrote in the op before; the batch-1 Fashion CNN ran
/// 44,900 calls/s that way, 47,500 with fixed zones, on the 2-core Zen 4.)
struct ScratchZones {
    /// Elements from one zone to the next (a multiple of 16: zones start on cache lines; the scratch
    /// counts reserve each part's need rounded up to 16, so rounding the stride down keeps it above).
    let stride: Int
    init(count: Int, threads: Int) { stride = count / max(threads, 1) / 16 * 16 }
}

/// y = act(conv(x, weight) + bias), NCHW. `bias` may be nil. With `pooled`, also its 2×2, stride-2
/// max pool [N, Cout, ⌊Ho/2⌋, ⌊Wo/2⌋], the same values `maxPool2DForward` gives (the direct path
/// pools each plane as it writes it; the others pool the whole output after). `outputRead: false`
/// says nothing reads y: with `pooled`, the Winograd path may leave it unwritten.
/// `transformedWeights`: the weights as `winogradTransformWeights` makes them, for a session whose
/// weights do not change (used where the Winograd path runs). `scratch` holds at least
/// `conv2DForwardScratchCount(s, threads: context.threads)` elements (`scratchCount`, when more:
/// see `ScratchZones`). Invalid shapes do nothing.
@_specialize(where T == Float)
@_specialize(where T == Double)
public func conv2DForward<T: KernelScalar>(
    _ s: Conv2DShape, x: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>?,
    activation: ActivationFunction = .identity, y: UnsafeMutablePointer<T>, pooled: UnsafeMutablePointer<T>? = nil,
    outputRead: Bool = true, transformedWeights: UnsafePointer<T>? = nil,
    scratch: UnsafeMutablePointer<T>, scratchCount: Int? = nil, context: GEMMContext
) {
    guard s.isValid, s.batch > 0 else { return }
    let zones = ScratchZones(count: scratchCount ?? conv2DForwardScratchCount(s, threads: context.threads), threads: context.threads)
    let winograd = T.self == Float.self && s.usesWinograd
    if let pooled, !(T.self == Float.self && (s.directForward || winograd) && !s.isGeneral) {
        conv2DForward(s, x: x, weight: weight, bias: bias, activation: activation, y: y, scratch: scratch, context: context)
        maxPool2DForward(s.outputPool, x: UnsafePointer(y), y: pooled, context: context)
        return
    }
    if s.isGeneral {
        conv2DForwardGeneral(s, x: x, weight: weight, bias: bias, activation: activation, y: y, scratch: scratch, context: context)
        return
    }
    // Where nothing reads y, the direct and Winograd paths make the pool without it (relu or none).
    let skipY = !outputRead && pooled != nil && (activation == .relu || activation == .identity)
    if winograd {
        conv2DForwardWinograd(s, x: UnsafeRawPointer(x).assumingMemoryBound(to: Float.self),
                              weight: UnsafeRawPointer(weight).assumingMemoryBound(to: Float.self),
                              bias: bias.map { UnsafeRawPointer($0).assumingMemoryBound(to: Float.self) }, activation: activation,
                              y: skipY ? nil : UnsafeMutableRawPointer(y).assumingMemoryBound(to: Float.self),
                              pooled: pooled.map { UnsafeMutableRawPointer($0).assumingMemoryBound(to: Float.self) },
                              transformedWeights: transformedWeights.map { UnsafeRawPointer($0).assumingMemoryBound(to: Float.self) },
                              scratch: UnsafeMutableRawPointer(scratch).assumingMemoryBound(to: Float.self), zones: zones, context: context)
        return
    }
    if T.self == Float.self && s.directForward {
        conv2DForwardDirect(s, x: UnsafeRawPointer(x).assumingMemoryBound(to: Float.self),
                            weight: UnsafeRawPointer(weight).assumingMemoryBound(to: Float.self),
                            bias: bias.map { UnsafeRawPointer($0).assumingMemoryBound(to: Float.self) }, activation: activation,
                            y: skipY ? nil : UnsafeMutableRawPointer(y).assumingMemoryBound(to: Float.self),
                            pooled: pooled.map { UnsafeMutableRawPointer($0).assumingMemoryBound(to: Float.self) },
                            scratch: UnsafeMutableRawPointer(scratch).assumingMemoryBound(to: Float.self), zones: zones, context: context)
        return
    }
    if s.forwardSamplesPerGEMM > 1 {
        conv2DForwardGrouped(s, x: x, weight: weight, bias: bias, activation: activation, y: y, scratch: scratch, context: context)
        return
    }
    typealias Forward = (Conv2DShape, UnsafePointer<T>, UnsafePointer<T>, UnsafePointer<T>?, ActivationFunction,
                         UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, GEMMContext)
    let forward: Forward = (s, x, weight, bias, activation, y, scratch, context)
    context.parallelFor(s.batch, sharing: forward) { shared, n, worker in
        let (s, x, weight, bias, activation, y, scratch, context) = shared.assumingMemoryBound(to: Forward.self).pointee
        let cin = s.inChannels, cout = s.outChannels, h = s.height, w = s.width
        let ho = s.outHeight, wo = s.outWidth, p = ho * wo, k = s.patchSize
        let pointwise = s.isPointwise
        let xn = x + n * cin * h * w
        let yn = y + n * cout * p
        let colPtr: UnsafePointer<T>
        if pointwise {
            colPtr = xn
        } else {
            let col = scratch + worker * (k + (s.forwardTransposed ? cout : 0)) * p
            im2col(xn, channels: cin, channelStride: h * w, height: h, width: w,
                   kernelH: s.kernelH, kernelW: s.kernelW, strideH: s.strideH, strideW: s.strideW,
                   padH: s.padH, padW: s.padW, outHeight: ho, outWidth: wo, col: col, ldcol: p)
            colPtr = UnsafePointer(col)
            if s.forwardTransposed {
                // Yᵀ[P × Cout] = colᵀ · Wᵀ (+ bias along columns, activation), then Y = (Yᵀ)ᵀ.
                let yt = col + k * p
                gemm(transA: true, transB: true, m: p, n: cout, k: k, a: colPtr, lda: p, b: weight, ldb: k,
                     c: yt, ldc: cout, bias: bias, activation: activation, context: context, worker: worker)
                transpose(UnsafePointer(yt), rows: p, columns: cout, into: yn)
                return
            }
        }
        if let bias {
            for co in 0..<cout {
                let b = bias[co], row = yn + co * p
                for i in 0..<p { row[i] = b }
            }
        }
        gemm(transA: false, transB: false, m: cout, n: p, k: k, a: weight, lda: k, b: colPtr, ldb: p,
             c: yn, ldc: p, accumulate: bias != nil, activation: activation, context: context, worker: worker)
    }
}

/// The direct stride-1 forward pass (see `DirectForward`), samples spread over the context's threads.
private func conv2DForwardDirect(
    _ s: Conv2DShape, x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
    activation: ActivationFunction, y: UnsafeMutablePointer<Float>?, pooled: UnsafeMutablePointer<Float>?,
    scratch: UnsafeMutablePointer<Float>, zones: ScratchZones, context: GEMMContext
) {
    let d = DirectForward(s)
    // The padded input planes' borders stay zero: each sample rewrites only the image inside them.
    let split = s.batch < context.threads && s.outChannels * s.patchSize * s.outHeight * s.outWidth >= context.directSplitMinimum
    // (One image, not split, runs on the calling thread: worker 0.)
    for worker in 0..<(split || s.batch == 1 ? 1 : max(1, context.threads)) {
        (scratch + d.weights + worker * d.perThread).update(repeating: 0, count: s.inChannels * d.inputPlane)
    }
    if split {
        conv2DForwardDirectSplit(s, d, x: x, weight: weight, bias: bias, activation: activation, y: y, pooled: pooled,
                                 scratch: scratch, zones: zones, context: context)
        return
    }
    transposeDirectWeights(s, d, weight, into: scratch, channels: 0..<d.channels)
    typealias Forward = (Conv2DShape, UnsafePointer<Float>, UnsafePointer<Float>?, ActivationFunction,
                         UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>, Bool)
    let forward: Forward = (s, x, bias, activation, y, pooled, scratch, context.wideKernels)
    context.parallelFor(s.batch, sharing: forward) { shared, n, worker in
        let (s, x, bias, activation, y, pooled, scratch, wide) = shared.assumingMemoryBound(to: Forward.self).pointee
        let d = DirectForward(s)
        let input = scratch + d.weights + worker * d.perThread
        let output = input + s.inChannels * d.inputPlane
        copyIntoPaddedPlanes(s, d, x, sample: n, input)
        directForwardPlanes(s, d, input: UnsafePointer(input), weights: UnsafePointer(scratch), output: output,
                            addingBias: y == nil, bias, wide: wide)
        writeOutputChannels(s, d, output, sample: n, channels: 0..<s.outChannels, bias: bias, activation, y, pooled: pooled)
    }
}

/// The image rows of sample n at (padH, padW) of the padded input planes (whose borders stay zero).
private func copyIntoPaddedPlanes(_ s: Conv2DShape, _ d: DirectForward, _ x: UnsafePointer<Float>, sample n: Int,
                                  _ input: UnsafeMutablePointer<Float>) {
    let cin = s.inChannels, h = s.height, w = s.width
    for c in 0..<cin {
        let src = x + (n * cin + c) * h * w
        let dst = input + c * d.inputPlane + s.padH * d.rowLength + s.padW
        for iy in 0..<h { copyShort(dst + iy * d.rowLength, src + iy * w, w) }
    }
}

/// The valid columns of each output row of the given channels of sample n, + bias, activation, into y;
/// and each plane's 2×2 max pool into `pooled`, while the plane is in cache. Without y (nothing reads
/// it; relu or no activation, and the bias already in the planes), only the pool, straight from the
/// planes (see `maxPool2x2ForwardPlane`).
func writeOutputChannels(_ s: Conv2DShape, _ d: DirectForward, _ output: UnsafePointer<Float>, sample n: Int,
                         channels: Range<Int>, bias: UnsafePointer<Float>?, _ activation: ActivationFunction,
                         _ y: UnsafeMutablePointer<Float>?, pooled: UnsafeMutablePointer<Float>?) {
    let ho = s.outHeight, wo = s.outWidth
    let pool = s.outputPool, pooledPlane = pool.outHeight * pool.outWidth
    guard let y else {
        guard let pooled else { return }
        let relu = activation == .relu
        for co in channels {
            maxPool2x2ForwardPlane(pool, x: output + co * d.outputPlane, rowStride: d.rowLength,
                                   y: pooled + (n * s.outChannels + co) * pooledPlane, relu: relu)
        }
        return
    }
    let yn = y + n * s.outChannels * ho * wo
    let epilogue = EpilogueActivation(activation)
    for co in channels {
        let b = bias?[co] ?? 0
        for oy in 0..<ho {
            biasActivationRow(output + co * d.outputPlane + oy * d.rowLength, yn + (co * ho + oy) * wo, wo, bias: b, epilogue)
        }
        if let pooled { maxPool2x2ForwardPlane(pool, x: yn + co * ho * wo, y: pooled + (n * s.outChannels + co) * pooledPlane) }
    }
}

/// Fewer samples than threads (batch-1 inference) and enough work per image (`directSplitMinimum`):
/// each sample's output channels are split over the threads instead, all reading one padded copy of
/// the input (in part 0's zone), each writing its channels' weights and output planes in its own
/// zone (laid out as part 0's).
private func conv2DForwardDirectSplit(
    _ s: Conv2DShape, _ d: DirectForward, x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
    activation: ActivationFunction, y: UnsafeMutablePointer<Float>?, pooled: UnsafeMutablePointer<Float>?,
    scratch: UnsafeMutablePointer<Float>, zones: ScratchZones, context: GEMMContext
) {
    let input = scratch + d.weights
    let blocks = d.channels / DirectForward.channelBlock
    let parts = min(context.threads, blocks)
    typealias Job = (Conv2DShape, UnsafePointer<Float>, UnsafePointer<Float>?, ActivationFunction, UnsafeMutablePointer<Float>?,
                     UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>, Int, Int, Int, Bool)
    for n in 0..<s.batch {
        copyIntoPaddedPlanes(s, d, x, sample: n, input)
        let job: Job = (s, weight, bias, activation, y, pooled, scratch, zones.stride, n, parts, context.wideKernels)
        context.parallelFor(parts, sharing: job) { shared, part, _ in
            let (s, weight, bias, activation, y, pooled, scratch, zone, n, parts, wide) = shared.assumingMemoryBound(to: Job.self).pointee
            let d = DirectForward(s)
            let input = scratch + d.weights, weights = scratch + part * zone
            let output = weights + d.weights + s.inChannels * d.inputPlane
            let mine = WorkerPool.range(d.channels / DirectForward.channelBlock, worker: part, of: parts)
            // Each part lays out its own channels' weights (they stay in its core's cache between calls).
            if n == 0 {
                transposeDirectWeights(s, d, weight, into: weights,
                                       channels: (mine.lowerBound * DirectForward.channelBlock)..<(mine.upperBound * DirectForward.channelBlock))
            }
            directForwardPlanes(s, d, input: UnsafePointer(input), weights: UnsafePointer(weights), output: output, channelBlocks: mine,
                                addingBias: y == nil, bias, wide: wide)
            let first = mine.lowerBound * DirectForward.channelBlock
            writeOutputChannels(s, d, output, sample: n, channels: first..<max(first, min(s.outChannels, mine.upperBound * DirectForward.channelBlock)),
                                bias: bias, activation, y, pooled: pooled)
        }
    }
}

/// The direct path's weights as [K × channels] (zero past Cout), for the given columns: the channel
/// block's four weights for one (c, i, j) are adjacent. In 8 × 8 blocks (element by element, this
/// took 3.6 µs of the batch-1 Fashion CNN's 44, every call).
private func transposeDirectWeights(_ s: Conv2DShape, _ d: DirectForward, _ weight: UnsafePointer<Float>,
                                    into wt: UnsafeMutablePointer<Float>, channels: Range<Int>) {
    let k = s.patchSize, cout = s.outChannels
    let real = channels.lowerBound..<max(channels.lowerBound, min(channels.upperBound, cout))
    if !real.isEmpty {
        transposeF32(weight + real.lowerBound * k, ldSrc: k, rows: real.count, columns: k, wt + real.lowerBound, ldDst: d.channels)
    }
    for co in real.upperBound..<channels.upperBound {
        for kk in 0..<k { wt[kk * d.channels + co] = 0 }
    }
}

/// Which activation an epilogue applies, compared once per call rather than per row (comparing
/// `ActivationFunction`s, an enum with payloads, is a function call: 2% of a CNN training step).
struct EpilogueActivation {
    let function: ActivationFunction
    let relu: Bool
    /// relu or none: nothing left after the vector pass.
    let done: Bool
    init(_ function: ActivationFunction) {
        self.function = function
        relu = function == .relu
        done = relu || function == .identity
    }
}

/// dst[0..<count] = activation(src[0..<count] + bias) in one vector pass (relu and identity; the others
/// in a second pass, `applyActivation`). A ragged end is done as the row's last eight lanes, never past
/// count: the next row may belong to another thread.
@inline(__always)
private func biasActivationRow(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ count: Int,
                               bias: Float, _ activation: EpilogueActivation) {
    let relu = activation.relu
    @inline(__always) func lanes(_ at: Int) {
        let v = loadLanes(src + at) + bias
        storeLanes(relu ? Float.selectPositive(v, v, SIMD8()) : v, dst + at)
    }
    if count >= 8 {
        var ox = 0
        while ox + 8 <= count { lanes(ox); ox += 8 }
        if ox < count { lanes(count - 8) }
    } else {
        for ox in 0..<count { dst[ox] = src[ox] + bias }
        if relu { for ox in 0..<count where !(dst[ox] > 0) { dst[ox] = 0 } }
    }
    if !activation.done {
        applyActivation(activation.function, dst, dst, count)
    }
}

/// output[co][f] = Σ_(c, i, j) W[co, c, i, j] · input[c][f + i·rowLength + j] over whole output planes,
/// four channels by three chunks at a time. `addingBias`: + (bias[co] or 0) as the sums are stored (as
/// the epilogue would add it: for the pool made straight from the planes).
private func directForwardPlanes(_ s: Conv2DShape, _ d: DirectForward, input: UnsafePointer<Float>,
                                 weights: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                 channelBlocks: Range<Int>? = nil, addingBias: Bool, _ bias: UnsafePointer<Float>?, wide: Bool) {
    // 512-bit vectors where the build has AVX-512 (as the GEMM's wide kernel): each lane sums the
    // same terms in the same order in either width, so the outputs are the same bit for bit.
    if wide {
        directForwardPlanes(SIMD16<Float>.self, s, d, input: input, weights: weights, output: output, channelBlocks: channelBlocks,
                            addingBias: addingBias, bias)
    } else {
        directForwardPlanes(SIMD8<Float>.self, s, d, input: input, weights: weights, output: output, channelBlocks: channelBlocks,
                            addingBias: addingBias, bias)
    }
}

@inline(__always)
private func directForwardPlanes<V: SIMD>(_: V.Type, _ s: Conv2DShape, _ d: DirectForward, input: UnsafePointer<Float>,
                                          weights: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                          channelBlocks: Range<Int>?, addingBias: Bool, _ bias: UnsafePointer<Float>?) where V.Scalar == Float {
    let cin = s.inChannels, kh = s.kernelH, kw = s.kernelW, channels = d.channels
    let lanes = V.scalarCount, bytes = MemoryLayout<V>.size
    let blockWidth = DirectForward.chunkBlock * lanes
    let blocks = channelBlocks ?? 0..<(channels / DirectForward.channelBlock)
    var co0 = blocks.lowerBound * DirectForward.channelBlock
    while co0 < blocks.upperBound * DirectForward.channelBlock {
        @inline(__always) func biasOf(_ co: Int) -> V { V(repeating: co < s.outChannels ? bias?[co] ?? 0 : 0) }
        let b0 = biasOf(co0), b1 = biasOf(co0 + 1), b2 = biasOf(co0 + 2), b3 = biasOf(co0 + 3)
        var f = 0
        while f + blockWidth <= d.outputPlane {
            var a00 = V(), a01 = V(), a02 = V(), a10 = V(), a11 = V(), a12 = V()
            var a20 = V(), a21 = V(), a22 = V(), a30 = V(), a31 = V(), a32 = V()
            var wp = weights + co0
            for c in 0..<cin {
                for i in 0..<kh {
                    var xp = input + c * d.inputPlane + i * d.rowLength + f
                    for _ in 0..<kw {
                        let raw = UnsafeRawPointer(xp)
                        let x0 = raw.loadUnaligned(as: V.self)
                        let x1 = raw.loadUnaligned(fromByteOffset: bytes, as: V.self)
                        let x2 = raw.loadUnaligned(fromByteOffset: 2 * bytes, as: V.self)
                        var g = V(repeating: wp[0])
                        a00 = a00.addingProduct(g, x0); a01 = a01.addingProduct(g, x1); a02 = a02.addingProduct(g, x2)
                        g = V(repeating: wp[1])
                        a10 = a10.addingProduct(g, x0); a11 = a11.addingProduct(g, x1); a12 = a12.addingProduct(g, x2)
                        g = V(repeating: wp[2])
                        a20 = a20.addingProduct(g, x0); a21 = a21.addingProduct(g, x1); a22 = a22.addingProduct(g, x2)
                        g = V(repeating: wp[3])
                        a30 = a30.addingProduct(g, x0); a31 = a31.addingProduct(g, x1); a32 = a32.addingProduct(g, x2)
                        wp += channels
                        xp += 1
                    }
                }
            }
            if addingBias {
                a00 += b0; a01 += b0; a02 += b0; a10 += b1; a11 += b1; a12 += b1
                a20 += b2; a21 += b2; a22 += b2; a30 += b3; a31 += b3; a32 += b3
            }
            let out = UnsafeMutableRawPointer(output + co0 * d.outputPlane + f)
            let plane = d.outputPlane * 4
            out.storeBytes(of: a00, as: V.self); out.storeBytes(of: a01, toByteOffset: bytes, as: V.self); out.storeBytes(of: a02, toByteOffset: 2 * bytes, as: V.self)
            out.storeBytes(of: a10, toByteOffset: plane, as: V.self); out.storeBytes(of: a11, toByteOffset: plane + bytes, as: V.self)
            out.storeBytes(of: a12, toByteOffset: plane + 2 * bytes, as: V.self)
            out.storeBytes(of: a20, toByteOffset: 2 * plane, as: V.self); out.storeBytes(of: a21, toByteOffset: 2 * plane + bytes, as: V.self)
            out.storeBytes(of: a22, toByteOffset: 2 * plane + 2 * bytes, as: V.self)
            out.storeBytes(of: a30, toByteOffset: 3 * plane, as: V.self); out.storeBytes(of: a31, toByteOffset: 3 * plane + bytes, as: V.self)
            out.storeBytes(of: a32, toByteOffset: 3 * plane + 2 * bytes, as: V.self)
            f += blockWidth
        }
        // The plane's last chunks, one at a time (no whole block of output positions computed to be
        // dropped: a 14-row plane of 16-wide rows is 14 chunks).
        while f < d.outputPlane {
            var a0 = V(), a1 = V(), a2 = V(), a3 = V()
            var wp = weights + co0
            for c in 0..<cin {
                for i in 0..<kh {
                    var xp = input + c * d.inputPlane + i * d.rowLength + f
                    for _ in 0..<kw {
                        let x0 = UnsafeRawPointer(xp).loadUnaligned(as: V.self)
                        a0 = a0.addingProduct(V(repeating: wp[0]), x0); a1 = a1.addingProduct(V(repeating: wp[1]), x0)
                        a2 = a2.addingProduct(V(repeating: wp[2]), x0); a3 = a3.addingProduct(V(repeating: wp[3]), x0)
                        wp += channels
                        xp += 1
                    }
                }
            }
            if addingBias { a0 += b0; a1 += b1; a2 += b2; a3 += b3 }
            let out = UnsafeMutableRawPointer(output + co0 * d.outputPlane + f)
            let plane = d.outputPlane * 4
            out.storeBytes(of: a0, as: V.self); out.storeBytes(of: a1, toByteOffset: plane, as: V.self)
            out.storeBytes(of: a2, toByteOffset: 2 * plane, as: V.self); out.storeBytes(of: a3, toByteOffset: 3 * plane, as: V.self)
            f += lanes
        }
        co0 += DirectForward.channelBlock
    }
}

// MARK: - Backward

/// How many samples the backward pass batches into a single weight-gradient GEMM: as many as keep the
/// group's dZ and im2col matrices within ~`convBackwardChunkTarget` elements (at least 1). Independent of
/// the thread count, so scratch sized for more threads also fits fewer. (Measured on the Fashion-MNIST
/// CNN: 512k elements, 8 samples per GEMM, beat 128k by 5% and 2M by 7%.)
let convBackwardChunkTarget = 512 * 1024

func convBackwardSamplesPerGEMM(_ s: Conv2DShape) -> Int {
    let p = s.outHeight * s.outWidth
    let perSample = (s.outChannels + 2 * s.patchSize) * p
    return max(1, min(s.batch, convBackwardChunkTarget / max(perSample, 1)))
}

struct ConvBackwardLayout {
    var samplesPerGEMM: Int
    var dz: Int            // per thread: [Cout × B·P]
    var col: Int           // per thread: [K × B·P], or the direct path's padded input and dZ planes
    var dw: Int            // per thread: [Cout × K]
    var db: Int            // per thread: [Cout]
    var dxcol: Int         // per thread: [K × B·P]
    var perThread: Int { dz + col + dw + db + dxcol }

    init(_ s: Conv2DShape) {
        let p = s.outHeight * s.outWidth, k = s.patchSize
        samplesPerGEMM = convBackwardSamplesPerGEMM(s)
        dz = s.outChannels * samplesPerGEMM * p
        col = max(k * samplesPerGEMM * p, s.directWeightGradient ? DirectWeightGradient(s).scratch : 0,
                  s.directWeightGradient && s.winogradWeightGradient ? WinogradForward(s).perThread : 0)
        dw = s.outChannels * k
        db = s.outChannels
        dxcol = k * samplesPerGEMM * p
    }
}

extension Conv2DShape {
    /// The weight gradient is computed directly from the padded input and dZ planes (no im2col, no
    /// packing) for stride-1, 3-wide kernels, three output channels by three kernel columns at a time
    /// in nine vector accumulators. f32 only. Measured on the Fashion-MNIST CNN against im2col + GEMM:
    /// the first layer's backward (K = 9) 475 → 250 µs, the second layer's weight gradient (K = 144)
    /// 1,430 → 1,255 µs.
    var directWeightGradient: Bool { strideH == 1 && strideW == 1 && kernelW == 3 && outHeight * outWidth >= 128 }
}

/// Sizes of the direct weight-gradient path's per-thread buffers (f32 elements).
struct DirectWeightGradient {
    /// Output row length rounded up to whole vectors; columns past outWidth hold dZ = 0.
    let rowLength: Int
    /// Padded input plane: outHeight + kh − 1 rows of rowLength + kw − 1 (zero outside the image), or
    /// of rowLength where the padded image and every window fit in that (`flat`).
    let paddedWidth: Int, paddedHeight: Int
    /// Input rows as long as dZ rows: then a sample's planes are summed as one flat run of
    /// outHeight·rowLength positions instead of row by row (dZ is zero past outWidth, so the reads
    /// that run on into the next input row add nothing). Same sums in the same order.
    let flat: Bool
    /// Output channels per pass over the input rows.
    static let channelBlock = 4
    /// dZ planes: Cout rounded up to the channel block (extra planes stay zero).
    let planes: Int
    /// Samples whose planes are held at once, so that each pass over the rows covers all of them
    /// (about 64k elements: measured on the CNN's second layer, 1,255 µs against 1,320 with 32k and
    /// 1,290 with 96k).
    let samples: Int
    /// One sample's padded input planes and dZ planes (elements).
    let inputSample: Int, dzSample: Int
    /// Offset of the dZ planes (after the samples' padded input planes).
    let dz: Int
    let scratch: Int

    init(_ s: Conv2DShape) {
        rowLength = (s.outWidth + 7) / 8 * 8
        flat = s.padW + s.width <= rowLength && s.outWidth + s.kernelW - 1 <= rowLength
        paddedWidth = flat ? rowLength : rowLength + s.kernelW - 1
        paddedHeight = s.outHeight + s.kernelH - 1
        planes = (s.outChannels + DirectWeightGradient.channelBlock - 1) / DirectWeightGradient.channelBlock * DirectWeightGradient.channelBlock
        // (+ kw − 1: the flat run's last reads go that far past the last plane.)
        inputSample = s.inChannels * paddedHeight * paddedWidth + (flat ? s.kernelW - 1 : 0)
        dzSample = planes * s.outHeight * rowLength
        samples = max(1, min(s.batch, 16, (64 * 1024) / max(1, inputSample + dzSample)))
        dz = samples * inputSample
        scratch = dz + samples * dzSample
    }
}

/// Scratch elements `conv2DBackward` needs with up to `threads` threads.
public func conv2DBackwardScratchCount(_ s: Conv2DShape, threads: Int) -> Int {
    guard s.isValid else { return 0 }
    if s.isGeneral { return generalBackwardScratchCount(s, threads: threads) }
    let l = ConvBackwardLayout(s)
    let direct = s.directInputGradient
        ? s.outputCount + s.weightCount + conv2DForwardScratchCount(s.inputGradientShape, threads: threads) : 0
    return max(threads, 1) * l.perThread + direct
}

extension Conv2DShape {
    /// The input gradient of a stride-1 convolution with padding below the kernel size is itself a
    /// stride-1 convolution (of dZ, padded by k − 1 − pad, with the kernel flipped and its channel axes
    /// swapped), run by the direct forward kernel instead of a GEMM and col2im per sample. f32 only.
    var directInputGradient: Bool {
        strideH == 1 && strideW == 1 && padH < kernelH && padW < kernelW && !isPointwise && inputGradientShape.directForward
    }

    /// The convolution that computes dX from dZ (see `directInputGradient`).
    var inputGradientShape: Conv2DShape {
        Conv2DShape(batch: batch, inChannels: outChannels, height: outHeight, width: outWidth, outChannels: inChannels,
                    kernelH: kernelH, kernelW: kernelW, strideH: 1, strideW: 1, padH: kernelH - 1 - padH, padW: kernelW - 1 - padW)
    }
}

/// Gradients of `y = act(conv(x, weight) + bias)`.
///
/// - `dy`: the incoming gradient [N, Cout, Ho, Wo]. If `y` (the forward output, after the activation) is
///   given, the gradient is first multiplied by `activation.derivative(kept: y)` (fused conv+act
///   backward, dZ = dY ⊙ act'(Y)); with `y == nil` the activation is ignored and dZ = dY.
/// - `pooled`: the convolution's output went through a 2×2, stride-2 max pool, and `dy` is the
///   gradient of the pool's output [N, Cout, ⌊Ho/2⌋, ⌊Wo/2⌋]: each output plane's dY is that routed to
///   its windows' first maxima of `y` (which must be given), plane by plane as dZ is made, the same
///   values `maxPool2DBackward` gives, without the full-size dY.
/// - `dx` [N, Cin, H, W], `dWeight` [Cout, Cin, kh, kw], `dBias` [Cout]: each optional, overwritten.
/// - `scratch`: at least `conv2DBackwardScratchCount(s, threads: context.threads)` elements.
@_specialize(where T == Float)
@_specialize(where T == Double)
public func conv2DBackward<T: KernelScalar>(
    _ s: Conv2DShape, x: UnsafePointer<T>, weight: UnsafePointer<T>, dy: UnsafePointer<T>,
    activation: ActivationFunction = .identity, y: UnsafePointer<T>? = nil, pooled: Bool = false,
    dx: UnsafeMutablePointer<T>?, dWeight: UnsafeMutablePointer<T>?, dBias: UnsafeMutablePointer<T>?,
    scratch: UnsafeMutablePointer<T>, context: GEMMContext
) {
    guard s.isValid else { return }
    let dZ = ConvOutputGradient(s, dy: dy, activation: activation, y: y, pooled: pooled)
    if s.isGeneral {
        conv2DBackwardGeneral(s, x: x, weight: weight, dZ: dZ, dx: dx, dWeight: dWeight, dBias: dBias,
                              scratch: scratch, context: context)
        return
    }
    let cout = s.outChannels, k = s.patchSize
    let n = s.batch
    if n == 0 {
        if let dWeight { for i in 0..<s.weightCount { dWeight[i] = 0 } }
        if let dBias { for i in 0..<cout { dBias[i] = 0 } }
        return
    }
    let threads = max(context.threads, 1)
    let layout = ConvBackwardLayout(s)
    let chunks = min(threads, n)
    let needDZ = dWeight != nil || dBias != nil || dx != nil
    guard needDZ else { return }
    let direct = T.self == Float.self && s.directWeightGradient
    let transposedDW = s.weightGradientTransposed && !direct
    let perThreadBase = scratch
    // With the direct input gradient, the chunks also store dZ sample by sample for it, unless dZ is
    // dY itself (then read in place).
    let directInput = T.self == Float.self && s.directInputGradient && dx != nil
    let directInputBase = scratch + threads * layout.perThread
    let fullDZ: UnsafeMutablePointer<T>? = directInput && !dZ.passesThrough ? directInputBase : nil

    typealias Backward = (Conv2DShape, UnsafePointer<T>, UnsafePointer<T>, ConvOutputGradient<T>,
                          UnsafeMutablePointer<T>?, UnsafeMutablePointer<T>?, UnsafeMutablePointer<T>?,
                          UnsafeMutablePointer<T>, ConvBackwardLayout, Int, GEMMContext, UnsafeMutablePointer<T>?)
    let backward: Backward = (s, x, weight, dZ, directInput ? nil : dx, dWeight, dBias, perThreadBase,
                              layout, chunks, context, fullDZ)
    // (Nothing for the chunks to do when they would only copy dY for the direct input gradient.)
    let chunkWork = dWeight != nil || dBias != nil || (dx != nil && !directInput) || fullDZ != nil
    if chunkWork {
        context.parallelFor(chunks, sharing: backward) { shared, chunk, worker in
            let (s, x, weight, dZ, dx, dWeight, dBias, perThreadBase, layout, chunks, context, fullDZ) =
                shared.assumingMemoryBound(to: Backward.self).pointee
            let cin = s.inChannels, cout = s.outChannels, h = s.height, w = s.width
            let kh = s.kernelH, kw = s.kernelW
            let ho = s.outHeight, wo = s.outWidth, p = ho * wo, k = s.patchSize
            let n = s.batch, bmax = layout.samplesPerGEMM, transposedDW = s.weightGradientTransposed
            let base = perThreadBase + chunk * layout.perThread
            let dz = base
            let col = dz + layout.dz
            let dwPart = col + layout.col
            let dbPart = dwPart + layout.dw
            let dxcol = dbPart + layout.db
            let first = n * chunk / chunks, last = n * (chunk + 1) / chunks
            if dWeight != nil { for i in 0..<(cout * k) { dwPart[i] = 0 } }
            if dBias != nil { for i in 0..<cout { dbPart[i] = 0 } }
            if T.self == Float.self && s.directWeightGradient {  // (dW partials then in [Cout × K] layout)
                convBackwardDirect(s, x: x, weight: weight, dZ: dZ,
                                   dx: dx, fullDZ: fullDZ, needWeight: dWeight != nil, needBias: dBias != nil,
                                   samples: first..<last, dz: dz, buffers: col, dwPart: dwPart, dbPart: dbPart, dxcol: dxcol,
                                   context: context, worker: worker)
                return
            }
            var start = first
            while start < last {
                let bsz = min(bmax, last - start)
                let ld = bsz * p
                // dZ for the group, laid out [Cout × bsz·P]; db partial sums in sample order.
                for b in 0..<bsz {
                    let sample = start + b
                    for co in 0..<cout {
                        let dst = dz + co * ld + b * p
                        let acc = dZ.plane(sample * cout + co, into: dst)
                        if dBias != nil { dbPart[co] += acc }
                        if let fullDZ { (fullDZ + sample * cout * p + co * p).update(from: dst, count: p) }
                    }
                }
                if dWeight != nil {
                    for b in 0..<bsz {
                        let xn = x + (start + b) * cin * h * w
                        im2col(xn, channels: cin, channelStride: h * w, height: h, width: w,
                               kernelH: kh, kernelW: kw, strideH: s.strideH, strideW: s.strideW,
                               padH: s.padH, padW: s.padW, outHeight: ho, outWidth: wo, col: col + b * p, ldcol: ld)
                    }
                    if transposedDW {
                        // dWᵀ[K × Cout] += col[K × bsz·P] · dZ[Cout × bsz·P]ᵀ
                        gemm(transA: false, transB: true, m: k, n: cout, k: ld, a: UnsafePointer(col), lda: ld,
                             b: UnsafePointer(dz), ldb: ld, c: dwPart, ldc: cout, accumulate: true,
                             context: context, worker: worker)
                    } else {
                        // dW[Cout × K] += dZ[Cout × bsz·P] · col[K × bsz·P]ᵀ
                        gemm(transA: false, transB: true, m: cout, n: k, k: ld, a: UnsafePointer(dz), lda: ld,
                             b: UnsafePointer(col), ldb: ld, c: dwPart, ldc: k, accumulate: true,
                             context: context, worker: worker)
                    }
                }
                if let dx {
                    // Per sample, dcol[K × P] = Wᵀ · dZ, then scatter-add it into dX while it is still in
                    // cache (one GEMM for the whole group wrote a dcol too large for L2: measured slower).
                    for b in 0..<bsz {
                        inputGradientOfSample(s, weight: weight, dz: UnsafePointer(dz + b * p), ldz: ld, dxcol: dxcol,
                                              dx: dx + (start + b) * cin * h * w, context: context, worker: worker)
                    }
                }
                start += bsz
            }
        }
    }

    if directInput, let dx {
        // dX = conv(dZ, W flipped, channel axes swapped), stride 1, padding k − 1 − pad.
        let t = s.inputGradientShape
        let flipped = directInputBase + s.outputCount
        let cin = s.inChannels, kh = s.kernelH, kw = s.kernelW
        for co in 0..<cout {
            for c in 0..<cin {
                for i in 0..<kh {
                    for j in 0..<kw {
                        flipped[((c * cout + co) * kh + i) * kw + j] = weight[((co * cin + c) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)]
                    }
                }
            }
        }
        conv2DForward(t, x: fullDZ.map { UnsafePointer($0) } ?? dy, weight: UnsafePointer(flipped), bias: nil, activation: .identity, y: dx,
                      scratch: flipped + s.weightCount, context: context)
    }

    // Fixed-order reduction of the chunk partials.
    if let dWeight {
        for c in 0..<chunks {
            let part = perThreadBase + c * layout.perThread + layout.dz + layout.col
            for co in 0..<cout {
                for kk in 0..<k {
                    let v = transposedDW ? part[kk * cout + co] : part[co * k + kk]
                    if c == 0 { dWeight[co * k + kk] = v } else { dWeight[co * k + kk] += v }
                }
            }
        }
    }
    if let dBias {
        for co in 0..<cout { dBias[co] = perThreadBase[layout.dz + layout.col + layout.dw + co] }
        if chunks > 1 {
            for c in 1..<chunks {
                let part = perThreadBase + c * layout.perThread + layout.dz + layout.col + layout.dw
                for co in 0..<cout { dBias[co] += part[co] }
            }
        }
    }
}

/// How a convolution's backward pass makes dZ, plane by plane: dY ⊙ act'(Y), where dY is the incoming
/// gradient's plane, or (`pooled`) the gradient of the 2×2 max pool after the convolution routed to
/// its windows' first maxima of Y (into dZ's own buffer, then scaled there in place: the same values
/// and sums as `maxPool2DBackward` then the unfused pass).
struct ConvOutputGradient<T: KernelScalar> {
    let dy: UnsafePointer<T>
    let activation: ActivationFunction
    /// Y where act' needs it (nil for the identity: dZ = dY).
    let activeY: UnsafePointer<T>?
    /// Y where the pool needs it.
    let pooledY: UnsafePointer<T>?
    let planeSize: Int
    let pool: Pool2DShape

    init(_ s: Conv2DShape, dy: UnsafePointer<T>, activation: ActivationFunction, y: UnsafePointer<T>?, pooled: Bool) {
        self.dy = dy
        self.activation = activation
        activeY = activation == .identity ? nil : y
        pooledY = pooled ? y : nil
        planeSize = s.outHeight * s.outWidth
        pool = s.outputPool
    }

    /// dZ = dY: its planes can be read in place instead of copied.
    var passesThrough: Bool { activeY == nil && pooledY == nil }

    /// dZ of plane n·Cout + co into dst (planeSize elements); returns Σ dZ.
    @inline(__always)
    func plane(_ index: Int, into dst: UnsafeMutablePointer<T>) -> T {
        let y = activeY.map { $0 + index * planeSize }
        guard let pooledY else { return activationBackwardSum(activation, y, dy + index * planeSize, dst, planeSize) }
        maxPool2x2BackwardPlane(pool, x: pooledY + index * planeSize, dy: dy + index * pool.outHeight * pool.outWidth, dx: dst)
        return activationBackwardSum(activation, y, UnsafePointer(dst), dst, planeSize)
    }
}

/// One sample's dX = col2im(Wᵀ · dZ) (dZ [Cout × P] with row stride ldz; dxcol holds K × P), on the
/// calling worker, while dcol is still in cache.
@inline(__always)
func inputGradientOfSample<T: KernelScalar>(_ s: Conv2DShape, weight: UnsafePointer<T>, dz: UnsafePointer<T>, ldz: Int,
                                            dxcol: UnsafeMutablePointer<T>, dx: UnsafeMutablePointer<T>,
                                            context: GEMMContext, worker: Int) {
    let p = s.outHeight * s.outWidth, k = s.patchSize
    gemm(transA: true, transB: false, m: k, n: p, k: s.outChannels, a: weight, lda: k,
         b: dz, ldb: ldz, c: dxcol, ldc: p, context: context, worker: worker)
    dx.update(repeating: 0, count: s.inChannels * s.height * s.width)
    col2im(UnsafePointer(dxcol), ldcol: p, channels: s.inChannels, height: s.height, width: s.width,
           kernelH: s.kernelH, kernelW: s.kernelW, strideH: s.strideH, strideW: s.strideW,
           padH: s.padH, padW: s.padW, outHeight: s.outHeight, outWidth: s.outWidth, dst: dx)
}

// MARK: - Direct weight gradient (stride 1, 3-wide kernels, f32)

/// The backward pass for the samples of one chunk with the weight gradient computed directly: for a
/// group of samples at a time, the input planes are copied into zero-padded planes and dZ = dY ⊙ act'(Y)
/// into planes with whole-vector rows (zero past the output width), so that
/// dW[co, c, i, j] = Σ_oy Σ_ox dZ[co, oy, ox] · Xpad[c, oy + i, ox + j] is a sum of vector products of
/// contiguous rows. dZ is also stored sample by sample for the direct input gradient (`fullDZ`); when
/// that does not apply, the input gradient goes through the GEMM and col2im per sample (`dx`).
@inline(__always)
func convBackwardDirect<T: KernelScalar>(
    _ s: Conv2DShape, x: UnsafePointer<T>, weight: UnsafePointer<T>, dZ: ConvOutputGradient<T>,
    dx: UnsafeMutablePointer<T>?, fullDZ: UnsafeMutablePointer<T>?,
    needWeight: Bool, needBias: Bool,
    samples: Range<Int>, dz: UnsafeMutablePointer<T>, buffers: UnsafeMutablePointer<T>,
    dwPart: UnsafeMutablePointer<T>, dbPart: UnsafeMutablePointer<T>, dxcol: UnsafeMutablePointer<T>,
    context: GEMMContext, worker: Int
) {
    let d = DirectWeightGradient(s)
    let cin = s.inChannels, cout = s.outChannels, h = s.height, w = s.width
    let ho = s.outHeight, wo = s.outWidth, p = ho * wo
    let xpad = buffers, dzPlanes = buffers + d.dz
    let planeSize = d.paddedHeight * d.paddedWidth, dzPlaneSize = ho * d.rowLength
    // Winograd's weight gradient sums dU in its zone (the same buffers) sample by sample; the direct
    // kernel reads padded input and dZ planes, whose borders and row tails are written once and stay zero.
    let winograd = needWeight && T.self == Float.self && s.winogradWeightGradient
    let directWeights = needWeight && !winograd
    let zone = UnsafeMutableRawPointer(buffers).assumingMemoryBound(to: Float.self)
    if winograd {
        let w = WinogradForward(s)
        (zone + w.transformedWeights).update(repeating: 0, count: w.transformedWeightsCount)
    } else {
        buffers.update(repeating: 0, count: d.scratch)
    }
    // dZ read in place where it is dY and nothing else needs a copy.
    let inPlace = dZ.passesThrough && fullDZ == nil && dx == nil
    var groupStart = samples.lowerBound
    while groupStart < samples.upperBound {
        let group = groupStart..<min(samples.upperBound, groupStart + d.samples)
        for n in group {
            let slot = n - group.lowerBound
            // The sample's dZ planes, compact: dY's, or copies where the input gradient reads them (the
            // full dZ for the direct one, else this sample's scratch), each made in one run over the
            // channel's plane, with db; then into the planes with whole-vector rows (a run per row of 14
            // is one vector and six scalars).
            let copies = fullDZ.map { $0 + n * cout * p } ?? dz
            let planes = inPlace ? dZ.dy + n * cout * p : UnsafePointer(copies)
            for co in 0..<cout {
                let sum = inPlace ? (needBias ? laneSum(planes + co * p, p) : 0) : dZ.plane(n * cout + co, into: copies + co * p)
                for oy in 0..<ho where directWeights {
                    copyShort(dzPlanes + slot * d.dzSample + co * dzPlaneSize + oy * d.rowLength, planes + co * p + oy * wo, wo)
                }
                if needBias { dbPart[co] += sum }
            }
            if winograd {
                winogradWeightGradientSample(s, x: UnsafeRawPointer(x + n * cin * h * w).assumingMemoryBound(to: Float.self),
                                             dz: UnsafeRawPointer(planes).assumingMemoryBound(to: Float.self), buffers: zone)
            } else if directWeights {
                for c in 0..<cin {
                    let src = x + (n * cin + c) * h * w
                    let dst = xpad + slot * d.inputSample + c * planeSize + s.padH * d.paddedWidth + s.padW
                    for iy in 0..<h { copyShort(dst + iy * d.paddedWidth, src + iy * w, w) }
                }
            }
            if let dx {
                // The input gradient through the GEMM and col2im (when it is not done directly).
                inputGradientOfSample(s, weight: weight, dz: UnsafePointer(dz), ldz: p, dxcol: dxcol,
                                      dx: dx + n * cin * h * w, context: context, worker: worker)
            }
        }
        if directWeights {
            directWeightGradientF32(s, d, samples: group.count, xpad: UnsafeRawPointer(xpad).assumingMemoryBound(to: Float.self),
                                    dz: UnsafeRawPointer(dzPlanes).assumingMemoryBound(to: Float.self),
                                    dw: UnsafeMutableRawPointer(dwPart).assumingMemoryBound(to: Float.self), wide: context.wideKernels)
        }
        groupStart = group.upperBound
    }
    if winograd {
        winogradWeightGradientFinish(s, buffers: zone, dw: UnsafeMutableRawPointer(dwPart).assumingMemoryBound(to: Float.self))
    }
}

/// dw[co, c, i, 0..<3] += Σ_oy Σ_ox dz[co, oy, ox] · xpad[c, oy + i, ox + 0..<3] over a group of samples, a
/// block of output channels at a time (see `directRows`): four with AVX-512's 32 vector registers
/// (`wide`), else three (and the last one or two). Each sum's terms and order are the same either way.
private func directWeightGradientF32(_ s: Conv2DShape, _ d: DirectWeightGradient, samples: Int,
                                     xpad: UnsafePointer<Float>, dz: UnsafePointer<Float>, dw: UnsafeMutablePointer<Float>, wide: Bool) {
    let cin = s.inChannels, cout = s.outChannels, kh = s.kernelH, ho = s.outHeight
    let planeSize = d.paddedHeight * d.paddedWidth, dzPlaneSize = ho * d.rowLength
    var sums = (Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
                Float(0), Float(0), Float(0))
    withUnsafeMutableBytes(of: &sums) { raw in
        let out = raw.baseAddress!.assumingMemoryBound(to: Float.self)
        var co0 = 0
        while co0 < cout {
            // Wide: always four planes (those past Cout are zero), as the dZ planes are laid out.
            let planes = wide ? DirectWeightGradient.channelBlock : min(3, cout - co0)
            let z = dz + co0 * dzPlaneSize
            for c in 0..<cin {
                for i in 0..<kh {
                    let x = xpad + c * planeSize + i * d.paddedWidth
                    directRows(planes, samples, d.inputSample, d.dzSample, ho, d.rowLength, d.paddedWidth,
                               x, x + 1, x + 2, z, z + min(1, planes - 1) * dzPlaneSize, z + min(2, planes - 1) * dzPlaneSize,
                               z + min(3, planes - 1) * dzPlaneSize, out)
                    for b in 0..<min(planes, cout - co0) {
                        let w = dw + ((co0 + b) * cin + c) * kh * 3 + i * 3
                        w[0] += out[b * 3]; w[1] += out[b * 3 + 1]; w[2] += out[b * 3 + 2]
                    }
                }
            }
            co0 += planes
        }
    }
}

/// out[b·3 + j] = Σ_sample Σ_row Σ_q z_b[row, q] · x_j[row, q] for `planes` (1–4) dZ planes b and the input
/// rows at column offsets j = 0, 1, 2: a vector accumulator per (b, j), each loaded input vector
/// feeding a multiply-add per plane, each dZ vector three. Four planes (twelve accumulators, seven
/// loads per twelve multiply-adds) need AVX-512's 32 registers: with 16 the compiler spilled the
/// accumulators to the stack every iteration (three planes took the CNN's second layer's backward
/// pass from 3.0 to 1.9 ms on a Zen 3). Three make nine independent chains, enough for two FMA units of 4-cycle
/// latency, in 13 registers. The three input pointers are passed separately, not as x + j, so that
/// the compiler loads them rather than building the shifted vectors with permutes (measured: 3×
/// slower); so are the planes (unused ones repeat the last).
@inline(never)
private func directRows(_ planes: Int, _ samples: Int, _ inputSample: Int, _ dzSample: Int, _ rows: Int, _ rowLength: Int,
                        _ inputStride: Int, _ x0: UnsafePointer<Float>, _ x1: UnsafePointer<Float>, _ x2: UnsafePointer<Float>,
                        _ z0: UnsafePointer<Float>, _ z1: UnsafePointer<Float>, _ z2: UnsafePointer<Float>,
                        _ z3: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>) {
    // One copy of the loop per plane count, each with only its accumulators.
    switch planes {
    case 4: directRows(4, samples, inputSample, dzSample, rows, rowLength, inputStride, x0, x1, x2, z0, z1, z2, z3, out: out)
    case 3: directRows(3, samples, inputSample, dzSample, rows, rowLength, inputStride, x0, x1, x2, z0, z1, z2, z3, out: out)
    case 2: directRows(2, samples, inputSample, dzSample, rows, rowLength, inputStride, x0, x1, x2, z0, z1, z2, z3, out: out)
    default: directRows(1, samples, inputSample, dzSample, rows, rowLength, inputStride, x0, x1, x2, z0, z1, z2, z3, out: out)
    }
}

@inline(__always)
private func directRows(_ planes: Int, _ samples: Int, _ inputSample: Int, _ dzSample: Int, _ rows: Int, _ rowLength: Int,
                        _ inputStride: Int, _ x0: UnsafePointer<Float>, _ x1: UnsafePointer<Float>, _ x2: UnsafePointer<Float>,
                        _ z0: UnsafePointer<Float>, _ z1: UnsafePointer<Float>, _ z2: UnsafePointer<Float>,
                        _ z3: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
    typealias V = SIMD8<Float>
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    var a00 = V(), a01 = V(), a02 = V(), a10 = V(), a11 = V(), a12 = V(), a20 = V(), a21 = V(), a22 = V()
    var a30 = V(), a31 = V(), a32 = V()
    // Rows as long as dZ's: one run over the whole plane (the same positions in the same order).
    let flat = inputStride == rowLength
    let runs = flat ? 1 : rows, runLength = flat ? rows * rowLength : rowLength
    for sample in 0..<samples {
      for row in 0..<runs {
        let xo = sample * inputSample + row * inputStride, zo = sample * dzSample + row * rowLength
        var q = 0
        while q < runLength {
            let v0 = load(x0 + xo + q), v1 = load(x1 + xo + q), v2 = load(x2 + xo + q)
            var g = load(z0 + zo + q)
            a00 = a00.addingProduct(g, v0); a01 = a01.addingProduct(g, v1); a02 = a02.addingProduct(g, v2)
            if planes > 1 {
                g = load(z1 + zo + q)
                a10 = a10.addingProduct(g, v0); a11 = a11.addingProduct(g, v1); a12 = a12.addingProduct(g, v2)
            }
            if planes > 2 {
                g = load(z2 + zo + q)
                a20 = a20.addingProduct(g, v0); a21 = a21.addingProduct(g, v1); a22 = a22.addingProduct(g, v2)
            }
            if planes > 3 {
                g = load(z3 + zo + q)
                a30 = a30.addingProduct(g, v0); a31 = a31.addingProduct(g, v1); a32 = a32.addingProduct(g, v2)
            }
            q += 8
        }
      }
    }
    out[0] = a00.sum(); out[1] = a01.sum(); out[2] = a02.sum()
    if planes > 1 { out[3] = a10.sum(); out[4] = a11.sum(); out[5] = a12.sum() }
    if planes > 2 { out[6] = a20.sum(); out[7] = a21.sum(); out[8] = a22.sum() }
    if planes > 3 { out[9] = a30.sum(); out[10] = a31.sum(); out[11] = a32.sum() }
}

import IR

/// Winograd's minimal filtering F(2×2, 3×3) for 3×3, stride-1 convolutions, f32. Each 2×2 block of
/// outputs ("tile") is computed from a 4×4 block of the padded input d with 16 multiplies per
/// (input, output) channel pair instead of 36:
///
///     Y = Aᵀ [ Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B) ] A
///
/// so a convolution becomes 16 small products M[ξν] = V[ξν] · U[ξν] ([tiles × Cin] · [Cin × Cout],
/// one per position ξν of the 4×4 transformed tile), between an input transform V = Bᵀ d B and an
/// output transform Y = Aᵀ M A. The layouts keep channels innermost (tiles × channels), so both
/// transforms are vector adds over channels and the products broadcast one V element against a
/// vector of U. The output transform writes the direct path's output planes, and its epilogue (bias,
/// activation, the fused 2×2 max pool) does the rest, so everything after the sums is the same code;
/// where nothing reads the convolution's own output (inference of a pooled convolution), bias,
/// activation and pool are applied to each tile instead, and only the pool is written.
///
/// Threads: a batch runs an image per thread at a time, all sharing one U made at the start (or
/// once for a session whose weights do not change). Fewer images than threads (batch-1 inference)
/// split each image over the threads: by blocks of 16 output channels (each thread transforming the
/// whole input for itself: cheaper than sharing it between cores), or, making the pool alone, by
/// tiles. A tile's sums are the same whichever thread makes them.
///
/// Rounding: the transforms add and subtract before multiplying, so the sums differ from the
/// direct convolution's in the last bits (relative error ~1e-6 here, as with cuDNN's and oneDNN's
/// Winograd kernels). Measured on the 2-core Zen 4 (README, Performance): the Fashion CNN's 16→32 at
/// 14×14, batch 64, forward 780 → 495 µs and its backward (whose input gradient is a convolution
/// too) 1,650 → 1,340 µs; at batch 1, 21.9 → 15.5 µs on one thread.
extension Conv2DShape {
    /// Whether an f32 forward pass runs Winograd F(2×2, 3×3): 3×3 kernels, stride 1, no dilation or
    /// groups, enough channels that the transforms cost little against the products, and an image
    /// whose transformed tiles (V and M) stay within a core's second-level cache.
    var usesWinograd: Bool {
        guard kernelH == 3 && kernelW == 3 && strideH == 1 && strideW == 1 && dilationH == 1 && dilationW == 1
                && groups == 1 && inChannels >= 8 && outChannels >= 8 && outHeight >= 2 && outWidth >= 2 else { return false }
        let w = WinogradForward(self)
        return 16 * w.tiles * (w.inChannels + w.outChannels) <= 1 << 18
    }
}

/// Sizes and offsets (f32 elements) of the Winograd path's buffers.
struct WinogradForward {
    /// Output channels per block (a thread's share is whole blocks).
    static let channelBlock = 16
    /// Tiles: ⌈Ho/2⌉ × ⌈Wo/2⌉.
    let tileRows: Int, tileColumns: Int, tiles: Int
    /// The channels-last padded input: (2·tileRows + 2) × (2·tileColumns + 2) positions of
    /// `inChannels` channels, zero outside the image.
    let paddedHeight: Int, paddedWidth: Int
    /// Input channels rounded up to eight (the transforms' vectors); the extra ones are zero.
    let inChannels: Int
    /// Output channels rounded up to the channel block.
    let outChannels: Int
    /// Per thread: the zero-padded input planes [Cin × paddedHeight × paddedWidth], the same channels
    /// last, V [16 × tiles × inChannels], transposed weights [9·Cin × outChannels],
    /// U [16 × inChannels × outChannels], M [16 × tiles × outChannels], output tiles channels last in
    /// rows as long as the direct path's output rows [2·tileRows × rowLength × outChannels] (so that
    /// one transpose of whole 8 × 8 blocks makes the output planes; the positions past the tiles are
    /// junk, as in the direct path's planes).
    let planes: Int, input: Int, transformedInput: Int, weights: Int, transformedWeights: Int, products: Int, outputTiles: Int
    let perThread: Int
    /// Each part's zone: the direct path's output planes (its epilogue reads them; the part writes its
    /// channels'), then its buffers.
    let direct: DirectForward
    let sharedPlanes: Int
    var zone: Int { (sharedPlanes + perThread + 15) / 16 * 16 }
    /// U for all output channels [16 × inChannels × outChannels] (shared when images run a thread each).
    var transformedWeightsCount: Int { 16 * inChannels * outChannels }
    /// Scratch for `threads` threads: a zone each and U.
    func scratchCount(threads: Int) -> Int { transformedWeightsCount + max(threads, 1) * zone }

    init(_ s: Conv2DShape) {
        tileRows = (s.outHeight + 1) / 2
        tileColumns = (s.outWidth + 1) / 2
        tiles = tileRows * tileColumns
        paddedHeight = 2 * tileRows + 2
        paddedWidth = 2 * tileColumns + 2
        inChannels = (s.inChannels + 7) / 8 * 8
        outChannels = (s.outChannels + WinogradForward.channelBlock - 1) / WinogradForward.channelBlock * WinogradForward.channelBlock
        direct = DirectForward(s)
        sharedPlanes = direct.channels * direct.outputPlane
        // A thread may be given every block (one thread), so each buffer is sized for all of them.
        var offset = 0
        planes = offset; offset += s.inChannels * paddedHeight * paddedWidth
        input = offset; offset += paddedHeight * paddedWidth * inChannels
        transformedInput = offset; offset += 16 * tiles * inChannels
        weights = offset; offset += 9 * s.inChannels * outChannels
        transformedWeights = offset; offset += 16 * inChannels * outChannels
        products = offset; offset += 16 * tiles * outChannels
        outputTiles = offset; offset += 2 * tileRows * direct.rowLength * outChannels
        perThread = offset
    }
}

/// The Winograd forward pass (see above); `scratch` holds `WinogradForward.scratchCount(threads:)`.
/// Without y (nothing reads it; only with `pooled` and relu or no activation), the bias, the
/// activation and the 2×2 max pool are applied to each tile as it is transformed (a tile is a pool
/// window), and only the pool is written: the same values as through y.
func conv2DForwardWinograd(
    _ s: Conv2DShape, x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
    activation: ActivationFunction, y: UnsafeMutablePointer<Float>?, pooled: UnsafeMutablePointer<Float>?,
    transformedWeights: UnsafePointer<Float>?, scratch: UnsafeMutablePointer<Float>, zones: ScratchZones, context: GEMMContext
) {
    let w = WinogradForward(s)
    if s.batch >= context.threads && s.batch > 1 {
        // An image per thread at a time: U made once here (unless made for the session), after the
        // threads' zones.
        let u = scratch + context.threads * w.zone
        if transformedWeights == nil {
            winogradTransformWeights(s, w, weight, channels: 0..<s.outChannels, columns: w.outChannels, into: u,
                                     using: scratch + w.sharedPlanes + w.weights)
        }
        typealias Images = (Conv2DShape, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>?, ActivationFunction,
                            UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>, Bool)
        let job: Images = (s, x, transformedWeights ?? UnsafePointer(u), bias, activation, y, pooled, scratch, context.wideKernels)
        context.parallelFor(s.batch, sharing: job) { shared, n, worker in
            let (s, x, u, bias, activation, y, pooled, scratch, wide) = shared.assumingMemoryBound(to: Images.self).pointee
            let w = WinogradForward(s)
            let planes = scratch + worker * w.zone
            winogradImage(s, w, x, sample: n, u: u, ldu: w.outChannels, columns: 0..<w.outChannels, planes: planes,
                          bias: bias, activation, y, pooled: pooled, wide: wide)
        }
        return
    }
    // Split over the threads by output channels; or, making the pool alone, by tiles (then each thread
    // transforms only its tiles' part of the input).
    let parts = min(context.threads, y == nil ? w.tiles : w.outChannels / WinogradForward.channelBlock)
    typealias Job = (Conv2DShape, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>?, ActivationFunction,
                     UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?, UnsafePointer<Float>?, UnsafeMutablePointer<Float>, Int, Int, Int, Bool)
    for n in 0..<s.batch {
        let job: Job = (s, x, weight, bias, activation, y, pooled, transformedWeights, scratch, zones.stride, n, parts, context.wideKernels)
        context.parallelFor(parts, sharing: job) { shared, part, _ in
            let (s, x, weight, bias, activation, y, pooled, transformed, scratch, zone, n, parts, wide) = shared.assumingMemoryBound(to: Job.self).pointee
            let w = WinogradForward(s)
            let byTiles = y == nil
            let mine = byTiles ? 0..<(w.outChannels / WinogradForward.channelBlock)
                               : WorkerPool.range(w.outChannels / WinogradForward.channelBlock, worker: part, of: parts)
            let tiles = byTiles ? WorkerPool.range(w.tiles, worker: part, of: parts) : 0..<w.tiles
            let first = mine.lowerBound * WinogradForward.channelBlock
            let count = mine.count * WinogradForward.channelBlock
            let real = first..<max(first, min(s.outChannels, first + count))
            let planes = scratch + part * zone, buffers = planes + w.sharedPlanes
            // U: transformed once for the session (constant weights), or here, the part's channels.
            let u: UnsafePointer<Float>, ldu: Int
            if let transformed {
                (u, ldu) = (transformed + first, w.outChannels)
            } else {
                winogradTransformWeights(s, w, weight, channels: real, columns: count, into: buffers + w.transformedWeights,
                                         using: buffers + w.weights)
                (u, ldu) = (UnsafePointer(buffers + w.transformedWeights), count)
            }
            winogradImage(s, w, x, sample: n, u: u, ldu: ldu, columns: first..<(first + count), tiles: tiles, planes: planes,
                          bias: bias, activation, y, pooled: pooled, wide: wide)
        }
    }
}

/// One image's output channels `columns` (whole channel blocks; those from Cout on are dropped) with U
/// at `u` (its column 0 is channel columns.lowerBound; rows ldu apart): the input transform, the
/// products, the output transform and the epilogue, in the zone at `planes`.
@inline(__always)
private func winogradImage(_ s: Conv2DShape, _ w: WinogradForward, _ x: UnsafePointer<Float>, sample n: Int,
                           u: UnsafePointer<Float>, ldu: Int, columns: Range<Int>, tiles: Range<Int>? = nil,
                           planes: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, _ activation: ActivationFunction,
                           _ y: UnsafeMutablePointer<Float>?, pooled: UnsafeMutablePointer<Float>?, wide: Bool) {
    let buffers = planes + w.sharedPlanes, count = columns.count, tiles = tiles ?? 0..<w.tiles
    let real = columns.lowerBound..<max(columns.lowerBound, min(s.outChannels, columns.upperBound))
    winogradTransformInput(s, w, x + n * s.inChannels * s.height * s.width, buffers, tiles: tiles)
    if wide {
        winogradProducts(SIMD16<Float>.self, w, columns: count, u: u, ldu: ldu, buffers, tiles: tiles)
    } else {
        winogradProducts(SIMD8<Float>.self, w, columns: count, u: u, ldu: ldu, buffers, tiles: tiles)
    }
    if let y {
        winogradTransformOutput(s, w, columns: count, buffers, planes: planes, channels: real)
        writeOutputChannels(s, w.direct, planes, sample: n, channels: real, bias: bias, activation, y, pooled: pooled)
    } else if let pooled {
        winogradPooledOutput(s, w, columns: count, buffers, bias: bias, relu: activation == .relu,
                             pooled: pooled + (n * s.outChannels + real.lowerBound) * s.outputPool.outHeight * s.outputPool.outWidth,
                             channels: real, tiles: tiles)
    }
}

/// Elements of a convolution's Winograd-transformed weights U for all its output channels (what
/// `winogradTransformWeights(_:_:into:)` makes, for a session whose weights do not change).
public func winogradTransformedWeightsCount(_ s: Conv2DShape) -> Int { WinogradForward(s).transformedWeightsCount }

/// U for all output channels, [16 × Cin (rounded up to eight) × Cout (rounded up to 16)], into
/// `winogradTransformedWeightsCount(s)` elements.
public func winogradTransformWeights(_ s: Conv2DShape, _ weight: UnsafePointer<Float>, into u: UnsafeMutablePointer<Float>) {
    let w = WinogradForward(s)
    var transposed = [Float](repeating: 0, count: 9 * s.inChannels * w.outChannels)
    transposed.withUnsafeMutableBufferPointer { buffer in
        guard let wt = buffer.baseAddress else { return }
        winogradTransformWeights(s, w, weight, channels: 0..<s.outChannels, columns: w.outChannels, into: u, using: wt)
    }
}

/// U[ξν][c][co] = (G g Gᵀ)[ξ][ν] for the output channels `channels`, at columns
/// 0..<channels.count of `columns` (the other columns and the padded input channels are zero), with
/// G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]: the weights are first laid out [9·Cin × columns] in `wt`, so
/// that each of their nine taps is a vector over output channels.
private func winogradTransformWeights(_ s: Conv2DShape, _ w: WinogradForward, _ weight: UnsafePointer<Float>,
                                      channels: Range<Int>, columns: Int, into u: UnsafeMutablePointer<Float>,
                                      using wt: UnsafeMutablePointer<Float>) {
    let k = 9 * s.inChannels
    if !channels.isEmpty {
        transposeF32(weight + channels.lowerBound * k, ldSrc: k, rows: channels.count, columns: k, wt, ldDst: columns)
    }
    if channels.count < columns {
        for row in 0..<k { (wt + row * columns + channels.count).update(repeating: 0, count: columns - channels.count) }
    }
    if s.inChannels < w.inChannels {
        for position in 0..<16 {
            (u + (position * w.inChannels + s.inChannels) * columns).update(repeating: 0, count: (w.inChannels - s.inChannels) * columns)
        }
    }
    @inline(__always) func g(_ a: F8, _ b: F8, _ c: F8) -> (F8, F8, F8, F8) {
        let half = F8(repeating: 0.5)
        return (a, (a + b + c) * half, (a - b + c) * half, c)
    }
    for c in 0..<s.inChannels {
        for co in stride(from: 0, to: columns, by: 8) {
            let tap = wt + c * 9 * columns + co
            @inline(__always) func column(_ j: Int) -> (F8, F8, F8, F8) {
                g(load8(tap + j * columns), load8(tap + (3 + j) * columns), load8(tap + (6 + j) * columns))
            }
            let c0 = column(0), c1 = column(1), c2 = column(2)
            @inline(__always) func store(_ v: (F8, F8, F8, F8), row: Int) {
                let at = u + (row * 4 * w.inChannels + c) * columns + co, step = w.inChannels * columns
                store8(v.0, at); store8(v.1, at + step); store8(v.2, at + 2 * step); store8(v.3, at + 3 * step)
            }
            store(g(c0.0, c1.0, c2.0), row: 0)
            store(g(c0.1, c1.1, c2.1), row: 1)
            store(g(c0.2, c1.2, c2.2), row: 2)
            store(g(c0.3, c1.3, c2.3), row: 3)
        }
    }
}

/// The image channels-last in the zero-padded input, then V[ξν][tile][c] = (Bᵀ d B)[ξ][ν] for every
/// tile's 4×4 block d, with Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1].
private func winogradTransformInput(_ s: Conv2DShape, _ w: WinogradForward, _ x: UnsafePointer<Float>,
                                    _ buffers: UnsafeMutablePointer<Float>, tiles: Range<Int>) {
    guard !tiles.isEmpty else { return }
    let cp = w.inChannels, h = s.height, width = s.width
    let planes = buffers + w.planes, padded = buffers + w.input, v = buffers + w.transformedInput
    let plane = w.paddedHeight * w.paddedWidth
    // The padded rows the tiles read: 2·ty … 2·ty + 3 for their tile rows.
    let rows = (2 * (tiles.lowerBound / w.tileColumns))..<(2 * ((tiles.upperBound - 1) / w.tileColumns) + 4)
    // Zero-padded planes first, then one transpose of whole 8 × 8 blocks (row by row, the image's
    // short rows left most of it to scalar code). The padded block always holds the image: its
    // 2·⌈Ho/2⌉ + 2 ≥ H + 2·pad rows (likewise columns).
    for c in 0..<s.inChannels {
        (planes + c * plane + rows.lowerBound * w.paddedWidth).update(repeating: 0, count: rows.count * w.paddedWidth)
        let dst = planes + c * plane + s.padH * w.paddedWidth + s.padW
        let imageRows = max(0, rows.lowerBound - s.padH)..<max(0, rows.lowerBound - s.padH, min(h, rows.upperBound - s.padH))
        for iy in imageRows {
            copyShort(dst + iy * w.paddedWidth, x + (c * h + iy) * width, width)
        }
    }
    let first = rows.lowerBound * w.paddedWidth, positions = rows.count * w.paddedWidth
    transposeF32(planes + first, ldSrc: plane, rows: s.inChannels, columns: positions, padded + first * cp, ldDst: cp)
    if s.inChannels < cp {
        for position in first..<(first + positions) { (padded + position * cp + s.inChannels).update(repeating: 0, count: cp - s.inChannels) }
    }
    @inline(__always) func bt(_ a: F8, _ b: F8, _ c: F8, _ d: F8) -> (F8, F8, F8, F8) { (a - c, b + c, c - b, b - d) }
    let rowStep = w.paddedWidth * cp, positionStep = w.tiles * cp
    for tile in tiles {
        let ty = tile / w.tileColumns, tx = tile % w.tileColumns
        let base = padded + (2 * ty * w.paddedWidth + 2 * tx) * cp
        for c in stride(from: 0, to: cp, by: 8) {
            @inline(__always) func column(_ j: Int) -> (F8, F8, F8, F8) {
                let p = base + j * cp + c
                return bt(load8(p), load8(p + rowStep), load8(p + 2 * rowStep), load8(p + 3 * rowStep))
            }
            let c0 = column(0), c1 = column(1), c2 = column(2), c3 = column(3)
            @inline(__always) func store(_ r: (F8, F8, F8, F8), row: Int) {
                let at = v + row * 4 * positionStep + tile * cp + c
                store8(r.0, at); store8(r.1, at + positionStep); store8(r.2, at + 2 * positionStep); store8(r.3, at + 3 * positionStep)
            }
            store(bt(c0.0, c1.0, c2.0, c3.0), row: 0)
            store(bt(c0.1, c1.1, c2.1, c3.1), row: 1)
            store(bt(c0.2, c1.2, c2.2, c3.2), row: 2)
            store(bt(c0.3, c1.3, c2.3, c3.3), row: 3)
        }
    }
}

/// M[ξν] = V[ξν] · U[ξν] for the 16 positions and the tiles `range`: eight tiles by one vector of
/// output channels at a time (eight accumulators: enough independent sums for the multiply-add
/// latency in either width; 256-bit builds six tiles by two vectors, below), each broadcast V element
/// against a loaded vector of U. A pointer per tile and one walking U: no index arithmetic (and its
/// overflow checks) in the loops.
@inline(__always)
private func winogradProducts<V: SIMD>(_: V.Type, _ w: WinogradForward, columns: Int, u transformed: UnsafePointer<Float>, ldu: Int,
                                       _ buffers: UnsafeMutablePointer<Float>, tiles range: Range<Int>) where V.Scalar == Float {
    let cp = w.inChannels, tiles = w.tiles, lanes = V.scalarCount
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    @inline(__always) func store(_ value: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: value, as: V.self) }
    // 256-bit builds: six tiles by two vectors (16 channels) first, both vectors' tiles up to
    // `pairedTiles` (16 vector registers hold twelve accumulators, the two U vectors and a broadcast;
    // eight tiles by one vector made nine loads per eight multiply-adds: load-bound on a Zen 3). Each
    // sum's order is the same either way.
    let pairedTiles = lanes == 8 && columns % 16 == 0 ? range.count / 6 * 6 : 0
    for position in 0..<16 {
        let v = UnsafePointer(buffers + w.transformedInput + position * tiles * cp)
        let u = transformed + position * cp * ldu
        let m = buffers + w.products + position * tiles * columns
        for co in stride(from: 0, to: columns, by: lanes) {
            var t = range.lowerBound
            if pairedTiles > 0 && co % 16 == 0 {
                while t < range.lowerBound + pairedTiles {
                    var a0 = V(), a1 = V(), a2 = V(), a3 = V(), a4 = V(), a5 = V()
                    var b0 = V(), b1 = V(), b2 = V(), b3 = V(), b4 = V(), b5 = V()
                    let r0 = v + t * cp, r1 = r0 + cp, r2 = r1 + cp, r3 = r2 + cp, r4 = r3 + cp, r5 = r4 + cp
                    var uc = u + co
                    for c in 0..<cp {
                        let p = load(uc), q = load(uc + 8)
                        uc += ldu
                        var e = V(repeating: r0[c]); a0 = a0.addingProduct(e, p); b0 = b0.addingProduct(e, q)
                        e = V(repeating: r1[c]); a1 = a1.addingProduct(e, p); b1 = b1.addingProduct(e, q)
                        e = V(repeating: r2[c]); a2 = a2.addingProduct(e, p); b2 = b2.addingProduct(e, q)
                        e = V(repeating: r3[c]); a3 = a3.addingProduct(e, p); b3 = b3.addingProduct(e, q)
                        e = V(repeating: r4[c]); a4 = a4.addingProduct(e, p); b4 = b4.addingProduct(e, q)
                        e = V(repeating: r5[c]); a5 = a5.addingProduct(e, p); b5 = b5.addingProduct(e, q)
                    }
                    let out = m + t * columns + co
                    store(a0, out); store(a1, out + columns); store(a2, out + 2 * columns)
                    store(a3, out + 3 * columns); store(a4, out + 4 * columns); store(a5, out + 5 * columns)
                    store(b0, out + 8); store(b1, out + columns + 8); store(b2, out + 2 * columns + 8)
                    store(b3, out + 3 * columns + 8); store(b4, out + 4 * columns + 8); store(b5, out + 5 * columns + 8)
                    t += 6
                }
            }
            t = range.lowerBound + pairedTiles
            while t + 8 <= range.upperBound {
                var a0 = V(), a1 = V(), a2 = V(), a3 = V(), a4 = V(), a5 = V(), a6 = V(), a7 = V()
                let r0 = v + t * cp, r1 = r0 + cp, r2 = r1 + cp, r3 = r2 + cp, r4 = r3 + cp, r5 = r4 + cp, r6 = r5 + cp, r7 = r6 + cp
                var uc = u + co
                for c in 0..<cp {
                    let b = load(uc)
                    uc += ldu
                    a0 = a0.addingProduct(V(repeating: r0[c]), b); a1 = a1.addingProduct(V(repeating: r1[c]), b)
                    a2 = a2.addingProduct(V(repeating: r2[c]), b); a3 = a3.addingProduct(V(repeating: r3[c]), b)
                    a4 = a4.addingProduct(V(repeating: r4[c]), b); a5 = a5.addingProduct(V(repeating: r5[c]), b)
                    a6 = a6.addingProduct(V(repeating: r6[c]), b); a7 = a7.addingProduct(V(repeating: r7[c]), b)
                }
                let out = m + t * columns + co
                store(a0, out); store(a1, out + columns); store(a2, out + 2 * columns); store(a3, out + 3 * columns)
                store(a4, out + 4 * columns); store(a5, out + 5 * columns); store(a6, out + 6 * columns); store(a7, out + 7 * columns)
                t += 8
            }
            // The last tiles four, then one at a time, each summed in the same order as above (so a
            // tile's M does not depend on which threads share the tiles).
            while t + 4 <= range.upperBound {
                var a0 = V(), a1 = V(), a2 = V(), a3 = V()
                let r0 = v + t * cp, r1 = r0 + cp, r2 = r1 + cp, r3 = r2 + cp
                var uc = u + co
                for c in 0..<cp {
                    let b = load(uc)
                    uc += ldu
                    a0 = a0.addingProduct(V(repeating: r0[c]), b); a1 = a1.addingProduct(V(repeating: r1[c]), b)
                    a2 = a2.addingProduct(V(repeating: r2[c]), b); a3 = a3.addingProduct(V(repeating: r3[c]), b)
                }
                let out = m + t * columns + co
                store(a0, out); store(a1, out + columns); store(a2, out + 2 * columns); store(a3, out + 3 * columns)
                t += 4
            }
            while t < range.upperBound {
                var a0 = V()
                let r0 = v + t * cp
                var uc = u + co
                for c in 0..<cp { a0 = a0.addingProduct(V(repeating: r0[c]), load(uc)); uc += ldu }
                store(a0, m + t * columns + co)
                t += 1
            }
        }
    }
}

/// One tile's 2×2 outputs Y = Aᵀ M A, with Aᵀ = [1 1 1 0; 0 1 −1 −1], for eight channels: `m` points
/// at the tile's M[0][tile][co], the 16 positions `positionStep` apart.
@inline(__always)
private func outputTile(_ m: UnsafePointer<Float>, positionStep: Int) -> (top: (F8, F8), bottom: (F8, F8)) {
    @inline(__always) func at(_ a: F8, _ b: F8, _ c: F8, _ d: F8) -> (F8, F8) { (a + b + c, b - c - d) }
    @inline(__always) func column(_ j: Int) -> (F8, F8) {
        at(load8(m + j * positionStep), load8(m + (4 + j) * positionStep), load8(m + (8 + j) * positionStep), load8(m + (12 + j) * positionStep))
    }
    let c0 = column(0), c1 = column(1), c2 = column(2), c3 = column(3)
    return (at(c0.0, c1.0, c2.0, c3.0), at(c0.1, c1.1, c2.1, c3.1))
}

/// Y for every tile into the output tiles (channels last), then the thread's channels transposed
/// into the direct path's output planes.
private func winogradTransformOutput(_ s: Conv2DShape, _ w: WinogradForward, columns: Int, _ buffers: UnsafeMutablePointer<Float>,
                                     planes: UnsafeMutablePointer<Float>, channels: Range<Int>) {
    let m = UnsafePointer(buffers + w.products), out = buffers + w.outputTiles
    let positionStep = w.tiles * columns, outRow = w.direct.rowLength * columns
    for tile in 0..<w.tiles {
        let ty = tile / w.tileColumns, tx = tile % w.tileColumns
        let dst = out + 2 * ty * outRow + 2 * tx * columns
        for co in stride(from: 0, to: columns, by: 8) {
            let (top, bottom) = outputTile(m + tile * columns + co, positionStep: positionStep)
            store8(top.0, dst + co); store8(top.1, dst + columns + co)
            store8(bottom.0, dst + outRow + co); store8(bottom.1, dst + outRow + columns + co)
        }
    }
    guard !channels.isEmpty else { return }
    let d = w.direct
    transposeF32(out, ldSrc: columns, rows: s.outHeight * d.rowLength, columns: channels.count,
                 planes + channels.lowerBound * d.outputPlane, ldDst: d.outputPlane)
}

/// The 2×2 max pool of act(Aᵀ M A + bias) for every whole tile (a tile is a pool window; the last
/// row or column of tiles of an odd-sized output is not pooled), channels last, then transposed
/// into the thread's channels of the pooled planes. relu or no activation; the bias added as the
/// direct path's epilogue adds it, the maximum as the pool kernel's (of relu's pool, the largest of
/// zero and the window, as the direct path pools its planes).
private func winogradPooledOutput(_ s: Conv2DShape, _ w: WinogradForward, columns: Int, _ buffers: UnsafeMutablePointer<Float>,
                                  bias: UnsafePointer<Float>?, relu: Bool, pooled: UnsafeMutablePointer<Float>, channels: Range<Int>,
                                  tiles: Range<Int>) {
    let pool = s.outputPool
    // The pooled positions of the whole tiles in `tiles`: one run (the half tiles of an odd-sized
    // output's last column, skipped, have no position).
    @inline(__always) func pooledPosition(_ tile: Int) -> Int {
        let ty = tile / w.tileColumns, tx = tile % w.tileColumns
        return ty >= pool.outHeight ? pool.outHeight * pool.outWidth : ty * pool.outWidth + min(tx, pool.outWidth)
    }
    let positions = pooledPosition(tiles.lowerBound)..<max(pooledPosition(tiles.lowerBound), pooledPosition(tiles.upperBound))
    let m = UnsafePointer(buffers + w.products), positionStep = w.tiles * columns
    // The thread's biases (zero past the real channels), then the pooled tiles, channels last.
    let biases = buffers + w.outputTiles, out = biases + columns
    for co in 0..<columns { biases[co] = channels.lowerBound + co < channels.upperBound ? bias?[channels.lowerBound + co] ?? 0 : 0 }
    for position in positions {
        let tile = position / pool.outWidth * w.tileColumns + position % pool.outWidth
        let dst = out + position * columns
        for co in stride(from: 0, to: columns, by: 8) {
            let (top, bottom) = outputTile(m + tile * columns + co, positionStep: positionStep)
            let b = load8(biases + co)
            let window = (top.0 + b, top.1 + b, bottom.0 + b, bottom.1 + b)
            store8(relu ? reluWindowMaxima(window.0, window.1, window.2, window.3) : windowMaxima(window.0, window.1, window.2, window.3), dst + co)
        }
    }
    let plane = pool.outHeight * pool.outWidth
    transposeF32(out + positions.lowerBound * columns, ldSrc: columns, rows: positions.count, columns: channels.count,
                 pooled + positions.lowerBound, ldDst: plane)
}

// MARK: - The weight gradient

extension Conv2DShape {
    /// The weight gradient by Winograd's F(2×2, 3×3) too, where the forward pass uses it (f32): with
    /// V = Bᵀ d B (the forward's input transform) and E = A dZ Aᵀ for each 2×2 tile of dZ,
    ///     dW[co][c] = Gᵀ [ Σ_samples Σ_tiles E_co ⊙ V_c ] G,
    /// 16 products [Cin × tiles] · [tiles × Cout] a sample, 2.25× fewer multiply-adds than the direct
    /// kernel's. Measured on the residual CNN's 32→32 at 14×14, batch 128, on the Zen 3: see README.
    var winogradWeightGradient: Bool { usesWinograd }
}

/// Accumulates one sample's part of dU[ξν][c][co] (16 × inChannels × outChannels, at the zone's
/// transformed-weights buffer) from its input `x` [Cin × H × W] and its dZ planes `dz` [Cout × Ho·Wo],
/// in the zone `buffers` of `WinogradForward.zone` elements (the forward's buffers: the input
/// transform's own, dZ channels last in the output tiles', E in the products').
func winogradWeightGradientSample(_ s: Conv2DShape, x: UnsafePointer<Float>, dz: UnsafePointer<Float>, buffers: UnsafeMutablePointer<Float>) {
    let w = WinogradForward(s)
    winogradTransformInput(s, w, x, buffers, tiles: 0..<w.tiles)
    winogradTransformOutputGradient(s, w, dz, buffers)
    winogradWeightProducts(w, buffers)
}

/// E[ξν][tile][co] = (A dZ Aᵀ)[ξ][ν] for every tile's 2×2 block of dZ (zero past Ho, Wo and Cout),
/// with A = [1 0; 1 1; 1 −1; 0 −1], the transpose of the forward's output transform.
private func winogradTransformOutputGradient(_ s: Conv2DShape, _ w: WinogradForward, _ dz: UnsafePointer<Float>,
                                             _ buffers: UnsafeMutablePointer<Float>) {
    let op = w.outChannels, rows = 2 * w.tileRows, columns = 2 * w.tileColumns
    let ho = s.outHeight, wo = s.outWidth, cout = s.outChannels
    let last = buffers + w.outputTiles, e = buffers + w.products
    // dZ channels last on the tiles' grid: one transpose when the grid is the planes, else row by row.
    if rows == ho && columns == wo {
        transposeF32(dz, ldSrc: ho * wo, rows: cout, columns: ho * wo, last, ldDst: op)
    } else {
        for oy in 0..<ho { transposeF32(dz + oy * wo, ldSrc: ho * wo, rows: cout, columns: wo, last + oy * columns * op, ldDst: op) }
        for oy in 0..<rows {
            let from = oy < ho ? wo : 0
            (last + (oy * columns + from) * op).update(repeating: 0, count: (columns - from) * op)
        }
    }
    if cout < op {
        for position in 0..<(rows * columns) { (last + position * op + cout).update(repeating: 0, count: op - cout) }
    }
    let positionStep = w.tiles * op
    for tile in 0..<w.tiles {
        let base = last + (2 * (tile / w.tileColumns) * columns + 2 * (tile % w.tileColumns)) * op
        for co in stride(from: 0, to: op, by: 8) {
            let p = load8(base + co), q = load8(base + op + co), r = load8(base + columns * op + co), t = load8(base + (columns + 1) * op + co)
            @inline(__always) func store(_ a: F8, _ b: F8, row: Int) {
                let at = e + row * 4 * positionStep + tile * op + co
                store8(a, at); store8(a + b, at + positionStep); store8(a - b, at + 2 * positionStep); store8(-b, at + 3 * positionStep)
            }
            store(p, q, row: 0)
            store(p + r, q + t, row: 1)
            store(p - r, q - t, row: 2)
            store(-r, -t, row: 3)
        }
    }
}

/// dU[ξν] += V[ξν]ᵀ · E[ξν] for the 16 positions: four input channels by two vectors of output
/// channels at a time (eight accumulators), the tiles the long axis; each V element broadcast against
/// the loaded E vectors. Channels come in multiples of eight and sixteen, so no edges.
private func winogradWeightProducts(_ w: WinogradForward, _ buffers: UnsafeMutablePointer<Float>) {
    let cp = w.inChannels, op = w.outChannels, tiles = w.tiles
    for position in 0..<16 {
        let v = UnsafePointer(buffers + w.transformedInput + position * tiles * cp)
        let e = UnsafePointer(buffers + w.products + position * tiles * op)
        let u = buffers + w.transformedWeights + position * cp * op
        for c in stride(from: 0, to: cp, by: 4) {
            for co in stride(from: 0, to: op, by: 16) {
                var a0 = F8(), a1 = F8(), a2 = F8(), a3 = F8(), b0 = F8(), b1 = F8(), b2 = F8(), b3 = F8()
                var vt = v + c, et = e + co
                for _ in 0..<tiles {
                    let p = load8(et), q = load8(et + 8)
                    var s = F8(repeating: vt[0]); a0 = a0.addingProduct(s, p); b0 = b0.addingProduct(s, q)
                    s = F8(repeating: vt[1]); a1 = a1.addingProduct(s, p); b1 = b1.addingProduct(s, q)
                    s = F8(repeating: vt[2]); a2 = a2.addingProduct(s, p); b2 = b2.addingProduct(s, q)
                    s = F8(repeating: vt[3]); a3 = a3.addingProduct(s, p); b3 = b3.addingProduct(s, q)
                    vt += cp
                    et += op
                }
                let out = u + c * op + co
                store8(load8(out) + a0, out); store8(load8(out + 8) + b0, out + 8)
                store8(load8(out + op) + a1, out + op); store8(load8(out + op + 8) + b1, out + op + 8)
                store8(load8(out + 2 * op) + a2, out + 2 * op); store8(load8(out + 2 * op + 8) + b2, out + 2 * op + 8)
                store8(load8(out + 3 * op) + a3, out + 3 * op); store8(load8(out + 3 * op + 8) + b3, out + 3 * op + 8)
            }
        }
    }
}

/// dW[co][c] = Gᵀ dU[·][c][co] G (3×3 from 4×4), G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1], into `dw`
/// [Cout × Cin × 3 × 3] (overwritten), from the zone's accumulated dU.
func winogradWeightGradientFinish(_ s: Conv2DShape, buffers: UnsafePointer<Float>, dw: UnsafeMutablePointer<Float>) {
    let w = WinogradForward(s)
    let cp = w.inChannels, op = w.outChannels
    let u = buffers + w.transformedWeights
    @inline(__always) func gt(_ a: Float, _ b: Float, _ c: Float, _ d: Float) -> (Float, Float, Float) {
        (a + 0.5 * (b + c), 0.5 * (b - c), 0.5 * (b + c) + d)
    }
    for co in 0..<s.outChannels {
        for c in 0..<s.inChannels {
            @inline(__always) func at(_ position: Int) -> Float { u[(position * cp + c) * op + co] }
            // Rows ξ combined first (Gᵀ ·), then columns ν (· G).
            let r0 = gt(at(0), at(4), at(8), at(12)), r1 = gt(at(1), at(5), at(9), at(13))
            let r2 = gt(at(2), at(6), at(10), at(14)), r3 = gt(at(3), at(7), at(11), at(15))
            let out = dw + (co * s.inChannels + c) * 9
            (out[0], out[1], out[2]) = gt(r0.0, r1.0, r2.0, r3.0)
            (out[3], out[4], out[5]) = gt(r0.1, r1.1, r2.1, r3.1)
            (out[6], out[7], out[8]) = gt(r0.2, r1.2, r2.2, r3.2)
        }
    }
}

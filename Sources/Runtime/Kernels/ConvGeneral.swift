import IR

/// Grouped and dilated convolutions (PyTorch's `groups` and `dilation`), which the fast paths of
/// Conv.swift do not take: per sample and per group, an im2col with dilation and one GEMM, and the
/// backward with per-chunk weight-gradient partials summed in chunk order (deterministic, like the
/// fast path). Group g reads input channels g·Cin/G ..< (g+1)·Cin/G and writes output channels
/// g·Cout/G ..< (g+1)·Cout/G, with the weight rows of those output channels ([Cout, Cin/G, kh, kw]).

extension Conv2DShape {
    var groupInChannels: Int { inChannels / groups }
    var groupOutChannels: Int { outChannels / groups }
    /// The GEMM depth of one group: Cin/G·kh·kw.
    var groupPatch: Int { groupInChannels * kernelH * kernelW }
}

/// Calls body(col, image) for each patch-matrix entry [(c, i, j), (oy, ox)] whose input tap
/// x[c, oy·sh − ph + i·dh, ox·sw − pw + j·dw] lies inside the image: the pattern im2col reads and
/// col2im writes back.
@inline(__always)
func forEachDilatedTap(_ s: Conv2DShape, channels: Int, _ body: (_ col: Int, _ image: Int) -> Void) {
    let ho = s.outHeight, wo = s.outWidth, h = s.height, w = s.width
    var row = 0
    for c in 0..<channels {
        for i in 0..<s.kernelH {
            for j in 0..<s.kernelW {
                for oy in 0..<ho {
                    let iy = oy * s.strideH - s.padH + i * s.dilationH
                    guard iy >= 0 && iy < h else { continue }
                    for ox in 0..<wo {
                        let ix = ox * s.strideW - s.padW + j * s.dilationW
                        if ix >= 0 && ix < w { body(row * ho * wo + oy * wo + ox, (c * h + iy) * w + ix) }
                    }
                }
                row += 1
            }
        }
    }
}

/// The patches of one image's `channels` planes as col[Cin/G·kh·kw × Ho·Wo]; taps outside are 0.
func im2colDilated<T: KernelScalar>(_ x: UnsafePointer<T>, _ s: Conv2DShape, channels: Int, col: UnsafeMutablePointer<T>) {
    col.update(repeating: 0, count: channels * s.kernelH * s.kernelW * s.outHeight * s.outWidth)
    forEachDilatedTap(s, channels: channels) { c, i in col[c] = x[i] }
}

/// The adjoint of `im2colDilated`: adds col's entries back into dx (which is not cleared here).
func col2imDilated<T: KernelScalar>(_ col: UnsafePointer<T>, _ s: Conv2DShape, channels: Int, dx: UnsafeMutablePointer<T>) {
    forEachDilatedTap(s, channels: channels) { c, i in dx[i] += col[c] }
}

/// One im2col buffer [Cin/G·kh·kw × Ho·Wo] per thread.
func generalForwardScratchCount(_ s: Conv2DShape, threads: Int) -> Int {
    max(threads, 1) * s.groupPatch * s.outHeight * s.outWidth
}

/// Per chunk of samples: an im2col buffer, a dZ buffer [Cout × Ho·Wo], and dW and db partials.
func generalBackwardScratchCount(_ s: Conv2DShape, threads: Int) -> Int {
    let p = s.outHeight * s.outWidth
    return max(threads, 1) * (s.groupPatch * p + s.outChannels * p + s.weightCount + s.outChannels)
}

func conv2DForwardGeneral<T: KernelScalar>(_ s: Conv2DShape, x: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>?,
                                           activation: ActivationFunction, y: UnsafeMutablePointer<T>,
                                           scratch: UnsafeMutablePointer<T>, context: GEMMContext) {
    typealias Operands = (Conv2DShape, UnsafePointer<T>, UnsafePointer<T>, UnsafePointer<T>?, ActivationFunction,
                          UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, GEMMContext)
    let operands: Operands = (s, x, weight, bias, activation, y, scratch, context)
    context.parallelFor(s.batch, sharing: operands) { shared, n, worker in
        let (s, x, weight, bias, activation, y, scratch, context) = shared.assumingMemoryBound(to: Operands.self).pointee
        let p = s.outHeight * s.outWidth, kg = s.groupPatch, cg = s.groupOutChannels
        let col = scratch + worker * kg * p
        for g in 0..<s.groups {
            im2colDilated(x + (n * s.inChannels + g * s.groupInChannels) * s.height * s.width, s, channels: s.groupInChannels, col: col)
            let out = y + (n * s.outChannels + g * cg) * p
            if let bias {
                for o in 0..<cg { (out + o * p).update(repeating: bias[g * cg + o], count: p) }
            }
            gemm(transA: false, transB: false, m: cg, n: p, k: kg, a: weight + g * cg * kg, lda: kg, b: UnsafePointer(col), ldb: p,
                 c: out, ldc: p, accumulate: bias != nil, activation: activation, context: context, worker: worker)
        }
    }
}

func conv2DBackwardGeneral<T: KernelScalar>(_ s: Conv2DShape, x: UnsafePointer<T>, weight: UnsafePointer<T>, dZ: ConvOutputGradient<T>,
                                            dx: UnsafeMutablePointer<T>?, dWeight: UnsafeMutablePointer<T>?, dBias: UnsafeMutablePointer<T>?,
                                            scratch: UnsafeMutablePointer<T>, context: GEMMContext) {
    let p = s.outHeight * s.outWidth
    let chunks = min(max(context.threads, 1), max(1, s.batch))
    let perChunk = s.groupPatch * p + s.outChannels * p + s.weightCount + s.outChannels
    typealias Operands = (Conv2DShape, UnsafePointer<T>, UnsafePointer<T>, ConvOutputGradient<T>,
                          UnsafeMutablePointer<T>?, Bool, UnsafeMutablePointer<T>, Int, Int, GEMMContext)
    let operands: Operands = (s, x, weight, dZ, dx, dWeight != nil, scratch, perChunk, chunks, context)
    context.parallelFor(chunks, sharing: operands) { shared, chunk, worker in
        let (s, x, weight, dZ, dx, wantWeight, scratch, perChunk, chunks, context) = shared.assumingMemoryBound(to: Operands.self).pointee
        let p = s.outHeight * s.outWidth, kg = s.groupPatch, cg = s.groupOutChannels
        let base = scratch + chunk * perChunk
        let col = base, dz = base + kg * p, dW = dz + s.outChannels * p, db = dW + s.weightCount
        dW.update(repeating: 0, count: s.weightCount)
        db.update(repeating: 0, count: s.outChannels)
        for n in (s.batch * chunk / chunks)..<(s.batch * (chunk + 1) / chunks) {
            // dZ = dY ⊙ act'(Y), and db, channel by channel.
            for o in 0..<s.outChannels { db[o] += dZ.plane(n * s.outChannels + o, into: dz + o * p) }
            let xn = x + n * s.inChannels * s.height * s.width
            if let dx { (dx + n * s.inChannels * s.height * s.width).update(repeating: 0, count: s.inChannels * s.height * s.width) }
            for g in 0..<s.groups {
                let dzg = UnsafePointer(dz + g * cg * p)
                if wantWeight {
                    im2colDilated(xn + g * s.groupInChannels * s.height * s.width, s, channels: s.groupInChannels, col: col)
                    // dW_g [cg × kg] += dZ_g [cg × P] · colᵀ
                    gemm(transA: false, transB: true, m: cg, n: kg, k: p, a: dzg, lda: p, b: UnsafePointer(col), ldb: p,
                         c: dW + g * cg * kg, ldc: kg, accumulate: true, context: context, worker: worker)
                }
                if let dx {
                    // dcol [kg × P] = W_gᵀ · dZ_g, then back into the image.
                    gemm(transA: true, transB: false, m: kg, n: p, k: cg, a: weight + g * cg * kg, lda: kg, b: dzg, ldb: p,
                         c: col, ldc: p, context: context, worker: worker)
                    col2imDilated(UnsafePointer(col), s, channels: s.groupInChannels,
                                  dx: dx + (n * s.inChannels + g * s.groupInChannels) * s.height * s.width)
                }
            }
        }
    }
    // The chunks' partials, in chunk order.
    if let dWeight {
        dWeight.update(repeating: 0, count: s.weightCount)
        for chunk in 0..<chunks {
            let partial = scratch + chunk * perChunk + s.groupPatch * p + s.outChannels * p
            for i in 0..<s.weightCount { dWeight[i] += partial[i] }
        }
    }
    if let dBias {
        dBias.update(repeating: 0, count: s.outChannels)
        for chunk in 0..<chunks {
            let partial = scratch + chunk * perChunk + s.groupPatch * p + s.outChannels * p + s.weightCount
            for i in 0..<s.outChannels { dBias[i] += partial[i] }
        }
    }
}

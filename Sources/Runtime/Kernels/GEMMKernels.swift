// Register-blocked SIMD micro-kernels for GEMM (-march=native: AVX2/FMA, or AVX-512 where the build has it).
//
// Every kernel computes an MR×NR tile (MR = 6 rows; NR = two SIMD vectors) from a packed A
// micro-panel (kc steps of MR values) and a packed B micro-panel (kc steps of NR values): 12 vector
// accumulators + 2 B vectors + 1 broadcast. In 256-bit vectors (16 floats or 8 doubles a row) that
// is 15 of the 16 ymm registers; the wide f32 kernel's rows are two 512-bit vectors (32 floats),
// 15 of the 32 zmm registers, for processors with AVX-512 (twice the work per instruction, and on
// those with full-width units, twice the multiply-adds per cycle).
// The store applies the vectorisable part of the epilogue (+= C, += bias, relu) on the hot tile.
// The tile body and its store are written once (the protocol extension), one specialised copy per
// kernel; only relu is written per kernel: on a generic SIMD type the standard library's comparisons
// fall back to loops over the lanes. Each kernel sums every element in the same order (in order over
// p within a k block of the same depth), so all of them give the same results, bit for bit.

import CPrefetch

/// A micro-kernel and its cache-blocking parameters.
protocol GEMMKernel {
    associatedtype Scalar: KernelScalar
    /// Half a tile row: NR / 2 lanes (one vector register).
    associatedtype V: SIMD where V.Scalar == Scalar
    /// Rows of the register tile (A micro-panel height).
    static var mr: Int { get }
    /// Columns of the register tile (B micro-panel width).
    static var nr: Int { get }
    /// Depth of a packed block (A and B micro-panels of kc steps stay near L1).
    static var kcBlock: Int { get }
    /// Rows of a packed A block (mc×kc stays in L2).
    static var mcBlock: Int { get }
    /// Columns of a packed B block (kc×nc stays in L3).
    static var ncBlock: Int { get }

    /// max(v, 0) in every lane, NaN to 0 (as the scalar relu: `v > 0 ? v : 0`).
    static func relu(_ v: V) -> V

    /// The tile (the protocol extension's, a requirement so that each kernel's witness is specialised
    /// even where the generic entry points below are not, as in the tests' build).
    static func tile(
        _ computed: Int, rows: Int, _ kc: Int, _ a: UnsafePointer<Scalar>, _ b: UnsafePointer<Scalar>, _ bStride: Int,
        _ c: UnsafeMutablePointer<Scalar>, _ ldc: Int,
        _ addC: Bool, _ bias: UnsafePointer<Scalar>?, _ relu: Bool)

    /// out[q] = Σ_p x[p] * y[q * ldy + p] for q in 0..<4 (four dot products sharing x).
    static func dot4(_ k: Int, _ x: UnsafePointer<Scalar>, _ y: UnsafePointer<Scalar>, _ ldy: Int,
                     _ out: UnsafeMutablePointer<Scalar>)
}

extension GEMMKernel {
    /// out[q] = Σ_p x[p] * y[q * ldy + p] for q in 0..<4: each sum in the lanes of V over whole vectors
    /// of p, the lanes added, then the rest of p one by one.
    @inline(never)
    static func dot4(_ k: Int, _ x: UnsafePointer<Scalar>, _ y: UnsafePointer<Scalar>, _ ldy: Int,
                     _ out: UnsafeMutablePointer<Scalar>) {
        let y0 = y, y1 = y + ldy, y2 = y1 + ldy, y3 = y2 + ldy
        let lanes = V.scalarCount
        var s0 = V(), s1 = V(), s2 = V(), s3 = V()
        var p = 0
        while p + lanes <= k {
            let xv = UnsafeRawPointer(x + p).loadUnaligned(as: V.self)
            s0 = s0.addingProduct(xv, UnsafeRawPointer(y0 + p).loadUnaligned(as: V.self))
            s1 = s1.addingProduct(xv, UnsafeRawPointer(y1 + p).loadUnaligned(as: V.self))
            s2 = s2.addingProduct(xv, UnsafeRawPointer(y2 + p).loadUnaligned(as: V.self))
            s3 = s3.addingProduct(xv, UnsafeRawPointer(y3 + p).loadUnaligned(as: V.self))
            p += lanes
        }
        var r0 = s0.sum(), r1 = s1.sum(), r2 = s2.sum(), r3 = s3.sum()
        while p < k {
            let xv = x[p]
            r0 += xv * y0[p]; r1 += xv * y1[p]; r2 += xv * y2[p]; r3 += xv * y3[p]
            p += 1
        }
        out[0] = r0; out[1] = r1; out[2] = r2; out[3] = r3
    }

    /// One row of the tile from its two accumulators: (+= C) (+= bias) (relu), stored.
    @inline(__always)
    static func storeRow(_ cp: UnsafeMutablePointer<Scalar>, _ x0: V, _ x1: V,
                         _ addC: Bool, _ bias: UnsafePointer<Scalar>?, _ relu: Bool) {
        let raw = UnsafeMutableRawPointer(cp)
        let half = MemoryLayout<V>.size
        var v0 = x0, v1 = x1
        if addC {
            v0 += raw.loadUnaligned(as: V.self)
            v1 += raw.loadUnaligned(fromByteOffset: half, as: V.self)
        }
        if let bias {
            let rb = UnsafeRawPointer(bias)
            v0 += rb.loadUnaligned(as: V.self)
            v1 += rb.loadUnaligned(fromByteOffset: half, as: V.self)
        }
        if relu {
            v0 = Self.relu(v0)
            v1 = Self.relu(v1)
        }
        raw.storeBytes(of: v0, as: V.self)
        raw.storeBytes(of: v1, toByteOffset: half, as: V.self)
    }

    /// The kernel's body for the first `computed` (2, 4 or 6, a constant once inlined) rows of the
    /// A micro-panel, of which the first `rows` are stored: c[0..<rows][0..<nr] (row stride ldc) =
    /// (addC ? c : 0) + Σ_p a[p*mr + i] * b[p*bStride + j] (+ bias[j] when bias != nil, then relu when relu).
    @inline(__always)
    static func tile(
        _ computed: Int, rows: Int, _ kc: Int, _ a: UnsafePointer<Scalar>, _ b: UnsafePointer<Scalar>, _ bStride: Int,
        _ c: UnsafeMutablePointer<Scalar>, _ ldc: Int,
        _ addC: Bool, _ bias: UnsafePointer<Scalar>?, _ relu: Bool
    ) {
        // The tile of C, loaded (+= C) or written at the end, starts its way into the cache now: C is
        // large (the fc 1024's 4 MB), and its rows missed there at every k block's end (a tenth of the
        // kernel's time on fc 1024 went to those loads).
        for r in 0..<rows {
            nnc_prefetch(c + r * ldc)
            nnc_prefetch(c + r * ldc + (nr - 1))
        }
        var c00 = V(), c01 = V(), c10 = V(), c11 = V(), c20 = V(), c21 = V()
        var c30 = V(), c31 = V(), c40 = V(), c41 = V(), c50 = V(), c51 = V()
        var pa = a
        var pb = UnsafeRawPointer(b)
        let step = bStride * MemoryLayout<Scalar>.stride
        let half = MemoryLayout<V>.size
        // One k step: two B vectors times six broadcast A values.
        @inline(__always) func update(_ a: UnsafePointer<Scalar>, _ b: UnsafeRawPointer) {
            let b0 = b.loadUnaligned(as: V.self)
            let b1 = b.loadUnaligned(fromByteOffset: half, as: V.self)
            var x = V(repeating: a[0])
            c00 = c00.addingProduct(x, b0); c01 = c01.addingProduct(x, b1)
            x = V(repeating: a[1])
            c10 = c10.addingProduct(x, b0); c11 = c11.addingProduct(x, b1)
            if computed > 2 {
                x = V(repeating: a[2])
                c20 = c20.addingProduct(x, b0); c21 = c21.addingProduct(x, b1)
                x = V(repeating: a[3])
                c30 = c30.addingProduct(x, b0); c31 = c31.addingProduct(x, b1)
            }
            if computed > 4 {
                x = V(repeating: a[4])
                c40 = c40.addingProduct(x, b0); c41 = c41.addingProduct(x, b1)
                x = V(repeating: a[5])
                c50 = c50.addingProduct(x, b0); c51 = c51.addingProduct(x, b1)
            }
        }
        // Unrolled by four (measured: 4% faster than the compiler's unroll by two).
        var p = 0
        while p + 4 <= kc {
            update(pa, pb)
            update(pa + 6, pb + step)
            update(pa + 12, pb + 2 * step)
            update(pa + 18, pb + 3 * step)
            pa += 24
            pb += 4 * step
            p += 4
        }
        while p < kc {
            update(pa, pb)
            pa += 6
            pb += step
            p += 1
        }
        storeRow(c, c00, c01, addC, bias, relu)
        if rows > 1 { storeRow(c + ldc, c10, c11, addC, bias, relu) }
        if rows > 2 { storeRow(c + 2 * ldc, c20, c21, addC, bias, relu) }
        if rows > 3 { storeRow(c + 3 * ldc, c30, c31, addC, bias, relu) }
        if rows > 4 { storeRow(c + 4 * ldc, c40, c41, addC, bias, relu) }
        if rows > 5 { storeRow(c + 5 * ldc, c50, c51, addC, bias, relu) }
    }

    /// One row of A against four B micro-panels (matrix-vector products): out[q * nr + j] = Σ_p x[p] *
    /// bq[p * nr + j] for q in 0..<4, each sum in order over p (as the tile sums a row), the panels'
    /// sums independent chains that hide the FMA latency.
    @inline(never)
    static func rowTimesFourPanels(_ kc: Int, _ x: UnsafePointer<Scalar>,
                                   _ p0: UnsafePointer<Scalar>, _ p1: UnsafePointer<Scalar>, _ p2: UnsafePointer<Scalar>, _ p3: UnsafePointer<Scalar>,
                                   _ out: UnsafeMutablePointer<Scalar>) {
        rowTimesPanels(4, kc, x, p0, p1, p2, p3, out)
    }

    /// `rowTimesFourPanels` for the first two panels only (a thread's share of a narrow product).
    @inline(never)
    static func rowTimesTwoPanels(_ kc: Int, _ x: UnsafePointer<Scalar>, _ p0: UnsafePointer<Scalar>, _ p1: UnsafePointer<Scalar>,
                                  _ out: UnsafeMutablePointer<Scalar>) {
        rowTimesPanels(2, kc, x, p0, p1, p1, p1, out)
    }

    /// The body of both, for the first `computed` (2 or 4, a constant once inlined) panels.
    @inline(__always)
    static func rowTimesPanels(_ computed: Int, _ kc: Int, _ x: UnsafePointer<Scalar>,
                               _ p0: UnsafePointer<Scalar>, _ p1: UnsafePointer<Scalar>, _ p2: UnsafePointer<Scalar>, _ p3: UnsafePointer<Scalar>,
                               _ out: UnsafeMutablePointer<Scalar>) {
        var s00 = V(), s01 = V(), s10 = V(), s11 = V(), s20 = V(), s21 = V(), s30 = V(), s31 = V()
        let b0 = UnsafeRawPointer(p0), b1 = UnsafeRawPointer(p1), b2 = UnsafeRawPointer(p2), b3 = UnsafeRawPointer(p3)
        let half = V.scalarCount * MemoryLayout<Scalar>.stride
        for p in 0..<kc {
            let xv = V(repeating: x[p]), at = p * 2 * half
            s00 = s00.addingProduct(xv, b0.loadUnaligned(fromByteOffset: at, as: V.self))
            s01 = s01.addingProduct(xv, b0.loadUnaligned(fromByteOffset: at + half, as: V.self))
            s10 = s10.addingProduct(xv, b1.loadUnaligned(fromByteOffset: at, as: V.self))
            s11 = s11.addingProduct(xv, b1.loadUnaligned(fromByteOffset: at + half, as: V.self))
            if computed > 2 {
                s20 = s20.addingProduct(xv, b2.loadUnaligned(fromByteOffset: at, as: V.self))
                s21 = s21.addingProduct(xv, b2.loadUnaligned(fromByteOffset: at + half, as: V.self))
                s30 = s30.addingProduct(xv, b3.loadUnaligned(fromByteOffset: at, as: V.self))
                s31 = s31.addingProduct(xv, b3.loadUnaligned(fromByteOffset: at + half, as: V.self))
            }
        }
        let o = UnsafeMutableRawPointer(out)
        o.storeBytes(of: s00, as: V.self); o.storeBytes(of: s01, toByteOffset: half, as: V.self)
        o.storeBytes(of: s10, toByteOffset: 2 * half, as: V.self); o.storeBytes(of: s11, toByteOffset: 3 * half, as: V.self)
        if computed > 2 {
            o.storeBytes(of: s20, toByteOffset: 4 * half, as: V.self); o.storeBytes(of: s21, toByteOffset: 5 * half, as: V.self)
            o.storeBytes(of: s30, toByteOffset: 6 * half, as: V.self); o.storeBytes(of: s31, toByteOffset: 7 * half, as: V.self)
        }
    }

    /// A whole MR × NR tile (see `tile`).
    @inline(never)
    static func kernel(
        _ kc: Int, _ a: UnsafePointer<Scalar>, _ b: UnsafePointer<Scalar>, _ bStride: Int,
        _ c: UnsafeMutablePointer<Scalar>, _ ldc: Int,
        _ addC: Bool, _ bias: UnsafePointer<Scalar>?, _ relu: Bool
    ) {
        tile(6, rows: 6, kc, a, b, bStride, c, ldc, addC, bias, relu)
    }

    /// `kernel` for the first `rows` rows only, computing 6, 4 or 2 of them (`kernel(rows:)` picks).
    @inline(never)
    static func kernel6(_ rows: Int, _ kc: Int, _ a: UnsafePointer<Scalar>, _ b: UnsafePointer<Scalar>, _ bStride: Int,
                        _ c: UnsafeMutablePointer<Scalar>, _ ldc: Int, _ addC: Bool, _ bias: UnsafePointer<Scalar>?, _ relu: Bool) {
        tile(6, rows: rows, kc, a, b, bStride, c, ldc, addC, bias, relu)
    }

    @inline(never)
    static func kernel4(_ rows: Int, _ kc: Int, _ a: UnsafePointer<Scalar>, _ b: UnsafePointer<Scalar>, _ bStride: Int,
                        _ c: UnsafeMutablePointer<Scalar>, _ ldc: Int, _ addC: Bool, _ bias: UnsafePointer<Scalar>?, _ relu: Bool) {
        tile(4, rows: rows, kc, a, b, bStride, c, ldc, addC, bias, relu)
    }

    @inline(never)
    static func kernel2(_ rows: Int, _ kc: Int, _ a: UnsafePointer<Scalar>, _ b: UnsafePointer<Scalar>, _ bStride: Int,
                        _ c: UnsafeMutablePointer<Scalar>, _ ldc: Int, _ addC: Bool, _ bias: UnsafePointer<Scalar>?, _ relu: Bool) {
        tile(2, rows: rows, kc, a, b, bStride, c, ldc, addC, bias, relu)
    }

    /// `kernel` for the first `rows` (1...MR) rows only, at the cost of the next even number of rows
    /// (a short tile at the bottom edge of C: m = 128 is 21 tiles of six rows and one of two).
    /// One function per computed height: with the three in one body the compiler kept the tile code
    /// out of line, its height a run-time value.
    @inline(__always)
    static func kernel(
        rows: Int, _ kc: Int, _ a: UnsafePointer<Scalar>, _ b: UnsafePointer<Scalar>, _ bStride: Int,
        _ c: UnsafeMutablePointer<Scalar>, _ ldc: Int,
        _ addC: Bool, _ bias: UnsafePointer<Scalar>?, _ relu: Bool
    ) {
        if rows > 4 {
            kernel6(rows, kc, a, b, bStride, c, ldc, addC, bias, relu)
        } else if rows > 2 {
            kernel4(rows, kc, a, b, bStride, c, ldc, addC, bias, relu)
        } else {
            kernel2(rows, kc, a, b, bStride, c, ldc, addC, bias, relu)
        }
    }
}

enum GEMMKernelF32: GEMMKernel {
    typealias Scalar = Float
    typealias V = SIMD8<Float>
    static var mr: Int { 6 }
    static var nr: Int { 16 }
    /// 384: a B micro-panel of 22–24 KB and an A micro-panel of 8–9 KB fill L1 (k = 1024 runs as three
    /// blocks of 344). Measured on fc 1024: 1% faster than 256, and 512 in between.
    static var kcBlock: Int { 384 }
    static var mcBlock: Int { 144 }
    static var ncBlock: Int { 2048 }

    @inline(__always)
    static func relu(_ v: V) -> V { V().replacing(with: v, where: v .> V()) }
}

/// The f32 kernel in 512-bit vectors, for builds with AVX-512 (`GEMMContext.wideKernels`): a 6 × 32
/// tile. The same k blocks as the 256-bit kernel, so the same sums in the same order (its 48 KB B
/// micro-panel streams from L2 where L1 is smaller: measured on the Zen 4, see the README).
enum GEMMKernelF32Wide: GEMMKernel {
    typealias Scalar = Float
    typealias V = SIMD16<Float>
    static var mr: Int { 6 }
    static var nr: Int { 32 }
    static var kcBlock: Int { GEMMKernelF32.kcBlock }
    static var mcBlock: Int { GEMMKernelF32.mcBlock }
    static var ncBlock: Int { GEMMKernelF32.ncBlock }

    @inline(__always)
    static func relu(_ v: V) -> V { V().replacing(with: v, where: v .> V()) }

    /// The 256-bit kernel's: dot products are summed in eight lanes whatever the kernel.
    @inline(__always)
    static func dot4(_ k: Int, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ ldy: Int,
                     _ out: UnsafeMutablePointer<Float>) {
        GEMMKernelF32.dot4(k, x, y, ldy, out)
    }
}

enum GEMMKernelF64: GEMMKernel {
    typealias Scalar = Double
    typealias V = SIMD4<Double>
    static var mr: Int { 6 }
    static var nr: Int { 8 }
    static var kcBlock: Int { 256 }
    static var mcBlock: Int { 72 }
    static var ncBlock: Int { 1024 }

    @inline(__always)
    static func relu(_ v: V) -> V { V().replacing(with: v, where: v .> V()) }
}

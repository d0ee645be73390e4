import Foundation
import IR
import CPrefetch
import Synchronization

// GEMM: C = epilogue(op(A)·op(B)), BLIS-style.
//
//   for jc in 0..<n step NC            (B block kc×nc packed into NR-column micro-panels, in L3)
//     for pc in 0..<k step KC
//       pack B[pc.., jc..]
//       for ic in 0..<m step MC        (A block mc×kc packed into MR-row micro-panels, in L2)
//         pack A[ic.., pc..]
//         for jr in 0..<nc step NR     (one B micro-panel, in L1)
//           for ir in 0..<mc step MR   micro-kernel: MR×NR tile in registers
//
// Transposes are absorbed by the packing routines. Tiles cut short by the last rows of C run a
// kernel for 2 or 4 rows (and store only theirs); tiles cut short by the last columns are computed
// into a small scratch tile and merged. The epilogue (+= old C, += bias, activation) is applied
// to each tile when its last k block is stored (bias and relu in the vector store, the rest by a
// scalar pass over the hot tile).
//
// Special paths: tiny products (m·n·k ≤ 512, e.g. XOR nets) and k == 0 use plain loops on the
// calling thread; with few rows of C, a non-transposed B is read in place instead of packed, and a
// transposed B with m ≤ 2 goes through dot products of contiguous rows.
//
// Threads (worker: nil, from 2^16 multiply-adds): medium sizes give each worker one contiguous
// block of columns (or rows) of C, packing its own operands (one synchronisation; with few rows
// and a long k, A is packed once for both); large sizes (2^26) split the rows of C and pack B once
// into a shared buffer, each worker its share of a k block's panels, used by the others as soon as
// it is ready (no barrier). B packed beforehand (`gemm(packedB:)`, constant weights) is read in
// place by a split by rows. k is never split, and the choice of path depends only on the shape,
// so every element is computed by the same sequence of operations whatever the split: results
// are bit-identical run to run, for any thread count, and for worker: nil / worker: w.

/// Reusable state for GEMM calls: per-worker packing buffers and persistent worker threads.
/// Create once (per interpreter) and reuse; calls must not allocate memory after warm-up.
public final class GEMMContext: @unchecked Sendable {
    public let threads: Int
    let pool: WorkerPool
    /// Per-worker scratch: packed A block, packed B block, one edge tile. Sized for both f32 and f64.
    let scratch: [GEMMScratch]
    /// Packed B block shared by all workers (large multi-threaded GEMMs).
    let sharedPackB: UnsafeMutableRawPointer
    private let sharedPackMemory: LargeBuffer
    /// From this many multiply-adds on (and enough rows), workers share one packed B block
    /// (settable for tests).
    var sharedPackMinWork = 1 << 26
    /// From this many multiply-adds an image, a direct convolution of fewer images than threads splits
    /// each image's output channels over the threads (settable for tests). Measured at batch 1 on the
    /// Zen 4 (2 threads against 1): 64→64 channels at 56×56 (115 M) 1.9× faster, 32→32 at 28×28 (7 M)
    /// 1.1–1.2×; with the worker pool's per-thread shares (each core then pools the channels it made),
    /// the Fashion CNN's 16→32 at 14×14 (0.9 M as counted here) 20.7 → 12.2 µs, and its whole call
    /// 34.5 → 26.9 µs with its 1→16 at 28×28 (0.1 M) split too. (In the machine's state where moving
    /// data between the cores is slow, splitting loses, 38 → 63 µs; ONNX Runtime's two threads lose
    /// as much there.)
    var directSplitMinimum = 1 << 16
    /// Whether f32 products may run on the 512-bit kernel (`GEMMKernelF32Wide`): where the build's
    /// target has AVX-512 (settable for tests, which run both kernels on any machine: a build without
    /// AVX-512 runs the wide one correctly, in halves). The results are the same either way.
    var wideKernels = nnc_build_vector_bits() >= 512
    /// Size of the shared packed-B buffer (a k × nc block of B: 2M floats, 1M doubles).
    static let sharedPackBytes = 8 << 20
    /// One flag per part of the shared packed B (a worker's share of its panels, per k block), saying
    /// whether that part is packed, being packed, or neither, in the current call (see `SharedPacking`).
    let packFlags: UnsafeMutablePointer<Atomic<Int>>
    static let packFlagCount = 512
    /// The flags' values below this mean "not packed" (raised by each use instead of clearing them).
    var packGeneration = 0

    public init(threads: Int) {
        self.threads = max(1, threads)
        pool = WorkerPool(threads: self.threads)
        scratch = (0..<self.threads).map { _ in GEMMScratch() }
        sharedPackMemory = LargeBuffer.allocate(byteCount: self.threads > 1 ? GEMMContext.sharedPackBytes : 64, faultIn: false)
        sharedPackB = sharedPackMemory.pointer
        packFlags = .allocate(capacity: GEMMContext.packFlagCount)
        for i in 0..<GEMMContext.packFlagCount { (packFlags + i).initialize(to: Atomic(0)) }
    }

    deinit {
        pool.stop()
        for s in scratch { s.deallocate() }
        sharedPackMemory.deallocate()
        packFlags.deinitialize(count: GEMMContext.packFlagCount)
        packFlags.deallocate()
    }

    /// Runs body(shared, i, worker) for every i in 0..<count, spread over the pool's threads (the
    /// calling thread takes part as worker 0); returns when all are done. worker is in 0..<threads
    /// and identifies the scratch buffers that thread may use. Each thread runs its own contiguous
    /// share of the indices, then helps with the others' (a delayed thread's share is taken over),
    /// so which thread runs an index varies: a body's result must not depend on it (only scratch
    /// is chosen by worker). Inside body, call gemm with worker: w (a nested parallelFor runs
    /// serially on its thread).
    ///
    /// `shared` points at a copy of `state`; body must capture nothing and read what it needs from
    /// there. (Handing a capturing closure, or one of a generic type, to the worker threads boxes it on
    /// the heap on every call, and a training step must not allocate.)
    @inline(__always)
    public func parallelFor<State>(_ count: Int, sharing state: State,
                                   _ body: @escaping (_ shared: UnsafeRawPointer, _ index: Int, _ worker: Int) -> Void) {
        withUnsafePointer(to: state) { pool.run(count, state: UnsafeRawPointer($0), body) }
    }

    /// parallelFor with a capturing closure, for callers outside the step (tests, tools): simpler to
    /// write, but the closure's captures are boxed on the heap on every call.
    public func parallelFor(_ count: Int, _ body: @escaping (_ index: Int, _ worker: Int) -> Void) {
        parallelFor(count, sharing: body) { shared, index, worker in
            shared.assumingMemoryBound(to: ((Int, Int) -> Void).self).pointee(index, worker)
        }
    }
}

/// body(shared, i, worker) for every i in 0..<count: over the context's threads (see
/// `GEMMContext.parallelFor`), or on this thread, body inlined, when there is no context or only one
/// index (small tensors' kernels, a batch of one row: the tiny networks' steps went a tenth to
/// reaching the pool; not in `GEMMContext.parallelFor` itself, whose callers, inlined, grew too large).
@inline(__always)
func parallelFor<State>(_ count: Int, on context: GEMMContext?, sharing state: State,
                        _ body: @escaping (_ shared: UnsafeRawPointer, _ index: Int, _ worker: Int) -> Void) {
    if let context, count > 1 {
        context.parallelFor(count, sharing: state, body)
    } else {
        withUnsafePointer(to: state) { shared in
            for i in 0..<max(0, count) { body(UnsafeRawPointer(shared), i, 0) }
        }
    }
}

/// One worker's packing buffers (raw bytes, 64-byte aligned, allocated once).
struct GEMMScratch {
    let packA: UnsafeMutableRawPointer
    let packB: UnsafeMutableRawPointer
    let tile: UnsafeMutableRawPointer
    private let packBMemory: LargeBuffer

    static let packABytes = max(
        GEMMKernelF32.mcBlock * GEMMKernelF32.kcBlock * MemoryLayout<Float>.stride,
        GEMMKernelF32Wide.mcBlock * GEMMKernelF32Wide.kcBlock * MemoryLayout<Float>.stride,
        GEMMKernelF64.mcBlock * GEMMKernelF64.kcBlock * MemoryLayout<Double>.stride)
    static let packBBytes = max(
        GEMMKernelF32.ncBlock * GEMMKernelF32.kcBlock * MemoryLayout<Float>.stride,
        GEMMKernelF32Wide.ncBlock * GEMMKernelF32Wide.kcBlock * MemoryLayout<Float>.stride,
        GEMMKernelF64.ncBlock * GEMMKernelF64.kcBlock * MemoryLayout<Double>.stride)
    static let tileBytes = 1024

    init() {
        packA = .allocate(byteCount: GEMMScratch.packABytes, alignment: 64)
        packBMemory = LargeBuffer.allocate(byteCount: GEMMScratch.packBBytes, faultIn: false)
        packB = packBMemory.pointer
        tile = .allocate(byteCount: GEMMScratch.tileBytes, alignment: 64)
    }

    func deallocate() {
        packA.deallocate()
        packBMemory.deallocate()
        tile.deallocate()
    }
}

/// C[m×n] = op(A)[m×k] · op(B)[k×n], row-major, with leading dimensions (row strides) lda/ldb/ldc.
/// op(A) = A (A stored m×k) or Aᵀ (A stored k×m) when transA; same for B (stored k×n, or n×k when transB).
/// Then, in the epilogue, per element in this order: += old C if accumulate; += bias[j]; y = activation(y).
/// worker == nil: may use all the context's threads above a size threshold.
/// worker == w: runs single-threaded on the calling thread using worker w's scratch (for calls made inside parallelFor).
/// m, n or k may be 0 (k == 0 gives C = epilogue(0)).
/// With `update` (a weight gradient GEMM, C = the gradient of a parameter laid out like C), each block
/// of C (mc rows × nc columns), once final, also takes an SGD step on the parameter while it is in
/// cache; the result is the same as `sgdUpdate` over C afterwards.
/// With `packedB` (op(B) packed once by `gemmPackB`, for constant weights), B is not packed again,
/// nor read (but for tiny products, one or two rows times a transposed B, and threaded products with
/// too few rows to split by rows, which read B: pass it too); the result is the same, bit for bit.
@inlinable
public func gemm<T: KernelScalar>(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
    a: UnsafePointer<T>, lda: Int,
    b: UnsafePointer<T>, ldb: Int,
    c: UnsafeMutablePointer<T>, ldc: Int,
    accumulate: Bool = false,
    bias: UnsafePointer<T>? = nil,
    activation: ActivationFunction = .identity,
    update: SGDStep<T>? = nil,
    packedB: UnsafePointer<T>? = nil,
    context: GEMMContext, worker: Int? = nil
) {
    // Non-generic entry points on raw pointers: the type test folds away in specialised callers,
    // and unspecialised callers pay no generic-metadata look-ups.
    var call = GEMMCall(transA: transA, transB: transB, m: m, n: n, k: k,
                        a: UnsafeRawPointer(a), lda: lda, b: UnsafeRawPointer(b), ldb: ldb,
                        c: UnsafeMutableRawPointer(c), ldc: ldc, accumulate: accumulate,
                        bias: UnsafeRawPointer(bias), activation: activation, worker: worker ?? -1)
    call.packedB = UnsafeRawPointer(packedB)
    guard var update else {
        gemmDispatch(T.self, call, context)
        return
    }
    // The step travels as a pointer to it (the common call without one stays small).
    withUnsafePointer(to: &update) { step in
        call.update = UnsafeRawPointer(step)
        gemmDispatch(T.self, call, context)
    }
}

@inlinable @inline(__always)
func gemmDispatch<T: KernelScalar>(_: T.Type, _ call: GEMMCall, _ context: GEMMContext) {
    if T.self == Float.self {
        gemmFloat(call, context)
    } else if T.self == Double.self {
        gemmDouble(call, context)
    } else {
        gemmGeneric(T.self, call)
    }
}

/// One GEMM call's arguments with untyped pointers (worker < 0: none given), as `gemm` hands them
/// to the per-type entry points.
@usableFromInline
struct GEMMCall {
    var transA: Bool, transB: Bool
    var m: Int, n: Int, k: Int
    var a: UnsafeRawPointer, lda: Int
    var b: UnsafeRawPointer, ldb: Int
    var c: UnsafeMutableRawPointer, ldc: Int
    var accumulate: Bool
    var bias: UnsafeRawPointer?
    var activation: ActivationFunction
    var worker: Int
    /// The `SGDStep<T>` of `gemm(update:)`, on the caller's stack.
    @usableFromInline var update: UnsafeRawPointer?
    /// op(B) packed by `gemmPackB`.
    @usableFromInline var packedB: UnsafeRawPointer?

    @usableFromInline
    init(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafeRawPointer, lda: Int,
         b: UnsafeRawPointer, ldb: Int, c: UnsafeMutableRawPointer, ldc: Int, accumulate: Bool,
         bias: UnsafeRawPointer?, activation: ActivationFunction, worker: Int) {
        (self.transA, self.transB, self.m, self.n, self.k) = (transA, transB, m, n, k)
        (self.a, self.lda, self.b, self.ldb, self.c, self.ldc) = (a, lda, b, ldb, c, ldc)
        (self.accumulate, self.bias, self.activation, self.worker) = (accumulate, bias, activation, worker)
        self.update = nil
        self.packedB = nil
    }
}

/// Empty and tiny products (m·n·k ≤ `gemmTinyThreshold`, or k == 0) in plain loops on the calling
/// thread, before any kernel is chosen (the XOR network's step is mostly the cost of reaching them),
/// with their SGD step when there is one; returns false for the others.
@inline(__always)
func gemmIfTiny<T: KernelScalar>(_: T.Type, _ call: GEMMCall) -> Bool {
    if call.m <= 0 || call.n <= 0 { return true }
    guard call.k == 0 || call.m * call.n * call.k <= gemmTinyThreshold else { return false }
    gemmReference(GEMMArgs<T>(call), rows: 0..<call.m, cols: 0..<call.n)
    return true
}

/// f32 entry point.
@usableFromInline
func gemmFloat(_ call: GEMMCall, _ context: GEMMContext) {
    if gemmIfTiny(Float.self, call) { return }
    if usesWideKernel(n: call.n, context) {
        gemmTyped(GEMMKernelF32Wide.self, GEMMArgs(call), context, call.worker)
    } else {
        gemmTyped(GEMMKernelF32.self, GEMMArgs(call), context, call.worker)
    }
}

/// Whether an f32 product with n columns runs on the 512-bit kernel: where the context allows it,
/// and the 32-column tiles waste no more columns than 16-column ones (n % 32 is 0 or above 16), or
/// the waste is small (n ≥ 256). A function of n only, so a B packed beforehand has the layout its
/// products read.
@inline(__always) func usesWideKernel(n: Int, _ context: GEMMContext) -> Bool {
    context.wideKernels && (n % 32 == 0 || n % 32 > 16 || n >= 256)
}

/// f64 entry point.
@usableFromInline
func gemmDouble(_ call: GEMMCall, _ context: GEMMContext) {
    if gemmIfTiny(Double.self, call) { return }
    gemmTyped(GEMMKernelF64.self, GEMMArgs(call), context, call.worker)
}

/// Any other scalar type (not used by nnc): plain loops.
@usableFromInline
func gemmGeneric<T: KernelScalar>(_: T.Type, _ call: GEMMCall) {
    let g = GEMMArgs<T>(call)
    if g.m <= 0 || g.n <= 0 { return }
    gemmReference(g, rows: 0..<g.m, cols: 0..<g.n)
}

/// All the arguments of one GEMM call.
struct GEMMArgs<T: KernelScalar> {
    var transA: Bool, transB: Bool
    var m: Int, n: Int, k: Int
    var a: UnsafePointer<T>, lda: Int
    var b: UnsafePointer<T>, ldb: Int
    var c: UnsafeMutablePointer<T>, ldc: Int
    var accumulate: Bool
    var bias: UnsafePointer<T>?
    var activation: ActivationFunction
    /// An SGD step on a parameter laid out like C (leading dimension ldc), from the final C.
    var update: UnsafePointer<SGDStep<T>>?
    /// op(B), packed whole by `gemmPackB`.
    var packedB: UnsafePointer<T>? = nil

    /// The activation is relu and is applied by the vector store.
    var reluInKernel: Bool { activation == .relu }

    /// Part of the epilogue the vector store does not do: a non-relu, non-identity activation.
    var needsScalarPass: Bool { !(activation == .identity || activation == .relu) }

    /// The full epilogue for one element, given the (k-summed) product value.
    @inline(__always)
    func finish(_ product: T, _ i: Int, _ j: Int, addC: Bool) -> T {
        var y = product
        if addC { y += c[i * ldc + j] }
        if let bias { y += bias[j] }
        return activation.apply(y)
    }
}

extension GEMMArgs {
    /// The typed view of an untyped call.
    init(_ call: GEMMCall) {
        self.init(transA: call.transA, transB: call.transB, m: call.m, n: call.n, k: call.k,
                  a: call.a.assumingMemoryBound(to: T.self), lda: call.lda,
                  b: call.b.assumingMemoryBound(to: T.self), ldb: call.ldb,
                  c: call.c.assumingMemoryBound(to: T.self), ldc: call.ldc,
                  accumulate: call.accumulate, bias: call.bias?.assumingMemoryBound(to: T.self),
                  activation: call.activation,
                  update: call.update?.assumingMemoryBound(to: SGDStep<T>.self),
                  packedB: call.packedB?.assumingMemoryBound(to: T.self))
    }

    /// The SGD step on rows × cols of the parameter, from the finished gradient in C.
    @inline(__always)
    func applyUpdate(rows: Range<Int>, cols: Range<Int>) {
        guard let update = update?.pointee else { return }
        for i in rows {
            update.apply(gradient: UnsafePointer(c + i * ldc + cols.lowerBound), at: i * ldc + cols.lowerBound, count: cols.count)
        }
    }
}

/// The vectors the kernels compute in, for `nnc --version` and the benchmarks: the f32 products in
/// 512-bit vectors where the build's target has AVX-512 (release builds are -march=native), else in
/// 256-bit ones, which the target runs natively with AVX2/FMA or as two 128-bit halves without (a
/// debug build); the processor's widest vectors beside them.
public var kernelVectorDescription: String {
    let build = Int(nnc_build_vector_bits())
    let target = build >= 512 ? "AVX-512" : build == 256 ? "AVX2/FMA" : "SSE"
    let processor = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)).map {
        $0.contains(" avx512f") ? "AVX-512" : $0.contains(" avx2") ? "AVX2" : "SSE"
    } ?? "unknown"
    return "kernels in \(min(build, 512))-bit vectors (\(target) build target), processor with \(processor)"
}

/// Below this many multiply-adds, a plain loop beats packing.
let gemmTinyThreshold = 512
/// From this many multiply-adds on, worker: nil splits the work over the context's threads.
let gemmParallelThreshold = 1 << 16
/// Up to this many rows of C, a transposed B is used through dot products instead of packing.
let gemmDotMaxRows = 2

/// Straightforward loops over a block of C (tiny sizes, k == 0, and unknown scalar types).
@inline(__always)
func gemmReference<T: KernelScalar>(_ g: GEMMArgs<T>, rows: Range<Int>, cols: Range<Int>) {
    let (aRow, aCol) = g.transA ? (1, g.lda) : (g.lda, 1)
    let (bRow, bCol) = g.transB ? (1, g.ldb) : (g.ldb, 1)
    for i in rows {
        let ai = g.a + i * aRow
        for j in cols {
            let bj = g.b + j * bCol
            var s: T = 0
            var p = 0
            while p < g.k {
                s += ai[p * aCol] * bj[p * bRow]
                p += 1
            }
            g.c[i * g.ldc + j] = g.finish(s, i, j, addC: g.accumulate)
        }
        g.applyUpdate(rows: i..<(i + 1), cols: cols)
    }
}

/// Entry point specialised per micro-kernel (f32 / f64), for products past `gemmIfTiny`.
@inline(__always)
func gemmTyped<K: GEMMKernel>(_ kernel: K.Type, _ g: GEMMArgs<K.Scalar>, _ context: GEMMContext, _ worker: Int) {
    let m = g.m, n = g.n, k = g.k
    let work = m * n * k
    let threads = context.threads
    // One row (batch-1 inference) against a prepacked B: a matrix-vector product. (A transposed B
    // and a tiny product keep the paths above, whose sums are in another order.)
    if m == 1, let packedB = g.packedB, g.update == nil, !g.transA, !g.transB {
        gemvPackedB(K.self, g, packedB, context, worker: worker)
        return
    }
    if worker >= 0 {
        let w = min(max(worker, 0), threads - 1)
        gemmBlocked(K.self, g, rows: 0..<m, cols: 0..<n, scratch: context.scratch[w])
        return
    }
    if let packedB = g.packedB, !(g.transB && m <= gemmDotMaxRows), gemmPrepackedB(K.self, g, packedB, context) {
        return
    }
    let tilesM = (m + K.mr - 1) / K.mr
    let tilesN = (n + K.nr - 1) / K.nr
    if threads == 1 || work < gemmParallelThreshold || max(tilesM, tilesN) < 2 {
        gemmBlocked(K.self, g, rows: 0..<m, cols: 0..<n, scratch: context.scratch[0])
        return
    }
    if work >= context.sharedPackMinWork && tilesM >= 2 * threads && gemmParallelRows(K.self, g, context) {
        return
    }
    // One contiguous block of columns (or rows) per worker, each packing its own operands: one
    // synchronisation only, best for medium sizes.
    // Split the side that leaves each worker less to pack: its share of A plus all of B (rows), or
    // all of A plus its share of B (columns).
    let parts = min(threads, max(tilesM, tilesN))
    let packRows = m * k / parts + k * n, packColumns = m * k + k * n / parts
    let splitColumns = tilesN >= parts && (tilesM < parts || packColumns <= packRows)
    if splitColumns && gemmParallelColumnsSharedA(K.self, g, context, parts: parts) { return }
    typealias Split = (GEMMArgs<K.Scalar>, GEMMContext, Int, Bool, Int)
    let split: Split = (g, context, parts, splitColumns, tilesN)
    context.parallelFor(parts, sharing: split) { shared, part, w in
        let (g, context, parts, splitColumns, tilesN) = shared.assumingMemoryBound(to: Split.self).pointee
        let m = g.m, n = g.n
        if splitColumns {
            let t = WorkerPool.range(tilesN, worker: part, of: parts)
            let cols = (t.lowerBound * K.nr)..<min(n, t.upperBound * K.nr)
            gemmBlocked(K.self, g, rows: 0..<m, cols: cols, scratch: context.scratch[w])
        } else {
            gemmBlocked(K.self, g, rows: gemmRowShare(m, part: part, of: parts), cols: 0..<n, scratch: context.scratch[w])
        }
    }
}

/// A split by columns in which every worker would pack all of A (few rows, long k: the MLP's first
/// layer, 128 × 784): the workers pack A once, together, into the shared buffer (one synchronisation),
/// then each computes its columns from it, packing only its share of B. Only for A within one block
/// of rows (m ≤ mc) and large enough to repay the synchronisation; returns false (nothing done)
/// otherwise. (Measured on 128 × 256 × 784 with bias and relu: 322 → 311 µs; the MLP step 0.901 → 0.886 ms.)
func gemmParallelColumnsSharedA<K: GEMMKernel>(_ kernel: K.Type, _ g: GEMMArgs<K.Scalar>, _ context: GEMMContext, parts: Int) -> Bool {
    typealias T = K.Scalar
    let MR = K.mr, m = g.m, k = g.k
    let mPad = (m + MR - 1) / MR * MR
    guard m <= K.mcBlock, m * k >= gemmSharedAMinimum, mPad * k <= GEMMContext.sharedPackBytes / MemoryLayout<T>.stride else { return false }
    let packA = context.sharedPackB.assumingMemoryBound(to: T.self)
    typealias Job = (GEMMArgs<T>, GEMMContext, Int, UnsafeMutablePointer<T>)
    let job: Job = (g, context, parts, packA)
    // Each k block of A packed as the macro-kernel packs it, at offset p0·mPad; the workers take turns
    // over the k blocks.
    let KC = kBlockDepth(k, K.kcBlock), blocks = (k + KC - 1) / KC
    context.parallelFor(blocks, sharing: job) { shared, block, _ in
        let (g, _, _, packA) = shared.assumingMemoryBound(to: Job.self).pointee
        let KC = kBlockDepth(g.k, K.kcBlock), p0 = block * KC
        let mPad = (g.m + K.mr - 1) / K.mr * K.mr
        packABlock(g, K.mr, i0: 0, mc: g.m, p0: p0, kc: min(KC, g.k - p0), dst: packA + p0 * mPad)
    }
    context.parallelFor(parts, sharing: job) { shared, part, w in
        let (g, context, parts, packA) = shared.assumingMemoryBound(to: Job.self).pointee
        let tilesN = (g.n + K.nr - 1) / K.nr
        let t = WorkerPool.range(tilesN, worker: part, of: parts)
        let cols = (t.lowerBound * K.nr)..<min(g.n, t.upperBound * K.nr)
        gemmBlocked(K.self, g, rows: 0..<g.m, cols: cols, scratch: context.scratch[w], prepackedA: UnsafePointer(packA))
    }
    return true
}

/// One row of C against a whole prepacked B (batch-1 inference: a matrix-vector product). The packed
/// micro-panels are read in place, four at a time; each column is summed as the tile sums it (in
/// order over p within a k block, the blocks added to C in turn, then bias and activation), so a row
/// comes out exactly as it would in a batch. Split by panels over the threads only when B is large
/// enough to repay waking them.
func gemvPackedB<K: GEMMKernel>(_ kernel: K.Type, _ g: GEMMArgs<K.Scalar>, _ packedB: UnsafePointer<K.Scalar>,
                                _ context: GEMMContext, worker: Int) {
    let panels = (g.n + K.nr - 1) / K.nr
    let parts = worker < 0 && g.n * g.k >= gemvParallelThreshold ? min(context.threads, panels) : 1
    if parts == 1 {
        gemvPanels(K.self, g, packedB, panels: 0..<panels, scratch: context.scratch[max(0, min(worker, context.threads - 1))])
        return
    }
    typealias Job = (GEMMArgs<K.Scalar>, UnsafePointer<K.Scalar>, GEMMContext, Int, Int)
    let job: Job = (g, packedB, context, panels, parts)
    context.parallelFor(parts, sharing: job) { shared, part, w in
        let (g, packedB, context, panels, parts) = shared.assumingMemoryBound(to: Job.self).pointee
        gemvPanels(K.self, g, packedB, panels: WorkerPool.range(panels, worker: part, of: parts), scratch: context.scratch[w])
    }
}

/// From this many multiply-adds on, a matrix-vector product is split over the threads (measured on
/// the batch-1 MLP: its 784 × 256 layer gains from two cores, its 256 × 128 one loses).
let gemvParallelThreshold = 1 << 17

/// The NR-column panels `panels` of one row of C, up to four at a time (see `gemvPackedB`).
func gemvPanels<K: GEMMKernel>(_ kernel: K.Type, _ g: GEMMArgs<K.Scalar>, _ packedB: UnsafePointer<K.Scalar>,
                               panels: Range<Int>, scratch: GEMMScratch) {
    typealias T = K.Scalar
    let NR = K.nr, NC = K.ncBlock, k = g.k, KC = kBlockDepth(k, K.kcBlock)
    let out = scratch.tile.assumingMemoryBound(to: T.self)
    let relu = g.reluInKernel
    var panel = panels.lowerBound
    while panel < panels.upperBound {
        // A group of panels within the range and within one block of NC columns.
        let j0 = panel * NR
        let jc = j0 / NC * NC
        let ncPad = (min(NC, g.n - jc) + NR - 1) / NR * NR
        let local = (j0 - jc) / NR
        let count = min(4, panels.upperBound - panel, ncPad / NR - local)
        panel += count
        var pc = 0
        while pc < k {
            let kc = min(KC, k - pc)
            let block = packedB + jc * k + pc * ncPad + local * NR * kc
            // Missing panels (past the group) repeat the first: computed, not stored.
            if count <= 2 {
                K.rowTimesTwoPanels(kc, g.a + pc, block, count > 1 ? block + NR * kc : block, out)
            } else {
                K.rowTimesFourPanels(kc, g.a + pc, block, block + NR * kc, block + 2 * NR * kc, count > 3 ? block + 3 * NR * kc : block, out)
            }
            let first = pc == 0, last = pc + kc == k
            for q in 0..<count {
                let j = j0 + q * NR
                for jj in 0..<min(NR, g.n - j) {
                    var y = out[q * NR + jj]
                    if g.accumulate || !first { y += g.c[j + jj] }
                    if last {
                        if let bias = g.bias { y += bias[j + jj] }
                        y = relu ? (y > 0 ? y : 0) : g.activation.apply(y)
                    }
                    g.c[j + jj] = y
                }
            }
            pc += kc
        }
    }
}

/// From this many elements of A on, a column split packs A once, shared (gemmParallelColumnsSharedA).
let gemmSharedAMinimum = 1 << 15

/// Large multi-threaded GEMM, split by rows of C, with B packed once into a shared buffer, as
/// OpenBLAS does it: for each k block, each worker packs its own share of B's panels and computes its
/// rows with them while they are in its cache, then goes on to the other workers' shares, waiting
/// only for a share not yet packed. No barrier between packing and computing, and no operand packed
/// twice. A share still untouched when a worker needs it is packed by that worker (so a job whose
/// parts run one after another on one thread cannot wait for itself). Returns false (nothing done)
/// when the shared buffer cannot hold a useful block.
func gemmParallelRows<K: GEMMKernel>(_ kernel: K.Type, _ g: GEMMArgs<K.Scalar>, _ context: GEMMContext) -> Bool {
    typealias T = K.Scalar
    // Widest block of columns whose k packed rows fit the shared buffer.
    let capacity = GEMMContext.sharedPackBytes / MemoryLayout<T>.stride
    let ncMax = min(K.ncBlock, capacity / g.k / K.nr * K.nr)
    let KC = kBlockDepth(g.k, K.kcBlock), kBlocks = (g.k + KC - 1) / KC
    if ncMax < 8 * K.nr || context.threads * kBlocks > GEMMContext.packFlagCount { return false }
    gemmRowsOverPackedB(K.self, g, context, parts: context.threads, ncMax: ncMax, prepacked: nil)
    return true
}

/// GEMM with op(B) packed beforehand (`gemm(packedB:)`): split by rows over the threads when large
/// enough (each worker packs only its rows of A), the packed blocks read in place. Returns false
/// (nothing done) for a product worth threads but with too few rows to split (the plain paths
/// split those by columns).
func gemmPrepackedB<K: GEMMKernel>(_ kernel: K.Type, _ g: GEMMArgs<K.Scalar>, _ packedB: UnsafePointer<K.Scalar>,
                                   _ context: GEMMContext) -> Bool {
    let tilesM = (g.m + K.mr - 1) / K.mr
    let threaded = context.threads > 1 && g.m * g.n * g.k >= gemmParallelThreshold
    if threaded && tilesM < 2 * context.threads { return false }
    gemmRowsOverPackedB(K.self, g, context, parts: threaded ? context.threads : 1, ncMax: K.ncBlock, prepacked: packedB)
    return true
}

/// The rows of C split into `parts`, each computed against all of B packed in blocks of ncMax
/// columns (the layout of `gemmPackB`): either `prepacked`, or packed into the context's shared
/// buffer as the workers go (see `gemmParallelRows`).
func gemmRowsOverPackedB<K: GEMMKernel>(_ kernel: K.Type, _ g: GEMMArgs<K.Scalar>, _ context: GEMMContext, parts: Int,
                                        ncMax: Int, prepacked: UnsafePointer<K.Scalar>?) {
    typealias T = K.Scalar
    let NR = K.nr
    var jc = 0
    while jc < g.n {
        let nc = min(ncMax, g.n - jc)
        let panels = (nc + NR - 1) / NR
        let ncPad = panels * NR
        // Prepacked: this block of columns in place, all packed. Else the shared buffer, to be packed.
        let packB = prepacked.map { UnsafeMutablePointer(mutating: $0 + jc * g.k) }
            ?? context.sharedPackB.assumingMemoryBound(to: T.self)
        var sharing: SharedPacking? = nil
        if prepacked == nil {
            context.packGeneration += 2
            sharing = SharedPacking(flags: context.packFlags, generation: context.packGeneration)
        }
        typealias Block = (GEMMArgs<T>, GEMMContext, Int, Int, Int, Int, Int, UnsafeMutablePointer<T>, SharedPacking?)
        let block: Block = (g, context, parts, panels, jc, nc, ncPad, packB, sharing)
        context.parallelFor(parts, sharing: block) { shared, part, w in
            let (g, context, parts, panels, jc, nc, ncPad, packB, sharing) = shared.assumingMemoryBound(to: Block.self).pointee
            let MR = K.mr, NR = K.nr, k = g.k, KC = kBlockDepth(k, K.kcBlock)
            let rows = gemmRowShare(g.m, part: part, of: parts)
            if rows.isEmpty { return }
            let scratch = context.scratch[w]
            let packA = scratch.packA.assumingMemoryBound(to: T.self)
            var pc = 0, kBlock = 0
            while pc < k {
                let kc = min(KC, k - pc)
                let packedK = packB + pc * ncPad
                var ic = rows.lowerBound
                while ic < rows.upperBound {
                    let mc = min(K.mcBlock, rows.upperBound - ic)
                    packABlock(g, MR, i0: ic, mc: mc, p0: pc, kc: kc, dst: packA)
                    // This worker's share of the panels first, then the others' in turn.
                    for step in 0..<parts {
                        let owner = (part + step) % parts
                        let share = WorkerPool.range(panels, worker: owner, of: parts)
                        if share.isEmpty { continue }
                        let j0 = share.lowerBound * NR
                        let cols = min(nc, share.upperBound * NR) - j0
                        sharing?.ensure(kBlock * parts + owner) {
                            packBBlock(g, NR, p0: pc, kc: kc, j0: jc + j0, nc: cols, dst: packedK + j0 * kc)
                        }
                        gemmMacroBlock(K.self, g, rows: ic..<(ic + mc), jc: jc + j0, nc: cols, pc: pc, kc: kc,
                                       packB: packedK + j0 * kc, directB: false, scratch: scratch, packedA: UnsafePointer(packA))
                    }
                    ic += mc
                }
                pc += KC
                kBlock += 1
            }
        }
        jc += nc
    }
}

/// The states of the parts of a shared packed B in one call: a flag below `generation` means not
/// packed, `generation` being packed, `generation + 1` packed. Raising the generation by two for each
/// call resets them all at once.
struct SharedPacking {
    let flags: UnsafeMutablePointer<Atomic<Int>>
    let generation: Int

    /// Runs pack() if no worker has claimed part `index` yet; otherwise waits until it is packed.
    @inline(__always)
    func ensure(_ index: Int, _ pack: () -> Void) {
        let flag = flags + index
        let state = flag.pointee.load(ordering: .relaxed)
        if state < generation
            && flag.pointee.compareExchange(expected: state, desired: generation, ordering: .acquiring).exchanged {
            pack()
            flag.pointee.store(generation + 1, ordering: .releasing)
            return
        }
        while flag.pointee.load(ordering: .acquiring) != generation + 1 { nnc_pause() }
    }
}

/// The packed form of a whole op(B) (k × n), for `gemm(packedB:)`: blocks of up to ncBlock columns,
/// each its k blocks (of `kBlockDepth`) in turn, each k block its NR-column micro-panels, the last
/// one zero-padded: the layout `gemmRowsOverPackedB` reads (and packs the shared blocks in).
public func gemmPackedBCount<T: KernelScalar>(_: T.Type, k: Int, n: Int, context: GEMMContext) -> Int {
    if T.self == Float.self {
        return usesWideKernel(n: n, context) ? packedBCount(GEMMKernelF32Wide.self, k: k, n: n) : packedBCount(GEMMKernelF32.self, k: k, n: n)
    }
    if T.self == Double.self { return packedBCount(GEMMKernelF64.self, k: k, n: n) }
    return 0
}

func packedBCount<K: GEMMKernel>(_: K.Type, k: Int, n: Int) -> Int {
    let NR = K.nr, NC = K.ncBlock
    let fullBlocks = n / NC, rest = n - fullBlocks * NC
    return k * (fullBlocks * NC + (rest + NR - 1) / NR * NR)
}

/// Packs op(B) (k × n; B stored n × k when transB) into `packed` (`gemmPackedBCount` elements), for
/// products on `context`.
public func gemmPackB<T: KernelScalar>(transB: Bool, k: Int, n: Int, b: UnsafePointer<T>, ldb: Int, into packed: UnsafeMutablePointer<T>,
                                       context: GEMMContext) {
    if T.self == Float.self && usesWideKernel(n: n, context) {
        packWholeB(GEMMKernelF32Wide.self, transB: transB, k: k, n: n, b: UnsafeRawPointer(b), ldb: ldb, into: UnsafeMutableRawPointer(packed))
    } else if T.self == Float.self {
        packWholeB(GEMMKernelF32.self, transB: transB, k: k, n: n, b: UnsafeRawPointer(b), ldb: ldb, into: UnsafeMutableRawPointer(packed))
    } else if T.self == Double.self {
        packWholeB(GEMMKernelF64.self, transB: transB, k: k, n: n, b: UnsafeRawPointer(b), ldb: ldb, into: UnsafeMutableRawPointer(packed))
    }
}

func packWholeB<K: GEMMKernel>(_: K.Type, transB: Bool, k: Int, n: Int, b: UnsafeRawPointer, ldb: Int, into packed: UnsafeMutableRawPointer) {
    typealias T = K.Scalar
    let NR = K.nr, NC = K.ncBlock, KC = kBlockDepth(k, K.kcBlock)
    let dst = packed.assumingMemoryBound(to: T.self)
    // Only B's fields are read by the packing.
    let g = GEMMArgs<T>(transA: false, transB: transB, m: 0, n: n, k: k, a: b.assumingMemoryBound(to: T.self), lda: 0,
                        b: b.assumingMemoryBound(to: T.self), ldb: ldb, c: UnsafeMutablePointer(mutating: b.assumingMemoryBound(to: T.self)),
                        ldc: 0, accumulate: false, bias: nil, activation: .identity,
                        update: nil)
    var jc = 0
    while jc < n {
        let nc = min(NC, n - jc)
        let ncPad = (nc + NR - 1) / NR * NR
        let block = dst + jc * k
        var pc = 0
        while pc < k {
            let kc = min(KC, k - pc)
            packBBlock(g, NR, p0: pc, kc: kc, j0: jc, nc: nc, dst: block + pc * ncPad)
            pc += KC
        }
        jc += NC
    }
}

/// A worker's rows of C in a split by rows: equal shares, not whole tiles (1024 rows in two are 85 tiles
/// of six and one of two each, where whole tiles would give one worker 86, the other 85 with a short
/// last one, and the first would set the pace).
@inline(__always) func gemmRowShare(_ m: Int, part: Int, of parts: Int) -> Range<Int> {
    WorkerPool.range(m, worker: part, of: parts)
}

/// The depth of the k blocks: k split into equal blocks of at most `limit` (a multiple of 8), so no
/// block is a thin remainder (k = 784 with f32's limit 384 gives 264, 264, 256 rather than 384, 384,
/// 16: every block re-reads and re-writes C). Depends on k only, so results do not depend on threads.
@inline(__always) func kBlockDepth(_ k: Int, _ limit: Int) -> Int {
    let blocks = max(1, (k + limit - 1) / limit)
    return min(limit, ((k + blocks - 1) / blocks + 7) / 8 * 8)
}

/// Single-threaded blocked GEMM over the block rows×cols of C.
func gemmBlocked<K: GEMMKernel>(
    _ kernel: K.Type, _ g: GEMMArgs<K.Scalar>, rows: Range<Int>, cols: Range<Int>, scratch: GEMMScratch,
    prepackedA: UnsafePointer<K.Scalar>? = nil
) {
    typealias T = K.Scalar
    let MR = K.mr, NR = K.nr, KC = kBlockDepth(g.k, K.kcBlock), NC = K.ncBlock
    let packB = scratch.packB.assumingMemoryBound(to: T.self)
    let k = g.k
    // A few rows times a transposed B: dot products of contiguous rows, no packing of B.
    if g.transB && g.m <= gemmDotMaxRows && k * MemoryLayout<T>.stride <= GEMMScratch.packABytes {
        gemmDotRows(K.self, g, rows: rows, cols: cols, scratch: scratch)
        return
    }
    // B is read in place (row stride ldb) when it is not transposed and too few rows of C reuse it
    // to pay for packing; only a ragged last panel is packed then.
    let directB = rows.count <= 2 * MR && !g.transB
    var jc = cols.lowerBound
    while jc < cols.upperBound {
        let nc = min(NC, cols.upperBound - jc)
        var pc = 0
        while pc < k {
            let kc = min(KC, k - pc)
            if !directB { packBBlock(g, NR, p0: pc, kc: kc, j0: jc, nc: nc, dst: packB) }
            gemmMacroBlock(K.self, g, rows: rows, jc: jc, nc: nc, pc: pc, kc: kc,
                           packB: packB, directB: directB, scratch: scratch,
                           packedA: prepackedA.map { $0 + pc * ((g.m + MR - 1) / MR * MR) })
            pc += KC
        }
        jc += NC
    }
}

/// Rows of C (at most gemmDotMaxRows) when B is transposed: C[i, j] = dot(op(A) row i, B row j).
func gemmDotRows<K: GEMMKernel>(
    _ kernel: K.Type, _ g: GEMMArgs<K.Scalar>, rows: Range<Int>, cols: Range<Int>, scratch: GEMMScratch
) {
    typealias T = K.Scalar
    let k = g.k
    let out = scratch.tile.assumingMemoryBound(to: T.self)
    for i in rows {
        // op(A) row i, contiguous (copied when A is transposed).
        var x = g.a + i * g.lda
        if g.transA {
            let row = scratch.packA.assumingMemoryBound(to: T.self)
            for p in 0..<k { row[p] = g.a[p * g.lda + i] }
            x = UnsafePointer(row)
        }
        var j = cols.lowerBound
        while j < cols.upperBound {
            let cnt = min(4, cols.upperBound - j)
            if cnt == 4 {
                K.dot4(k, x, g.b + j * g.ldb, g.ldb, out)
            } else {
                for q in 0..<cnt {
                    let y = g.b + (j + q) * g.ldb
                    var s: T = 0
                    for p in 0..<k { s += x[p] * y[p] }
                    out[q] = s
                }
            }
            for q in 0..<cnt { g.c[i * g.ldc + j + q] = g.finish(out[q], i, j + q, addC: g.accumulate) }
            j += 4
        }
        g.applyUpdate(rows: i..<(i + 1), cols: cols)
    }
}

/// The rows × [jc, jc+nc) block of C for the k block [pc, pc+kc), with B packed in packB (or, when
/// directB, read in place).
@inline(__always)
func gemmMacroBlock<K: GEMMKernel>(
    _ kernel: K.Type, _ g: GEMMArgs<K.Scalar>, rows: Range<Int>, jc: Int, nc: Int, pc: Int, kc: Int,
    packB: UnsafeMutablePointer<K.Scalar>, directB: Bool, scratch: GEMMScratch, packedA: UnsafePointer<K.Scalar>? = nil
) {
    typealias T = K.Scalar
    let MR = K.mr, NR = K.nr, MC = K.mcBlock
    let packA = scratch.packA.assumingMemoryBound(to: T.self)
    let tile = scratch.tile.assumingMemoryBound(to: T.self)
    let relu = g.reluInKernel
    let scalarPass = g.needsScalarPass
    let last = pc + kc == g.k
    let addC = g.accumulate || pc > 0
    var ic = rows.lowerBound
    while ic < rows.upperBound {
        let mc = min(MC, rows.upperBound - ic)
        // (A already packed: the whole of it, rows 0..<m, a single block of rows.)
        let blockA = packedA ?? UnsafePointer(packA)
        if packedA == nil { packABlock(g, MR, i0: ic, mc: mc, p0: pc, kc: kc, dst: packA) }
        var jr = 0
        while jr < nc {
            let nr = min(NR, nc - jr)
            let j = jc + jr
            var pb = UnsafePointer(packB + jr * kc)
            var bStride = NR
            if directB {
                if nr == NR {
                    pb = g.b + pc * g.ldb + j
                    bStride = g.ldb
                } else {
                    packBBlock(g, NR, p0: pc, kc: kc, j0: j, nc: nr, dst: packB)
                    pb = UnsafePointer(packB)
                }
            }
            let biasJ: UnsafePointer<T>? = last ? g.bias.map { $0 + j } : nil
            var ir = 0
            while ir < mc {
                let mr = min(MR, mc - ir)
                let i = ic + ir
                let pa = blockA + ir * kc
                let cp = g.c + i * g.ldc + j
                if mr == MR && nr == NR {
                    K.kernel(kc, pa, pb, bStride, cp, g.ldc, addC, biasJ, last && relu)
                    if last && scalarPass {
                        for r in 0..<MR {
                            let row = cp + r * g.ldc
                            applyActivation(g.activation, row, row, NR)
                        }
                    }
                } else if nr == NR {
                    // A tile cut short by the last rows: only those rows, computed and stored.
                    K.kernel(rows: mr, kc, pa, pb, bStride, cp, g.ldc, addC, biasJ, last && relu)
                    if last && scalarPass {
                        for r in 0..<mr {
                            let row = cp + r * g.ldc
                            applyActivation(g.activation, row, row, NR)
                        }
                    }
                } else {
                    K.kernel(rows: mr, kc, pa, pb, bStride, tile, NR, false, nil, false)
                    for r in 0..<mr {
                        let row = cp + r * g.ldc
                        let t = tile + r * NR
                        if last {
                            for jj in 0..<nr { row[jj] = g.finish(t[jj], i + r, j + jj, addC: addC) }
                        } else if addC {
                            for jj in 0..<nr { row[jj] += t[jj] }
                        } else {
                            for jj in 0..<nr { row[jj] = t[jj] }
                        }
                    }
                }
                ir += MR
            }
            jr += NR
        }
        // This block of C is final: its parameter step, while it is still in this core's L2.
        if last { g.applyUpdate(rows: ic..<(ic + mc), cols: jc..<(jc + nc)) }
        ic += MC
    }
}

/// Packs op(A)[i0..<i0+mc, p0..<p0+kc] into MR-row micro-panels: panel r holds, for each p, the MR
/// values of rows i0+r*MR..., zero-padded past mc.
@inline(__always)
func packABlock<T: KernelScalar>(
    _ g: GEMMArgs<T>, _ MR: Int, i0: Int, mc: Int, p0: Int, kc: Int, dst: UnsafeMutablePointer<T>
) {
    let lda = g.lda
    var i = 0
    while i < mc {
        let rowsHere = min(MR, mc - i)
        let d = dst + i * kc
        if T.self == Float.self && rowsHere == 6 && MR == 6 && (!g.transA || i0 + i + 8 <= g.m) {
            // f32 fast paths (the value of every element is unchanged, only copied faster).
            let a = UnsafeRawPointer(g.a).assumingMemoryBound(to: Float.self)
            let dst = UnsafeMutableRawPointer(d).assumingMemoryBound(to: Float.self)
            if g.transA {
                packA6TransposedF32(a + p0 * lda + i0 + i, lda: lda, kc: kc, dst: dst)
            } else {
                packA6F32(a + (i0 + i) * lda + p0, lda: lda, kc: kc, dst: dst)
            }
        } else if g.transA {
            // op(A)(i, p) = a[p * lda + i]: MR contiguous values per p.
            var src = g.a + p0 * lda + i0 + i
            if rowsHere == MR {
                for p in 0..<kc {
                    let dp = d + p * MR
                    for r in 0..<MR { dp[r] = src[r] }
                    src += lda
                }
            } else {
                for p in 0..<kc {
                    let dp = d + p * MR
                    for r in 0..<rowsHere { dp[r] = src[r] }
                    for r in rowsHere..<MR { dp[r] = 0 }
                    src += lda
                }
            }
        } else if rowsHere == MR && MR == 6 {
            // op(A)(i, p) = a[i * lda + p]: six row streams, contiguous stores.
            let r0 = g.a + (i0 + i) * lda + p0
            let r1 = r0 + lda, r2 = r1 + lda, r3 = r2 + lda, r4 = r3 + lda, r5 = r4 + lda
            var dp = d
            for p in 0..<kc {
                dp[0] = r0[p]; dp[1] = r1[p]; dp[2] = r2[p]
                dp[3] = r3[p]; dp[4] = r4[p]; dp[5] = r5[p]
                dp += 6
            }
        } else {
            // op(A)(i, p) = a[i * lda + p]: rows are contiguous in p.
            for r in 0..<rowsHere {
                let src = g.a + (i0 + i + r) * lda + p0
                for p in 0..<kc { d[p * MR + r] = src[p] }
            }
            if rowsHere < MR {
                for r in rowsHere..<MR {
                    for p in 0..<kc { d[p * MR + r] = 0 }
                }
            }
        }
        i += MR
    }
}

/// Packs op(B)[p0..<p0+kc, j0..<j0+nc] into NR-column micro-panels: panel q holds, for each p, the
/// NR values of columns j0+q*NR..., zero-padded past nc.
@inline(__always)
func packBBlock<T: KernelScalar>(
    _ g: GEMMArgs<T>, _ NR: Int, p0: Int, kc: Int, j0: Int, nc: Int, dst: UnsafeMutablePointer<T>
) {
    let ldb = g.ldb
    if !g.transB {
        // op(B)(p, j) = b[p * ldb + j]: four panels at a time, each row's 4·NR values read at once and
        // stored into four panels. (A sweep over whole rows stores into every panel, kc·NR values
        // apart, in turn: with kc = 256, panels 16 KB apart, they all fall in one L1 set, and the stores
        // miss. Measured on a 1024 × 1024 B with kc = 256: 361 µs by whole rows, 190 by four panels, 200 by two or eight.)
        let full = nc / NR
        let rest = nc - full * NR
        let group = 4
        var q0 = 0
        while q0 < full {
            let q1 = min(full, q0 + group)
            for p in 0..<kc {
                let src = g.b + (p0 + p) * ldb + j0
                let dp = dst + p * NR
                if p + 8 < kc {
                    let ahead = UnsafeRawPointer(src + 8 * ldb + q0 * NR)
                    for line in 0..<(q1 - q0) { nnc_prefetch(ahead + line * NR * MemoryLayout<T>.stride) }
                }
                if NR * MemoryLayout<T>.stride % 32 == 0 {
                    // A panel row is 64 or 128 bytes: 32-byte vector moves.
                    for q in q0..<q1 {
                        let from = UnsafeRawPointer(src + q * NR), to = UnsafeMutableRawPointer(dp + q * NR * kc)
                        for offset in stride(from: 0, to: NR * MemoryLayout<T>.stride, by: 32) {
                            to.storeBytes(of: from.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self), toByteOffset: offset, as: SIMD8<Float>.self)
                        }
                    }
                } else {
                    for q in q0..<q1 {
                        let sq = src + q * NR, dq = dp + q * NR * kc
                        for jj in 0..<NR { dq[jj] = sq[jj] }
                    }
                }
            }
            q0 = q1
        }
        if rest > 0 {
            for p in 0..<kc {
                let src = g.b + (p0 + p) * ldb + j0
                let dp = dst + p * NR + full * NR * kc
                let sq = src + full * NR
                for jj in 0..<rest { dp[jj] = sq[jj] }
                for jj in rest..<NR { dp[jj] = 0 }
            }
        }
        return
    }
    // op(B)(p, j) = b[j * ldb + p]: columns of op(B) are contiguous in p.
    var j = 0
    while j < nc {
        let colsHere = min(NR, nc - j)
        let d = dst + j * kc
        if T.self == Float.self {
            let b = UnsafeRawPointer(g.b).assumingMemoryBound(to: Float.self)
            packBTransposedF32(b + (j0 + j) * ldb + p0, ldb: ldb, kc: kc, columns: colsHere, nr: NR,
                               dst: UnsafeMutableRawPointer(d).assumingMemoryBound(to: Float.self))
            j += NR
            continue
        }
        for jj in 0..<colsHere {
            let src = g.b + (j0 + j + jj) * ldb + p0
            for p in 0..<kc { d[p * NR + jj] = src[p] }
        }
        if colsHere < NR {
            for jj in colsHere..<NR {
                for p in 0..<kc { d[p * NR + jj] = 0 }
            }
        }
        j += NR
    }
}

// MARK: - f32 packing with 8×8 transposes

typealias F8 = SIMD8<Float>

@inline(__always) func load8(_ p: UnsafePointer<Float>) -> F8 {
    UnsafeRawPointer(p).loadUnaligned(as: F8.self)
}

@inline(__always) func store8(_ v: F8, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: F8.self)
}

/// Transposes eight rows of eight lanes: element (r, c), at bit pattern rrrccc of the 64, moves to
/// cccrrr, a rotation by three bits, which three perfect unshuffles (even lanes of each pair of rows,
/// then odd lanes) perform.
@inline(__always) func transpose8x8(_ r: inout (F8, F8, F8, F8, F8, F8, F8, F8)) {
    @inline(__always) func unshuffle(_ a: F8, _ b: F8) -> (F8, F8) {
        let pair = SIMD16<Float>(lowHalf: a, highHalf: b)
        return (pair.evenHalf, pair.oddHalf)
    }
    for _ in 0..<3 {
        let (a0, a4) = unshuffle(r.0, r.1)
        let (a1, a5) = unshuffle(r.2, r.3)
        let (a2, a6) = unshuffle(r.4, r.5)
        let (a3, a7) = unshuffle(r.6, r.7)
        r = (a0, a1, a2, a3, a4, a5, a6, a7)
    }
}

/// dst[c * ldDst + r] = src[r * ldSrc + c] for r in 0..<rows, c in 0..<columns: whole 8×8 blocks
/// through `transpose8x8`, the ragged edges one by one.
func transposeF32(_ src: UnsafePointer<Float>, ldSrc: Int, rows: Int, columns: Int,
                  _ dst: UnsafeMutablePointer<Float>, ldDst: Int) {
    let fullRows = rows / 8 * 8, fullColumns = columns / 8 * 8
    for r0 in stride(from: 0, to: fullRows, by: 8) {
        for c0 in stride(from: 0, to: fullColumns, by: 8) {
            let q = src + r0 * ldSrc + c0
            var t = (load8(q), load8(q + ldSrc), load8(q + 2 * ldSrc), load8(q + 3 * ldSrc),
                     load8(q + 4 * ldSrc), load8(q + 5 * ldSrc), load8(q + 6 * ldSrc), load8(q + 7 * ldSrc))
            transpose8x8(&t)
            let e = dst + c0 * ldDst + r0
            store8(t.0, e); store8(t.1, e + ldDst); store8(t.2, e + 2 * ldDst); store8(t.3, e + 3 * ldDst)
            store8(t.4, e + 4 * ldDst); store8(t.5, e + 5 * ldDst); store8(t.6, e + 6 * ldDst); store8(t.7, e + 7 * ldDst)
        }
        for r in r0..<(r0 + 8) {
            for c in fullColumns..<columns { dst[c * ldDst + r] = src[r * ldSrc + c] }
        }
    }
    for r in fullRows..<rows {
        for c in 0..<columns { dst[c * ldDst + r] = src[r * ldSrc + c] }
    }
}

/// dst[p * nr + jj] = src[jj * ldb + p] for the first `columns` (≤ nr) rows jj of src and p in
/// 0..<kc (a transposed B panel), zero for jj ≥ columns.
private func packBTransposedF32(_ src: UnsafePointer<Float>, ldb: Int, kc: Int, columns: Int, nr: Int,
                               dst: UnsafeMutablePointer<Float>) {
    transposeF32(src, ldSrc: ldb, rows: columns, columns: kc, dst, ldDst: nr)
    if columns < nr {
        for p in 0..<kc { (dst + p * nr + columns).update(repeating: 0, count: nr - columns) }
    }
}

/// dst[p * 6 + r] = src[r * lda + p] for six rows r and p in 0..<kc (an A panel). Each group of eight
/// p is transposed (rows 6 and 7 repeat row 5) and stored as eight lanes per p, in increasing order,
/// so the two extra lanes land where the next p's store overwrites them. The panel's last p stores
/// six lanes only: nothing is written past the panel, which may be followed by another worker's
/// (the shared A of `gemmParallelColumnsSharedA` packs its k blocks in parallel, end to end).
private func packA6F32(_ src: UnsafePointer<Float>, lda: Int, kc: Int, dst: UnsafeMutablePointer<Float>) {
    let r5 = src + 5 * lda
    var p = 0
    while p + 8 <= kc {
        let q = src + p
        let last = load8(r5 + p)
        var t = (load8(q), load8(q + lda), load8(q + 2 * lda), load8(q + 3 * lda), load8(q + 4 * lda), last, last, last)
        transpose8x8(&t)
        let e = dst + p * 6
        store8(t.0, e); store8(t.1, e + 6); store8(t.2, e + 12); store8(t.3, e + 18)
        store8(t.4, e + 24); store8(t.5, e + 30); store8(t.6, e + 36)
        if p + 8 < kc {
            store8(t.7, e + 42)
        } else {
            UnsafeMutableRawPointer(e + 42).storeBytes(of: t.7.lowHalf, as: SIMD4<Float>.self)
            UnsafeMutableRawPointer(e + 46).storeBytes(of: SIMD2(t.7[4], t.7[5]), as: SIMD2<Float>.self)
        }
        p += 8
    }
    while p < kc {
        for r in 0..<6 { dst[p * 6 + r] = src[r * lda + p] }
        p += 1
    }
}

/// dst[p * 6 + r] = src[p * lda + r] for r in 0..<6 (a transposed A panel): eight lanes loaded and
/// stored per p, in increasing order (the caller checks the two extra lanes are inside A); the last
/// p one by one, so nothing is written past the panel.
private func packA6TransposedF32(_ src: UnsafePointer<Float>, lda: Int, kc: Int, dst: UnsafeMutablePointer<Float>) {
    if kc <= 0 { return }
    for p in 0..<(kc - 1) { store8(load8(src + p * lda), dst + p * 6) }
    let p = kc - 1
    for r in 0..<6 { dst[p * 6 + r] = src[p * lda + r] }
}

import Foundation

/// Reusable state for GEMM calls: per-worker packing buffers and persistent worker threads.
/// Create once (per interpreter) and reuse; calls must not allocate memory after warm-up.
public final class GEMMContext: @unchecked Sendable {
    public let threads: Int
    let pool: WorkerPool

    public init(threads: Int) {
        self.threads = max(1, threads)
        pool = WorkerPool(threads: self.threads)
    }

    deinit { pool.stop() }

    /// Runs body(i, worker) for every i in 0..<count, spread over the pool's threads (the calling
    /// thread takes part as worker 0); returns when all are done. worker is in 0..<threads and
    /// identifies the scratch buffers that thread may use. No allocation per call. Deterministic
    /// static partition (same count, same threads -> same i-to-worker assignment).
    public func parallelFor(_ count: Int, _ body: (_ index: Int, _ worker: Int) -> Void) {
        pool.run(count, body)
    }
}

/// C[m×n] = op(A)[m×k] · op(B)[k×n], row-major, with leading dimensions (row strides) lda/ldb/ldc.
/// op(A) = A (A stored m×k) or Aᵀ (A stored k×m) when transA; same for B (stored k×n, or n×k when transB).
/// Then, in the epilogue, per element in this order: += old C if accumulate; += bias[j]; y = activation(y);
/// and if gradientOutput != nil: C = C ⊙ gradientThrough.derivative(output: Y[i,j]) where Y is an m×n
/// matrix with leading dimension ldg (the backward pass: dZ = (dH·Wᵀ) ⊙ act'(H)).
/// worker == nil: may use all the context's threads above a size threshold.
/// worker == w: runs single-threaded on the calling thread using worker w's scratch (for calls made inside parallelFor).
/// m, n or k may be 0 (k == 0 gives C = epilogue(0)).
public func gemm<T: KernelScalar>(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
    a: UnsafePointer<T>, lda: Int,
    b: UnsafePointer<T>, ldb: Int,
    c: UnsafeMutablePointer<T>, ldc: Int,
    accumulate: Bool = false,
    bias: UnsafePointer<T>? = nil,
    activation: KernelActivation = .identity,
    gradientThrough: KernelActivation = .identity,
    gradientOutput: UnsafePointer<T>? = nil, ldg: Int = 0,
    context: GEMMContext, worker: Int? = nil
) {
    if m <= 0 || n <= 0 { return }
    let (aRow, aCol) = transA ? (1, lda) : (lda, 1)
    let (bRow, bCol) = transB ? (1, ldb) : (ldb, 1)
    let rows: (Int, Int) -> Void = { lo, hi in
        for i in lo..<hi {
            for j in 0..<n {
                var s: T = 0
                for p in 0..<k { s += a[i * aRow + p * aCol] * b[p * bRow + j * bCol] }
                if accumulate { s += c[i * ldc + j] }
                if let bias { s += bias[j] }
                s = activation.apply(s)
                if let g = gradientOutput { s *= gradientThrough.derivative(output: g[i * ldg + j]) }
                c[i * ldc + j] = s
            }
        }
    }
    let threads = context.threads
    if worker == nil && threads > 1 && m >= threads && m * n * k >= 1 << 16 {
        context.parallelFor(threads) { w, _ in
            let r = WorkerPool.range(m, worker: w, of: threads)
            rows(r.lowerBound, r.upperBound)
        }
    } else {
        rows(0, m)
    }
}

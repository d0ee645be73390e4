import Testing
@testable import Runtime
@Test func gemmSmoke() {
    let ctx = GEMMContext(threads: 2)
    let a: [Float] = [1, 2], b: [Float] = [1, 2, 3, 4, 5, 6]
    var c = [Float](repeating: 0, count: 3)
    gemm(transA: false, transB: false, m: 1, n: 3, k: 2, a: a, lda: 2, b: b, ldb: 3, c: &c, ldc: 3, context: ctx)
    #expect(c == [9, 12, 15])
}

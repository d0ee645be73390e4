@testable import Runtime

// libFuzzer harness: data files (CSV, IDX raw and gzipped, NPY, NPZ), the kind chosen by the first
// byte. Loading ends in a data set or an error, never a crash, and never takes more memory than the
// cap (-rss_limit_mb); an accepted set holds what it says: its sizes fit, its labels are classes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzData(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let names = ["d.csv", "d-idx3-ubyte", "d.npy", "d.npz", "d.csv.gz", "d-idx1-ubyte.gz"]
    let name = names[Int(data[0]) % names.count]
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let expectations = [DataExpectation(featureCount: 4, targets: .classLabels(classes: 3)),
                        DataExpectation(featureCount: 4, targets: .values(count: 2)),
                        DataExpectation(featureCount: 4, targets: .none)]
    for expecting in expectations {
        guard let splits = try? loadData(bytes: bytes, path: name, expecting: expecting) else { continue }
        for set in [splits.train, splits.test].compactMap({ $0 }) {
            precondition(set.featureCount == 4 && set.targetWidth == expecting.targetColumns, "sizes")
            if case .labels(let labels) = set.targets { precondition(labels.allSatisfy { (0..<3).contains($0) }, "labels") }
        }
    }
    return 0
}

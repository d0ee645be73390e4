import Foundation
import CPrefetch

/// A data set kept compact in memory: pixels stay bytes and are converted per batch.
public struct Dataset: Sendable {
    public enum Features: Sendable {
        /// value = byte * scale (IDX pixels: scale 1/255).
        case bytes([UInt8], scale: Double)
        case float32([Float])
        case float64([Double])

        /// Bytes per stored value.
        var elementBytes: Int {
            switch self {
            case .bytes: return 1
            case .float32: return 4
            case .float64: return 8
            }
        }

        /// The stored values as raw bytes.
        func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
            switch self {
            case .bytes(let a, _): return a.withUnsafeBytes(body)
            case .float32(let a): return a.withUnsafeBytes(body)
            case .float64(let a): return a.withUnsafeBytes(body)
            }
        }
    }

    public enum Targets: Sendable {
        case none
        /// `width` values per sample, row after row.
        case values([Double], width: Int)
        /// One class index per sample.
        case labels([Int32])
    }

    /// Number of samples.
    public let count: Int
    /// Elements per sample.
    public let featureCount: Int
    public let features: Features
    public let targets: Targets
    /// The path it came from (for messages).
    public let source: String

    /// Makes a data set; the arrays must hold `count` samples (`count * featureCount` features).
    public init(count: Int, featureCount: Int, features: Features, targets: Targets, source: String) {
        precondition(count >= 0 && featureCount >= 0, "Dataset: negative sizes")
        switch features {
        case .bytes(let a, _): precondition(a.count == count * featureCount, "Dataset: feature count mismatch")
        case .float32(let a): precondition(a.count == count * featureCount, "Dataset: feature count mismatch")
        case .float64(let a): precondition(a.count == count * featureCount, "Dataset: feature count mismatch")
        }
        switch targets {
        case .none: break
        case .values(let v, let w): precondition(w >= 0 && v.count == count * w, "Dataset: target count mismatch")
        case .labels(let l): precondition(l.count == count, "Dataset: label count mismatch")
        }
        // Batches gather rows from all over the set: huge pages spare a TLB miss per row.
        features.withUnsafeBytes { LargeBuffer.adviseHugePages($0) }
        self.count = count
        self.featureCount = featureCount
        self.features = features
        self.targets = targets
        self.source = source
    }

    /// Target elements per sample: `width` for values, 1 for labels, 0 for none.
    public var targetWidth: Int {
        switch targets {
        case .none: return 0
        case .values(_, let w): return w
        case .labels: return 1
        }
    }

    /// copyFeatures and copyTargets for one batch, its rows split over the context's threads (which
    /// are idle between steps). Allocates nothing.
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func copyBatch<T: KernelScalar>(_ indices: UnsafeBufferPointer<Int>, features: UnsafeMutablePointer<T>,
                                           targets: UnsafeMutablePointer<T>?, context: GEMMContext) {
        typealias Batch = (Dataset, UnsafeBufferPointer<Int>, UnsafeMutablePointer<T>, UnsafeMutablePointer<T>?, Int)
        let parts = indices.count >= 16 ? context.threads : 1
        if parts == 1 {
            // On this thread, without the shared tuple (a copy of the data set's references to retain
            // and release: a tenth of a tiny network's step).
            copyFeatures(indices, into: features)
            if let targets { copyTargets(indices, into: targets) }
            return
        }
        let batch: Batch = (self, indices, features, targets, parts)
        parallelFor(parts, on: context, sharing: batch) { shared, part, _ in
            let (data, indices, features, targets, parts) = shared.assumingMemoryBound(to: Batch.self).pointee
            let rows = WorkerPool.range(indices.count, worker: part, of: parts)
            let slice = UnsafeBufferPointer(rebasing: indices[rows])
            data.copyFeatures(slice, into: features + rows.lowerBound * data.featureCount)
            if let targets { data.copyTargets(slice, into: targets + rows.lowerBound * data.targetWidth) }
        }
    }

    /// Asks the CPU to start loading the feature rows of samples `indices` (a hint; out-of-range
    /// indices are skipped). A training loop calls it for the next batch before running a step: the
    /// rows, scattered over the data set, then arrive from main memory while the step computes, and
    /// the next copy finds them in cache.
    public func prefetchRows(_ indices: UnsafeBufferPointer<Int>) {
        let rowBytes = featureCount * features.elementBytes
        features.withUnsafeBytes { all in
            guard let base = all.baseAddress else { return }
            for idx in indices where idx >= 0 && idx < count { prefetchBytes(base + idx * rowBytes, rowBytes) }
        }
    }

    /// How many rows ahead of the one it converts a batch copy asks for (the rows are scattered over the
    /// data set, so each waits on main memory unless requested early).
    let prefetchDistance = 4

    /// Copies the features of samples indices[0..<indices.count] into dst (row after row, featureCount each), converting.
    public func copyFeatures<T: KernelScalar>(_ indices: UnsafeBufferPointer<Int>, into dst: UnsafeMutablePointer<T>) {
        // Dispatch to specialised copies (callers in other modules would otherwise run the unspecialised generic).
        if T.self == Float.self {
            copyFeaturesTyped(indices, into: UnsafeMutableRawPointer(dst).assumingMemoryBound(to: Float.self))
        } else if T.self == Double.self {
            copyFeaturesTyped(indices, into: UnsafeMutableRawPointer(dst).assumingMemoryBound(to: Double.self))
        } else {
            copyFeaturesTyped(indices, into: dst)
        }
    }

    private func copyFeaturesTyped<T: KernelScalar>(_ indices: UnsafeBufferPointer<Int>, into dst: UnsafeMutablePointer<T>) {
        let f = featureCount
        if f == 0 { return }
        switch features {
        case .bytes(let a, let scale):
            // One conversion table per call: value = byte * scale, computed in Double then rounded once to T.
            // When scale is 1/k for an integer k (1/255), divide by k, as NumPy code does (x / 255.0).
            let inverse = 1 / scale
            let divide = inverse.isFinite && inverse == inverse.rounded() && inverse != 0
            withUnsafeTemporaryAllocation(of: T.self, capacity: 256) { table in
                for i in 0..<256 { table[i] = T(divide ? Double(i) / inverse : Double(i) * scale) }
                // f32 divided by k: eight bytes at a time when the f32 division gives the table's values
                // (it does for 255: checked here, not assumed).
                if T.self == Float.self && divide && inverse <= 255 && (0..<256).allSatisfy({ table[$0] == T($0) / T(inverse) }) {
                    let out = UnsafeMutableRawPointer(dst).assumingMemoryBound(to: Float.self)
                    a.withUnsafeBufferPointer { src in
                        for idx in indices.prefix(prefetchDistance) where idx >= 0 && idx < count {
                            prefetchBytes(src.baseAddress! + idx * f, f)
                        }
                        for (r, idx) in indices.enumerated() {
                            precondition(idx >= 0 && idx < count, "Dataset.copyFeatures: index \(idx) out of range 0..<\(count)")
                            if r + prefetchDistance < indices.count {
                                let ahead = indices[r + prefetchDistance]
                                if ahead >= 0 && ahead < count { prefetchBytes(src.baseAddress! + ahead * f, f) }
                            }
                            bytesToFloats(src.baseAddress! + idx * f, out + r * f, f, dividedBy: Float(inverse))
                        }
                    }
                    return
                }
                a.withUnsafeBufferPointer { src in
                    var d = dst
                    for idx in indices {
                        precondition(idx >= 0 && idx < count, "Dataset.copyFeatures: index \(idx) out of range 0..<\(count)")
                        let row = src.baseAddress! + idx * f
                        for j in 0..<f { d[j] = table[Int(row[j])] }
                        d += f
                    }
                }
            }
        case .float32(let a):
            a.withUnsafeBufferPointer { src in
                var d = dst
                for idx in indices {
                    precondition(idx >= 0 && idx < count, "Dataset.copyFeatures: index \(idx) out of range 0..<\(count)")
                    let row = src.baseAddress! + idx * f
                    if T.self == Float.self {
                        UnsafeMutableRawPointer(d).copyMemory(from: row, byteCount: f * 4)
                    } else {
                        for j in 0..<f { d[j] = T(row[j]) }
                    }
                    d += f
                }
            }
        case .float64(let a):
            a.withUnsafeBufferPointer { src in
                var d = dst
                for idx in indices {
                    precondition(idx >= 0 && idx < count, "Dataset.copyFeatures: index \(idx) out of range 0..<\(count)")
                    let row = src.baseAddress! + idx * f
                    if T.self == Double.self {
                        UnsafeMutableRawPointer(d).copyMemory(from: row, byteCount: f * 8)
                    } else {
                        for j in 0..<f { d[j] = T(row[j]) }
                    }
                    d += f
                }
            }
        }
    }

    /// Copies targets: values (width each) or labels as T (class index as a float); nothing for .none.
    public func copyTargets<T: KernelScalar>(_ indices: UnsafeBufferPointer<Int>, into dst: UnsafeMutablePointer<T>) {
        if T.self == Float.self {
            copyTargetsTyped(indices, into: UnsafeMutableRawPointer(dst).assumingMemoryBound(to: Float.self))
        } else if T.self == Double.self {
            copyTargetsTyped(indices, into: UnsafeMutableRawPointer(dst).assumingMemoryBound(to: Double.self))
        } else {
            copyTargetsTyped(indices, into: dst)
        }
    }

    private func copyTargetsTyped<T: KernelScalar>(_ indices: UnsafeBufferPointer<Int>, into dst: UnsafeMutablePointer<T>) {
        switch targets {
        case .none:
            return
        case .values(let v, let w):
            if w == 0 { return }
            v.withUnsafeBufferPointer { src in
                var d = dst
                for idx in indices {
                    precondition(idx >= 0 && idx < count, "Dataset.copyTargets: index \(idx) out of range 0..<\(count)")
                    let row = src.baseAddress! + idx * w
                    for j in 0..<w { d[j] = T(row[j]) }
                    d += w
                }
            }
        case .labels(let l):
            l.withUnsafeBufferPointer { src in
                for (k, idx) in indices.enumerated() {
                    precondition(idx >= 0 && idx < count, "Dataset.copyTargets: index \(idx) out of range 0..<\(count)")
                    dst[k] = T(src[idx])
                }
            }
        }
    }

    /// The samples at these indices (each in 0..<count), in that order.
    public func rows(_ indices: [Int]) -> Dataset {
        let f = featureCount
        func gather<E>(_ a: [E], _ width: Int) -> [E] { indices.flatMap { a[($0 * width)..<(($0 + 1) * width)] } }
        let newFeatures: Features
        switch features {
        case .bytes(let a, let s): newFeatures = .bytes(gather(a, f), scale: s)
        case .float32(let a): newFeatures = .float32(gather(a, f))
        case .float64(let a): newFeatures = .float64(gather(a, f))
        }
        let newTargets: Targets
        switch targets {
        case .none: newTargets = .none
        case .values(let v, let w): newTargets = .values(gather(v, w), width: w)
        case .labels(let l): newTargets = .labels(indices.map { l[$0] })
        }
        return Dataset(count: indices.count, featureCount: f, features: newFeatures, targets: newTargets, source: source)
    }

    /// The first feature value that is not finite or beyond `limit` in size: (sample, feature, value).
    public func firstValueBeyond(_ limit: Double) -> (Int, Int, Double)? {
        func find<E: BinaryFloatingPoint>(_ a: [E]) -> (Int, Int, Double)? {
            guard let index = a.firstIndex(where: { !$0.isFinite || abs(Double($0)) > limit }) else { return nil }
            return (index / max(1, featureCount), index % max(1, featureCount), Double(a[index]))
        }
        switch features {
        case .bytes: return nil
        case .float32(let a): return find(a)
        case .float64(let a): return find(a)
        }
    }

    /// The first n samples (for --limit); all of them when n >= count.
    public func prefix(_ n: Int) -> Dataset {
        let m = max(0, min(n, count))
        if m == count { return self }
        let f = featureCount
        let newFeatures: Features
        switch features {
        case .bytes(let a, let s): newFeatures = .bytes(Array(a[0..<m * f]), scale: s)
        case .float32(let a): newFeatures = .float32(Array(a[0..<m * f]))
        case .float64(let a): newFeatures = .float64(Array(a[0..<m * f]))
        }
        let newTargets: Targets
        switch targets {
        case .none: newTargets = .none
        case .values(let v, let w): newTargets = .values(Array(v[0..<m * w]), width: w)
        case .labels(let l): newTargets = .labels(Array(l[0..<m]))
        }
        return Dataset(count: m, featureCount: f, features: newFeatures, targets: newTargets, source: source)
    }

    /// The feature value of sample `i`, element `j`, as a Double (for tests and messages).
    public func feature(_ i: Int, _ j: Int) -> Double {
        switch features {
        case .bytes(let a, let s):
            let inverse = 1 / s
            return inverse.isFinite && inverse == inverse.rounded() && inverse != 0 ? Double(a[i * featureCount + j]) / inverse : Double(a[i * featureCount + j]) * s
        case .float32(let a): return Double(a[i * featureCount + j])
        case .float64(let a): return a[i * featureCount + j]
        }
    }
}

public struct DataSplits: Sendable {
    public var train: Dataset
    public var test: Dataset?

    public init(train: Dataset, test: Dataset? = nil) {
        self.train = train
        self.test = test
    }
}

// MARK: - Loading

/// Loads a file or directory by its kind: .csv (or any text), .idx/-ubyte (raw or .gz), .npy, .npz, or a directory
/// in MNIST layout (`train-images-idx3-ubyte[.gz]` … with an optional `t10k-…` test split).
/// The kind comes from the content (magic numbers), then from the extension; anything else is read as CSV.
///
/// `testOnly`: for an MNIST directory with a test split, only that split is read (as both splits).
public func loadData(path: String, expecting: DataExpectation, testOnly: Bool = false) throws(DataError) -> DataSplits {
    try checkExpectation(expecting, path: path)
    if isDirectory(path) {
        return try loadMNISTDirectory(path: path, expecting: expecting, testOnly: testOnly)
    }
    let raw = try readFileBytes(path: path)
    return try loadData(bytes: raw, path: path, expecting: expecting)
}

private func checkExpectation(_ e: DataExpectation, path: String) throws(DataError) {
    if e.featureCount < 1 {
        throw DataError(path: path, message: "the model expects \(e.featureCount) input features; cannot load data for it")
    }
    switch e.targets {
    case .none: break
    case .values(let n) where n < 1:
        throw DataError(path: path, message: "the model expects \(n) target values; cannot load data for it")
    case .classLabels(let c) where c < 1:
        throw DataError(path: path, message: "the model has \(c) classes; cannot load data for it")
    default: break
    }
}

/// The kinds of data file.
enum DataFileKind { case csv, idx, npy, npz }

/// Decides a file's kind from its (gunzipped) content and its name.
func dataFileKind(bytes: [UInt8], path: String) -> DataFileKind {
    if hasNPYMagic(bytes) { return .npy }
    if hasZipMagic(bytes) { return .npz }
    var name = (path as NSString).lastPathComponent.lowercased()
    if name.hasSuffix(".gz") { name.removeLast(3) }
    if name.hasSuffix(".npy") { return .npy }
    if name.hasSuffix(".npz") { return .npz }
    if name.hasSuffix(".idx") || name.hasSuffix("ubyte") || name.contains("-idx") { return .idx }
    if bytes.count >= 4 && bytes[0] == 0 && bytes[1] == 0 && bytes[2] >= 0x08 && bytes[2] <= 0x0E { return .idx }
    return .csv
}

/// Loads a single file's bytes (gzip is undone here).
func loadData(bytes raw: [UInt8], path: String, expecting: DataExpectation) throws(DataError) -> DataSplits {
    try checkExpectation(expecting, path: path)
    if raw.isEmpty { throw DataError(path: path, message: "the file is empty") }
    let file: LoadedFile
    if hasZipMagic(raw) {
        file = LoadedFile(path: path, bytes: raw, gzipped: false)
    } else {
        file = try decodeFile(path: path, raw: raw)
    }
    switch dataFileKind(bytes: file.bytes, path: path) {
    case .csv:
        return DataSplits(train: try parseCSV(file.bytes, path: path, expecting: expecting), test: nil)
    case .idx:
        return DataSplits(train: try loadIDXFile(file, expecting: expecting), test: nil)
    case .npy:
        let h: NPYHeader
        do { h = try parseNPYHeader(file.bytes) } catch { throw file.error(error) }
        let ds = try arrayDataset(file.bytes, h, name: nil, path: path, expecting: expecting) { f in file.error(f) }
        return DataSplits(train: ds, test: nil)
    case .npz:
        return try npzDatasets(file, expecting: expecting)
    }
}

// MARK: - Arrays as data sets

/// Features of an array [N, ...] whose rows hold `rowLength` elements, keeping columns `columns` of each row.
/// uint8 is pixels, as in IDX files: it stays bytes and scales to [0,1]; float32 stays Float, the rest becomes Double.
private func arrayFeatures(_ b: [UInt8], _ h: NPYHeader, rows: Int, rowLength: Int, columns: Range<Int>) -> Dataset.Features {
    let t = h.dtype
    if columns == 0..<rowLength {
        if t.kind == .unsigned && t.size == 1 {
            return .bytes(Array(b[h.dataOffset..<h.dataOffset + rows * rowLength]), scale: 1.0 / 255.0)
        }
        if t.kind == .float && t.size <= 4 { return .float32(npyFloats(b, h)) }
        return .float64(npyDoubles(b, h))
    }
    if t.kind == .unsigned && t.size == 1 {
        var out: [UInt8] = []
        out.reserveCapacity(rows * columns.count)
        for r in 0..<rows {
            let s = h.dataOffset + r * rowLength
            out += b[s + columns.lowerBound..<s + columns.upperBound]
        }
        return .bytes(out, scale: 1.0 / 255.0)
    }
    if t.kind == .float && t.size <= 4 {
        var out: [Float] = []
        out.reserveCapacity(rows * columns.count)
        for r in 0..<rows {
            out += npyFloats(b, h, range: r * rowLength + columns.lowerBound..<r * rowLength + columns.upperBound)
        }
        return .float32(out)
    }
    var out: [Double] = []
    out.reserveCapacity(rows * columns.count)
    for r in 0..<rows {
        out += npyDoubles(b, h, range: r * rowLength + columns.lowerBound..<r * rowLength + columns.upperBound)
    }
    return .float64(out)
}

/// numpy-style index of flat element `i` in `shape`: "[3, 2]".
private func npIndex(_ i: Int, _ shape: [Int]) -> String {
    var rest = i
    var idx = [Int](repeating: 0, count: shape.count)
    for d in stride(from: shape.count - 1, through: 0, by: -1) where shape[d] > 0 {
        idx[d] = rest % shape[d]
        rest /= shape[d]
    }
    return "[" + idx.map(String.init).joined(separator: ", ") + "]"
}

private func arrayLabel(_ name: String?) -> String { name.map { "array '\($0)'" } ?? "the array" }

/// Fails when a float array holds a NaN or an infinity.
private func checkFinite(_ b: [UInt8], _ h: NPYHeader, name: String?, place: (ParseFailure) -> DataError) throws(DataError) {
    if let i = npyFirstNonFinite(b, h) {
        let v = npyElement(b, h, i)
        throw place(ParseFailure("\(v.isNaN ? "NaN" : "infinite value") in the data: \(arrayLabel(name)) at element \(npIndex(i, h.shape))", at: h.dataOffset + i * h.dtype.size))
    }
}

/// Class labels from element `column` of each of `rows` rows of `rowLength` elements.
private func arrayLabels(_ b: [UInt8], _ h: NPYHeader, rows: Int, rowLength: Int, column: Int, classes: Int, name: String?, place: (ParseFailure) -> DataError) throws(DataError) -> [Int32] {
    var labels: [Int32] = []
    labels.reserveCapacity(rows)
    for r in 0..<rows {
        let i = r * rowLength + column
        let v = npyElement(b, h, i)
        let at = h.dataOffset + i * h.dtype.size
        guard v == v.rounded(), abs(v) < 1e9 else {
            throw place(ParseFailure("class label \(v) of \(arrayLabel(name)) at element \(npIndex(i, h.shape)) is not an integer", at: at))
        }
        guard v >= 0 && Int(v) < classes else {
            throw place(ParseFailure("class label \(Int(v)) of \(arrayLabel(name)) at element \(npIndex(i, h.shape)) is out of range: the model has \(classes) class\(classes == 1 ? "" : "es") (labels 0 to \(classes - 1))", at: at))
        }
        labels.append(Int32(v))
    }
    return labels
}

private func describeTargets(_ e: DataExpectation) -> String {
    switch e.targets {
    case .none: return ""
    case .values(let n): return " + \(n) target value\(n == 1 ? "" : "s")"
    case .classLabels: return " + 1 class label"
    }
}

/// One array as a data set: with targets, a 2-D table [N, features + targets] (like CSV); without, [N, ...] whose
/// trailing dimensions multiply to the feature count.
func arrayDataset(_ b: [UInt8], _ h: NPYHeader, name: String?, path: String, expecting: DataExpectation, place: (ParseFailure) -> DataError) throws(DataError) -> Dataset {
    let f = expecting.featureCount
    let tcols = expecting.targetColumns
    let shape = h.shape
    guard let n = shape.first else {
        throw place(ParseFailure("\(arrayLabel(name)) is a scalar (shape ()), expected one row per sample"))
    }
    if n == 0 { throw place(ParseFailure("\(arrayLabel(name)) has no samples (shape \(h.shapeText))", at: 0)) }
    let rowLength = h.count / n
    try checkFinite(b, h, name: name, place: place)
    if tcols == 0 {
        if rowLength != f {
            throw place(ParseFailure("\(arrayLabel(name)) of shape \(h.shapeText) has \(rowLength) value\(rowLength == 1 ? "" : "s") per sample, but the model expects \(f) input feature\(f == 1 ? "" : "s")"))
        }
        return Dataset(count: n, featureCount: f, features: arrayFeatures(b, h, rows: n, rowLength: rowLength, columns: 0..<f), targets: .none, source: path)
    }
    if shape.count != 2 || shape[1] != f + tcols {
        throw place(ParseFailure("\(arrayLabel(name)) of shape \(h.shapeText) is not a table of \(f + tcols) columns (\(f) feature\(f == 1 ? "" : "s")\(describeTargets(expecting))): expected shape (N, \(f + tcols)), or an .npz with arrays 'x' and 'y'"))
    }
    let features = arrayFeatures(b, h, rows: n, rowLength: rowLength, columns: 0..<f)
    let targets: Dataset.Targets
    switch expecting.targets {
    case .none:
        targets = .none
    case .classLabels(let classes):
        targets = .labels(try arrayLabels(b, h, rows: n, rowLength: rowLength, column: f, classes: classes, name: name, place: place))
    case .values(let w):
        var v: [Double] = []
        v.reserveCapacity(n * w)
        for r in 0..<n { v += npyDoubles(b, h, range: r * rowLength + f..<r * rowLength + f + w) }
        targets = .values(v, width: w)
    }
    return Dataset(count: n, featureCount: f, features: features, targets: targets, source: path)
}

/// An .npz with arrays `x` and `y` (or `x_train`, `y_train` and optionally `x_test`, `y_test`).
func npzDatasets(_ file: LoadedFile, expecting: DataExpectation) throws(DataError) -> DataSplits {
    let path = file.path
    let members: [NPZMember]
    do { members = try parseNPZMembers(file.bytes) } catch { throw error.dataError(path: path) }
    func member(_ n: String) -> NPZMember? { members.first { $0.name == n } }
    let needY = expecting.targets != .none
    let found = members.isEmpty ? "no arrays" : "arrays " + members.map { "'\($0.name)'" }.joined(separator: ", ")
    var pairs: [(x: NPZMember, y: NPZMember?)] = []
    if let x = member("x") {
        let y = member("y")
        if needY && y == nil {
            throw DataError(path: path, message: "no array 'y' with the targets (the archive has \(found))")
        }
        pairs.append((x, y))
    } else if let x = member("x_train") {
        let y = member("y_train")
        if needY && y == nil {
            throw DataError(path: path, message: "no array 'y_train' with the targets (the archive has \(found))")
        }
        pairs.append((x, y))
        if let xt = member("x_test") {
            let yt = member("y_test")
            if needY && yt == nil {
                throw DataError(path: path, message: "no array 'y_test' with the test targets (the archive has \(found))")
            }
            pairs.append((xt, yt))
        }
    } else {
        throw DataError(path: path, message: "expected arrays 'x'\(needY ? " and 'y'" : "") (or 'x_train'\(needY ? ", 'y_train'" : "")), but the archive has \(found)")
    }
    // The headers agree before anything is decompressed (a zip bomb's x is refused here).
    for (x, y) in pairs {
        if needY, let y, let rows = x.header.shape.first, y.header.shape.first != rows {
            throw npzMemberFailure(ParseFailure("array '\(y.name)' of shape \(y.header.shapeText) does not have \(rows) rows like '\(x.name)' \(x.header.shapeText)"), y.entry).dataError(path: path)
        }
    }
    var sets: [Dataset] = []
    for (x, y) in pairs {
        let placeX: (ParseFailure) -> DataError = { npzMemberFailure($0, x.entry).dataError(path: path) }
        let xBytes: [UInt8]
        do { xBytes = try x.bytes() } catch { throw error.dataError(path: path) }
        // Features only: x is [N, ...].
        var featuresOnly = expecting
        featuresOnly.targets = .none
        let xs = try arrayDataset(xBytes, x.header, name: x.name, path: path, expecting: featuresOnly, place: placeX)
        guard let y, needY else {
            sets.append(xs)
            continue
        }
        let placeY: (ParseFailure) -> DataError = { npzMemberFailure($0, y.entry).dataError(path: path) }
        let yBytes: [UInt8]
        do { yBytes = try y.bytes() } catch { throw error.dataError(path: path) }
        let yh = y.header
        let n = xs.count
        guard yh.shape.first == n else {
            throw placeY(ParseFailure("array '\(y.name)' of shape \(yh.shapeText) does not have \(n) rows like '\(x.name)' \(x.header.shapeText)"))
        }
        try checkFinite(yBytes, yh, name: y.name, place: placeY)
        let width = yh.count / n
        let targets: Dataset.Targets
        switch expecting.targets {
        case .none:
            targets = .none
        case .classLabels(let classes):
            guard width == 1 && yh.shape.count <= 2 else {
                throw placeY(ParseFailure("array '\(y.name)' of shape \(yh.shapeText) does not hold one class label per sample: expected shape (\(n),)"))
            }
            targets = .labels(try arrayLabels(yBytes, yh, rows: n, rowLength: 1, column: 0, classes: classes, name: y.name, place: placeY))
        case .values(let w):
            guard width == w && yh.shape.count <= 2 else {
                throw placeY(ParseFailure("array '\(y.name)' of shape \(yh.shapeText) does not hold \(w) target value\(w == 1 ? "" : "s") per sample: expected shape (\(n), \(w))"))
            }
            targets = .values(npyDoubles(yBytes, yh), width: w)
        }
        sets.append(Dataset(count: n, featureCount: xs.featureCount, features: xs.features, targets: targets, source: path))
    }
    return DataSplits(train: sets[0], test: sets.count > 1 ? sets[1] : nil)
}

/// Asks for the cache lines of start..<start+count ahead of use.
@inline(__always) private func prefetchBytes(_ start: UnsafeRawPointer, _ count: Int) {
    var offset = 0
    while offset < count { nnc_prefetch(start + offset); offset += 64 }
}

/// dst[j] = Float(src[j]) / k for j in 0..<count, eight at a time.
private func bytesToFloats(_ src: UnsafePointer<UInt8>, _ dst: UnsafeMutablePointer<Float>, _ count: Int, dividedBy k: Float) {
    let divisor = SIMD8<Float>(repeating: k)
    var j = 0
    while j + 8 <= count {
        let bytes = UnsafeRawPointer(src + j).loadUnaligned(as: SIMD8<UInt8>.self)
        let values = SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: bytes)) / divisor
        UnsafeMutableRawPointer(dst + j).storeBytes(of: values, as: SIMD8<Float>.self)
        j += 8
    }
    while j < count { dst[j] = Float(src[j]) / k; j += 1 }
}

/// A small data set's features and targets converted to T once, by `Dataset.copyFeatures` and
/// `copyTargets` (so the same values), for a training loop: a step's copy is then plain row copies,
/// without copyBatch's conversions and generic calls (13 ns of the XOR network's 0.21 µs step), and
/// nothing needs prefetching (a set this small stays in the core's caches). A struct of pointers (its
/// fields then live in registers through the loop); the loop deallocates it.
public struct ConvertedRows<T: KernelScalar> {
    @usableFromInline let features: UnsafeMutablePointer<T>, targets: UnsafeMutablePointer<T>
    @usableFromInline let count: Int, featureCount: Int, targetWidth: Int

    /// Nil for a set over `limit` bytes once converted.
    public init?(_ data: Dataset, limit: Int = 1 << 18) {
        let featureElements = data.count * data.featureCount, targetElements = data.count * data.targetWidth
        guard (featureElements + targetElements) * MemoryLayout<T>.stride <= limit else { return nil }
        (count, featureCount, targetWidth) = (data.count, data.featureCount, data.targetWidth)
        let features = UnsafeMutablePointer<T>.allocate(capacity: max(1, featureElements))
        let targets = UnsafeMutablePointer<T>.allocate(capacity: max(1, targetElements))
        Array(0..<data.count).withUnsafeBufferPointer { all in
            data.copyFeatures(all, into: features)
            data.copyTargets(all, into: targets)
        }
        (self.features, self.targets) = (features, targets)
    }

    public func deallocate() {
        features.deallocate()
        targets.deallocate()
    }

    /// The rows `indices` (each in 0..<count), as `Dataset.copyBatch` copies them.
    @inlinable
    public func copy(_ indices: UnsafeBufferPointer<Int>, features destination: UnsafeMutablePointer<T>, targets targetDestination: UnsafeMutablePointer<T>?) {
        let f = featureCount, w = targetWidth
        for (row, index) in indices.enumerated() {
            precondition(index >= 0 && index < count, "ConvertedRows.copy: index \(index) out of range 0..<\(count)")
            for j in 0..<f { destination[row * f + j] = features[index * f + j] }
            if let targetDestination { for j in 0..<w { targetDestination[row * w + j] = targets[index * w + j] } }
        }
    }
}

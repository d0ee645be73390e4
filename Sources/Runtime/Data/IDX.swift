import Foundation

// IDX files (the MNIST layout): a big-endian header
//   magic: 0x00 0x00 TYPE NDIMS, then NDIMS big-endian UInt32 sizes, then the data in C order.
// TYPE 0x08 = unsigned byte (the only one used by MNIST and supported here).

/// The element types an IDX header may name.
private func idxTypeName(_ code: UInt8) -> String? {
    switch code {
    case 0x08: return "unsigned byte"
    case 0x09: return "signed byte"
    case 0x0B: return "int16"
    case 0x0C: return "int32"
    case 0x0D: return "float32"
    case 0x0E: return "float64"
    default: return nil
    }
}

struct IDXHeader {
    var dims: [Int]
    var dataOffset: Int
    var elementCount: Int
}

/// Parses and checks an IDX header. `role` is "images" or "labels" (for messages);
/// `expectedMagic` is 0x00000803 or 0x00000801 (named when the magic is wrong).
func parseIDXHeader(_ b: [UInt8], role: String, expectedMagic: UInt32) throws(ParseFailure) -> IDXHeader {
    let expectText = "expected \(hex32(expectedMagic)) for an IDX \(role) file"
    if b.isEmpty { throw ParseFailure("the file is empty (\(expectText))") }
    if b.count < 4 {
        throw ParseFailure("truncated: the file has \(bytesText(b.count)), but an IDX header needs at least 4", at: 0)
    }
    let magic = UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3])
    if b[0] != 0 || b[1] != 0 {
        throw ParseFailure("not an IDX file: bad magic number \(hex32(magic)) (\(expectText))", at: 0)
    }
    guard let typeName = idxTypeName(b[2]) else {
        throw ParseFailure("not an IDX file: bad magic number \(hex32(magic)): unknown element type 0x\(String(format: "%02X", b[2])) (\(expectText))", at: 0)
    }
    if b[2] != 0x08 {
        throw ParseFailure("unsupported IDX element type 0x\(String(format: "%02X", b[2])) (\(typeName)) in magic number \(hex32(magic)): only unsigned bytes (0x08) are supported", at: 2)
    }
    let ndims = Int(b[3])
    let expectedDims = Int(expectedMagic & 0xFF)
    if role == "labels" ? ndims != 1 : ndims < 2 {
        throw ParseFailure("bad magic number \(hex32(magic)): \(ndims) dimension\(ndims == 1 ? "" : "s") (\(expectText), \(expectedDims) dimension\(expectedDims == 1 ? "" : "s"))", at: 0)
    }
    let headerLen = 4 + 4 * ndims
    if b.count < headerLen {
        throw ParseFailure("truncated: the header needs \(bytesText(headerLen)) for \(ndims) dimensions, but the file has \(bytesText(b.count))", at: b.count)
    }
    var dims: [Int] = []
    for i in 0..<ndims {
        let o = 4 + 4 * i
        dims.append(Int(b[o]) << 24 | Int(b[o + 1]) << 16 | Int(b[o + 2]) << 8 | Int(b[o + 3]))
    }
    let available = b.count - headerLen
    guard let total = checkedProduct(dims) else {
        throw ParseFailure("the header's sizes \(dims.map(String.init).joined(separator: "×")) are too large", at: 4)
    }
    if total > available {
        throw ParseFailure("truncated: the header's sizes \(dims.map(String.init).joined(separator: "×")) need \(bytesText(total)) of data, but only \(bytesText(available)) follow", at: headerLen)
    }
    if total < available {
        throw ParseFailure("\(bytesText(available - total)) of unexpected data after the \(bytesText(total)) that the header's sizes \(dims.map(String.init).joined(separator: "×")) describe", at: headerLen + total)
    }
    return IDXHeader(dims: dims, dataOffset: headerLen, elementCount: total)
}

/// Parses an IDX images file (u8, [n, rows, cols] or any [n, ...]) whose samples must have `featureCount` elements.
func parseIDXImages(_ b: [UInt8], featureCount: Int) throws(ParseFailure) -> (count: Int, pixels: [UInt8]) {
    let h = try parseIDXHeader(b, role: "images", expectedMagic: 0x0000_0803)
    let n = h.dims[0]
    if n == 0 { throw ParseFailure("the file holds no images (the count is 0)", at: 4) }
    // With n ≥ 1 the header's product bounds this one (found by the data fuzz harness: n = 0 with
    // huge other sizes overflowed here).
    guard let per = checkedProduct(Array(h.dims.dropFirst())) else { throw ParseFailure("the header's sizes are too large", at: 8) }
    if per != featureCount {
        let shape = h.dims.dropFirst().map(String.init).joined(separator: "×")
        throw ParseFailure("the images are \(shape) = \(per) values each, but the model expects \(featureCount) input features", at: 8)
    }
    return (n, Array(b[h.dataOffset...]))
}

/// Parses an IDX labels file (u8, [n]); labels must be below `classes` when given.
func parseIDXLabels(_ b: [UInt8], classes: Int?) throws(ParseFailure) -> [UInt8] {
    let h = try parseIDXHeader(b, role: "labels", expectedMagic: 0x0000_0801)
    if h.dims[0] == 0 { throw ParseFailure("the file holds no labels (the count is 0)", at: 4) }
    let labels = Array(b[h.dataOffset...])
    if let classes {
        for (i, l) in labels.enumerated() where Int(l) >= classes {
            throw ParseFailure("label \(l) of sample \(i) is out of range: the model has \(classes) classes (labels 0 to \(classes - 1))", at: h.dataOffset + i)
        }
    }
    return labels
}

/// The whole size an IDX file declares in its header (header and data), from the first `count`
/// bytes of `bytes`; nil while the header is incomplete or when the bytes are not IDX.
func idxDeclaredSize(_ bytes: [UInt8], _ count: Int) -> Int? {
    guard count >= 4, bytes[0] == 0, bytes[1] == 0, (0x08...0x0E).contains(bytes[2]) else { return nil }
    let ndims = Int(bytes[3]), headerLength = 4 + 4 * ndims
    guard count >= headerLength else { return nil }
    let elementSize = [0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8][Int(bytes[2])] ?? 1
    var total = elementSize
    for d in 0..<ndims {
        let o = 4 + 4 * d
        let size = Int(bytes[o]) << 24 | Int(bytes[o + 1]) << 16 | Int(bytes[o + 2]) << 8 | Int(bytes[o + 3])
        let (product, overflow) = total.multipliedReportingOverflow(by: size)
        guard !overflow, product <= 1 << 40 else { return headerLength }  // a lying header: the parser reports it
        total = product
    }
    return headerLength + total
}

/// A file read from disk, gunzipped when it is gzip data.
struct LoadedFile {
    let path: String
    let bytes: [UInt8]
    let gzipped: Bool

    /// Attaches the file name to a failure; offsets in gunzipped data are marked as such.
    func error(_ f: ParseFailure) -> DataError {
        var message = f.message
        if gzipped && f.offset != nil { message += " (the offset is in the decompressed data)" }
        return DataError(path: path, byteOffset: f.offset, message: message)
    }
}

func loadFile(path: String) throws(DataError) -> LoadedFile {
    let raw = try readFileBytes(path: path)
    return try decodeFile(path: path, raw: raw)
}

func decodeFile(path: String, raw: [UInt8]) throws(DataError) -> LoadedFile {
    if isGzip(raw) {
        do {
            return LoadedFile(path: path, bytes: try gunzip(raw, declaredSize: idxDeclaredSize), gzipped: true)
        } catch {
            throw DataError(path: path, byteOffset: error.offset, message: error.message)
        }
    }
    return LoadedFile(path: path, bytes: raw, gzipped: false)
}

/// Builds a data set from an images file and an optional labels file (both already read).
func idxDataset(images: LoadedFile, labels: LoadedFile?, expecting: DataExpectation) throws(DataError) -> Dataset {
    let imgs: (count: Int, pixels: [UInt8])
    do { imgs = try parseIDXImages(images.bytes, featureCount: expecting.featureCount) } catch { throw images.error(error) }
    let features = Dataset.Features.bytes(imgs.pixels, scale: 1.0 / 255.0)
    var targets = Dataset.Targets.none
    if expecting.targets != .none {
        guard let labels else {
            let base = (images.path as NSString).lastPathComponent
            throw DataError(path: images.path, message: "no labels file found for '\(base)' (expected one such as '\(idxLabelsName(forImages: base) ?? "…-labels-idx1-ubyte")' next to it)")
        }
        var classes: Int? = nil
        switch expecting.targets {
        case .none: break
        case .classLabels(let c): classes = c
        case .values(let count):
            if count != 1 {
                throw DataError(path: labels.path, message: "the model expects \(count) target values per sample, but an IDX labels file has one label per sample")
            }
        }
        let ls: [UInt8]
        do { ls = try parseIDXLabels(labels.bytes, classes: classes) } catch { throw labels.error(error) }
        if ls.count != imgs.count {
            let imgName = (images.path as NSString).lastPathComponent
            throw labels.error(ParseFailure("the file has \(ls.count) labels, but '\(imgName)' has \(imgs.count) images", at: 4))
        }
        if classes != nil {
            targets = .labels(ls.map { Int32($0) })
        } else {
            targets = .values(ls.map { Double($0) }, width: 1)
        }
    }
    return Dataset(count: imgs.count, featureCount: expecting.featureCount, features: features, targets: targets, source: images.path)
}

/// The labels file name that goes with an images file name (`train-images-idx3-ubyte.gz` → `train-labels-idx1-ubyte.gz`).
func idxLabelsName(forImages name: String) -> String? {
    guard name.contains("images") else { return nil }
    return name.replacingOccurrences(of: "images", with: "labels").replacingOccurrences(of: "idx3", with: "idx1")
}

/// Loads an IDX images file given by path; its labels file is looked up next to it.
func loadIDXFile(_ file: LoadedFile, expecting: DataExpectation) throws(DataError) -> Dataset {
    var labels: LoadedFile? = nil
    if expecting.targets != .none {
        let dir = (file.path as NSString).deletingLastPathComponent
        let base = (file.path as NSString).lastPathComponent
        if let lname = idxLabelsName(forImages: base) {
            var candidates = [lname]
            if lname.hasSuffix(".gz") { candidates.append(String(lname.dropLast(3))) } else { candidates.append(lname + ".gz") }
            for c in candidates {
                let p = dir.isEmpty ? c : (dir as NSString).appendingPathComponent(c)
                if fileExists(p) {
                    labels = try loadFile(path: p)
                    break
                }
            }
        }
    }
    return try idxDataset(images: file, labels: labels, expecting: expecting)
}

/// The file names of the MNIST layout.
let mnistFiles = (
    trainImages: "train-images-idx3-ubyte", trainLabels: "train-labels-idx1-ubyte",
    testImages: "t10k-images-idx3-ubyte", testLabels: "t10k-labels-idx1-ubyte"
)

/// Loads a directory in MNIST layout: train split required, test split when present.
/// `testOnly`: a directory with a test split loads only that (as both splits), its training files
/// neither read nor checked (`nnc eval`).
func loadMNISTDirectory(path: String, expecting: DataExpectation, testOnly: Bool = false) throws(DataError) -> DataSplits {
    func find(_ name: String) -> String? {
        for n in [name + ".gz", name] {
            let p = (path as NSString).appendingPathComponent(n)
            if fileExists(p) { return p }
        }
        return nil
    }
    let needLabels = expecting.targets != .none
    if testOnly, let testImages = find(mnistFiles.testImages), !needLabels || find(mnistFiles.testLabels) != nil {
        let test = try idxDataset(images: try loadFile(path: testImages),
                                  labels: needLabels ? try find(mnistFiles.testLabels).map { p throws(DataError) in try loadFile(path: p) } : nil,
                                  expecting: expecting)
        return DataSplits(train: test, test: test)
    }
    let trainImages = find(mnistFiles.trainImages)
    let trainLabels = find(mnistFiles.trainLabels)
    if trainImages == nil || (needLabels && trainLabels == nil) {
        var expected = [mnistFiles.trainImages]
        if needLabels { expected.append(mnistFiles.trainLabels) }
        let missing = [trainImages == nil ? mnistFiles.trainImages : nil, needLabels && trainLabels == nil ? mnistFiles.trainLabels : nil].compactMap { $0 }
        throw DataError(path: path, message: "not a data directory in MNIST layout: missing \(missing.map { "'\($0)[.gz]'" }.joined(separator: " and ")) (expected \(expected.map { "'\($0)[.gz]'" }.joined(separator: ", ")), and optionally '\(mnistFiles.testImages)[.gz]', '\(mnistFiles.testLabels)[.gz]')")
    }
    guard let trainImages else { throw DataError(path: path, message: "internal error") }
    let train = try idxDataset(images: try loadFile(path: trainImages),
                               labels: needLabels ? try trainLabels.map { p throws(DataError) in try loadFile(path: p) } : nil,
                               expecting: expecting)
    var test: Dataset? = nil
    let testImages = find(mnistFiles.testImages)
    let testLabels = find(mnistFiles.testLabels)
    if let testImages {
        if needLabels && testLabels == nil {
            throw DataError(path: path, message: "'\((testImages as NSString).lastPathComponent)' has no labels file: expected '\(mnistFiles.testLabels)[.gz]' next to it")
        }
        test = try idxDataset(images: try loadFile(path: testImages),
                              labels: needLabels ? try testLabels.map { p throws(DataError) in try loadFile(path: p) } : nil,
                              expecting: expecting)
    } else if needLabels, let testLabels {
        throw DataError(path: path, message: "'\((testLabels as NSString).lastPathComponent)' has no images file: expected '\(mnistFiles.testImages)[.gz]' next to it")
    }
    return DataSplits(train: train, test: test)
}

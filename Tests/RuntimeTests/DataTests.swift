import Foundation
import Testing
import TestSupport
@testable import Runtime

// MARK: - Helpers

/// A fresh temporary directory for one test, removed at the end.
fileprivate final class TempDir {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "nnc-data-tests-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    @discardableResult
    func write(_ name: String, _ bytes: [UInt8]) -> String {
        let p = path + "/" + name
        _ = FileManager.default.createFile(atPath: p, contents: Data(bytes))
        return p
    }

    @discardableResult
    func write(_ name: String, text: String) -> String { write(name, Array(text.utf8)) }
}

/// The DataError thrown by `body`, or nil (then the test fails).
fileprivate func dataError<R>(_ body: () throws -> R) -> DataError? {
    do {
        _ = try body()
        Issue.record("expected a DataError, but loading succeeded")
        return nil
    } catch let e as DataError {
        return e
    } catch {
        Issue.record("expected a DataError, got \(error)")
        return nil
    }
}

fileprivate func features<T: KernelScalar>(_ ds: Dataset, _ indices: [Int], as: T.Type) -> [T] {
    var out = [T](repeating: 0, count: indices.count * ds.featureCount)
    indices.withUnsafeBufferPointer { ib in out.withUnsafeMutableBufferPointer { ds.copyFeatures(ib, into: $0.baseAddress!) } }
    return out
}

fileprivate func targets<T: KernelScalar>(_ ds: Dataset, _ indices: [Int], as: T.Type) -> [T] {
    var out = [T](repeating: -7, count: indices.count * max(ds.targetWidth, 1))
    indices.withUnsafeBufferPointer { ib in out.withUnsafeMutableBufferPointer { ds.copyTargets(ib, into: $0.baseAddress!) } }
    return out
}

fileprivate func be32(_ v: Int) -> [UInt8] { [UInt8((v >> 24) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

fileprivate func idxImages(_ n: Int, _ rows: Int, _ cols: Int, _ pixel: (Int) -> UInt8 = { UInt8($0 % 256) }) -> [UInt8] {
    [0, 0, 8, 3] + be32(n) + be32(rows) + be32(cols) + (0..<(n * rows * cols)).map(pixel)
}

fileprivate func idxLabels(_ labels: [UInt8]) -> [UInt8] { [0, 0, 8, 1] + be32(labels.count) + labels }

/// An .npy file with the given header dict text (padded like numpy) and data.
fileprivate func npyFile(_ dict: String, major: UInt8 = 1, data: [UInt8]) -> [UInt8] {
    let prefix = major == 1 ? 10 : 12
    var text = dict
    let total = prefix + text.utf8.count + 1
    text += String(repeating: " ", count: (total + 63) / 64 * 64 - total) + "\n"
    let n = text.utf8.count
    var out: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, major, 0]
    out += major == 1 ? [UInt8(n & 0xFF), UInt8(n >> 8)] : [UInt8(n & 0xFF), UInt8(n >> 8), 0, 0]
    return out + Array(text.utf8) + data
}

fileprivate func le<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] { values.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } } }
fileprivate func leF(_ values: [Float]) -> [UInt8] { le(values.map(\.bitPattern)) }
fileprivate func leD(_ values: [Double]) -> [UInt8] { le(values.map(\.bitPattern)) }

fileprivate let classify3 = DataExpectation(featureCount: 2, targets: .classLabels(classes: 3))

// MARK: - DataError

@Suite struct DataErrorTests {
    @Test func descriptions() {
        #expect(DataError(path: "a.csv", line: 3, column: 7, message: "bad").description == "a.csv:3:7: error: bad")
        #expect(DataError(path: "a.csv", line: 3, message: "bad").description == "a.csv:3: error: bad")
        #expect(DataError(path: "a.idx", byteOffset: 16, message: "bad").description == "a.idx: error: at byte 16: bad")
        #expect(DataError(path: "a.npz", message: "bad").description == "a.npz: error: bad")
    }

    @Test func missingFile() {
        let e = dataError { try loadData(path: "/nonexistent/dir/x.csv", expecting: classify3) }
        #expect(e?.description == "/nonexistent/dir/x.csv: error: no such file")
    }
}

// MARK: - CSV

@Suite struct DataCSVTests {
    @Test func headerLabelsAndConversion() throws {
        let dir = TempDir()
        let p = dir.write("d.csv", text: "x1,x2,label\r\n0.5,1,2\r\n\r\n-3,4e-1,0\r\n  \n7, 8 ,1\n")
        let ds = try loadData(path: p, expecting: classify3).train
        #expect(ds.count == 3 && ds.featureCount == 2 && ds.source == p)
        guard case .labels(let l) = ds.targets else { Issue.record("labels expected"); return }
        #expect(l == [2, 0, 1])
        #expect(features(ds, [0, 1, 2], as: Double.self) == [0.5, 1, -3, 0.4, 7, 8])
        #expect(features(ds, [2, 0], as: Float.self) == [7, 8, 0.5, 1])
        #expect(targets(ds, [1, 0, 2], as: Float.self) == [0, 2, 1])
        #expect(targets(ds, [2], as: Double.self) == [1])
    }

    @Test func noHeaderValuesTargets() throws {
        let dir = TempDir()
        let p = dir.write("xor.csv", text: "0,0,0\n0,1,1\n1,0,1\n1,1,0")  // no final newline
        let ds = try loadData(path: p, expecting: DataExpectation(featureCount: 2, targets: .values(count: 1))).train
        #expect(ds.count == 4)
        #expect(features(ds, [3, 1], as: Double.self) == [1, 1, 0, 1])
        #expect(targets(ds, [0, 1, 2, 3], as: Double.self) == [0, 1, 1, 0])
        let two = try loadData(path: p, expecting: DataExpectation(featureCount: 1, targets: .values(count: 2))).train
        #expect(targets(two, [1], as: Float.self) == [1, 1])
        #expect(features(two, [2], as: Float.self) == [1])
    }

    @Test func featuresOnlyAndQuotedHeader() throws {
        let dir = TempDir()
        let p = dir.write("in.txt", text: "\u{FEFF}\"a, b\",\"c\"\n1.5,2.5\n\"3\",-4\n")
        let ds = try loadData(path: p, expecting: DataExpectation(featureCount: 2, targets: .none)).train
        #expect(ds.count == 2)
        #expect(features(ds, [0, 1], as: Double.self) == [1.5, 2.5, 3, -4])
        #expect(targets(ds, [0], as: Double.self) == [-7])  // nothing written
    }

    @Test func prefix() throws {
        let dir = TempDir()
        let p = dir.write("d.csv", text: "1,2,0\n3,4,1\n5,6,2\n")
        let ds = try loadData(path: p, expecting: classify3).train
        let two = ds.prefix(2)
        #expect(two.count == 2)
        #expect(features(two, [0, 1], as: Double.self) == [1, 2, 3, 4])
        #expect(targets(two, [1], as: Double.self) == [1])
        #expect(ds.prefix(10).count == 3)
        #expect(ds.prefix(0).count == 0)
    }

    func csvError(_ text: String, _ expecting: DataExpectation = classify3) -> String? {
        let dir = TempDir()
        let p = dir.write("e.csv", text: text)
        return dataError { try loadData(path: p, expecting: expecting) }?.description
            .replacingOccurrences(of: p, with: "e.csv")
    }

    @Test func errors() {
        #expect(csvError("a,b,c\n1,2,0\n1,2,0,5\n") == "e.csv:3:7: error: expected 3 columns (2 features + 1 class label), found 4")
        #expect(csvError("1,2,0\n\n1,2\n") == "e.csv:3:4: error: expected 3 columns (2 features + 1 class label), found 2")
        #expect(csvError("1,2,0\n1,abc,1\n") == "e.csv:2:3: error: not a number: 'abc'")
        #expect(csvError("1,2,0\n1,,1\n") == "e.csv:2:3: error: empty cell, expected a number")
        #expect(csvError("1,2,0\n1,2,1\n1,nan,1\n") == "e.csv:3:3: error: NaN in the data: 'nan'")
        #expect(csvError("h1,h2,y\n1,inf,1\n") == "e.csv:2:3: error: infinite value in the data: 'inf'")
        #expect(csvError("1,1e999,1\n") == "e.csv:1:3: error: infinite value in the data: '1e999'")
        #expect(csvError("1,2,0\n1,2,1.5\n") == "e.csv:2:5: error: class label '1.5' is not an integer")
        #expect(csvError("1,2,0\n1,2,3\n") == "e.csv:2:5: error: class label 3 is out of range: the model has 3 classes (labels 0 to 2)")
        #expect(csvError("1,2,-1\n") == "e.csv:1:5: error: class label -1 is out of range: the model has 3 classes (labels 0 to 2)")
        #expect(csvError("") == "e.csv: error: the file is empty")
        #expect(csvError("x,y,label\n\n") == "e.csv: error: no data rows (only a header line)")
        #expect(csvError("\n  \n\r\n") == "e.csv: error: no data rows (the file has only blank lines)")
        #expect(csvError("1,2\n3,4,5\n", DataExpectation(featureCount: 2, targets: .none)) == "e.csv:2:5: error: expected 2 columns (2 features), found 3")
        #expect(csvError("1,2,3\n", DataExpectation(featureCount: 1, targets: .values(count: 1))) == "e.csv:1:5: error: expected 2 columns (1 feature + 1 target value), found 3")
        // Columns count characters, not bytes.
        #expect(csvError("é,ü,y\n1,2,0\n1,x2,0\n") == "e.csv:3:3: error: not a number: 'x2'")
        #expect(csvError("1,2,0\n1,\"é\",0\n") == "e.csv:2:3: error: not a number: '\"é\"'")
    }

    @Test func numbersParseLikeStrtod() throws {
        var rng = SplitMix64(seed: 99)
        var cells = ["0", "-0", "+3", ".5", "5.", "1e5", "1E-3", "-1.5e+2", "123456789012345678", "0.1", "0.30000000000000004",
                     "1e22", "1e23", "9007199254740993", "4.9e-324", "1.7976931348623157e308", "000012.5000", "2.5e-0"]
        for _ in 0..<2000 {
            let digits = (0..<(1 + rng.below(18))).map { _ in String(rng.below(10)) }.joined()
            let cut = rng.below(digits.count + 1)
            var t = String(digits.prefix(cut)) + (rng.below(3) == 0 ? "" : ".") + String(digits.dropFirst(cut))
            if t == "." { t = "0" }
            if rng.below(3) == 0 { t += "e" + (rng.below(2) == 0 ? "-" : "") + String(rng.below(40)) }
            cells.append((rng.below(2) == 0 ? "-" : "") + t)
        }
        let dir = TempDir()
        let p = dir.write("n.csv", text: cells.joined(separator: "\n"))
        let ds = try loadData(path: p, expecting: DataExpectation(featureCount: 1, targets: .none)).train
        #expect(ds.count == cells.count)
        let got = features(ds, Array(0..<ds.count), as: Double.self)
        for (c, v) in zip(cells, got) where Double(c)! != v || Double(c)!.sign != v.sign {
            Issue.record("\(c) parsed as \(v), expected \(Double(c)!)")
        }
    }

    @Test func kindFromContent() throws {
        let dir = TempDir()
        // An .npy under another name (and gzipped) is found by its magic string.
        let npy = npyFile("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", data: leD([1, 2, 3, 4]))
        let p = dir.write("data.bin", gzipCompress(npy))
        let ds = try loadData(path: p, expecting: DataExpectation(featureCount: 2, targets: .none)).train
        #expect(features(ds, [1], as: Double.self) == [3, 4])
        // Bad expectations are errors, not traps.
        #expect(dataError { try loadData(path: p, expecting: DataExpectation(featureCount: 0, targets: .none)) }?.message
            == "the model expects 0 input features; cannot load data for it")
    }

    @Test func gzippedCSV() throws {
        let dir = TempDir()
        let p = dir.write("d.csv.gz", gzipCompress(Array("a,b,y\n1,2,1\n".utf8)))
        let ds = try loadData(path: p, expecting: classify3).train
        #expect(features(ds, [0], as: Double.self) == [1, 2])
    }
}

// MARK: - IDX and MNIST directories

@Suite struct DataIDXTests {
    let mnist = DataExpectation(featureCount: 6, targets: .classLabels(classes: 10))

    @Test func rawFilesAndPixelScaling() throws {
        let dir = TempDir()
        let img = dir.write("train-images-idx3-ubyte", idxImages(3, 2, 3) { [0, 255, 51, 102, 1, 128][$0 % 6] &+ UInt8($0 / 6) })
        dir.write("train-labels-idx1-ubyte", idxLabels([9, 0, 4]))
        let ds = try loadData(path: img, expecting: mnist).train
        #expect(ds.count == 3 && ds.featureCount == 6)
        if case .bytes(_, let scale) = ds.features { #expect(scale == 1.0 / 255.0) } else { Issue.record("bytes expected") }
        let d = features(ds, [0], as: Double.self)
        #expect(d == [0, 1, 0.2, 0.4, 1.0 / 255.0, 128.0 / 255.0])
        let f = features(ds, [0, 2], as: Float.self)
        #expect(f[1] == 1 && f[2] == Float(0.2) && f[6] == Float(2.0 / 255.0))
        #expect(targets(ds, [0, 1, 2], as: Float.self) == [9, 0, 4])
        // Features only: labels not needed.
        let x = try loadData(path: img, expecting: DataExpectation(featureCount: 6, targets: .none)).train
        #expect(x.count == 3)
    }

    /// Every byte value, through the vector conversion (eight at a time, no division) and its scalar
    /// tail: exactly the f32 quotient b / 255 (and the f64 one).
    @Test func pixelScalingIsExactForEveryByte() {
        let bytes = (0..<259).map { UInt8($0 % 256) } + (0..<259).map { UInt8(255 - $0 % 256) }
        let ds = Dataset(count: 2, featureCount: 259, features: .bytes(bytes, scale: 1.0 / 255.0), targets: .none, source: "bytes")
        #expect(features(ds, [0, 1], as: Float.self) == bytes.map { Float($0) / 255 })
        #expect(features(ds, [1, 0], as: Double.self) == (bytes[259...] + bytes[..<259]).map { Double($0) / 255 })
    }

    @Test func mnistDirectoryWithGzip() throws {
        let dir = TempDir()
        dir.write("train-images-idx3-ubyte.gz", gzipCompress(idxImages(5, 2, 3)))
        dir.write("train-labels-idx1-ubyte.gz", gzipCompress(idxLabels([0, 1, 2, 3, 4])))
        dir.write("t10k-images-idx3-ubyte.gz", gzipCompress(idxImages(2, 2, 3) { _ in 255 }))
        dir.write("t10k-labels-idx1-ubyte", idxLabels([7, 8]))  // raw works too
        let splits = try loadData(path: dir.path, expecting: mnist)
        #expect(splits.train.count == 5)
        #expect(features(splits.train, [1], as: Double.self) == (6..<12).map { Double($0) / 255 })
        #expect(targets(splits.train, [4, 3], as: Double.self) == [4, 3])
        let test = try #require(splits.test)
        #expect(test.count == 2)
        #expect(features(test, [1], as: Float.self) == [Float](repeating: 1, count: 6))
        #expect(targets(test, [0, 1], as: Double.self) == [7, 8])
    }

    /// A gzip bomb: an IDX header for 200 images of 28×28, then 16 MiB of zeros (a 16 KiB file).
    /// Decompression stops right after the header's 156,816 bytes: the error says so, and the
    /// decompressed bytes never exceed what the header declares (plus a byte to see more).
    @Test func gzipBombStopsAtTheHeadersSize() throws {
        let dir = TempDir()
        var bytes = idxImages(200, 28, 28) { _ in 0 }
        bytes += [UInt8](repeating: 0, count: 16 << 20)
        let compressed = gzipCompress(bytes, level: 9)
        #expect(compressed.count < 64 << 10)
        let path = dir.write("train-images-idx3-ubyte.gz", compressed)
        do {
            _ = try loadFile(path: path)
            Issue.record("the bomb loaded")
        } catch {
            #expect(error.message.contains("runs past the 156816 bytes its header declares"), "\(error.message)")
        }
        // What was inflated when it stopped: at most the declared size and one more byte (the first
        // chunk may carry a little more).
        var inflated = 0
        do {
            _ = try gunzip(compressed) { prefix, count in inflated = max(inflated, count); return idxDeclaredSize(prefix, count) }
        } catch {}
        #expect(inflated <= 156_816 + 65_536, "\(inflated)")
        // An honest file of the same shape loads.
        let honest = dir.write("ok-images-idx3-ubyte.gz", gzipCompress(idxImages(200, 28, 28)))
        #expect(try loadFile(path: honest).bytes.count == 156_816)
    }

    /// eval reads only the test split: broken training files are not its business.
    @Test func testSplitAloneLeavesTheTrainingFilesUnread() throws {
        let dir = TempDir()
        dir.write("train-images-idx3-ubyte.gz", Array("junk".utf8))
        dir.write("train-labels-idx1-ubyte.gz", Array("junk".utf8))
        dir.write("t10k-images-idx3-ubyte.gz", gzipCompress(idxImages(2, 2, 3)))
        dir.write("t10k-labels-idx1-ubyte", idxLabels([7, 8]))
        let splits = try loadData(path: dir.path, expecting: mnist, testOnly: true)
        #expect(splits.test?.count == 2 && splits.train.count == 2)
        #expect(throws: DataError.self) { try loadData(path: dir.path, expecting: mnist) }
    }

    @Test func directoryWithoutMNISTFiles() {
        let dir = TempDir()
        dir.write("readme.txt", text: "hi")
        let e = dataError { try loadData(path: dir.path, expecting: mnist) }
        #expect(e?.message == "not a data directory in MNIST layout: missing 'train-images-idx3-ubyte[.gz]' and 'train-labels-idx1-ubyte[.gz]' (expected 'train-images-idx3-ubyte[.gz]', 'train-labels-idx1-ubyte[.gz]', and optionally 't10k-images-idx3-ubyte[.gz]', 't10k-labels-idx1-ubyte[.gz]')")
        #expect(e?.path == dir.path)
    }

    func idxError(_ images: [UInt8], _ labels: [UInt8]?, _ expecting: DataExpectation? = nil, gz: Bool = false) -> DataError? {
        let dir = TempDir()
        let suffix = gz ? ".gz" : ""
        let p = dir.write("train-images-idx3-ubyte" + suffix, gz ? gzipCompress(images) : images)
        if let labels { dir.write("train-labels-idx1-ubyte" + suffix, gz ? gzipCompress(labels) : labels) }
        guard var e = dataError({ try loadData(path: p, expecting: expecting ?? mnist) }) else { return nil }
        e.path = (e.path as NSString).lastPathComponent
        return e
    }

    @Test func errors() {
        #expect(idxError([0x12, 0x34, 0x56, 0x78] + be32(1), nil)?.description
            == "train-images-idx3-ubyte: error: at byte 0: not an IDX file: bad magic number 0x12345678 (expected 0x00000803 for an IDX images file)")
        #expect(idxError([0, 0, 0x0D, 3] + be32(1) + be32(1) + be32(1) + [0, 0, 0, 0], nil)?.description
            == "train-images-idx3-ubyte: error: at byte 2: unsupported IDX element type 0x0D (float32) in magic number 0x00000D03: only unsigned bytes (0x08) are supported")
        #expect(idxError(Array(idxImages(3, 2, 3).dropLast(5)), idxLabels([1, 2, 3]))?.description
            == "train-images-idx3-ubyte: error: at byte 16: truncated: the header's sizes 3×2×3 need 18 bytes of data, but only 13 bytes follow")
        #expect(idxError(Array(idxImages(3, 2, 3)[0..<10]), nil)?.description
            == "train-images-idx3-ubyte: error: at byte 10: truncated: the header needs 16 bytes for 3 dimensions, but the file has 10 bytes")
        #expect(idxError(idxImages(3, 2, 3), idxLabels([1, 2]))?.description
            == "train-labels-idx1-ubyte: error: at byte 4: the file has 2 labels, but 'train-images-idx3-ubyte' has 3 images")
        #expect(idxError(idxImages(3, 3, 3), idxLabels([1, 2, 3]))?.description
            == "train-images-idx3-ubyte: error: at byte 8: the images are 3×3 = 9 values each, but the model expects 6 input features")
        #expect(idxError(idxImages(3, 2, 3), idxLabels([1, 10, 3]))?.description
            == "train-labels-idx1-ubyte: error: at byte 9: label 10 of sample 1 is out of range: the model has 10 classes (labels 0 to 9)")
        #expect(idxError(idxImages(3, 2, 3), idxLabels([1, 10, 3]), gz: true)?.description
            == "train-labels-idx1-ubyte.gz: error: at byte 9: label 10 of sample 1 is out of range: the model has 10 classes (labels 0 to 9) (the offset is in the decompressed data)")
        #expect(idxError(idxImages(3, 2, 3), [0, 0, 8, 3] + be32(3) + be32(1) + be32(1) + [1, 2, 3])?.description
            == "train-labels-idx1-ubyte: error: at byte 0: bad magic number 0x00000803: 3 dimensions (expected 0x00000801 for an IDX labels file, 1 dimension)")
        #expect(idxError(idxImages(3, 2, 3), nil)?.message
            == "no labels file found for 'train-images-idx3-ubyte' (expected one such as 'train-labels-idx1-ubyte' next to it)")
        #expect(idxError(idxImages(3, 2, 3) + [1, 2], nil, DataExpectation(featureCount: 6, targets: .none))?.description
            == "train-images-idx3-ubyte: error: at byte 34: 2 bytes of unexpected data after the 18 bytes that the header's sizes 3×2×3 describe")
    }

    @Test func hugeHeaderIsAnErrorNotAnAllocation() {
        // 2^31 - 1 images of 2^16 × 2^16 pixels: the product overflows nothing in 64 bits but is far beyond the file.
        let e = idxError([0, 0, 8, 3] + be32(0x7FFF_FFFF) + be32(0xFFFF) + be32(0xFFFF) + [1, 2, 3], nil)
        #expect(e?.message.hasPrefix("truncated: the header's sizes 2147483647×65535×65535 need") == true)
        let o = idxError([0, 0, 8, 4] + be32(0xFFFF_FFFF) + be32(0xFFFF_FFFF) + be32(0xFFFF_FFFF) + be32(0xFFFF_FFFF), nil)
        #expect(o?.message == "the header's sizes 4294967295×4294967295×4294967295×4294967295 are too large")
    }

    @Test func corruptAndTruncatedGzip() throws {
        let good = gzipCompress(idxImages(20, 2, 3))
        let dir = TempDir()
        var corrupt = good
        corrupt[good.count / 2] ^= 0xFF
        corrupt[good.count / 2 + 1] ^= 0x55
        let pc = dir.write("c-images-idx3-ubyte.gz", corrupt)
        let ec = dataError { try loadData(path: pc, expecting: DataExpectation(featureCount: 6, targets: .none)) }
        #expect(ec?.message.hasPrefix("corrupt compressed data") == true)
        #expect(ec?.byteOffset != nil)

        let pt = dir.write("t-images-idx3-ubyte.gz", Array(good.dropLast(12)))
        let et = dataError { try loadData(path: pt, expecting: DataExpectation(featureCount: 6, targets: .none)) }
        #expect(et?.description == "\(pt): error: at byte \(good.count - 12): truncated compressed data: the stream ends before its end marker (\(good.count - 12) bytes read)")

        // A damaged CRC in the gzip trailer is reported by zlib.
        var crc = good
        crc[good.count - 6] ^= 1
        let pcrc = dir.write("crc-images-idx3-ubyte.gz", crc)
        let ecrc = dataError { try loadData(path: pcrc, expecting: DataExpectation(featureCount: 6, targets: .none)) }
        #expect(ecrc?.message == "corrupt compressed data: incorrect data check")
    }

    @Test func concatenatedGzipMembers() throws {
        let bytes = idxImages(4, 2, 3)
        let joined = gzipCompress(Array(bytes[0..<10])) + gzipCompress(Array(bytes[10...]))
        #expect(try gunzip(joined) == bytes)
    }
}

// MARK: - NPY

@Suite struct DataNPYTests {
    @Test func dtypesAndVersions() throws {
        let dir = TempDir()
        let cases: [(String, [UInt8], [Double], UInt8)] = [
            ("<f4", leF([1.5, -2]), [1.5, -2], 1),
            ("<f8", leD([0.1, 1e300]), [0.1, 1e300], 2),
            ("|u1", [0, 255], [0, 255], 3),
            ("<i4", le([Int32(-5), 7]), [-5, 7], 1),
            ("<i8", le([Int64(-1), 1 << 40]), [-1, 1099511627776], 1),
            ("|i1", [0xFF, 3], [-1, 3], 1),
            ("<i2", le([Int16(-300), 2]), [-300, 2], 1),
            ("<u2", le([UInt16(65535), 2]), [65535, 2], 1),
            (">f8", leD([2.5, 3]).chunked8Reversed(), [2.5, 3], 1),
            ("<f2", le([UInt16(0x3C00), 0xC000]), [1, -2], 1),
            ("|b1", [1, 0], [1, 0], 1),
        ]
        for (descr, data, expected, major) in cases {
            let p = dir.write("a.npy", npyFile("{'descr': '\(descr)', 'fortran_order': False, 'shape': (2,), }", major: major, data: data))
            let a = try readNPY(path: p)
            #expect(a.shape == [2], "\(descr)")
            #expect(a.values == expected, "\(descr)")
            #expect(a.isFloat64 == descr.hasSuffix("f8"))
        }
        // What numpy.save wrote: np.array([[1,2],[3,4],[5,6]], dtype='<i4').
        let numpyI4 = Data(base64Encoded: "k05VTVBZAQB2AHsnZGVzY3InOiAnPGk0JywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDMsIDIpLCB9ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoBAAAAAgAAAAMAAAAEAAAABQAAAAYAAAA=")!
        let a = try readNPY(path: dir.write("i4.npy", Array(numpyI4)))
        #expect(a.shape == [3, 2] && a.values == [1, 2, 3, 4, 5, 6])
    }

    @Test func writeAndRead() throws {
        let dir = TempDir()
        let p = dir.path + "/w.npy"
        try writeNPY(path: p, shape: [2, 3], float64: false, values: [1, 2, 3, 4, 5, 0.5])
        let bytes = Array(FileManager.default.contents(atPath: p)!)
        #expect(bytes.count == 128 + 24)  // the data starts on a 64-byte boundary, as numpy writes it
        let a = try readNPY(path: p)
        #expect(a.shape == [2, 3] && a.values == [1, 2, 3, 4, 5, 0.5] && !a.isFloat64)
        try writeNPY(path: p, shape: [], float64: true, values: [0.1])
        let s = try readNPY(path: p)
        #expect(s.shape == [] && s.values == [0.1] && s.isFloat64)
    }

    func npyError(_ bytes: [UInt8], _ expecting: DataExpectation = classify3) -> String? {
        let dir = TempDir()
        let p = dir.write("a.npy", bytes)
        return dataError { try loadData(path: p, expecting: expecting) }?.description.replacingOccurrences(of: p, with: "a.npy")
    }

    @Test func errors() {
        #expect(npyError(npyFile("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", data: leF([1, 2, 3, 4, 5, 6])))
            == "a.npy: error: at byte 10: the array is in Fortran (column-major) order, which is not supported: save it in C order (numpy.ascontiguousarray)")
        #expect(npyError(npyFile("{'descr': '<c16', 'fortran_order': False, 'shape': (1, 3), }", data: [UInt8](repeating: 0, count: 48)))
            == "a.npy: error: at byte 10: unsupported dtype '<c16' (supported: float16/32/64, int8/16/32/64, uint8/16/32/64, bool)")
        #expect(npyError(npyFile("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", data: [0, 0, 0, 0]))
            == "a.npy: error: at byte 10: unsupported dtype: structured arrays are not supported")
        #expect(npyError(npyFile("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", data: leD([1, 2, 3, 4, 5])))
            == "a.npy: error: at byte 128: truncated: shape (2, 3) of '<f8' needs 48 bytes of data, but only 40 bytes follow")
        #expect(npyError(npyFile("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", major: 3, data: leD([1, 2, 1, 4, 5, 0.5])))
            == "a.npy: error: at byte 168: class label 0.5 of the array at element [1, 2] is not an integer")
        #expect(npyError(npyFile("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }", data: le([Int64(1), 2, 1, 4, 5, 3])))
            == "a.npy: error: at byte 168: class label 3 of the array at element [1, 2] is out of range: the model has 3 classes (labels 0 to 2)")
        #expect(npyError(npyFile("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data: leF([1, 2, 1, .nan, 5, 0])))
            == "a.npy: error: at byte 140: NaN in the data: the array at element [1, 0]")
        #expect(npyError(npyFile("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }", data: leF([1, 2, 1, 4, 5, 0, 1, 1])))
            == "a.npy: error: the array of shape (2, 4) is not a table of 3 columns (2 features + 1 class label): expected shape (N, 3), or an .npz with arrays 'x' and 'y'")
        #expect(npyError(npyFile("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }", data: leF([1, 2, 1, 4, 5, 0, 1, 1])), DataExpectation(featureCount: 3, targets: .none))
            == "a.npy: error: the array of shape (2, 4) has 4 values per sample, but the model expects 3 input features")
        #expect(npyError(npyFile("{'descr': '<f4', 'shape': (2,), }", data: leF([1, 2])))
            == "a.npy: error: at byte 10: malformed NPY header: no 'fortran_order' key")
        #expect(npyError(npyFile("{'descr': '<f4', 'fortran_order': Flase, 'shape': (2,), }", data: leF([1, 2])))
            == "a.npy: error: at byte 44: malformed NPY header: unexpected 'Flase'")
        #expect(npyError([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, 0xFF, 0x7F, 0x7B])
            == "a.npy: error: at byte 8: truncated: the header is 32767 bytes long, but only 1 byte follow")
        #expect(npyError([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 4, 0, 0, 0, 0, 0])
            == "a.npy: error: at byte 6: unsupported NPY format version 4.0 (versions 1, 2 and 3 are supported)")
        #expect(npyError(Array("hello,world\n".utf8))
            == "a.npy: error: at byte 0: not an NPY file: it does not start with the magic string '\\x93NUMPY'")
        #expect(npyError(npyFile("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }", data: []))
            == "a.npy: error: at byte 10: the shape (4294967296, 4294967296, 4294967296) is too large")
        #expect(npyError(npyFile("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 2), }", data: []))?
            .hasPrefix("a.npy: error: at byte 128: truncated: shape (1099511627776, 2) of '<f4' needs 8796093022208 bytes") == true)
    }

    @Test func asDataSet() throws {
        let dir = TempDir()
        // A table: 2 features then the label, in float64.
        let t = dir.write("t.npy", npyFile("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 3), }", data: leD([0.5, 1, 2, 3, 4, 0, 5, 6, 1])))
        let ds = try loadData(path: t, expecting: classify3).train
        #expect(ds.count == 3)
        #expect(features(ds, [0, 2], as: Double.self) == [0.5, 1, 5, 6])
        #expect(targets(ds, [0, 1, 2], as: Double.self) == [2, 0, 1])
        // Images [N, 1, 2, 2] in uint8 as features only: pixels scaled to [0,1], as IDX images are.
        let im = dir.write("im.npy", npyFile("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 1, 2, 2), }", data: [0, 1, 2, 255, 9, 8, 7, 6]))
        let x = try loadData(path: im, expecting: DataExpectation(featureCount: 4, targets: .none)).train
        #expect(x.count == 2)
        #expect(features(x, [1, 0], as: Float.self) == [9, 8, 7, 6, 0, 1, 2, 255].map { Float(Double($0) / 255) })
        #expect(features(x, [0], as: Double.self) == [0, 1.0 / 255, 2.0 / 255, 1])
        // float32 table with values targets.
        let v = dir.write("v.npy", npyFile("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data: leF([1, 2, 3, 4, 5, 6])))
        let r = try loadData(path: v, expecting: DataExpectation(featureCount: 1, targets: .values(count: 2))).train
        #expect(features(r, [0, 1], as: Double.self) == [1, 4])
        #expect(targets(r, [1, 0], as: Float.self) == [5, 6, 2, 3])
    }
}

fileprivate extension Array where Element == UInt8 {
    /// Reverses each 8-byte group (little-endian doubles to big-endian).
    func chunked8Reversed() -> [UInt8] { stride(from: 0, to: count, by: 8).flatMap { self[$0..<$0 + 8].reversed() } }
}

// MARK: - NPZ

/// numpy.savez(f, x=np.array([[0.5, -1.25, 3.0], [2.0, 0.0, -0.125]], dtype=np.float32), y=np.array([1, 0]))
fileprivate let numpySavez = "UEsDBC0AAAAAAAAAIQC//bEw//////////8FABQAeC5ucHkBABAAmAAAAAAAAACYAAAAAAAAAJNOVU1QWQEAdgB7J2Rlc2NyJzogJzxmNCcsICdmb3J0cmFuX29yZGVyJzogRmFsc2UsICdzaGFwZSc6ICgyLCAzKSwgfSAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAKAAAAPwAAoL8AAEBAAAAAQAAAAAAAAAC+UEsDBC0AAAAAAAAAIQBx+zmr//////////8FABQAeS5ucHkBABAAkAAAAAAAAACQAAAAAAAAAJNOVU1QWQEAdgB7J2Rlc2NyJzogJzxpOCcsICdmb3J0cmFuX29yZGVyJzogRmFsc2UsICdzaGFwZSc6ICgyLCksIH0gICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAKAQAAAAAAAAAAAAAAAAAAAFBLAQItAy0AAAAAAAAAIQC//bEwmAAAAJgAAAAFAAAAAAAAAAAAAACAAQAAAAB4Lm5weVBLAQItAy0AAAAAAAAAIQBx+zmrkAAAAJAAAAAFAAAAAAAAAAAAAACAAc8AAAB5Lm5weVBLBQYAAAAAAgACAGYAAACWAQAAAAA="
/// numpy.savez_compressed(f, x=…, y=…, w=np.arange(6, dtype=np.float64).reshape(2,3) / 4)
fileprivate let numpySavezCompressed = "UEsDBC0AAAAIAAAAIQC//bEw//////////8FABQAeC5ucHkBABAAmAAAAAAAAABYAAAAAAAAAJvsF+obEMnIUMZQrZ6SWpxcpG6loG6TZqKuo6Cell9UUpSYF59flJIKEndLzClOBYoXZyQWpAL5GkY6CsaaOgq1CmQDLgYGBnsGhgX7GRgcHIBsEAaBfQBQSwMELQAAAAgAAAAhAHH7Oav//////////wUAFAB5Lm5weQEAEACQAAAAAAAAAEgAAAAAAAAAm+wX6hsQychQxlCtnpJanFykbqWgbpNpoa6joJ6WX1RSlJgXn1+UkgoSd0vMKU4FihdnJBakAvkaRjqaOgq1ChQALkYGVAAAUEsDBC0AAAAIAAAAIQA0MXjI//////////8FABQAdy5ucHkBABAAsAAAAAAAAABXAAAAAAAAAJvsF+obEMnIUMZQrZ6SWpxcpG6loG6TZqGuo6Cell9UUpSYF59flJIKEndLzClOBYoXZyQWpAL5GkY6CsaaOgq1CmQDLgYUcMEeQj+A0i+g9Aco/cUeAFBLAQItAy0AAAAIAAAAIQC//bEwWAAAAJgAAAAFAAAAAAAAAAAAAACAAQAAAAB4Lm5weVBLAQItAy0AAAAIAAAAIQBx+zmrSAAAAJAAAAAFAAAAAAAAAAAAAACAAY8AAAB5Lm5weVBLAQItAy0AAAAIAAAAIQA0MXjIVwAAALAAAAAFAAAAAAAAAAAAAACAAQ4BAAB3Lm5weVBLBQYAAAAAAwADAJkAAACcAQAAAAA="

@Suite struct DataNPZTests {
    @Test func roundTrip() throws {
        let dir = TempDir()
        let p = dir.path + "/weights.npz"
        try writeNPZ(path: p, arrays: [
            (name: "fc1.weight", shape: [2, 3], float64: false, values: [1, 2, 3, 4, 5, 6.5]),
            (name: "fc1.bias", shape: [3], float64: true, values: [0.1, 0.2, 0.3]),
            (name: "empty", shape: [0, 4], float64: true, values: []),
        ])
        let arrays = try readNPZ(path: p)
        #expect(arrays.map(\.name) == ["fc1.weight", "fc1.bias", "empty"])
        #expect(arrays[0].array == NPYArray(shape: [2, 3], values: [1, 2, 3, 4, 5, 6.5], isFloat64: false))
        #expect(arrays[1].array == NPYArray(shape: [3], values: [0.1, 0.2, 0.3], isFloat64: true))
        #expect(arrays[2].array.shape == [0, 4])
        // No temporary file is left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["weights.npz"])
        // Overwriting replaces the file.
        try writeNPZ(path: p, arrays: [(name: "a", shape: [1], float64: true, values: [42])])
        #expect(try readNPZ(path: p).map(\.array.values) == [[42]])
        // Bad arguments are errors.
        #expect(dataError { try writeNPZ(path: p, arrays: [(name: "a", shape: [2], float64: true, values: [1])]) }?.message
            == "array 'a': the shape (2,) holds 2 values, but 1 were given")
        #expect(dataError { try writeNPZ(path: dir.path + "/no/such/dir/w.npz", arrays: []) }?.message == "cannot write: No such file or directory")
    }

    @Test func readsWhatNumpyWrote() throws {
        let dir = TempDir()
        let s = try readNPZ(path: dir.write("s.npz", Array(Data(base64Encoded: numpySavez)!)))
        #expect(s.map(\.name) == ["x", "y"])
        #expect(s[0].array == NPYArray(shape: [2, 3], values: [0.5, -1.25, 3, 2, 0, -0.125], isFloat64: false))
        #expect(s[1].array == NPYArray(shape: [2], values: [1, 0], isFloat64: false))
        let c = try readNPZ(path: dir.write("c.npz", Array(Data(base64Encoded: numpySavezCompressed)!)))
        #expect(c.map(\.name) == ["x", "y", "w"])
        #expect(c[0].array == s[0].array)
        #expect(c[2].array == NPYArray(shape: [2, 3], values: [0, 0.25, 0.5, 0.75, 1, 1.25], isFloat64: true))
    }

    @Test func asDataSet() throws {
        let dir = TempDir()
        for (name, b64) in [("s.npz", numpySavez), ("c.npz", numpySavezCompressed)] {
            let p = dir.write(name, Array(Data(base64Encoded: b64)!))
            let ds = try loadData(path: p, expecting: DataExpectation(featureCount: 3, targets: .classLabels(classes: 2))).train
            #expect(ds.count == 2)
            #expect(features(ds, [1], as: Float.self) == [2, 0, -0.125])
            #expect(targets(ds, [0, 1], as: Double.self) == [1, 0])
            let bad = dataError { try loadData(path: p, expecting: DataExpectation(featureCount: 3, targets: .classLabels(classes: 1))) }
            #expect(bad?.message.hasSuffix("class label 1 of array 'y' at element [0] is out of range: the model has 1 class (labels 0 to 0)") == true)
        }
        // Train and test splits, regression targets [N, 2].
        let p = dir.path + "/split.npz"
        try writeNPZ(path: p, arrays: [
            (name: "x_train", shape: [3, 2], float64: false, values: [1, 2, 3, 4, 5, 6]),
            (name: "y_train", shape: [3, 2], float64: true, values: [0, 1, 2, 3, 4, 5]),
            (name: "x_test", shape: [1, 2], float64: false, values: [7, 8]),
            (name: "y_test", shape: [1, 2], float64: true, values: [9, 10]),
        ])
        let splits = try loadData(path: p, expecting: DataExpectation(featureCount: 2, targets: .values(count: 2)))
        #expect(splits.train.count == 3)
        #expect(targets(splits.train, [2], as: Double.self) == [4, 5])
        let test = try #require(splits.test)
        #expect(features(test, [0], as: Double.self) == [7, 8] && targets(test, [0], as: Float.self) == [9, 10])
    }

    @Test func errors() throws {
        let dir = TempDir()
        let p = dir.path + "/e.npz"
        try writeNPZ(path: p, arrays: [(name: "a", shape: [1], float64: true, values: [1])])
        #expect(dataError { try loadData(path: p, expecting: classify3) }?.description
            == "\(p): error: expected arrays 'x' and 'y' (or 'x_train', 'y_train'), but the archive has arrays 'a'")
        try writeNPZ(path: p, arrays: [(name: "x", shape: [2, 2], float64: true, values: [1, 2, 3, 4]), (name: "y", shape: [3], float64: true, values: [1, 2, 0])])
        #expect(dataError { try loadData(path: p, expecting: classify3) }?.message
            == "array 'y' of shape (3,) does not have 2 rows like 'x' (2, 2)")
        // A flipped data byte in a stored member: the CRC check catches it.
        var bytes = Array(FileManager.default.contents(atPath: p)!)
        bytes[120] ^= 0x40
        let pc = dir.write("crc.npz", bytes)
        let e = dataError { try readNPZ(path: pc) }
        #expect(e?.message.hasPrefix("corrupt zip archive: CRC-32 mismatch in 'x.npy'") == true)
        #expect(e?.byteOffset == 35)
        // Truncated archives.
        let pt = dir.write("t.npz", Array(bytes[0..<200]))
        #expect(dataError { try readNPZ(path: pt) }?.description == "\(pt): error: at byte 200: truncated zip archive: the end-of-central-directory record is missing")
        // A corrupted deflated member.
        var c = Array(Data(base64Encoded: numpySavezCompressed)!)
        c[70] ^= 0xFF
        let pd = dir.write("d.npz", c)
        let ed = dataError { try readNPZ(path: pd) }
        #expect(ed?.description == "\(pd): error: at byte 55: corrupt zip archive: CRC-32 mismatch in 'x.npy' (stored 0x30B1FDBF, computed 0xA5BFB044)")
        // Deflate data that zlib rejects.
        c = Array(Data(base64Encoded: numpySavezCompressed)!)
        for i in 56..<64 { c[i] = 0xFF }
        let ez = dataError { try readNPZ(path: dir.write("d2.npz", c)) }
        #expect(ez?.message.hasPrefix("in member 'x.npy': corrupt compressed data") == true, "\(ez?.description ?? "")")
        #expect(dataError { try readNPZ(path: dir.write("z.npz", [])) }?.message == "the file is empty (expected an .npz zip archive)")
    }
}

/// Zip bombs are refused from the members' headers, before their data is decompressed.
@Suite struct ZipBombTests {
    /// A zip archive whose members are deflated (raw deflate from zlib's gzip stream) and whose
    /// directory gives each member the size `declared` (nil: the true size).
    static func archive(_ members: [(name: String, data: [UInt8], declared: Int?)]) -> [UInt8] {
        func le(_ v: Int, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        var out: [UInt8] = [], central: [UInt8] = []
        for m in members {
            let gz = gzipCompress(m.data, level: 9)
            let deflated = Array(gz[10..<(gz.count - 8)])
            let name = Array(m.name.utf8), crc = Int(crc32Of(m.data)), size = m.declared ?? m.data.count
            let fields = le(20, 2) + le(0, 2) + le(8, 2) + le(0, 4) + le(crc, 4) + le(deflated.count, 4) + le(min(size, 0xFFFF_FFFE), 4) + le(name.count, 2) + le(0, 2)
            central += le(0x0201_4B50, 4) + le(20, 2) + fields + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(out.count, 4) + name
            out += le(0x0403_4B50, 4) + fields + name + deflated
        }
        return out + central + le(0x0605_4B50, 4) + le(0, 4) + le(members.count, 2) + le(members.count, 2) + le(central.count, 4) + le(out.count, 4) + le(0, 2)
    }

    /// An NPY header for float64 of this shape, padded as numpy does.
    static func npyHeader(_ shape: [Int]) -> [UInt8] {
        var text = "{'descr': '<f8', 'fortran_order': False, 'shape': (\(shape.map(String.init).joined(separator: ", "))\(shape.count == 1 ? "," : "")), }"
        while (10 + text.utf8.count + 1) % 64 != 0 { text += " " }
        text += "\n"
        let length = text.utf8.count
        return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(length & 0xFF), UInt8(length >> 8)] + Array(text.utf8)
    }

    @Test func rowsAreComparedBeforeInflating() throws {
        // x declares (200000000, 2) (3.2 GB) and the directory agrees; y has 4 rows. The data is only
        // a little of the zeros x would need: had x been inflated first, this would be a 3.2 GB
        // allocation; it is refused from the headers.
        let x = Self.npyHeader([200_000_000, 2]) + [UInt8](repeating: 0, count: 1 << 20)
        let y = Self.npyHeader([4]) + [UInt8](repeating: 0, count: 32)
        let bytes = Self.archive([("x.npy", x, 128 + 3_200_000_000), ("y.npy", y, nil)])
        let expecting = DataExpectation(featureCount: 2, targets: .values(count: 1))
        do {
            _ = try loadData(bytes: bytes, path: "bomb.npz", expecting: expecting)
            Issue.record("the bomb loaded")
        } catch {
            #expect(error.message.contains("array 'y' of shape (4,) does not have 200000000 rows like 'x' (200000000, 2)"), "\(error.message)")
        }
    }

    @Test func aHeaderThatDisagreesWithTheDirectoryIsRefused() throws {
        let x = Self.npyHeader([200_000_000, 2]) + [UInt8](repeating: 0, count: 1024)
        let bytes = Self.archive([("x.npy", x, nil)])
        do {
            _ = try parseNPZMembers(bytes)
            Issue.record("accepted")
        } catch {
            #expect(error.message == "in member 'x.npy': its header's shape (200000000, 2) needs 3200000128 bytes, but the archive says it holds 1152 bytes")
        }
    }
}

/// Every input the data fuzz harness (Fuzz/data.swift) ever failed on loads or is an error.
@Suite struct DataFuzzFindingTests {
    @Test func findingsStayFixed() throws {
        let findings = try fuzzFindings("data")
        #expect(!findings.isEmpty)
        for (file, bytes) in findings {
            for expecting in [DataExpectation(featureCount: 4, targets: .classLabels(classes: 3)), DataExpectation(featureCount: 4, targets: .none)] {
                _ = try? loadData(bytes: bytes, path: file, expecting: expecting)
            }
        }
    }
}

// MARK: - Fuzzing: mutated files load or throw DataError, never crash

@Suite struct DataFuzzTests {
    func mutate(_ b: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var m = b
        for _ in 0..<(1 + rng.below(4)) {
            switch rng.below(6) {
            case 0, 1:  // flip a byte
                if !m.isEmpty { m[rng.below(m.count)] = UInt8(truncatingIfNeeded: rng.next()) }
            case 2:  // truncate
                m = Array(m[0..<rng.below(m.count + 1)])
            case 3:  // insert bytes
                let at = rng.below(m.count + 1)
                m.insert(contentsOf: (0..<(1 + rng.below(8))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, at: at)
            case 4:  // interesting values in the header
                if m.count >= 4 {
                    let at = rng.below(min(m.count - 3, 64))
                    let v: [[UInt8]] = [[0xFF, 0xFF, 0xFF, 0xFF], [0x7F, 0xFF, 0xFF, 0xFF], [0, 0, 0, 0], [0x80, 0, 0, 0], [0, 0, 0, 1]]
                    m.replaceSubrange(at..<at + 4, with: v[rng.below(v.count)])
                }
            default:  // delete a range
                if !m.isEmpty {
                    let s = rng.below(m.count)
                    m.removeSubrange(s..<min(m.count, s + 1 + rng.below(16)))
                }
            }
        }
        return m
    }

    @Test func mutatedFilesNeverCrash() throws {
        let csv = Array("a,b,label\n0.5,1,2\n-3,4e-1,0\n7,8,1\n".utf8)
        let idx = idxImages(4, 2, 3) + []
        let npy = npyFile("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 3), }", data: leF([1, 2, 0, 3, 4, 1, 5, 6, 2]))
        let npz = Array(Data(base64Encoded: numpySavez)!)
        let npzc = Array(Data(base64Encoded: numpySavezCompressed)!)
        let gz = gzipCompress(idx)
        let expect = [
            DataExpectation(featureCount: 2, targets: .classLabels(classes: 3)),
            DataExpectation(featureCount: 3, targets: .classLabels(classes: 2)),
            DataExpectation(featureCount: 6, targets: .none),
            DataExpectation(featureCount: 3, targets: .values(count: 1)),
        ]
        var rng = SplitMix64(seed: 12345)
        var loaded = 0, failed = 0
        let seeds: [(String, [UInt8])] = [("f.csv", csv), ("f-images-idx3-ubyte", idx), ("f.npy", npy), ("f.npz", npz), ("c.npz", npzc), ("g-images-idx3-ubyte.gz", gz), ("x.bin", [])]
        for round in 0..<3500 {
            let (name, seed) = seeds[round % seeds.count]
            let bytes = seed.isEmpty ? (0..<rng.below(64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) } : mutate(seed, &rng)
            do {
                _ = try loadData(bytes: bytes, path: name, expecting: expect[rng.below(expect.count)])
                loaded += 1
            } catch {
                #expect(!error.description.isEmpty)
                failed += 1
            }
            if name.hasSuffix(".npz") {
                if (try? parseNPZMembers(bytes)) != nil { loaded += 1 }
            }
            if name.hasSuffix(".npy") {
                if (try? parseNPY(bytes)) != nil { loaded += 1 }
            }
        }
        #expect(loaded > 0 && failed > 0)
    }
}

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// CSV: comma-separated numbers, one sample per line: the features, then the targets (a class label, or target
// values, or nothing). A first line with a non-numeric cell is a header and is skipped; blank lines are skipped;
// a trailing '\r' is tolerated; cells may be surrounded by spaces or double quotes.

private let comma = UInt8(ascii: ",")
private let quote = UInt8(ascii: "\"")
private let newline = UInt8(ascii: "\n")
private let cr = UInt8(ascii: "\r")

@inline(__always) private func isBlank(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 }

/// 10^0 … 10^22, all exact in a Double.
private let powersOfTen: [Double] = (0...22).map { k in (0..<k).reduce(1.0) { a, _ in a * 10 } }

/// The result of reading one cell as a number.
private enum CellNumber {
    case value(Double)
    case notANumber
}

/// Parses the bytes [s, e) as a number: a fast path for plain integers, strtod otherwise (whole cell must be used).
@inline(__always)
private func parseNumber(_ p: UnsafePointer<UInt8>, _ s0: Int, _ e0: Int) -> CellNumber {
    var s = s0, e = e0
    while s < e, isBlank(p[s]) { s += 1 }
    while e > s, isBlank(p[e - 1]) { e -= 1 }
    if e - s >= 2, p[s] == quote, p[e - 1] == quote {
        s += 1; e -= 1
        while s < e, isBlank(p[s]) { s += 1 }
        while e > s, isBlank(p[e - 1]) { e -= 1 }
    }
    if s == e { return .notANumber }
    // Fast path (Clinger): [-+]digits[.digits][e[-+]digits] with at most 15 significant digits and a small power of
    // ten: the mantissa and 10^k are exact Doubles, so one multiplication or division rounds correctly, like strtod.
    var i = s
    var neg = false
    if p[i] == UInt8(ascii: "-") || p[i] == UInt8(ascii: "+") { neg = p[i] == UInt8(ascii: "-"); i += 1 }
    var mantissa = 0
    var digits = 0
    var fractionDigits = 0
    var sawDigit = false
    while i < e, p[i] &- 0x30 < 10 {
        if mantissa != 0 || p[i] != 0x30 { digits += 1 }
        mantissa = digits <= 15 ? mantissa &* 10 &+ Int(p[i] &- 0x30) : mantissa
        sawDigit = true
        i += 1
    }
    if i < e, p[i] == UInt8(ascii: ".") {
        i += 1
        while i < e, p[i] &- 0x30 < 10 {
            if mantissa != 0 || p[i] != 0x30 { digits += 1 }
            mantissa = digits <= 15 ? mantissa &* 10 &+ Int(p[i] &- 0x30) : mantissa
            fractionDigits += 1
            sawDigit = true
            i += 1
        }
    }
    var exponent = 0
    if sawDigit, i < e, p[i] | 0x20 == UInt8(ascii: "e") {
        var j = i + 1
        var eneg = false
        if j < e, p[j] == UInt8(ascii: "-") || p[j] == UInt8(ascii: "+") { eneg = p[j] == UInt8(ascii: "-"); j += 1 }
        var ev = 0
        let start = j
        while j < e, p[j] &- 0x30 < 10, j - start < 6 { ev = ev * 10 + Int(p[j] &- 0x30); j += 1 }
        if j > start { exponent = eneg ? -ev : ev; i = j } else { i = -1 }
    }
    if sawDigit, i == e, digits <= 15 {
        let k = exponent - fractionDigits
        if k >= -22 && k <= 22 {
            let m = Double(mantissa)
            let v = k < 0 ? m / powersOfTen[-k] : m * powersOfTen[k]
            return .value(neg ? -v : v)
        }
    }
    // strtod needs a NUL-terminated copy; it must consume the whole cell.
    let len = e - s
    if len > 400 { return .notANumber }
    return withUnsafeTemporaryAllocation(of: CChar.self, capacity: len + 1) { buf -> CellNumber in
        for k in 0..<len {
            let c = p[s + k]
            // strtod also accepts hex floats and leading spaces; allow only decimal number characters and nan/inf words.
            buf[k] = CChar(bitPattern: c)
        }
        buf[len] = 0
        let first = p[s] == UInt8(ascii: "-") || p[s] == UInt8(ascii: "+") ? (len > 1 ? p[s + 1] : 0) : p[s]
        if first == UInt8(ascii: "0"), len > 2 {
            let second = p[s + (p[s] == UInt8(ascii: "-") || p[s] == UInt8(ascii: "+") ? 2 : 1)]
            if second == UInt8(ascii: "x") || second == UInt8(ascii: "X") { return .notANumber }
        }
        var end: UnsafeMutablePointer<CChar>? = nil
        let v = strtod(buf.baseAddress!, &end)
        guard let end, end - buf.baseAddress! == len else { return .notANumber }
        return .value(v)
    }
}

/// The character column (1-based) of byte `pos` in the line starting at `lineStart`: UTF-8 continuation bytes don't count.
private func characterColumn(_ p: UnsafePointer<UInt8>, lineStart: Int, pos: Int) -> Int {
    var col = 1
    var i = lineStart
    while i < pos {
        if p[i] & 0xC0 != 0x80 { col += 1 }
        i += 1
    }
    return col
}

/// Splits the line [s, e) into cells at commas outside double quotes; returns (start, end) byte ranges.
private func splitCells(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, into cells: inout [(Int, Int)]) {
    cells.removeAll(keepingCapacity: true)
    var i = s
    var cellStart = s
    var inQuotes = false
    while i < e {
        let c = p[i]
        if c == quote {
            inQuotes.toggle()
        } else if c == comma && !inQuotes {
            cells.append((cellStart, i))
            cellStart = i + 1
        }
        i += 1
    }
    cells.append((cellStart, e))
}

/// Parses CSV bytes into a data set for `expecting`. Errors name `path` with the line and column.
func parseCSV(_ bytes: [UInt8], path: String, expecting: DataExpectation) throws(DataError) -> Dataset {
    if bytes.isEmpty { throw DataError(path: path, message: "the file is empty") }
    let featureCount = expecting.featureCount
    let targetCols = expecting.targetColumns
    let expectedCols = featureCount + targetCols
    var classes = 0
    var isLabels = false
    var columnsText = "\(featureCount) feature\(featureCount == 1 ? "" : "s")"
    switch expecting.targets {
    case .none: break
    case .values(let n): columnsText += " + \(n) target value\(n == 1 ? "" : "s")"
    case .classLabels(let c): classes = c; isLabels = true; columnsText += " + 1 class label"
    }

    var features: [Double] = []
    var labels: [Int32] = []
    var values: [Double] = []
    var rows = 0
    var sawHeader = false

    var failure: DataError? = nil
    bytes.withUnsafeBufferPointer { buf in
        let p = buf.baseAddress!
        let n = buf.count
        var pos = 0
        if n >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF { pos = 3 }  // UTF-8 byte order mark
        var lineNo = 0
        var firstContentLine = true
        var cells: [(Int, Int)] = []
        cells.reserveCapacity(expectedCols + 1)
        features.reserveCapacity(min(n / 2, 1 << 24))

        func fail(_ line: Int, _ lineStart: Int, _ at: Int, _ message: String) {
            failure = DataError(path: path, line: line, column: characterColumn(p, lineStart: lineStart, pos: at), message: message)
        }
        func cellText(_ c: (Int, Int)) -> String {
            var s = c.0, e = c.1
            while s < e, isBlank(p[s]) { s += 1 }
            while e > s, isBlank(p[e - 1]) { e -= 1 }
            return quoteForMessage(UnsafeBufferPointer(start: p + s, count: e - s))
        }

        while pos < n {
            lineNo += 1
            let lineStart = pos
            var lineEnd = pos
            while lineEnd < n && p[lineEnd] != newline { lineEnd += 1 }
            pos = lineEnd + 1
            var contentEnd = lineEnd
            if contentEnd > lineStart && p[contentEnd - 1] == cr { contentEnd -= 1 }
            // Blank lines are skipped.
            var k = lineStart
            while k < contentEnd, isBlank(p[k]) || p[k] == cr { k += 1 }
            if k == contentEnd { continue }

            splitCells(p, lineStart, contentEnd, into: &cells)

            if firstContentLine {
                firstContentLine = false
                var numeric = true
                for c in cells {
                    if case .notANumber = parseNumber(p, c.0, c.1) { numeric = false; break }
                }
                if !numeric { sawHeader = true; continue }
            }

            if cells.count != expectedCols {
                let at = cells.count > expectedCols ? cells[expectedCols].0 : contentEnd
                fail(lineNo, lineStart, at, "expected \(expectedCols) column\(expectedCols == 1 ? "" : "s") (\(columnsText)), found \(cells.count)")
                return
            }
            for (ci, c) in cells.enumerated() {
                guard case .value(let v) = parseNumber(p, c.0, c.1) else {
                    let text = cellText(c)
                    fail(lineNo, lineStart, c.0, text == "''" ? "empty cell, expected a number" : "not a number: \(text)")
                    return
                }
                if !v.isFinite {
                    fail(lineNo, lineStart, c.0, "\(v.isNaN ? "NaN" : "infinite value") in the data: \(cellText(c))")
                    return
                }
                if ci < featureCount {
                    features.append(v)
                } else if isLabels {
                    guard v == v.rounded(), abs(v) < 1e9 else {
                        fail(lineNo, lineStart, c.0, "class label \(cellText(c)) is not an integer")
                        return
                    }
                    let label = Int(v)
                    guard label >= 0 && label < classes else {
                        fail(lineNo, lineStart, c.0, "class label \(label) is out of range: the model has \(classes) class\(classes == 1 ? "" : "es") (labels 0 to \(classes - 1))")
                        return
                    }
                    labels.append(Int32(label))
                } else {
                    values.append(v)
                }
            }
            rows += 1
        }
    }
    if let failure { throw failure }
    if rows == 0 {
        throw DataError(path: path, message: sawHeader ? "no data rows (only a header line)" : "no data rows (the file has only blank lines)")
    }
    let targets: Dataset.Targets
    switch expecting.targets {
    case .none: targets = .none
    case .values(let n): targets = .values(values, width: n)
    case .classLabels: targets = .labels(labels)
    }
    return Dataset(count: rows, featureCount: featureCount, features: .float64(features), targets: targets, source: path)
}

/// A model file held as bytes. Locations are byte offsets; line and column are computed only when
/// a diagnostic is shown.
public final class SourceFile: Sendable {
    public let path: String
    public let bytes: [UInt8]
    /// Byte offset where each line starts.
    private let lineStarts: [Int]

    public init(path: String, bytes: [UInt8]) {
        self.path = path
        self.bytes = bytes
        var starts = [0]
        bytes.withUnsafeBufferPointer { buffer in
            var index = 0
            while index < buffer.count {
                if buffer[index] == UInt8(ascii: "\n") { starts.append(index + 1) }
                index += 1
            }
        }
        self.lineStarts = starts
    }

    public convenience init(path: String, text: String) {
        self.init(path: path, bytes: Array(text.utf8))
    }

    /// The text of the whole file, with invalid UTF-8 replaced.
    public var text: String { String(decoding: bytes, as: UTF8.self) }

    /// 1-based line of a byte offset.
    public func line(of offset: Int) -> Int {
        var low = 0, high = lineStarts.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if lineStarts[mid] <= offset { low = mid } else { high = mid - 1 }
        }
        return low + 1
    }

    /// 1-based line and column (in Unicode scalars) of a byte offset.
    public func lineAndColumn(of offset: Int) -> (line: Int, column: Int) {
        let line = line(of: offset)
        let start = lineStarts[line - 1]
        let end = min(max(offset, start), bytes.count)
        return (line, scalarCount(start, end) + 1)
    }

    /// Unicode scalars in bytes[start..<end] as decoded (invalid bytes become U+FFFD); ASCII is counted
    /// without decoding (a diagnostic at the end of a 10 MB line stays fast).
    private func scalarCount(_ start: Int, _ end: Int) -> Int {
        let ascii = bytes.withUnsafeBufferPointer { buffer in
            var index = start
            while index < end, buffer[index] < 0x80 { index += 1 }
            return index == end
        }
        return ascii ? end - start : String(decoding: bytes[start..<end], as: UTF8.self).unicodeScalars.count
    }

    /// The text of a line for showing under a diagnostic; a line longer than 4 KiB is cut to a window
    /// of about 512 bytes either side of `offset`. `column` is the 1-based column of `offset` in `text`.
    public func lineExcerpt(_ line: Int, around offset: Int) -> (text: String, column: Int, cutBefore: Bool, cutAfter: Bool) {
        guard line >= 1, line <= lineStarts.count else { return ("", 1, false, false) }
        let lineStart = lineStarts[line - 1]
        var lineEnd = line < lineStarts.count ? lineStarts[line] - 1 : bytes.count
        if lineEnd > lineStart, bytes[lineEnd - 1] == UInt8(ascii: "\r") { lineEnd -= 1 }
        let offset = min(max(offset, lineStart), max(lineStart, lineEnd))
        guard lineEnd - lineStart > 4096 else {
            return (lineText(line), scalarCount(lineStart, offset) + 1, false, false)
        }
        func isContinuation(_ index: Int) -> Bool { index < bytes.count && bytes[index] & 0xC0 == 0x80 }
        var start = max(lineStart, offset - 512)
        while start < offset, isContinuation(start) { start += 1 }
        var end = min(lineEnd, offset + 512)
        while end > offset, end < lineEnd, isContinuation(end) { end -= 1 }
        let text = String(decoding: bytes[start..<end], as: UTF8.self)
        return (text, scalarCount(start, offset) + 1, start > lineStart, end < lineEnd)
    }

    /// The text of a 1-based line, without its newline.
    public func lineText(_ line: Int) -> String {
        guard line >= 1, line <= lineStarts.count else { return "" }
        let start = lineStarts[line - 1]
        var end = line < lineStarts.count ? lineStarts[line] - 1 : bytes.count
        if end > start, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        return String(decoding: bytes[start..<max(start, end)], as: UTF8.self)
    }

    /// The source text of a range (for quoting statements in notes).
    public func text(of range: SourceRange) -> String {
        let start = max(0, min(range.start, bytes.count)), end = max(start, min(range.end, bytes.count))
        return String(decoding: bytes[start..<end], as: UTF8.self)
    }
}

/// A half-open byte range in a source file.
public struct SourceRange: Hashable, Sendable, CustomStringConvertible {
    public var start: Int
    public var end: Int
    public init(start: Int, end: Int) { self.start = start; self.end = max(start, end) }
    public func through(_ other: SourceRange) -> SourceRange { SourceRange(start: start, end: max(end, other.end)) }
    public var description: String { "\(start)..<\(end)" }
}

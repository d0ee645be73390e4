/// A message about a place in a model file, rendered in the format every compiler uses:
///
///     models/bad.nn:3:4: error: fc expects 4 input features, but the previous layer produces 3
///     fc 4->1
///        ^
///     models/bad.nn:1:1: note: the previous layer is 'fc 2->3'
public struct Diagnostic: Error, Sendable, Equatable {
    public enum Severity: String, Sendable { case error, warning, note }
    public struct Note: Sendable, Equatable {
        public var code: DiagnosticCode
        public var message: String
        public var range: SourceRange?
        public init(_ code: DiagnosticCode, _ message: String, at range: SourceRange?) {
            self.code = code; self.message = message; self.range = range
        }
    }
    /// The catalog entry (its id is printed after the severity); nil only for diagnostics made by
    /// tests to render a message alone.
    public var code: DiagnosticCode?
    public var severity: Severity
    public var message: String
    public var range: SourceRange
    public var notes: [Note]

    public init(_ code: DiagnosticCode, _ message: String, at range: SourceRange, notes: [Note] = []) {
        self.code = code
        self.severity = code.severity
        self.message = message
        self.range = range
        self.notes = notes
    }

    /// A message without a catalog id (tests render expected messages with it).
    public init(_ message: String, at range: SourceRange, notes: [Note] = [], severity: Severity = .error) {
        self.code = nil
        self.severity = severity
        self.message = message
        self.range = range
        self.notes = notes
    }

    /// `file:line:col: severity[ID]: message`, the source line and a caret under the range, then the notes.
    public func render(in source: SourceFile) -> String {
        let (line, column) = source.lineAndColumn(of: range.start)
        var out = "\(source.path):\(line):\(column): \(severity.rawValue)\(code.map { "[\($0.rawValue)]" } ?? ""): \(message)\n"
        out += Diagnostic.snippet(source: source, range: range, line: line, column: column)
        for note in notes {
            if let range = note.range {
                let (noteLine, noteColumn) = source.lineAndColumn(of: range.start)
                out += "\(source.path):\(noteLine):\(noteColumn): note: \(note.message)\n"
            } else {
                out += "\(source.path): note: \(note.message)\n"
            }
        }
        return out
    }

    /// The line and a caret line; long lines are cut to a window around the column.
    static func snippet(source: SourceFile, range: SourceRange, line: Int, column: Int) -> String {
        // A huge line (a 10 MB token) is cut to a window around the range before it is decoded.
        let excerpt = source.lineExcerpt(line, around: range.start)
        let text = Array(excerpt.text.unicodeScalars)
        // The column just past the range (ranges end on character boundaries; the last byte of a
        // multi-byte character would not).
        let (endLine, endColumn) = source.lineAndColumn(of: range.end)
        let width = endLine == line && range.end > range.start ? max(1, endColumn - column) : 1
        let column = excerpt.column
        let maxWidth = 120
        var first = 0
        if column - 1 > maxWidth - 20 { first = column - 1 - 40 }
        let last = min(text.count, first + maxWidth)
        let shown = first < last ? String(String.UnicodeScalarView(text[first..<last])) : ""
        let prefix = first > 0 || excerpt.cutBefore ? "..." : ""
        let suffix = last < text.count || excerpt.cutAfter ? "..." : ""
        let caretColumn = column - 1 - first + prefix.count
        let tildes = max(0, min(width, max(1, last - (column - 1))) - 1)
        let visible = shown.map { $0 == "\t" ? " " : $0 }
        return prefix + String(visible) + suffix + "\n"
            + String(repeating: " ", count: max(0, caretColumn)) + "^" + String(repeating: "~", count: tildes) + "\n"
    }
}

/// One or more diagnostics; thrown when a file cannot be compiled. All independent errors of a
/// file are collected before it is thrown.
public struct DiagnosticError: Error, Sendable {
    public var source: SourceFile
    public var diagnostics: [Diagnostic]
    public init(source: SourceFile, diagnostics: [Diagnostic]) {
        self.source = source
        self.diagnostics = diagnostics
    }
    public var rendered: String { diagnostics.map { $0.render(in: source) }.joined() }
}

extension Array where Element == Diagnostic {
    /// In file order (stable for diagnostics at the same place).
    public func inFileOrder() -> [Diagnostic] {
        enumerated().sorted { ($0.element.range.start, $0.offset) < ($1.element.range.start, $1.offset) }.map(\.element)
    }
    public var containsErrors: Bool { contains { $0.severity == .error } }
}

/// A token's text as quoted in a message: `'text'`, with very long text cut (a 10 MB word must not
/// become a 10 MB message).
public func quoted(_ text: String, limit: Int = 40) -> String {
    // utf8.count is O(1); counting the scalars of a 10 MB word is not.
    guard text.utf8.count > limit, text.unicodeScalars.prefix(limit + 1).count > limit else { return "'\(text)'" }
    return "'" + String(String.UnicodeScalarView(text.unicodeScalars.prefix(limit))) + "…'"
}

/// "Did you mean" for misspelled words: the closest candidate within a small edit distance.
public func suggestion(for word: String, among candidates: [String]) -> String? {
    guard word.utf8.count <= 40 else { return nil }
    let lowered = word.lowercased()
    var best: (String, Int)?
    for candidate in candidates {
        let distance = editDistance(lowered, candidate)
        let limit = max(1, min(3, candidate.count / 3))
        if distance <= limit, distance < (best?.1 ?? Int.max) { best = (candidate, distance) }
    }
    return best?.0
}

func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.unicodeScalars), b = Array(b.unicodeScalars)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    // Optimal string alignment: insertions, deletions, substitutions and adjacent transpositions.
    var beforePrevious = [Int](repeating: 0, count: b.count + 1)
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                current[j] = min(current[j], beforePrevious[j - 2] + 1)
            }
        }
        (beforePrevious, previous, current) = (previous, current, beforePrevious)
    }
    return previous[b.count]
}

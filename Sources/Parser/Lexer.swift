/// The tokens of the model language.
public enum TokenKind: Equatable, Sendable {
    case word          // keywords and names: fc, tanh, lr, on …
    case integer       // 3
    case number        // 0.1, 1e-3, -1 (anything numeric that is not a plain non-negative integer)
    case string        // "data/xor.csv"
    case arrow         // ->
    case times         // the x of 1x28x28 and 3x3
    case leftParen, rightParen, comma
    case separator     // newline or ;
    case end
}

public struct Token: Sendable {
    public var kind: TokenKind
    public var range: SourceRange
    /// The token's text (for strings: the unquoted, unescaped value).
    public var text: String
}

/// Splits a model file into tokens. Never fails: characters it does not understand become
/// diagnostics and are skipped.
public struct Lexer {
    let source: SourceFile
    public private(set) var diagnostics: [Diagnostic] = []

    public init(source: SourceFile) { self.source = source }

    public mutating func tokenize() -> [Token] {
        let bytes = source.bytes
        var tokens: [Token] = []
        var i = 0
        func isDigit(_ b: UInt8) -> Bool { b >= 48 && b <= 57 }
        func isLetter(_ b: UInt8) -> Bool { (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || b == 95 }
        func text(_ start: Int, _ end: Int) -> String { String(decoding: bytes[start..<end], as: UTF8.self) }
        while i < bytes.count {
            let byte = bytes[i]
            let start = i
            switch byte {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"):
                i += 1
            case UInt8(ascii: "#"):
                while i < bytes.count, bytes[i] != UInt8(ascii: "\n") { i += 1 }
            case UInt8(ascii: "\n"), UInt8(ascii: ";"):
                i += 1
                // A run of separators is one token (a file of a million blank lines stays small).
                tokens.append(Token(kind: .separator, range: SourceRange(start: start, end: i), text: text(start, i)))
                // The rest of a run of blank lines and separators is part of the same token (a file
                // of ten million newlines stays one token, and fast even in debug builds).
                i = bytes.withUnsafeBufferPointer { buffer in
                    var j = i
                    while j < buffer.count {
                        let b = buffer[j]
                        guard b == 10 || b == 59 || b == 32 || b == 9 || b == 13 else { break }  // \n ; space \t \r
                        j += 1
                    }
                    return j
                }
            case UInt8(ascii: "("): i += 1; tokens.append(Token(kind: .leftParen, range: SourceRange(start: start, end: i), text: "("))
            case UInt8(ascii: ")"): i += 1; tokens.append(Token(kind: .rightParen, range: SourceRange(start: start, end: i), text: ")"))
            case UInt8(ascii: ","): i += 1; tokens.append(Token(kind: .comma, range: SourceRange(start: start, end: i), text: ","))
            case UInt8(ascii: "-") where i + 1 < bytes.count && bytes[i + 1] == UInt8(ascii: ">"):
                i += 2
                tokens.append(Token(kind: .arrow, range: SourceRange(start: start, end: i), text: "->"))
            case UInt8(ascii: "\""):
                i += 1
                var value: [UInt8] = []
                var closed = false
                while i < bytes.count, bytes[i] != UInt8(ascii: "\n") {
                    if bytes[i] == UInt8(ascii: "\"") { closed = true; i += 1; break }
                    if bytes[i] == UInt8(ascii: "\\"), i + 1 < bytes.count,
                       bytes[i + 1] == UInt8(ascii: "\"") || bytes[i + 1] == UInt8(ascii: "\\") {
                        value.append(bytes[i + 1]); i += 2; continue
                    }
                    value.append(bytes[i]); i += 1
                }
                if !closed {
                    diagnostics.append(Diagnostic(.unterminatedString, "unterminated string; add a closing '\"'", at: SourceRange(start: start, end: i)))
                }
                tokens.append(Token(kind: .string, range: SourceRange(start: start, end: i), text: String(decoding: value, as: UTF8.self)))
            // A number starts with a digit, a sign or a point followed by a digit, or a sign and a point
            // followed by a digit (-.5). (".." is not a number: it must not become an empty token.)
            case _ where isDigit(byte)
                || (byte == UInt8(ascii: ".") && i + 1 < bytes.count && isDigit(bytes[i + 1]))
                || ((byte == UInt8(ascii: "-") || byte == UInt8(ascii: "+")) && i + 1 < bytes.count
                    && (isDigit(bytes[i + 1]) || (bytes[i + 1] == UInt8(ascii: ".") && i + 2 < bytes.count && isDigit(bytes[i + 2])))):
                var isInteger = true
                if byte == UInt8(ascii: "-") || byte == UInt8(ascii: "+") { isInteger = false; i += 1 }
                while i < bytes.count, isDigit(bytes[i]) { i += 1 }
                if i < bytes.count, bytes[i] == UInt8(ascii: "."), !(i + 1 < bytes.count && bytes[i + 1] == UInt8(ascii: ".")) {
                    isInteger = false; i += 1
                    while i < bytes.count, isDigit(bytes[i]) { i += 1 }
                }
                if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
                    var j = i + 1
                    if j < bytes.count, bytes[j] == UInt8(ascii: "-") || bytes[j] == UInt8(ascii: "+") { j += 1 }
                    if j < bytes.count, isDigit(bytes[j]) {
                        isInteger = false
                        i = j
                        while i < bytes.count, isDigit(bytes[i]) { i += 1 }
                    }
                }
                tokens.append(Token(kind: isInteger ? .integer : .number, range: SourceRange(start: start, end: i), text: text(start, i)))
                // 1x28x28, 3x3: an x between numbers is the dimension separator
                if i + 1 < bytes.count, bytes[i] == UInt8(ascii: "x"), isDigit(bytes[i + 1]) {
                    tokens.append(Token(kind: .times, range: SourceRange(start: i, end: i + 1), text: "x"))
                    i += 1
                }
            case _ where isLetter(byte):
                while i < bytes.count, isLetter(bytes[i]) || isDigit(bytes[i]) { i += 1 }
                let word = text(start, i)
                // "x" alone is a times sign, as in 3 x 3
                tokens.append(Token(kind: word == "x" ? .times : .word, range: SourceRange(start: start, end: i), text: word))
            default:
                // One Unicode character (or one invalid byte) that the language does not use.
                var length = 1
                if byte >= 0xC0 {
                    let expected = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : 2
                    var valid = i + expected <= bytes.count
                    if valid { for k in 1..<expected where bytes[i + k] & 0xC0 != 0x80 { valid = false } }
                    if valid { length = expected }
                }
                let shown: String
                if byte < 0x20 || byte == 0x7F || (byte >= 0x80 && length == 1) {
                    shown = "byte 0x" + String(byte, radix: 16, uppercase: true)
                } else {
                    shown = "character '\(text(i, i + length))'"
                }
                let range = SourceRange(start: i, end: i + length)
                i += length
                // Report a run of junk once, not byte by byte.
                if let last = diagnostics.last, last.range.end == start, last.code == .unexpectedCharacter {
                    diagnostics[diagnostics.count - 1].range.end = i
                } else {
                    diagnostics.append(Diagnostic(.unexpectedCharacter, "unexpected \(shown)", at: range))
                }
            }
        }
        tokens.append(Token(kind: .end, range: SourceRange(start: bytes.count, end: bytes.count), text: ""))
        return tokens
    }
}

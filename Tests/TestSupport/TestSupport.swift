// Helpers shared by the test targets.

/// A model text with position markers (1️⃣ 2️⃣ …) where diagnostics must point. The markers are
/// removed; each one's 1-based line and column (in Unicode scalars, as diagnostics count) is kept.
public struct Marked {
    public static let names = ["1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣", "6️⃣", "7️⃣", "8️⃣", "9️⃣"]
    public let text: String
    private var positions: [String: (line: Int, column: Int)] = [:]

    public init(_ marked: String) {
        var text = ""
        var line = 1, column = 1
        for character in marked {
            if Marked.names.contains(String(character)) {
                positions[String(character)] = (line, column)
                continue
            }
            text.append(character)
            if character.unicodeScalars.contains("\n") { line += 1; column = 1 } else { column += character.unicodeScalars.count }
        }
        self.text = text
    }

    public subscript(_ marker: String) -> (line: Int, column: Int) {
        guard let position = positions[marker] else { fatalError("no marker \(marker) in the test text") }
        return position
    }

    /// The text of a 1-based line.
    public func line(_ number: Int) -> String {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        return number <= lines.count ? String(lines[number - 1]) : ""
    }

    /// `path:L:C: error: message`, the source line and the caret line (with `width - 1` tildes).
    public func error(_ marker: String, _ message: String, width: Int = 1, path: String = "m.nn") -> String {
        let (line, column) = self[marker]
        return "\(path):\(line):\(column): error: \(message)\n\(self.line(line))\n"
            + String(repeating: " ", count: column - 1) + "^" + String(repeating: "~", count: width - 1) + "\n"
    }

    /// `path:L:C: note: message`
    public func note(_ marker: String, _ message: String, path: String = "m.nn") -> String {
        let (line, column) = self[marker]
        return "\(path):\(line):\(column): note: \(message)\n"
    }
}

/// A small deterministic generator (SplitMix64), so a failing random test input can be reproduced
/// from its seed.
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A value in 0..<n (0 when n ≤ 1).
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
}

extension String {
    /// Rendered diagnostics with their catalog ids removed (`error[E010]:` → `error:`), for tests
    /// whose subject is the message and its place; the ids are tested on their own.
    public var withoutDiagnosticIDs: String {
        var out = ""
        var rest = Substring(self)
        while let open = rest.firstIndex(of: "[") {
            out += rest[..<open]
            let after = rest[rest.index(after: open)...]
            let id = after.prefix(4)
            let isID = id.count == 4 && (id.first == "E" || id.first == "W") && id.dropFirst().allSatisfy { $0.isNumber }
                && after.dropFirst(4).hasPrefix("]:") && (out.hasSuffix("error") || out.hasSuffix("warning"))
            if isID {
                rest = after.dropFirst(5)
            } else {
                out += "["
                rest = after
            }
        }
        return out + rest
    }
}

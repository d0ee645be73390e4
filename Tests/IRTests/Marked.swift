/// A model text with position markers (1️⃣ 2️⃣ …) where diagnostics must point. The markers are
/// removed; each one's 1-based line and column (in Unicode scalars, as diagnostics count) is kept.
struct Marked {
    static let names = ["1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣", "6️⃣", "7️⃣", "8️⃣", "9️⃣"]
    let text: String
    private var positions: [String: (line: Int, column: Int)] = [:]

    init(_ marked: String) {
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

    subscript(_ marker: String) -> (line: Int, column: Int) {
        guard let position = positions[marker] else { fatalError("no marker \(marker) in the test text") }
        return position
    }

    /// The text of a 1-based line.
    func line(_ number: Int) -> String {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        return number <= lines.count ? String(lines[number - 1]) : ""
    }

    /// `path:L:C: error: message`, the source line and the caret line (with `width - 1` tildes).
    func error(_ marker: String, _ message: String, width: Int = 1, path: String = "m.nn") -> String {
        let (line, column) = self[marker]
        return "\(path):\(line):\(column): error: \(message)\n\(self.line(line))\n"
            + String(repeating: " ", count: column - 1) + "^" + String(repeating: "~", count: width - 1) + "\n"
    }

    /// `path:L:C: note: message`
    func note(_ marker: String, _ message: String, path: String = "m.nn") -> String {
        let (line, column) = self[marker]
        return "\(path):\(line):\(column): note: \(message)\n"
    }
}

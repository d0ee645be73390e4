import Foundation

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

/// The Python environment with the outside judges (`onnx`, `onnxruntime`) that `.ci/run` creates:
/// `$NNC_ONNX_VENV`, else `.build/onnx-venv` of this package. nil, with one line on standard error,
/// when it is missing (a developer's machine); in CI (`CI` set) its absence is a failure the
/// caller reports.
public func judgeEnvironment() -> URL? {
    let package = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let candidates = [ProcessInfo.processInfo.environment["NNC_ONNX_VENV"], package.appendingPathComponent(".build/onnx-venv").path].compactMap { $0 }
    for path in candidates where FileManager.default.isExecutableFile(atPath: path + "/bin/python") {
        return URL(fileURLWithPath: path)
    }
    if !reportedMissingJudges.swap() {
        FileHandle.standardError.write(Data("note: no ONNX judges (set NNC_ONNX_VENV or run .ci/run, which creates .build/onnx-venv); the ONNX Runtime and backend-data tests are skipped\n".utf8))
    }
    return nil
}

/// Whether a missing judge environment fails the tests (CI) rather than skipping them.
public var judgesRequired: Bool { ProcessInfo.processInfo.environment["CI"] != nil }

/// The ONNX package's backend test data (`onnx/backend/test/data/pytorch-converted`) in the environment.
public func onnxBackendData(_ venv: URL) -> URL? {
    let lib = venv.appendingPathComponent("lib")
    let pythons = (try? FileManager.default.contentsOfDirectory(atPath: lib.path))?.filter { $0.hasPrefix("python") }.sorted() ?? []
    for python in pythons {
        let url = lib.appendingPathComponent("\(python)/site-packages/onnx/backend/test/data/pytorch-converted")
        if FileManager.default.fileExists(atPath: url.path) { return url }
    }
    return nil
}

/// One model for the judges: the file, an input batch, and the precision.
public struct JudgeRequest: Encodable {
    public var path: String
    public var shape: [Int]
    public var values: [Double]
    public var dtype: String
    public init(path: String, shape: [Int], values: [Double], dtype: String = "float32") {
        self.path = path; self.shape = shape; self.values = values; self.dtype = dtype
    }
}

/// What the judges said: the checker's verdict and ONNX Runtime's output (or why it refused).
public struct JudgeResult: Decodable {
    public var checker: String?
    public var shape: [Int]?
    public var values: [Double]?
    public var error: String?
}

/// Runs scripts/onnx_judge.py in the environment on all the requests at once.
public func judge(_ venv: URL, _ requests: [JudgeRequest]) throws -> [JudgeResult] {
    let package = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let process = Process()
    process.executableURL = venv.appendingPathComponent("bin/python")
    process.arguments = [package.appendingPathComponent("scripts/onnx_judge.py").path]
    let input = Pipe(), output = Pipe()
    process.standardInput = input
    process.standardOutput = output
    try process.run()
    // The script reads all of its input before it writes.
    input.fileHandleForWriting.write(try JSONEncoder().encode(requests))
    try input.fileHandleForWriting.close()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return try JSONDecoder().decode([JudgeResult].self, from: data)
}

private final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var set = false
    /// Sets the flag; returns whether it was already set.
    func swap() -> Bool { lock.withLock { defer { set = true }; return set } }
}
private let reportedMissingJudges = OnceFlag()

/// Runs a program, returning its exit status and standard output (standard error passes through).
public func runProcess(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// A fresh, empty directory for one test's files, under the system's temporary directory (the caller
/// removes it).
public func scratchDirectory(_ prefix: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("nnc-\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Every input a fuzz harness (Fuzz/NAME.swift) ever failed on, kept in Tests/Data/fuzz/NAME for the
/// suite to replay: each file's name and bytes.
public func fuzzFindings(_ harness: String) throws -> [(name: String, bytes: [UInt8])] {
    let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Data/fuzz/\(harness)")
    return try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted().map {
        ($0, [UInt8](try Data(contentsOf: directory.appendingPathComponent($0))))
    }
}

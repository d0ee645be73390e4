import Foundation
import Testing
import TestSupport
@testable import IR
@testable import NNC
import Parser

/// Shared helpers of the front-end tests in this target (namespaced: other test files here define their own).
enum FrontEnd {
    /// `models/` of the repository, found from this source file.
    static var modelsDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("models")
    }

    static func modelFiles() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: modelsDirectory.path)) ?? []
        return names.filter { $0.hasSuffix(".nn") }.sorted().map { modelsDirectory.appendingPathComponent($0).path }
    }

    /// A fresh scratch directory.
    static func scratch() throws -> URL { try scratchDirectory("frontend") }

    static func run(_ arguments: [String]) -> (status: Int32, output: String, errors: String) {
        let console = Console.capturing()
        let status = runCommandLine(arguments, console: console)
        return (status, console.output, console.errors)
    }

    /// Models that use every statement, for mutation.
    static let corpus: [String] = [
        "input 2\nfc 2->3 init uniform(-0.5,0.5)\ntanh\nfc 3->1\ntanh\nloss mse\ndata \"x.csv\"\ntrain sgd lr 0.1 epochs 10 batch 1 shuffle off seed 1",
        "input 3\nfc 3->1 nobias init uniform(-1,1)\nsigmoid\nloss sse\ntrain sgd lr 0.5 momentum 0.9 nesterov on decay 1e-4",
        "input 1x8x8\nconv 1->4 3x3 stride 1 pad 1 init he\nrelu\nmaxpool 2x2\nconv 4->2 3 nobias\nleakyrelu 0.1\navgpool 2 stride 1\nflatten\ndropout 0.25\nfc 10 init xavier\nsoftmax\nloss crossentropy\ntrain adam lr 1e-3 beta1 0.9 beta2 0.999 eps 1e-8 batch 4",
        "input 4; fc 4->8 init normal(0,0.1); pow 2; fc 8->2 init zeros; identity; sigmoid; loss bce; data test \"t.csv\"",
        "input 3\nfc 3->2 nobias\npow 3\nloss sum",
        "fc 4->16\nrelu\nfc 3\nloss crossentropy",
    ]
}

/// One step of the pipeline for any text: compile, and when it has a loss, build, optimize (with the
/// verifier after every pass) and plan the training graph. Must end in success or a thrown error.
@discardableResult
func compileThroughPlan(_ source: SourceFile, batch: Int = 2) -> String {
    do {
        let program = try ModelProgram.compile(source)
        guard program.model.graph.loss != nil else { return "ok (no loss)" }
        let training = try program.trainingGraph(dtype: .f32, settings: program.settings.training)
        let optimized = try training.optimized(verify: true).graph
        _ = try Plan(graph: optimized, batch: batch)
        return "ok"
    } catch let error as DiagnosticError {
        #expect(!error.diagnostics.isEmpty)
        for diagnostic in error.diagnostics {
            #expect(diagnostic.range.start >= 0 && diagnostic.range.end <= source.bytes.count)
        }
        let rendered = error.rendered.withoutDiagnosticIDs
        #expect(rendered.hasPrefix(source.path + ":"), "\(rendered)")
        return "diagnostic"
    } catch {
        return "error: \(error)"
    }
}

@Suite("The shipped models and mutations of them")
struct ModelsTests {
    @Test func thereAreShippedModels() {
        #expect(FrontEnd.modelFiles().count >= 2, "no models in \(FrontEnd.modelsDirectory.path)")
    }

    @Test(arguments: FrontEnd.modelFiles())
    func shippedModelCompilesAndChecks(_ path: String) throws {
        let program = try ModelProgram.load(path: path)
        #expect(!program.ast.statements.isEmpty)
        #expect(program.model.parameterCount > 0)
        if program.model.graph.loss != nil {
            let training = try program.trainingGraph(dtype: .f32, settings: program.settings.training)
            let optimized = try training.optimized(verify: true).graph
            _ = try Plan(graph: optimized, batch: program.settings.training.batch ?? 8)
        }
        let check = FrontEnd.run(["check", path])
        #expect(check.status == 0, "\(check.errors)")
        #expect(check.output.contains("total: "))
        #expect(check.errors.isEmpty)
    }

    /// Thousands of token and byte mutations of real models: every one compiles or fails with an error.
    @Test(.timeLimit(.minutes(1)))
    func mutatedModelsNeverCrash() throws {
        var random = SplitMix64(seed: 42)
        let corpus = FrontEnd.corpus + FrontEnd.modelFiles().compactMap { try? String(contentsOfFile: $0, encoding: .utf8) }
        let inserts: [[UInt8]] = ["fc", "conv", "input", "loss", "mse", "->", "x", "3x3", "1x28x28", ";", "\n", "#", "\"", "(", ")", ",",
                                  "0", "-1", "1e999", "99999999999999999999", "2147483647", "65536", "0.5", "..", "nobias", "init", "he",
                                  "flatten", "maxpool", "stride", "pad", "softmax", "crossentropy", "train", "adam", "data"].map { Array($0.utf8) }
            + [[0xFF], [0xC3], [0xE2, 0x82], [0x00], [0xF0, 0x9F, 0x98, 0x80]]
        var outcomes: [String: Int] = [:]
        let clock = ContinuousClock()
        let elapsed = clock.measure {
            for iteration in 0..<2000 {
                let base = corpus[iteration % corpus.count]
                var tokens = base.split(separator: " ", omittingEmptySubsequences: false).flatMap { part -> [[UInt8]] in
                    part.split(separator: "\n", omittingEmptySubsequences: false).enumerated().flatMap { $0.offset == 0 ? [Array($0.element.utf8)] : [[10], Array($0.element.utf8)] }
                }
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    guard !tokens.isEmpty else { break }
                    let at = Int.random(in: 0..<tokens.count, using: &random)
                    switch Int.random(in: 0..<7, using: &random) {
                    case 0: tokens.remove(at: at)
                    case 1: tokens.insert(inserts.randomElement(using: &random)!, at: at)
                    case 2: tokens.insert(tokens[at], at: at)
                    case 3: tokens.swapAt(at, Int.random(in: 0..<tokens.count, using: &random))
                    case 4: tokens[at] = (0..<Int.random(in: 1...3, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
                    case 5: tokens[at] = Array(String(Int.random(in: 0...Int.max, using: &random) >> Int.random(in: 0...62, using: &random)).utf8)
                    default:
                        if var bytes = Optional(tokens[at]), !bytes.isEmpty {
                            bytes.remove(at: Int.random(in: 0..<bytes.count, using: &random))
                            tokens[at] = bytes
                        }
                    }
                }
                let bytes = Array(tokens.map { $0 == [10] ? $0 : $0 + [32] }.joined())
                let outcome = compileThroughPlan(SourceFile(path: "mutant\(iteration).nn", bytes: bytes), batch: 1 + iteration % 3)
                outcomes[outcome.hasPrefix("error") ? "other error" : outcome, default: 0] += 1
                if outcome.hasPrefix("error") {
                    // Not a crash, but an error that is not a diagnostic should be a deliberate one.
                    #expect(!outcome.contains("Fatal"), "\(outcome) for \(String(decoding: bytes, as: UTF8.self))")
                }
            }
        }
        print("2000 mutated models in \(elapsed): \(outcomes.sorted { $0.key < $1.key })")
        #expect((outcomes["ok"] ?? 0) > 100, "the mutations should leave many models valid")
        #expect((outcomes["diagnostic"] ?? 0) > 700)
    }

    /// Random sequences of statements: mostly valid models of every shape, through to the plan.
    @Test(.timeLimit(.minutes(1)))
    func randomModelsNeverCrash() {
        var random = SplitMix64(seed: 7)
        let statements = ["fc 3", "fc 1", "fc 7->2", "conv 2 3", "conv 1->2 2 stride 2", "conv 4 1 pad 0", "maxpool 2", "avgpool 3 stride 1",
                          "flatten", "dropout 0.5", "tanh", "sigmoid", "relu", "leakyrelu 0.2", "softmax", "identity", "pow 2"]
        let losses = ["loss mse", "loss sse", "loss sum", "loss crossentropy", "loss bce", ""]
        let inputs = ["input 7", "input 1x6x6", "input 2x5x5", "input 3", "input 1x1x1", "input 4x9"]
        var valid = 0
        for iteration in 0..<1000 {
            var lines = [inputs.randomElement(using: &random)!]
            for _ in 0..<Int.random(in: 0...6, using: &random) { lines.append(statements.randomElement(using: &random)!) }
            lines.append(losses.randomElement(using: &random)!)
            if Bool.random(using: &random) { lines.append("train \(Bool.random(using: &random) ? "sgd momentum 0.5" : "adam") lr 0.01") }
            let outcome = compileThroughPlan(SourceFile(path: "random\(iteration).nn", text: lines.joined(separator: "\n")))
            if outcome.hasPrefix("ok") { valid += 1 }
            #expect(!outcome.hasPrefix("error"), "\(outcome) for \(lines.joined(separator: "; "))")
        }
        print("random models: \(valid) of 1000 valid")
        #expect(valid > 100)
    }

    @Test func hugeSizesAreDiagnosticsNotCrashes() {
        for text in ["input 2147483647\nfc 1\nloss mse", "input 46340x46340\nfc 2\nloss mse", "input 1x46340x46340\nconv 1->1 1\nflatten\nfc 1\nloss mse",
                     "input 2\nfc 2->2147483647\nloss mse", "input 1x65536x32768\nmaxpool 1\nflatten\nloss sum",
                     "input 1x2x2\nconv 1->1 2 pad 1 stride 2147483647\nflatten\nfc 1\nloss mse"] {
            let outcome = compileThroughPlan(SourceFile(path: "huge.nn", text: text), batch: 1)
            #expect(outcome == "diagnostic" || outcome == "ok" || outcome.hasPrefix("error"), "\(outcome)")
            #expect(!outcome.contains("overflow"), "\(text): \(outcome)")
        }
    }

    @Test func checkOfAThousandLayerModel() throws {
        let directory = try FrontEnd.scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        var lines = ["input 16"]
        for index in 0..<1000 { lines.append(index % 2 == 0 ? "fc 16->16" : "relu") }
        lines += ["fc 16->1", "loss mse"]
        let path = directory.appendingPathComponent("deep.nn").path
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let clock = ContinuousClock()
        var result: (status: Int32, output: String, errors: String) = (0, "", "")
        let elapsed = clock.measure { result = FrontEnd.run(["check", path]) }
        print("nnc check of a 1,000-layer model: \(elapsed)")
        #expect(result.status == 0, "\(result.errors)")
        #expect(result.output.contains("total: 136,017 parameters"))
    }
}

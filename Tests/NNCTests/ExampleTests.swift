import Foundation
import Testing
import TestSupport

/// The example program (Examples/XOR, the README's) builds with the package and runs: it trains,
/// predicts, saves, reloads and predicts the same numbers.
@Suite struct ExampleTests {
    @Test func xorExampleRuns() throws {
        // The example is built next to the test binary (swift build --build-tests builds every target).
        let products = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let candidates = [products, products.deletingLastPathComponent()].map { $0.appendingPathComponent("xor-example").path }
        guard let executable = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            Issue.record("xor-example was not built next to \(products.path)")
            return
        }
        let (status, output) = try runProcess(executable, [])
        #expect(status == 0, "\(output)")
        #expect(output.contains("trained 1000 steps"))
        let lines = output.split(separator: "\n")
        let predictions = try #require(lines.first { $0.hasPrefix("predictions:") }).split(separator: " ").dropFirst().compactMap { Double($0) }
        #expect(predictions.count == 4)
        // XOR learned: 0, 1, 1, 0.
        #expect(zip(predictions, [0.0, 1, 1, 0]).allSatisfy { abs($0 - $1) < 0.1 }, "\(predictions)")
        #expect(lines.contains { $0.hasPrefix("after reloading: ") && $0.dropFirst("after reloading: ".count) == lines.first { $0.hasPrefix("predictions:") }!.dropFirst("predictions: ".count) })
    }
}

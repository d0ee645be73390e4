// Train, predict, save and reload: nnc as a library in a Swift program.
// Run it with `swift run xor-example`.
import Foundation
import NNC

let source = """
input 2
fc 2->3 init uniform(-1,1)
tanh
fc 3->1 init uniform(-1,1)
tanh
loss mse
train sgd lr 0.5 epochs 1000 batch 4 shuffle off seed 1
"""

do {
    // The model, from source text: parsed, shape-checked and compiled, parameters drawn from the seed.
    var model = try Model(source: source, path: "xor.nn")

    // XOR: four samples of two features, one target each.
    let inputs: [Double] = [0, 0, 0, 1, 1, 0, 1, 1]
    let data = try Dataset.regression(features: inputs, featureCount: 2, targets: [0, 1, 1, 0], targetWidth: 1, name: "xor")

    // Train with the model's settings; the handler hears every step and epoch (and could stop the run).
    let summary = try model.train(on: data) { event in
        if case .epoch(let report) = event, report.epoch % 200 == 0 {
            print("epoch \(report.epoch): loss \(report.loss)")
        }
        return .continue
    }
    print("trained \(summary.steps) steps, final loss \(summary.finalLoss)")

    let predictions = try model.predict(inputs, count: 4)
    print("predictions:", predictions.map { String(format: "%.3f", $0) }.joined(separator: " "))

    // Save the trained model, read it back, and predict again: the same numbers.
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("xor-example-\(getpid()).nnc").path
    try model.save(to: path)
    defer { try? FileManager.default.removeItem(atPath: path) }
    let reloaded = try Model(contentsOf: path)
    let again = try reloaded.predict(inputs, count: 4)
    print("after reloading:", again.map { String(format: "%.3f", $0) }.joined(separator: " "))
    print("fc1.weight:", reloaded.parameter("fc1.weight")?.values.map { String(format: "%.3f", $0) }.joined(separator: " ") ?? "-")
    guard again == predictions else {
        print("error: the reloaded model predicts differently")
        exit(1)
    }
} catch {
    print("error: \(error)")
    exit(1)
}

import Foundation
import Testing
@testable import NNC
@testable import IR
import Parser

/// Learning-rate schedules against PyTorch's schedulers (bench/reference/schedules_torch.py): the
/// rate (and onecycle's momentum or β1) at every step or epoch, and whole training runs under
/// onecycle with SGD and Adam, to PyTorch's weights.
@Suite struct ScheduleTests {
    struct Case: Decodable { var rates: [Double]; var momenta: [Double]? }
    struct Run: Decodable { var start: [String: [Double]]; var after: [String: [Double]] }
    struct Training: Decodable { var x: [Double]; var y: [Double]; var runs: [String: Run] }
    struct Reference: Decodable { var epochs: Int; var steps: Int; var lr: Double; var cases: [String: Case]; var training: Training }

    static let reference: Reference? = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Data/schedules_torch.json")
        return (try? Data(contentsOf: url)).flatMap { try? JSONDecoder().decode(Reference.self, from: $0) }
    }()

    static func close(_ a: Double, _ b: Double) -> Bool { abs(a - b) <= 1e-12 * max(1, abs(b)) }

    @Test func ratesMatchPyTorchAtEveryStepOrEpoch() throws {
        let r = try #require(Self.reference)
        var settings = TrainingSettings()
        settings.lr = r.lr
        func rate(_ epoch: Int, _ step: Int, steps: Int) -> Double {
            settings.learningRate * settings.learningRateFactor(epoch: epoch, step: step, stepsPerEpoch: steps, epochs: r.epochs)
        }
        settings.schedule = .onecycle
        for kind in ["sgd", "adam"] {
            let c = try #require(r.cases["onecycle_\(kind)"])
            for epoch in 0..<r.epochs {
                for step in 0..<r.steps {
                    let i = epoch * r.steps + step
                    #expect(Self.close(rate(epoch, step, steps: r.steps), c.rates[i]), "onecycle rate at step \(i)")
                    let momentum = try #require(settings.schedule.momentum(epoch: epoch, step: step, stepsPerEpoch: r.steps, epochs: r.epochs))
                    #expect(Self.close(momentum, try #require(c.momenta)[i]), "onecycle momentum at step \(i)")
                }
            }
        }
        for (name, schedule, warmup) in [("step_3_0.5", LearningRateSchedule.step(every: 3, gamma: 0.5), 0), ("cosine", .cosine, 0), ("warmup_3_cosine", .cosine, 3)] {
            settings.schedule = schedule
            settings.warmup = warmup
            let c = try #require(r.cases[name])
            for epoch in 0..<r.epochs { #expect(Self.close(rate(epoch, 0, steps: 1), c.rates[epoch]), "\(name) at epoch \(epoch)") }
        }
    }

    @Test(arguments: ["sgd", "adam"])
    func trainingUnderOneCycleMatchesPyTorch(_ kind: String) throws {
        let r = try #require(Self.reference)
        let run = try #require(r.training.runs[kind])
        let optimizer = kind == "sgd" ? "sgd lr 0.1 momentum 0.9" : "adam lr 0.01"
        let source = "input 3\nfc 3->4\ntanh\nfc 4->2\nloss mse\ntrain \(optimizer) epochs 3 batch 2 shuffle off schedule onecycle\n"
        var model = try Model(source: source, dtype: .f64)
        for (name, values) in run.start { try model.setParameter(name, to: values) }
        let data = try Dataset.regression(features: r.training.x, featureCount: 3, targets: r.training.y, targetWidth: 2)
        try model.train(on: data)
        for (name, expected) in run.after {
            let got = try #require(model.parameter(name)).values
            #expect(zip(got, expected).allSatisfy { abs($0 - $1) <= 1e-10 * max(1, abs($1)) }, "\(kind) \(name): \(got) vs \(expected)")
        }
    }

    @Test func scheduleAndWarmupAreParsedSavedAndValidated() throws {
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: "input 2\nfc 2->1\nloss mse\ntrain sgd epochs 5 warmup 2 schedule onecycle\n"))
        #expect(program.settings.training.schedule == .onecycle && program.settings.training.warmup == 2)
        var checkpoint = Checkpoint()
        checkpoint.settings = program.settings.training
        let decoded = try Checkpoint(fields: checkpoint.encodedFields(), path: "m.nnc")
        #expect(decoded.settings?.schedule == .onecycle && decoded.settings?.warmup == 2)
        #expect(throws: DiagnosticError.self) { try ModelProgram.compile(SourceFile(path: "m.nn", text: "input 2\nfc 2->1\nloss mse\ntrain sgd schedule onecycel\n")) }
        #expect(throws: DiagnosticError.self) { try ModelProgram.compile(SourceFile(path: "m.nn", text: "input 2\nfc 2->1\nloss mse\ntrain sgd warmup -1\n")) }
        #expect(throws: UsageError.self) { try scheduleFlag("onecycl") }
    }
}

/// The training plot: epoch ticks, round y ticks on grid lines, a learning-rate panel when the rate
/// changes, and legends beside (never over) the plot area.
@Suite struct PlotTests {
    @Test func axesTicksAndLegends() {
        var history: [Checkpoint.Epoch] = []
        for e in 0..<12 {
            let n = Double(e)
            var epoch = Checkpoint.Epoch(loss: 1 / (n + 1), accuracy: 0.5 + n / 30, testLoss: 1.2 / (n + 1), testAccuracy: 0.5 + n / 40)
            epoch.validationLoss = 1.1 / (n + 1)
            history.append(epoch)
        }
        var plot = history
        for i in plot.indices { plot[i].learningRate = 0.1 * Double(12 - i) / 12 }
        let svg = trainingPlot(plot, title: "m.nn")
        // Epoch ticks 1, 2, 3, … (a step of 2 for 12 epochs) on each of the three panels.
        for epoch in [1, 3, 5, 7, 9, 11] { #expect(svg.components(separatedBy: ">\(epoch)</text>").count - 1 == 3, "tick \(epoch)") }
        #expect(svg.contains(">learning rate</text>"))
        #expect(svg.components(separatedBy: "stroke=\"#e5e7eb\"").count - 1 >= 9, "grid lines")
        // Legends start right of the plot area (x = 64 + 546 = 610).
        let legendXs = svg.components(separatedBy: "<text x=\"").dropFirst().compactMap { Double($0.prefix { $0 != "\"" }) }
        #expect(legendXs.contains { $0 > 610 })
        #expect(svg.contains(">validation loss</text>") && svg.contains("stroke-dasharray"))
        // A constant rate has no panel; one epoch is a point.
        var constant = history
        for i in constant.indices { constant[i].learningRate = 0.1 }
        #expect(!trainingPlot(constant, title: "m.nn").contains(">learning rate</text>"))
        #expect(trainingPlot(Array(history.prefix(1)), title: "m.nn").contains("<circle"))
        #expect(niceStep(0.23) == 0.5 && niceStep(3.1) == 5 && niceStep(0.0009) == 0.001 && niceStep(1.2, minimum: 1) == 2)
    }
}

import Foundation
import Testing
@testable import NNC
import IR
import Parser
import TestSupport

/// `validation`, `patience` and `keep best`: located errors, a seeded hold-out, early stopping,
/// the best epoch's parameters, and a resume that ends where an uninterrupted run does.
@Suite struct ValidationTests {
    static func data() throws -> Dataset {
        var features: [Double] = [], labels: [Int] = []
        var random = SplitMix64(seed: 9)
        for i in 0..<60 {
            let x = Double(random.next() % 1000) / 500 - 1, y = Double(random.next() % 1000) / 500 - 1
            features += [x, y]
            labels.append(x * y > 0 ? 1 : (i % 7 == 0 ? 1 : 0))  // noisy: validation loss turns up
        }
        return try Dataset.classification(features: features, featureCount: 2, labels: labels, name: "noisy")
    }

    static func source(_ options: String) -> String {
        "input 2\nfc 2->16\ntanh\nfc 16->2\nloss crossentropy\ntrain adam lr 0.05 epochs 40 batch 8 seed 3 \(options)\n"
    }

    @Test func optionsAreCheckedWhereWritten() throws {
        func error(_ options: String) -> String {
            do {
                _ = try ModelProgram.compile(SourceFile(path: "m.nn", text: Self.source(options)))
                return "compiled"
            } catch let error as DiagnosticError {
                return error.rendered.withoutDiagnosticIDs
            } catch { return "\(error)" }
        }
        let line = "train adam lr 0.05 epochs 40 batch 8 seed 3 "
        let column = line.count + 1
        #expect(error("validation 1.5").hasPrefix("m.nn:6:\(column + 11): error: the validation fraction must be between 0 and 1 (exclusive), found 1.5"))
        #expect(error("patience 3").hasPrefix("m.nn:6:\(column): error: 'patience' needs validation data to watch"))
        #expect(error("keep best").hasPrefix("m.nn:6:\(column): error: 'keep best' needs validation data to find the best epoch"))
        #expect(error("validation 0.2 keep worst").hasPrefix("m.nn:6:\(column + 20): error: unknown keep option 'worst'"))
        #expect(error("validation 0.2 validation test").hasPrefix("m.nn:6:\(column + 15): error: 'validation' is given twice"))
        #expect(error("validation 0.2 patience 3 keep best") == "compiled")
        #expect(error("patienc 3").contains("did you mean 'patience'?"))
        #expect(error("schedule step 40 0.5").hasPrefix("m.nn:6:\(column): error: 'schedule step 40' would first lower the rate after epoch 40, but the run has 40 epochs"))
        #expect(error("warmup 50").hasPrefix("m.nn:6:\(column + 7): error: 'warmup 50' is as long as the run or longer (40 epochs)"))
        #expect(error("validation 0.2 patience 40").hasPrefix("m.nn:6:\(column + 24): error: 'patience 40' cannot stop a run of 40 epochs"))
        #expect(error("schedule onecyle").contains("did you mean 'onecycle'?"))
    }

    @Test func patienceStopsAndKeepBestKeepsTheBestEpoch() throws {
        var model = try Model(source: Self.source("validation 0.25 patience 4 keep best"))
        let summary = try model.train(on: try Self.data())
        let losses = model.history.compactMap(\.validationLoss)
        #expect(losses.count == model.history.count)
        let best = try #require(losses.indices.min { losses[$0] < losses[$1] })
        #expect(summary.keptEpoch == best + 1)
        let stopped = try #require(summary.stoppedEarlyAfter, "the noisy data overfits within 40 epochs")
        #expect(stopped == best + 1 + 4 && model.history.count == stopped)
        // The model holds the best epoch's parameters: its validation loss, evaluated again.
        let (training, validation) = try Self.data().holdingOut(0.25, seed: 3)
        #expect(training.count == 45 && validation.count == 15)
        let evaluated = try model.evaluate(validation).loss
        #expect(abs(evaluated - losses[best]) < 1e-5, "\(evaluated) vs \(losses[best])")
    }

    @Test func resumingWithValidationIsExact() throws {
        let data = try Self.data()
        var whole = try Model(source: Self.source("validation 0.25 patience 4 keep best"))
        let summary = try whole.train(on: data)

        var parts = try Model(source: Self.source("validation 0.25 patience 4 keep best"))
        var steps = 0
        _ = try parts.train(on: data) { event in
            if case .step = event { steps += 1 }
            return steps == 23 ? .stop : .continue
        }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("validation-\(getpid()).nnc").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try parts.save(to: path)
        var resumed = try Model(contentsOf: path)
        let rest = try resumed.train(on: data)
        #expect(rest.keptEpoch == summary.keptEpoch && rest.stoppedEarlyAfter == summary.stoppedEarlyAfter)
        #expect(resumed.history.map(\.validationLoss) == whole.history.map(\.validationLoss))
        for name in whole.parameterNames { #expect(resumed.parameter(name)?.values == whole.parameter(name)?.values, "\(name)") }
        // The written file says which epoch it kept.
        try whole.save(to: path)
        #expect(try Model(contentsOf: path).state.checkpoint.best?.epoch == summary.keptEpoch)
    }
}

import Foundation
import Testing
@testable import NNC
@testable import IR
@testable import Runtime
import Parser
import TestSupport

/// The typed checkpoint of `.nnc` files: format version 2, version 1 files read back, nonsense
/// rejected, persistent state found by name.
@Suite(.serialized) struct CheckpointTests {
    /// A format-version-1 file, laid out as nnc wrote them before the typed checkpoint: the settings
    /// and progress as `key=value` lines in META, the optimizer state in STAT.
    static func version1(_ file: CompiledFile) -> [UInt8] {
        let c = file.checkpoint
        var meta: [String: String] = ["dtype": c.dtype.rawValue, "nnc_version": "0.1.0", "optimizer_step": String(c.optimizerStep),
                                      "epochs_done": String(c.epochsDone)]
        if let i = c.interruption {
            meta["interrupted"] = "1"
            meta["step_in_epoch"] = String(i.stepInEpoch)
            meta["epochs_target"] = String(i.epochsTarget)
            meta["partial_loss"] = String(i.lossSum)
            meta["partial_correct"] = String(i.correct)
            meta["partial_seen"] = String(i.seen)
        }
        if let s = c.settings {
            meta["train.optimizer"] = s.optimizer.rawValue
            meta["train.lr"] = "\(s.learningRate)"
            meta["train.epochs"] = "\(s.epochs)"
            if let batch = s.batch { meta["train.batch"] = "\(batch)" }
            meta["train.seed"] = "\(s.seed)"
            meta["train.shuffle"] = s.shuffle ? "1" : "0"
            meta["train.momentum"] = "\(s.momentum)"
            meta["train.nesterov"] = s.nesterov ? "1" : "0"
            meta["train.decay"] = "\(s.decay)"
            meta["train.beta1"] = "\(s.beta1)"
            meta["train.beta2"] = "\(s.beta2)"
            meta["train.eps"] = "\(s.eps)"
        }
        var payload = Writer()
        payload.section("SRCP", Array(file.sourcePath.utf8))
        payload.section("SRC ", Array(file.source.utf8))
        payload.section("IR  ", Array(file.ir.utf8))
        payload.section("META", Array(meta.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)\n" }.joined().utf8))
        payload.section("PARM", CompiledFile.encode(c.parameters, float64: c.dtype == .f64))
        payload.section("STAT", CompiledFile.encode(c.optimizerState, float64: c.dtype == .f64))
        payload.section("HIST", CompiledFile.encode(c.history))
        var out = Writer()
        out.bytes += CompiledFile.magic
        out.u32(1)
        out.u64(UInt64(payload.bytes.count))
        out.bytes += payload.bytes
        out.u32(crc32(out.bytes))
        return out.bytes
    }

    func classifier(in directory: String) -> String {
        writeClassifierData(in: directory)
        write("input 3\nfc 3->8\nrelu\ndropout 0.1\nfc 8->3\nloss crossentropy\ndata \"data.csv\"\ntrain adam lr 0.01 batch 8 epochs 5 seed 4\n",
              to: directory + "/m.nn")
        return directory + "/m.nn"
    }

    /// A checkpoint written as version 1 (interrupted mid-epoch, with Adam's moments) resumes to the
    /// parameters of an uninterrupted run, like a version-2 one.
    @Test func version1CheckpointsStillResume() throws {
        let directory = temporaryDirectory()
        let model = classifier(in: directory)
        #expect(nnc("train", model, "-o", directory + "/full.nnc", "--threads", "1").status == 0)
        #expect(nnc(interruptingAfter: 11, "train", model, "-o", directory + "/stopped.nnc", "--threads", "1").status == 130)
        let stopped = try CompiledFile.read(path: directory + "/stopped.nnc")
        #expect(stopped.readVersion == 2)
        #expect(stopped.checkpoint.interruption?.stepInEpoch == 4 && stopped.checkpoint.epochsDone == 1)  // 7 steps an epoch
        #expect(stopped.checkpoint.optimizerState.map(\.name).contains("fc1.weight.m"))
        let old = Self.version1(stopped)
        let decoded = try CompiledFile.decode(old, path: "old.nnc")
        #expect(decoded.readVersion == 1)
        // Version 1 kept no learning rate per epoch.
        func withoutRates(_ c: Checkpoint) -> Checkpoint {
            var c = c
            for i in c.history.indices { c.history[i].learningRate = nil }
            return c
        }
        #expect(decoded.checkpoint == withoutRates(stopped.checkpoint))
        _ = FileManager.default.createFile(atPath: directory + "/old.nnc", contents: Data(old))
        let resumed = nnc("train", directory + "/old.nnc", "-o", directory + "/resumed.nnc", "--threads", "1")
        #expect(resumed.status == 0, "\(resumed.errors)")
        let full = try CompiledFile.read(path: directory + "/full.nnc"), again = try CompiledFile.read(path: directory + "/resumed.nnc")
        #expect(full.checkpoint.parameters == again.checkpoint.parameters)
        #expect(full.checkpoint.optimizerState == again.checkpoint.optimizerState)
        #expect(withoutRates(full.checkpoint).history == withoutRates(again.checkpoint).history)
        #expect(again.readVersion == 2)
    }

    /// A run with a schedule, interrupted mid-epoch and resumed, ends where the uninterrupted one does;
    /// each epoch's rate follows the formula (printed on the epoch line).
    @Test func schedulesResumeBitIdentically() throws {
        let directory = temporaryDirectory()
        writeClassifierData(in: directory)
        write("input 3\nfc 3->8\nrelu\nfc 8->3\nloss crossentropy\ndata \"data.csv\"\ntrain sgd lr 0.2 momentum 0.9 batch 8 epochs 6 seed 4 schedule step 2 0.5\n",
              to: directory + "/s.nn")
        let full = nnc("train", directory + "/s.nn", "-o", directory + "/full.nnc", "--threads", "1", "--log-every", "1")
        #expect(full.status == 0, "\(full.errors)")
        for (epoch, rate) in [0.2, 0.2, 0.1, 0.1, 0.05, 0.05].enumerated() {
            #expect(full.output.contains("epoch \(epoch + 1)/6: loss") && full.output.contains(", lr \(formatLoss(rate))"), "epoch \(epoch + 1)")
        }
        #expect(nnc(interruptingAfter: 20, "train", directory + "/s.nn", "-o", directory + "/stopped.nnc", "--threads", "1").status == 130)
        #expect(nnc("train", directory + "/stopped.nnc", "-o", directory + "/resumed.nnc", "--threads", "1").status == 0)
        let a = try CompiledFile.read(path: directory + "/full.nnc").checkpoint, b = try CompiledFile.read(path: directory + "/resumed.nnc").checkpoint
        #expect(a.parameters == b.parameters && a.optimizerState == b.optimizerState && a.history == b.history)
        #expect(b.settings?.schedule == .step(every: 2, gamma: 0.5))
        // The flag overrides the model's schedule; a bad one is a usage error.
        let cosine = nnc("train", directory + "/s.nn", "--schedule", "cosine", "--epochs", "2", "-o", directory + "/c.nnc")
        #expect(cosine.status == 0 && cosine.output.contains("epoch 2/2") && cosine.output.contains("lr 0.1,"), "\(cosine.output)")
        let bad = nnc("train", directory + "/s.nn", "--schedule", "cosin")
        #expect(bad.status == 2 && bad.errors.contains("did you mean 'cosine'?"))
    }

    /// The rate at every epoch against PyTorch's formulas (StepLR, CosineAnnealingLR with eta_min 0).
    @Test func scheduleFactorsFollowTheFormulas() {
        for epoch in 0..<20 {
            #expect(LearningRateSchedule.constant.factor(epoch: epoch, of: 20) == 1)
            #expect(LearningRateSchedule.step(every: 3, gamma: 0.1).factor(epoch: epoch, of: 20) == Foundation.pow(0.1, Double(epoch / 3)))
            let cosine = LearningRateSchedule.cosine.factor(epoch: epoch, of: 20)
            #expect(abs(cosine - 0.5 * (1 + Foundation.cos(Double.pi * Double(epoch) / 20))) < 1e-15)
        }
        #expect(LearningRateSchedule.cosine.factor(epoch: 0, of: 10) == 1)
        #expect(abs(LearningRateSchedule.cosine.factor(epoch: 5, of: 10) - 0.5) < 1e-15)
    }

    /// A valid checksum over nonsense settings is an error that names the setting.
    @Test func nonsenseSettingsAreRejected() throws {
        var checkpoint = Checkpoint()
        checkpoint.settings = TrainingSettings()
        checkpoint.settings?.lr = -1
        let file = CompiledFile(sourcePath: "m.nn", source: "input 2\nfc 2->1\nloss mse\n", ir: "", checkpoint: checkpoint)
        #expect(throws: CompiledFileError.self) { try CompiledFile.decode(file.encoded(), path: "m.nnc") }
        do {
            _ = try CompiledFile.decode(file.encoded(), path: "m.nnc")
        } catch {
            #expect(error.description == "m.nnc: error: corrupted: the saved training setting 'lr' must be greater than 0, found -1")
        }
        checkpoint.settings?.lr = 0.1
        checkpoint.settings?.epochs = 0
        let zeroEpochs = CompiledFile(sourcePath: "m.nn", source: "", ir: "", checkpoint: checkpoint)
        #expect(throws: CompiledFileError.self) { try CompiledFile.decode(zeroEpochs.encoded(), path: "m.nnc") }
    }

    /// Every field survives the round trip, persistent state included.
    @Test func roundTripKeepsEveryField() throws {
        var checkpoint = Checkpoint()
        checkpoint.dtype = .f64
        checkpoint.parameters = [.init(name: "fc1.weight", shape: [2, 1], values: [0.25, -1e-300])]
        checkpoint.optimizerState = [.init(name: "fc1.weight.velocity", shape: [2, 1], values: [1, 2])]
        checkpoint.persistentState = [.init(name: "bn1.running_mean", shape: [3], values: [0.5, 0.25, -3])]
        checkpoint.optimizerStep = 12
        checkpoint.epochsDone = 3
        checkpoint.interruption = .init(stepInEpoch: 2, epochsTarget: 9, lossSum: 1.5, correct: 7, seen: 16)
        var settings = TrainingSettings()
        settings.optimizer = .adam
        _ = settings.set("lr", 0.003); _ = settings.set("batch", 16); _ = settings.set("seed", 77); _ = settings.set("shuffle", 0)
        settings.schedule = .step(every: 3, gamma: 0.25)
        checkpoint.settings = settings
        checkpoint.dataPath = "data/é.csv"
        checkpoint.history = [.init(loss: 1, accuracy: 0.5), .init(loss: 0.5, accuracy: 0.75, testLoss: 0.6, testAccuracy: 0.7)]
        let file = CompiledFile(sourcePath: "m.nn", source: "x", ir: "y", checkpoint: checkpoint)
        #expect(try CompiledFile.decode(file.encoded(), path: "m.nnc") == file)
    }

    /// The plan finds each state tensor by its name, not by the order the states were made in.
    @Test func statesAreFoundByName() throws {
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: "input 3\nfc 3->4\ntanh\nfc 4->2\nloss mse\ntrain sgd lr 0.1 momentum 0.9"))
        var graph = try program.trainingGraph(dtype: .f64, settings: program.settings.training)
        #expect(graph.states.count == 4)
        graph.states.reverse()
        let plan = try Plan(graph: graph, batch: 2)
        for node in graph.nodes {
            guard case .state(let name) = node.op, case .state(let index)? = plan.storage[node.results[0].index] else { continue }
            #expect(graph.states[index].name == name)
        }
        let store = ParameterStore<Double>(graph: graph)
        #expect(store.stateSlots.map(\.name) == graph.states.map(\.name))
        #expect(store.state(named: "fc2.bias.velocity")?.count == 2)
        #expect(store.stateSlots.allSatisfy { $0.kind == .optimizer })
        // A state the graph does not declare is a plan error, not a wrong buffer.
        graph.states.removeLast()
        #expect(throws: PlanError.self) { try Plan(graph: graph, batch: 2) }
    }
}

/// Every compiled file the `.nnc` fuzz harness (Fuzz/nnc.swift) ever failed on, stored as the bytes
/// the decoder saw: it decodes or is an error, and a decoded file round-trips.
@Suite struct CompiledFileFuzzFindingTests {
    @Test func findingsStayFixed() throws {
        let findings = try fuzzFindings("nnc")
        #expect(!findings.isEmpty)
        for (name, bytes) in findings {
            guard let file = try? CompiledFile.decode(bytes, path: name) else { continue }
            #expect(try CompiledFile.decode(file.encoded(), path: name).encoded() == file.encoded(), "\(name)")
        }
    }
}

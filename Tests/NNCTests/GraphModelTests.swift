import Foundation
import Testing
import TestSupport
@testable import NNC
@testable import IR
@testable import Runtime
import Parser

/// Graph models through the commands: gradients, evaluation-mode folding, check, DOT, export and
/// --init of running statistics, resuming, and mutated models that must never crash.
@Suite(.serialized) struct GraphModelTests {
    static let residual = """
    input 2x6x6
    conv 2->4 3x3 pad 1 nobias
    batchnorm
    relu as a
    conv 4->4 3x3 pad 1
    batchnorm
    add a
    relu as b
    from a
    conv 4->2 1x1
    concat b
    globalavgpool
    fc 3
    loss crossentropy
    train sgd lr 0.05 momentum 0.9 batch 4 epochs 3 seed 2
    """

    @Test func evaluationFoldsBatchNormIntoTheLayerBefore() throws {
        let program = try ModelProgram.compile(SourceFile(path: "r.nn", text: Self.residual))
        let (graph, log) = try program.forward(dtype: .f32, training: false).graph.optimized(verify: true)
        #expect(!graph.nodes.contains { if case .batchNormInference = $0.op { return true }; return false })
        #expect(graph.nodes.filter { if case .batchNormFold = $0.op { return true }; return false }.count == 2)
        // The relu after the first folded batch norm went into the conv's epilogue.
        #expect(graph.nodes.contains { $0.op == .convFused(ConvGeometry(stride: 1, padding: 1), .relu, bias: true) })
        #expect(log.filter { $0.pass == "fold-batchnorm" && $0.fused }.count == 2)
        // In training, batch statistics: nothing to fold.
        let training = try program.trainingGraph(dtype: .f32, settings: program.settings.training).optimized(verify: true)
        #expect(training.graph.nodes.filter { if case .batchNorm = $0.op { return true }; return false }.count == 2)
        #expect(!training.log.contains { $0.pass == "fold-batchnorm" })
    }

    @Test func dotDrawsTheBranches() throws {
        let program = try ModelProgram.compile(SourceFile(path: "r.nn", text: Self.residual))
        let dot = program.model.graph.dot(name: "r.nn")
        let graph = program.model.graph
        let add = try #require(graph.nodes.first { $0.op == .add })
        // Both operands of the add have an edge into it.
        for operand in add.operands {
            #expect(dot.contains("\(graph[operand].name)") , "\(graph[operand].name)")
        }
        #expect(dot.components(separatedBy: "->").count - 1 >= graph.nodes.reduce(0) { $0 + $1.operands.count })
    }

    /// Running statistics are saved, exported, loaded with --init (also by compile), and resumed.
    @Test func runningStatisticsTravel() throws {
        let directory = temporaryDirectory()
        writeClassifierData(in: directory)
        var csv = "f\n"
        // 3 classes from 72 pixel features.
        var random = MT19937(seed: 5)
        csv = ""
        for _ in 0..<40 {
            let values = (0..<72).map { _ in random.uniform(-1, 1) }
            csv += values.map { "\($0)" }.joined(separator: ",") + ",\(values[0] + values[1] > 0 ? (values[2] > 0 ? 2 : 1) : 0)\n"
        }
        write(csv, to: directory + "/images.csv")
        write(Self.residual + "\ndata \"images.csv\"\n", to: directory + "/r.nn")
        let full = nnc("train", directory + "/r.nn", "-o", directory + "/full.nnc", "--threads", "1")
        #expect(full.status == 0, "\(full.errors)")
        let trained = try CompiledFile.read(path: directory + "/full.nnc").checkpoint
        #expect(trained.persistentState.map(\.name) == ["bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"])
        #expect(trained.persistentState[1].values != [Double](repeating: 1, count: 4), "the running variance moved")
        // Interrupted and resumed: the same parameters and running statistics.
        #expect(nnc(interruptingAfter: 13, "train", directory + "/r.nn", "-o", directory + "/stopped.nnc", "--threads", "1").status == 130)
        #expect(nnc("train", directory + "/stopped.nnc", "-o", directory + "/resumed.nnc", "--threads", "1").status == 0)
        let resumed = try CompiledFile.read(path: directory + "/resumed.nnc").checkpoint
        #expect(resumed.parameters == trained.parameters)
        #expect(resumed.persistentState == trained.persistentState)
        // Exported with the parameters, loaded back by compile --init: the same predictions.
        #expect(nnc("export", directory + "/full.nnc", "--weights", directory + "/w.npz").status == 0)
        let arrays = try readNPZ(path: directory + "/w.npz")
        #expect(arrays.map(\.name).contains("bn2.running_var"))
        let compiled = nnc("compile", directory + "/r.nn", "--init", directory + "/w.npz", "-o", directory + "/loaded.nnc")
        #expect(compiled.status == 0, "\(compiled.errors)")
        write(csv.split(separator: "\n").prefix(5).map { $0.split(separator: ",").dropLast().joined(separator: ",") }.joined(separator: "\n") + "\n",
              to: directory + "/inputs.csv")
        let a = nnc("run", directory + "/full.nnc", "--input", directory + "/inputs.csv")
        let b = nnc("run", directory + "/loaded.nnc", "--input", directory + "/inputs.csv")
        #expect(a.status == 0 && a.output == b.output && !a.output.isEmpty)
        // An npz without the running statistics is an error that names the missing array.
        try writeNPZ(path: directory + "/params.npz", arrays: trained.parameters.map { ($0.name, $0.shape, false, $0.values) })
        let missing = nnc("compile", directory + "/r.nn", "--init", directory + "/params.npz", "-o", directory + "/x.nnc")
        #expect(missing.status == 1 && missing.errors.contains("no array named 'bn1.running_mean'"))
    }

    /// 300 mutated graph models: `check` answers 0 or 1, never crashes.
    @Test func mutatedGraphModelsNeverCrash() throws {
        let directory = temporaryDirectory()
        let sources = [Self.residual, try String(contentsOfFile: shippedModelsDirectory() + "/fashion_resnet.nn", encoding: .utf8)]
        let words = ["as a", "as b", "add a", "add b", "concat a", "from a", "from b", "from input", "batchnorm", "globalavgpool",
                     "groups 2", "dilation 3", "stride 2x1", "pad 0x3", "as", "from", "add", "concat", "batchnorm momentum 2", "elu -1",
                     "logsoftmax", "loss nll", "conv 4->4 1x1 groups 4", "maxpool 3x3 pad 1", "fc 3", "flatten", "0", "x", "->"]
        var random = SplitMix64(seed: 13)
        for round in 0..<300 {
            var lines = sources[round % 2].split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            for _ in 0..<(1 + random.below(3)) {
                let i = random.below(lines.count)
                switch random.below(5) {
                case 0: lines.remove(at: i)
                case 1: lines.insert(lines[i], at: random.below(lines.count))
                case 2: lines.swapAt(i, random.below(lines.count))
                case 3: lines[i] += " " + words[random.below(words.count)]
                default: lines.insert(words[random.below(words.count)], at: i)
                }
                if lines.isEmpty { lines = ["input 2"] }
            }
            let path = directory + "/m\(round).nn"
            write(lines.joined(separator: "\n"), to: path)
            let result = nnc("check", path)
            #expect(result.status == 0 || result.status == 1, "\(lines.joined(separator: "\n"))")
            if result.status == 1 { #expect(result.errors.contains("error["), "\(result.errors)") }
        }
    }
}

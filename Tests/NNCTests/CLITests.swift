import Foundation
import Testing
@testable import NNC
import Parser

@Suite("The command line: exit codes, help, check table, compile --emit")
struct CLITests {
    /// The XOR model as in models/xor.nn, pinned here so that line numbers in the expectations stay put.
    static let xor: String = {
        let text = """
        # XOR
        input 2
        fc 2->3 init uniform(-0.5,0.5)
        tanh
        fc 3->1 init uniform(-0.5,0.5)
        tanh
        loss mse
        data "data/xor.csv"
        train sgd lr 0.1 epochs 1000 batch 1 shuffle off seed 1

        """
        return (try? CLITests.model(text, name: "xor.nn")) ?? "/nonexistent/xor.nn"
    }()

    /// Writes a model into a scratch directory and returns its path.
    static func model(_ text: String, name: String = "m.nn") throws -> String {
        let path = try FrontEnd.scratch().appendingPathComponent(name).path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func noArgumentsIsAUsageError() {
        let result = FrontEnd.run([])
        #expect(result.status == 2)
        #expect(result.errors.contains("usage: nnc COMMAND"))
    }

    @Test func unknownCommand() {
        let result = FrontEnd.run(["frobnicate", "x.nn"])
        #expect(result.status == 2)
        #expect(result.errors.hasPrefix("nnc: error: unknown command 'frobnicate'\n"))
        let typo = FrontEnd.run(["chek", "x.nn"])
        #expect(typo.status == 2)
        #expect(typo.errors.hasPrefix("nnc: error: unknown command 'chek'; did you mean 'check'?\n"))
        #expect(typo.output.isEmpty)
    }

    @Test func unknownFlag() {
        let result = FrontEnd.run(["compile", CLITests.xor, "--emitt", "ir"])
        #expect(result.status == 2)
        #expect(result.errors.hasPrefix("nnc compile: error: unknown option '--emitt'; did you mean '--emit'?\n"))
        #expect(result.errors.contains("usage: nnc compile"))
        let check = FrontEnd.run(["check", CLITests.xor, "--fast"])
        #expect(check.status == 2)
        #expect(check.errors.hasPrefix("nnc check: error: unknown option '--fast'"))
    }

    @Test func usageErrors() {
        #expect(FrontEnd.run(["check"]).status == 2)
        #expect(FrontEnd.run(["check"]).errors.hasPrefix("nnc check: error: missing model file"))
        #expect(FrontEnd.run(["check", CLITests.xor, CLITests.xor]).status == 2)
        #expect(FrontEnd.run(["compile", CLITests.xor, "--emit"]).errors.hasPrefix("nnc compile: error: --emit needs a value"))
        let stage = FrontEnd.run(["compile", CLITests.xor, "--emit", "irr"])
        #expect(stage.status == 2)
        #expect(stage.errors.hasPrefix("nnc compile: error: unknown stage 'irr' for --emit; did you mean 'ir'?"))
        #expect(FrontEnd.run(["compile", CLITests.xor, "--emit", "plan", "--batch", "0"]).status == 2)
        #expect(FrontEnd.run(["compile", CLITests.xor, "--emit", "ir", "--dtype", "f16"]).status == 2)
    }

    @Test func missingFileIsAnInputError() throws {
        let result = FrontEnd.run(["check", "/nonexistent/model.nn"])
        #expect(result.status == 1)
        #expect(result.errors == "/nonexistent/model.nn: error: no such file\n")
        let directory = try FrontEnd.scratch().path
        let dir = FrontEnd.run(["check", directory])
        #expect(dir.status == 1)
        #expect(dir.errors == "\(directory): error: is a directory, not a model file\n")
    }

    @Test func badModelPrintsTheDiagnostic() throws {
        let path = try CLITests.model("input 2\nfx 2->3\nfc 2->1\nloss mse\n", name: "bad.nn")
        let result = FrontEnd.run(["check", path])
        #expect(result.status == 1)
        #expect(result.output.isEmpty)
        #expect(result.errors == "\(path):2:1: error[E010]: unknown statement 'fx'; did you mean 'fc'?\nfx 2->3\n^~\n")
        for command in [["compile", path, "--emit", "ir"], ["compile", path, "--emit", "ast"], ["compile", path, "-o", path + "c"]] {
            let other = FrontEnd.run(command)
            #expect(other.status == 1, "\(command)")
            #expect(other.errors == result.errors, "\(command)")
        }
        #expect(!FileManager.default.fileExists(atPath: path + "c"))
    }

    @Test func shapeErrorPrintsErrorAndNotes() throws {
        let path = try CLITests.model("fc 2->3\ntanh\nfc 4->1\n", name: "bad.nn")
        let result = FrontEnd.run(["check", path])
        #expect(result.status == 1)
        #expect(result.errors == """
        \(path):3:4: error[E027]: fc expects 4 input features, but the previous layer produces 3
        fc 4->1
           ^
        \(path):1:1: note: the previous layer is 'fc 2->3'
        \(path): note: did you mean 'fc 3->1'?

        """)
    }

    @Test func helpEverywhere() {
        for arguments in [["--help"], ["-h"], ["help"]] {
            let result = FrontEnd.run(arguments)
            #expect(result.status == 0)
            #expect(result.output.contains("usage: nnc COMMAND"))
            for command in ["check", "compile", "train", "run", "eval", "gradcheck", "bench", "export"] {
                #expect(result.output.contains("  \(command) "), "\(command) is missing from the help")
            }
        }
        for command in ["check", "compile", "train", "run", "eval", "gradcheck", "bench", "export"] {
            for arguments in [[command, "--help"], [command, "-h"], ["help", command], [command, CLITests.xor, "--help"]] {
                let result = FrontEnd.run(arguments)
                #expect(result.status == 0, "\(arguments)")
                #expect(result.output.hasPrefix("usage: nnc \(command)"), "\(arguments): \(result.output)")
                #expect(result.errors.isEmpty)
            }
        }
        let version = FrontEnd.run(["--version"])
        #expect(version.status == 0)
        // The version names the kernels' vector width and the processor's (the benchmarks print it).
        #expect(version.output.hasPrefix("nnc \(nncVersion), kernels in ") && version.output.contains("-bit vectors"), "\(version.output)")
    }

    /// The table rows, with the columns split on runs of two or more spaces.
    static func rows(_ table: String) -> [[String]] {
        table.split(separator: "\n").map { line in
            line.components(separatedBy: "  ").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
    }

    @Test func checkTableOfXor() {
        let result = FrontEnd.run(["check", CLITests.xor])
        #expect(result.status == 0)
        #expect(result.errors.isEmpty)
        let rows = CLITests.rows(result.output)
        #expect(rows.first == ["model \(CLITests.xor)"])
        #expect(rows.contains(["layer", "output shape", "params", "FLOPs/sample"]))
        #expect(rows.contains(["input 2", "[N,2]", "0", "0"]))
        #expect(rows.contains(["fc 2->3 init uniform(-0.5,0.5)", "[N,3]", "9", "15"]))
        #expect(rows.contains { $0.count == 4 && $0[0] == "tanh" && $0[1] == "[N,3]" && $0[2] == "0" })
        #expect(rows.contains(["fc 3->1 init uniform(-0.5,0.5)", "[N,1]", "4", "7"]))
        #expect(rows.contains { $0.count == 4 && $0[0] == "loss mse" && $0[1] == "scalar" && $0[2] == "0" })
        #expect(result.output.contains("total: 13 parameters (52 B in f32)"))
        #expect(result.output.contains("loss: mse, input [N,2], output [N,1]"))
    }

    @Test func checkTableOfAConvNet() throws {
        let path = try CLITests.model("input 1x28x28\nconv 1->32 3x3\nrelu\nmaxpool 2x2\nflatten\nfc 5408->10\nloss crossentropy\n")
        let result = FrontEnd.run(["check", path])
        #expect(result.status == 0, "\(result.errors)")
        let rows = CLITests.rows(result.output)
        #expect(rows.contains(["conv 1->32 3x3", "[N,32,26,26]", "320", "411,008"]))
        #expect(rows.contains(["maxpool 2x2", "[N,32,13,13]", "0", "21,632"]))
        #expect(rows.contains(["flatten", "[N,5408]", "0", "0"]))
        #expect(rows.contains(["fc 5408->10", "[N,10]", "54,090", "108,170"]))
        #expect(result.output.contains("total: 54,410 parameters"))
        #expect(result.output.contains("loss: crossentropy, input [N,1,28,28], output [N,10]"))
    }

    @Test func checkWithoutLossIsInferenceOnly() throws {
        let path = try CLITests.model("input 4\nfc 4->2\nsoftmax\n")
        let result = FrontEnd.run(["check", path])
        #expect(result.status == 0)
        #expect(result.output.contains("loss: none (inference only)"))
    }

    static func emit(_ stage: String, _ path: String = CLITests.xor) -> (status: Int32, output: String, errors: String, lines: [String]) {
        let result = FrontEnd.run(["compile", path, "--emit", stage])
        let lines = result.output.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
        return (result.status, result.output, result.errors, lines)
    }

    @Test func emitAST() {
        let result = CLITests.emit("ast")
        #expect(result.status == 0)
        #expect(result.lines.contains("3:1 FullyConnected(inputs: 2, outputs: 3, bias: true, init: uniform(-0.5,0.5))"))
        #expect(result.lines.contains("7:1 Loss(mse)"))
        #expect(result.lines.contains("9:1 Train(optimizer: sgd, lr: 0.1, epochs: 1000, batch: 1, shuffle: off, seed: 1)"))
    }

    @Test func emitIR() {
        let result = CLITests.emit("ir")
        #expect(result.status == 0)
        #expect(result.lines.contains("%x : f32[N,2] = input # xor.nn:2"))
        #expect(result.lines.contains("%w0 : f32[2,3] = param fc1.weight uniform(-0.5,0.5) # xor.nn:3"))
        #expect(result.lines.contains("%b0 : f32[3] = param fc1.bias uniform(-0.5,0.5) # xor.nn:3"))
        #expect(result.lines.contains("%mm0 : f32[N,3] = matmul %x, %w0 # xor.nn:3"))
        #expect(result.lines.contains("%z0 : f32[N,3] = bias_add %mm0, %b0 # xor.nn:3"))
        #expect(result.lines.contains("%h0 : f32[N,3] = tanh %z0 # xor.nn:4"))
        #expect(result.lines.contains("%loss : f32[] = mean %sq # xor.nn:7"))
        #expect(result.lines.last == "# loss %loss, output %h1")
        #expect(!result.output.contains("# backward"))
        let f64 = FrontEnd.run(["compile", CLITests.xor, "--emit", "ir", "--dtype", "f64"])
        #expect(f64.status == 0 && f64.output.contains("f64[N,3]"))
    }

    @Test func emitGradAndOpt() {
        let grad = CLITests.emit("grad")
        #expect(grad.status == 0)
        #expect(grad.lines.contains("# backward") && grad.lines.contains("# update"))
        #expect(grad.lines.contains { $0.hasPrefix("%dw0 : f32[2,3] = ") })
        #expect(grad.lines.contains("update sgd lr=0.1 %w0, %dw0 # xor.nn:3"))
        let opt = CLITests.emit("opt")
        #expect(opt.status == 0)
        #expect(opt.lines.contains("%h0 : f32[N,3] = dense %x, %w0, %b0, tanh # xor.nn:3"))
        #expect(opt.lines.contains("%h1 : f32[N,1] = dense %h0, %w1, %b1, tanh # xor.nn:5"))
        #expect(!opt.lines.contains { $0.contains("= matmul %x, %w0") })
        let afterFuse = CLITests.emit("after:fuse-dense")
        #expect(afterFuse.status == 0)
        #expect(afterFuse.lines.contains("%h0 : f32[N,3] = dense %x, %w0, %b0, tanh # xor.nn:3"))
        for pass in ["fuse-softmax-crossentropy", "fuse-conv", "fuse-activation-grad", "dce"] {
            #expect(CLITests.emit("after:" + pass).status == 0, "\(pass)")
        }
    }

    @Test func emitPlanDotAndFusionLog() {
        let plan = CLITests.emit("plan")
        #expect(plan.status == 0)
        #expect(plan.output.hasPrefix("# plan for batch 1: "))
        #expect(plan.output.contains("# arena: "))
        let plan8 = FrontEnd.run(["compile", CLITests.xor, "--emit", "plan", "--batch", "8"])
        #expect(plan8.status == 0 && plan8.output.hasPrefix("# plan for batch 8: "))
        let dot = CLITests.emit("dot")
        #expect(dot.status == 0)
        #expect(dot.output.hasPrefix("digraph \"xor.nn\" {\n"))
        #expect(dot.output.hasSuffix("}\n"))
        #expect(dot.output.contains("fc1.weight"))
        #expect(dot.output.contains(" -> "))
        let log = CLITests.emit("fusion-log")
        #expect(log.status == 0)
        #expect(log.lines.contains("fuse-dense: line 3: matmul %mm0 + bias_add %z0 + tanh %h0: fused"))
        #expect(log.lines.contains("fuse-activation-grad: line 4: tanh_grad %dz0 + bias_grad %db0: fused"))
        #expect(log.lines.last?.hasSuffix("not fused") == true)
    }

    @Test(arguments: ["ast", "ir", "grad", "opt", "plan", "dot", "fusion-log", "after:fuse-dense"])
    func everyStageOfEveryShippedModel(_ stage: String) {
        for path in FrontEnd.modelFiles() {
            let result = CLITests.emit(stage, path)
            #expect(result.status == 0, "\(path) --emit \(stage): \(result.errors)")
            #expect(!result.output.isEmpty)
        }
    }

    @Test func compileWritesTheCompiledFile() throws {
        let output = try FrontEnd.scratch().appendingPathComponent("xor.nnc").path
        let result = FrontEnd.run(["compile", CLITests.xor, "-o", output])
        #expect(result.status == 0, "\(result.errors)")
        #expect(result.output == "wrote \(output)\n")
        #expect(FileManager.default.fileExists(atPath: output))
    }

    @Test func modelWithoutLossCannotEmitTheTrainingGraph() throws {
        let path = try CLITests.model("input 4\nfc 4->2\n")
        #expect(CLITests.emit("ir", path).status == 0)
        let grad = CLITests.emit("grad", path)
        #expect(grad.status == 1)
        #expect(grad.errors.contains("error: the model has no loss to train"))
    }

    /// A model without a loss is an inference model: `bench` times its forward pass and `run`
    /// predicts with its last layer.
    @Test func modelWithoutLossBenchesAndRunsItsForwardPass() throws {
        let path = try CLITests.model("input 4\nfc 4->3\ntanh\nfc 3->2\n")
        let bench = FrontEnd.run(["bench", path, "--batch", "8", "--steps", "5", "--threads", "1"])
        #expect(bench.status == 0, "\(bench.errors)")
        #expect(bench.output.contains("= dense tanh"))
        #expect(bench.output.contains("= dense "))
        #expect(!bench.output.contains("backward2") && !bench.output.contains("update"))
        #expect(bench.output.contains("bench: batch 8, forward "))
        // The mean step and a call's median latency (what bench/compare sets against ONNX Runtime's).
        let summary = bench.output.split(separator: "\n").last.map(String.init) ?? ""
        let median = summary.firstMatch(of: /step ([\d.]+) ms \(median ([\d.]+) ms\)/)
        #expect(median != nil && Double(median?.output.2 ?? "") != nil, "\(summary)")
        let input = try FrontEnd.scratch().appendingPathComponent("rows.csv").path
        try "0.5,-1,2,0\n1,1,1,1\n".write(toFile: input, atomically: true, encoding: .utf8)
        let run = FrontEnd.run(["run", path, "--input", input])
        #expect(run.status == 0, "\(run.errors)")
        let rows = run.output.split(separator: "\n")
        #expect(rows.count == 2 && rows.allSatisfy { $0.split(separator: ",").count == 2 })
    }
}

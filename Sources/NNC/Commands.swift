import Foundation
import IR
import Parser
import Runtime

/// The command line as a testable function: `nnc COMMAND ARGS…` → exit status.
/// 0 success, 1 an error in the user's input (with a diagnostic), 2 a usage error.
public func runCommandLine(_ arguments: [String], console: Console) -> Int32 {
    guard let name = arguments.first else {
        console.error(generalHelp)
        return 2
    }
    if name == "--help" || name == "-h" || name == "help" {
        if arguments.count > 1, let command = commands.first(where: { $0.name == arguments[1] }) {
            console.print(command.help)
        } else {
            console.print(generalHelp)
        }
        return 0
    }
    if name == "--version" { console.print("nnc \(nncVersion), \(kernelVectorDescription)"); return 0 }
    guard let command = commands.first(where: { $0.name == name }) else {
        var message = "nnc: error: unknown command '\(name)'"
        if let guess = suggestion(for: name, among: commands.map(\.name)) { message += "; did you mean '\(guess)'?" }
        console.error(message + "\n\n" + generalHelp)
        return 2
    }
    let rest = Array(arguments.dropFirst())
    if rest.contains("--help") || rest.contains("-h") {
        console.print(command.help)
        return 0
    }
    do {
        let parsed = try Arguments(rest, valueOptions: command.valueOptions, flagOptions: command.flagOptions)
        try command.run(parsed, console)
        return 0
    } catch let interrupted as Interrupted {
        console.error("interrupted: wrote the checkpoint \(interrupted.checkpoint); resume with 'nnc train \(interrupted.checkpoint)'")
        return 130
    } catch let error as UsageError {
        console.error("nnc \(command.name): error: \(error.message)\n\n\(command.help)")
        return 2
    } catch let error as DiagnosticError {
        console.error(error.rendered, terminator: "")
        return 1
    } catch let error as InputError {
        console.error(error.message)
        return 1
    } catch let error as DataError {
        console.error(error.description)
        return 1
    } catch let error as PlanError {
        console.error("nnc \(command.name): error: \(error.message)")
        return 1
    } catch let error as CompiledFileError {
        console.error(error.description)
        return 1
    } catch let error as AutodiffError {
        console.error(error.rendered, terminator: "")
        return 1
    } catch let error as IRError {
        console.error(error.rendered, terminator: "")
        return 1
    } catch {
        console.error("nnc \(command.name): error: \(error)")
        return 1
    }
}

/// The version `nnc --version` prints.
public let nncVersion = "0.1.0"

struct Command: Sendable {
    var name: String
    var summary: String
    var usage: String
    var details: String
    var valueOptions: [String]
    var flagOptions: [String]
    var run: @Sendable (Arguments, Console) throws -> Void

    var help: String { "usage: \(usage)\n\n\(summary)\n\n\(details)" }
}

let commands: [Command] = [checkCommand, compileCommand, trainCommand, runCommand, evalCommand, gradcheckCommand, benchCommand, exportCommand, importCommand]

var generalHelp: String {
    var text = "nnc — a declarative neural-network compiler\n\nusage: nnc COMMAND [ARGS…]   (nnc COMMAND --help for details)\n\ncommands:\n"
    for command in commands { text += "  " + command.name.padding(toLength: 10, withPad: " ", startingAt: 0) + command.summary + "\n" }
    text += "\nexit status: 0 success, 1 an error in the input (model, data or compiled file), 2 a usage error"
    return text
}

/// Reads and checks a model file, printing its warnings (to standard error).
func loadModel(_ path: String, console: Console) throws -> ModelProgram {
    let program = try ModelProgram.load(path: path)
    let warnings = program.renderedWarnings
    if !warnings.isEmpty { console.error(warnings, terminator: "") }
    return program
}

/// Exactly one positional argument: the file the command works on.
func onePath(_ arguments: Arguments, _ what: String) throws(UsageError) -> String {
    guard arguments.positional.count == 1 else {
        throw UsageError(message: arguments.positional.isEmpty ? "missing \(what)" : "expected one \(what), got \(arguments.positional.count) arguments")
    }
    return arguments.positional[0]
}

func dtype(_ arguments: Arguments, default value: DType = .f32) throws(UsageError) -> DType {
    guard let text = arguments.values["--dtype"] else { return value }
    guard let dtype = DType(rawValue: text) else { throw UsageError(message: "--dtype takes f32 or f64, got '\(text)'") }
    return dtype
}

// MARK: check

let checkCommand = Command(
    name: "check", summary: "parse and shape-check a model; print its layers, parameters and FLOPs",
    usage: "nnc check MODEL.nn",
    details: "Prints a table of the layers with their output shapes, parameter counts and FLOPs per sample,\nand the totals. Errors are reported as file:line:col diagnostics.",
    valueOptions: [], flagOptions: []
) { arguments, console in
    let path = try onePath(arguments, "model file")
    let program = try loadModel(path, console: console)
    // The training graph must build too (autodiff), when the model has a loss; what it would need of
    // the machine's memory, planned after the passes, is a warning (the batch or the machine may
    // change). (The passes only rewrite a valid graph: without a batch to plan, they are not run; nor
    // when every value of the training graph in a buffer of its own would fit, as no plan can need more.)
    if let shortfall = parameterMemoryShortfall(program, dtype: .f32) { console.error("\(path): warning: \(shortfall)") }
    if program.model.graph.loss != nil {
        let training = try program.trainingGraph(dtype: .f32, settings: program.settings.training)
        if let batch = program.settings.training.batch, (Plan.arenaBound(of: training, batch: batch) ?? .max) > Plan.defaultMemoryLimit {
            let optimized = try (consume training).optimized(verify: verifyPasses, recordLog: false).graph
            do throws(PlanError) { _ = try Plan(graph: optimized, batch: batch) } catch { console.error("\(path): warning: \(error.message)") }
        }
    }
    console.print(summaryTable(program.model, path: path), terminator: "")
}

// MARK: compile

let emitStages = ["ast", "ir", "grad", "opt", "plan", "dot", "fusion-log"] + passNames.map { "after:" + $0 }

let compileCommand = Command(
    name: "compile", summary: "compile a model; print any stage or write the compiled graph (.nnc)",
    usage: "nnc compile MODEL.nn [-o OUT.nnc] [--init W.npz] [--emit STAGE] [--dtype f32|f64] [--batch N] [--seed S]",
    details: """
    --emit ast          the syntax tree
    --emit ir           the forward graph (IR), each node with its shape and source line
    --emit grad         the training graph: forward, loss, backward and optimizer updates
    --emit opt          the training graph after all passes
    --emit after:PASS   the training graph after one pass (\(passNames.joined(separator: ", ")))
    --emit fusion-log   every fusion candidate and what became of it
    --emit plan         the memory plan: buffers with offsets, sizes and live ranges (for --batch N)
    --emit dot          the forward graph in Graphviz DOT
    -o OUT.nnc          write the compiled graph with its initial parameters (default: MODEL.nnc here)
    --init W.npz        … with these parameters and running statistics instead (names like conv1.weight,
                        bn1.running_mean), e.g. from NumPy or PyTorch: the .nnc runs without training
    """,
    valueOptions: ["-o", "--emit", "--dtype", "--batch", "--seed", "--init"], flagOptions: []
) { arguments, console in
    let path = try onePath(arguments, "model file")
    let program = try loadModel(path, console: console)
    let type = try dtype(arguments)
    guard let stage = arguments.values["--emit"] else {
        var settings = program.settings.training
        if let seed = try arguments.integer("--seed", minimum: 0) { settings.seed = seed }
        let output = arguments.values["-o"] ?? defaultOutputPath(for: path)
        try checkOutput(output, flag: "-o", inputs: [path] + [arguments.values["--init"]].compactMap { $0 })
        try writeInitialModel(program: program, dtype: type, settings: settings, weights: arguments.values["--init"], to: output)
        console.print("wrote \(output)")
        return
    }
    guard emitStages.contains(stage) else {
        var message = "unknown stage '\(stage)' for --emit (one of \(emitStages.joined(separator: ", ")))"
        if let guess = suggestion(for: stage, among: emitStages) { message = "unknown stage '\(stage)' for --emit; did you mean '\(guess)'?" }
        throw UsageError(message: message)
    }
    switch stage {
    case "ast": console.print(program.ast.printed(), terminator: "")
    case "ir": console.print(try program.forward(dtype: type, training: false).graph.printed(), terminator: "")
    case "dot": console.print(try program.forward(dtype: type, training: false).graph.dot(name: (path as NSString).lastPathComponent), terminator: "")
    default:
        let training = try program.trainingGraph(dtype: type, settings: program.settings.training)
        switch stage {
        case "grad": console.print(training.printed(), terminator: "")
        case "opt": console.print(try training.optimized(verify: true).graph.printed(), terminator: "")
        case "fusion-log":
            let log = try training.optimized(verify: true).log
            for entry in log { console.print(entry.description) }
            console.print("\(log.filter(\.fused).count) fused, \(log.filter { !$0.fused }.count) not fused")
        case "plan":
            let optimized = try training.optimized(verify: true).graph
            let batch = try arguments.integer("--batch") ?? program.settings.training.batch ?? 1
            console.print(try Plan(graph: optimized, batch: batch).printed(), terminator: "")
        default:
            let pass = String(stage.dropFirst("after:".count))
            console.print(try training.optimized(through: pass, verify: true).graph.printed(), terminator: "")
        }
    }
}

/// Where a command writes its compiled graph when not told: the model's base name with `.nnc`,
/// in the current directory (as compilers write theirs).
func defaultOutputPath(for modelPath: String) -> String {
    let base = ((modelPath as NSString).lastPathComponent as NSString).deletingPathExtension
    return base + ".nnc"
}

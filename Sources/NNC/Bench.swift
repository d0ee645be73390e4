import Foundation
import IR
import Parser
import Runtime

/// One line of the bench table.
struct BenchRow { var name: String; var phase: Phase; var line: Int?; var seconds: Double; var flops: Int }

let benchCommand = Command(
    name: "bench", summary: "time each fused op of a training step; steps/s and GFLOP/s",
    usage: "nnc bench MODEL.nn [--batch N] [--steps N] [--threads N] [--dtype f32|f64]",
    details: "Runs training steps on random data (forward passes only for a model without a loss). Prints,\nper op of the optimized graph, the forward or backward time per step, its share of the step,\nGFLOP/s and the source line, then one summary line: the mean step, and the median of steps timed\none by one (a call's latency).",
    valueOptions: ["--batch", "--steps", "--threads", "--dtype"], flagOptions: []
) { arguments, console in
    let path = try onePath(arguments, "model file")
    let program = try loadModel(path, console: console)
    let batch = try arguments.integer("--batch") ?? program.settings.training.batch ?? 32
    let threads = try arguments.threads()
    let steps = try arguments.integer("--steps")
    switch try dtype(arguments) {
    case .f32: try bench(Float.self, program, batch: batch, steps: steps, threads: threads, console: console)
    case .f64: try bench(Double.self, program, batch: batch, steps: steps, threads: threads, console: console)
    }
}

func bench<T: KernelScalar>(_ type: T.Type, _ program: ModelProgram, batch: Int, steps requested: Int?, threads: Int, console: Console) throws {
    let dtype: DType = T.self == Double.self ? .f64 : .f32
    // Without a loss there is nothing to train: the step is the (optimized) forward pass, as in `run`.
    let graph = program.model.graph.loss == nil
        ? try program.inferenceGraph(dtype: dtype, withLoss: false)
        : try program.trainingGraph(dtype: dtype, settings: program.settings.training).optimized(recordLog: false).graph
    let plan = try Plan(graph: graph, batch: batch)
    let store = ParameterStore<T>(graph: graph)
    try requireParameterMemory(program, dtype: dtype)
    let values = initialValues(for: graph.parameters, seed: 0)
    for (buffer, initial) in zip(store.parameters, values) { store.load(initial, into: buffer) }
    // A forward pass alone runs as `run` does: weights packed for the GEMMs once, at the start.
    let session = try Session<T>(plan: plan, store: store, threads: threads, constantParameters: program.model.graph.loss == nil)
    var random = MT19937(seed: 1)
    fillRandomBatch(session, batch: batch, random: &random)
    let executable = try session.executable(batch: batch)
    // Warm up, then choose a step count that takes about a second.
    let warmStart = DispatchTime.now().uptimeNanoseconds
    for _ in 0..<3 { session.run(executable) }
    let warm = Double(DispatchTime.now().uptimeNanoseconds - warmStart) / 3e9
    let steps = requested ?? max(5, min(200_000, Int(1.0 / max(warm, 1e-7))))
    // Whole steps, untimed per op (timing each op would distort small models).
    let start = DispatchTime.now().uptimeNanoseconds
    for _ in 0..<steps { session.run(executable) }
    let stepSeconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 / Double(steps)
    // The latency of one step: steps timed one by one, their median (as ONNX Runtime's latency is
    // measured; on a shared machine the mean above also carries the steps a neighbour slowed).
    var latencies = [UInt64](repeating: 0, count: max(3, min(steps, 5000)))
    for i in latencies.indices {
        let callStart = DispatchTime.now().uptimeNanoseconds
        session.run(executable)
        latencies[i] = DispatchTime.now().uptimeNanoseconds - callStart
    }
    latencies.sort()
    let medianSeconds = (Double(latencies[latencies.count / 2]) + Double(latencies[(latencies.count - 1) / 2])) / 2e9
    // Per-op times.
    var times = [UInt64](repeating: 0, count: executable.nodeOfInstruction.count)
    let timedSteps = max(3, min(steps, 2000))
    for _ in 0..<timedSteps { session.runTimed(executable, times: &times) }
    let totalTimed = Double(times.reduce(0, +))
    var rows: [BenchRow] = []
    var forwardFlops = 0, backwardFlops = 0, forwardSeconds = 0.0, backwardSeconds = 0.0
    for (instruction, nodeIndex) in executable.nodeOfInstruction.enumerated() {
        let node = graph.nodes[nodeIndex]
        let flops = node.op.flops(operands: node.operands.map { graph[$0].shape.concrete(batch: batch) },
                                  results: node.results.map { graph[$0].shape.concrete(batch: batch) })
        // Scale the instrumented time to the untimed step so the columns add up to the step time.
        let seconds = totalTimed > 0 ? Double(times[instruction]) / totalTimed * stepSeconds : 0
        let isForward = node.phase == .forward || node.phase == .loss
        if isForward { forwardFlops += flops; forwardSeconds += seconds } else { backwardFlops += flops; backwardSeconds += seconds }
        let lhs = node.results.map { "%" + graph[$0].name }.joined(separator: ",")
        rows.append(BenchRow(name: (lhs.isEmpty ? "" : lhs + " = ") + node.op.name, phase: node.phase,
                        line: node.location.map { program.source.line(of: $0.start) }, seconds: seconds, flops: flops))
    }
    let nameWidth = min(60, rows.map(\.name.count).max() ?? 0)
    console.print("bench \(program.source.path): \(dtype.rawValue), batch \(batch), \(threads) thread\(threads == 1 ? "" : "s"), \(steps) steps")
    console.print("op".padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  phase     line   time/step   share   GFLOP/s")
    for row in rows {
        let gflops = row.seconds > 0 && row.flops > 0 ? String(format: "%7.2f", Double(row.flops) / row.seconds / 1e9) : "      -"
        console.print(String(row.name.prefix(nameWidth)).padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  "
                      + row.phase.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0)
                      + String(format: "%6@", row.line.map(String.init) ?? "-")
                      + String(format: "  %8.2f µs  %5.1f%%  ", row.seconds * 1e6, stepSeconds > 0 ? row.seconds / stepSeconds * 100 : 0) + gflops)
    }
    func rate(_ flops: Int, _ seconds: Double) -> String { String(format: "%.2f", seconds > 0 ? Double(flops) / seconds / 1e9 : 0) }
    console.print(String(format: "bench: batch %d, forward %.4f ms (%@ GFLOP/s), backward %.4f ms (%@ GFLOP/s), step %.4f ms (median %.4f ms), %@ samples/s",
                         batch, forwardSeconds * 1e3, rate(forwardFlops, forwardSeconds), backwardSeconds * 1e3, rate(backwardFlops, backwardSeconds),
                         stepSeconds * 1e3, medianSeconds * 1e3, grouped(Int(Double(batch) / stepSeconds))))
}

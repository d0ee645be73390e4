import Foundation
import IR
import Parser
import Runtime

/// One parameter's comparison of autodiff against finite differences.
public struct GradientCheck: Sendable {
    /// The parameter's name (`fc1.weight`).
    public var parameter: String
    /// Its shape.
    public var shape: [Int]
    /// How many of its elements were perturbed (a random sample of large tensors).
    public var checkedElements: Int
    /// The largest |finite difference − autodiff| / max(|finite difference| + |autodiff|, 1e-4) among them.
    public var maxRelativeError: Double
}

/// Compares the gradients autodiff derives (through the optimized graph, in f64) with central
/// differences of the loss, for every parameter element (a random sample of large tensors), on
/// random inputs, targets and parameters.
public func gradientCheck(_ program: ModelProgram, batch: Int = 3, seed: Int = 0, samplesPerTensor: Int = 64, step h: Double = 1e-5) throws -> [GradientCheck] {
    let graph = try program.gradientGraph(dtype: .f64, training: true).optimized(verify: true, recordLog: false).graph
    let plan = try Plan(graph: graph, batch: batch)
    let store = ParameterStore<Double>(graph: graph)
    let session = try Session<Double>(plan: plan, store: store, threads: 1, seed: seed)
    var random = MT19937(seed: UInt32(truncatingIfNeeded: seed))
    for buffer in store.parameters {
        for i in buffer.indices { buffer[i] = random.uniform(-0.5, 0.5) }
    }
    fillRandomBatch(session, batch: batch, random: &random)
    let executable = try session.executable(batch: batch)
    func loss() -> Double {
        session.reseed(UInt32(truncatingIfNeeded: seed &+ 17))  // the same dropout masks every run
        session.run(executable)
        return session.lossValue
    }
    _ = loss()
    // All analytic gradients at the unperturbed point, before any finite-difference run.
    let analyticGradients = graph.parameters.enumerated().map { index, parameter in
        graph.gradients[index].map { Array(UnsafeBufferPointer(start: session.pointer($0), count: parameter.shape.rowElements)) }
    }
    var results: [GradientCheck] = []
    for (index, parameter) in graph.parameters.enumerated() {
        guard let analytic = analyticGradients[index] else { continue }
        let buffer = store.parameters[index]
        var elements = Array(buffer.indices)
        if elements.count > samplesPerTensor {
            for i in stride(from: elements.count - 1, to: 0, by: -1) { elements.swapAt(i, min(i, Int(random.randomSample() * Double(i + 1)))) }
            elements = Array(elements.prefix(samplesPerTensor)).sorted()
        }
        var worst = 0.0
        for element in elements {
            let original = buffer[element]
            buffer[element] = original + h
            let plus = loss()
            buffer[element] = original - h
            let minus = loss()
            buffer[element] = original
            let numeric = (plus - minus) / (2 * h)
            let difference = abs(numeric - analytic[element])
            // Relative error, measured against 1e-4 for gradients smaller than that (where central
            // differences have an absolute error of about 1e-10 and a relative one would be noise).
            let relative = difference / max(abs(numeric) + abs(analytic[element]), 1e-4)
            worst = max(worst, relative)
        }
        results.append(GradientCheck(parameter: parameter.name, shape: parameter.shape.dims, checkedElements: elements.count, maxRelativeError: worst))
    }
    _ = loss()
    return results
}

/// Random inputs in [-1, 1) and targets to match: class labels, or values in (0.05, 0.95) (valid
/// for every loss, bce included). For gradcheck, bench and tests.
func fillRandomBatch<T: KernelScalar>(_ session: Session<T>, batch: Int, random: inout MT19937) {
    let graph = session.plan.graph
    if let input = session.inputPointer, let x = graph.input {
        for i in 0..<graph[x].shape.elements(batch: batch) { input[i] = T(random.uniform(-1, 1)) }
    }
    if let target = session.targetPointer, let y = graph.target {
        switch graph.targetKind {
        case .classLabels(let classes):
            for i in 0..<batch { target[i] = T(min(classes - 1, Int(random.randomSample() * Double(classes)))) }
        case .values, .none:
            for i in 0..<graph[y].shape.elements(batch: batch) { target[i] = T(random.uniform(0.05, 0.95)) }
        }
    }
}

let gradcheckCommand = Command(
    name: "gradcheck", summary: "check autodiff against finite differences for every parameter (f64)",
    usage: "nnc gradcheck MODEL.nn [--batch N] [--seed S] [--samples K] [--tolerance X]",
    details: "Random inputs, targets and parameters in f64; central differences for every parameter element\n(K random elements of larger tensors, default 64). Prints the largest relative error per parameter\nand exits 1 when one is above the tolerance (default 1e-5).",
    valueOptions: ["--batch", "--seed", "--samples", "--tolerance"], flagOptions: []
) { arguments, console in
    let path = try onePath(arguments, "model file")
    let program = try loadModel(path, console: console)
    guard program.model.graph.loss != nil else { throw InputError(program.noLossMessage) }
    try requireParameterMemory(program, dtype: .f64)
    let tolerance = try arguments.number("--tolerance") ?? 1e-5
    let batch = try arguments.integer("--batch") ?? 3
    let checks = try gradientCheck(program, batch: batch, seed: try arguments.integer("--seed", minimum: 0) ?? 0,
                                   samplesPerTensor: try arguments.integer("--samples") ?? 64)
    console.print("gradcheck \(path): f64, batch \(batch), central differences (h = 1e-5)")
    let width = checks.map(\.parameter.count).max() ?? 0
    for check in checks {
        let total = check.shape.reduce(1, *)
        console.print("  " + check.parameter.padding(toLength: width, withPad: " ", startingAt: 0)
                      + "  [" + check.shape.map(String.init).joined(separator: ",") + "]"
                      + "  \(check.checkedElements)/\(total) elements  max relative error "
                      + String(format: "%.2e", check.maxRelativeError) + (check.maxRelativeError > tolerance ? "  FAILED" : ""))
    }
    let worst = checks.map(\.maxRelativeError).max() ?? 0
    if worst > tolerance {
        throw InputError("gradcheck failed: max relative error \(String(format: "%.2e", worst)) is above the tolerance \(tolerance)")
    }
    console.print("passed: max relative error \(String(format: "%.2e", worst)) (tolerance \(tolerance))")
}

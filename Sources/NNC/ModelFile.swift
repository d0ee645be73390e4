import Foundation
import IR
import Parser
import Runtime

/// A model with its parameters: a `.nn` compiled with fresh initial values, or a `.nnc` read back
/// with its checkpoint.
struct ModelState {
    var program: ModelProgram
    var checkpoint: Checkpoint

    var dtype: DType { checkpoint.dtype }

    /// Opens a `.nn` (initial parameters from the seed) or a `.nnc` (parameters as saved).
    static func open(path: String, dtype requested: DType?, seed: Int?) throws -> ModelState {
        if isCompiledFile(path) {
            let file = try CompiledFile.read(path: path)
            let source = SourceFile(path: file.sourcePath, text: file.source)
            let program: ModelProgram
            do {
                program = try ModelProgram.compile(source)
            } catch let error as DiagnosticError {
                throw InputError("\(path): error: the model source inside the compiled file does not compile:\n" + error.rendered)
            }
            var state = ModelState(program: program, checkpoint: file.checkpoint)
            try state.checkParameters(against: program.model.graph.parameters, file: path)
            if let requested, requested != state.checkpoint.dtype {
                // Optimizer state of one precision does not continue a run in the other.
                state.checkpoint.dtype = requested
                state.checkpoint.optimizerState = []
            }
            return state
        }
        let program = try ModelProgram.load(path: path)
        return ModelState(program: program, checkpoint: try initialCheckpoint(program, dtype: requested ?? .f32, seed: seed ?? program.settings.training.seed))
    }

    /// Every parameter of the graph is present with the right shape.
    func checkParameters(against expected: [Parameter], file: String) throws {
        let saved = byName(checkpoint.parameters)
        for parameter in expected {
            guard let tensor = saved[parameter.name] else {
                throw InputError("\(file): error: the compiled file has no parameter '\(parameter.name)'")
            }
            guard tensor.shape == parameter.shape.dims, tensor.values.count == parameter.shape.rowElements else {
                throw InputError("\(file): error: parameter '\(parameter.name)' has shape \(tensor.shape.map(String.init).joined(separator: "x")), but the model needs \(parameter.shape.dims.map(String.init).joined(separator: "x"))")
            }
        }
    }

    /// Replaces parameters and persistent state (running statistics) with those of a NumPy `.npz`
    /// (`--init W.npz`); every one must be there, with the model's shape.
    mutating func loadWeights(npz path: String) throws {
        let arrays = try readNPZ(path: path)
        // Every array must be something the model has: an extra one is a mismatch (another model's file).
        let known = Set(program.model.graph.parameters.map(\.name) + program.model.graph.states.filter { $0.kind == .persistent }.map(\.name))
        if let extra = arrays.first(where: { !known.contains($0.name) }) {
            throw InputError("\(path): error: array '\(extra.name)' is not a parameter or running statistic of the model (it has \(known.sorted().joined(separator: ", ")))")
        }
        let arraysByName = Dictionary(arrays.map { ($0.name, $0.array) }, uniquingKeysWith: { first, _ in first })
        func array(_ name: String, _ shape: [Int]) throws -> [Double] {
            guard let array = arraysByName[name] else {
                throw InputError("\(path): error: no array named '\(name)' (the file has \(arrays.map { "'\($0.name)'" }.joined(separator: ", ")))")
            }
            guard array.shape == shape else {
                throw InputError("\(path): error: array '\(name)' has shape (\(array.shape.map(String.init).joined(separator: ", "))), but the model needs (\(shape.map(String.init).joined(separator: ", ")))")
            }
            if let bad = array.values.firstIndex(where: { !$0.isFinite || (checkpoint.dtype == .f32 && abs($0) > Double(Float.greatestFiniteMagnitude)) }) {
                throw InputError("\(path): error: array '\(name)' holds \(array.values[bad]) at flat index \(bad)\(array.values[bad].isFinite ? ", beyond float32's range (train in f64: --dtype f64)" : ""); parameters must be finite")
            }
            return array.values
        }
        let graph = program.model.graph
        checkpoint.parameters = try graph.parameters.map {
            Checkpoint.Tensor(name: $0.name, shape: $0.shape.dims, values: try array($0.name, $0.shape.dims))
        }
        checkpoint.persistentState = try graph.states.filter { $0.kind == .persistent }.map {
            let shape = graph[$0.value].shape.dims
            return Checkpoint.Tensor(name: $0.name, shape: shape, values: try array($0.name, shape))
        }
    }

    /// Fills a parameter store from the checkpoint: parameters, and each state tensor by its name
    /// from the table of its kind (optimizer state, or persistent state such as running statistics).
    func fill<T: KernelScalar>(_ store: ParameterStore<T>) {
        let parameters = byName(checkpoint.parameters)
        let optimizerState = byName(checkpoint.optimizerState), persistentState = byName(checkpoint.persistentState)
        for (index, name) in store.names.enumerated() {
            if let tensor = parameters[name] { store.load(tensor.values, into: store.parameters[index]) }
        }
        for (index, state) in store.stateSlots.enumerated() {
            let saved = state.kind == .optimizer ? optimizerState : persistentState
            if let tensor = saved[state.name], tensor.values.count == store.states[index].count {
                store.load(tensor.values, into: store.states[index])
            }
        }
        store.step = checkpoint.optimizerStep
    }

    /// Takes the values back from a store.
    mutating func take<T: KernelScalar>(_ store: ParameterStore<T>) {
        checkpoint.parameters = zip(store.names, store.parameters).enumerated().map { index, pair in
            Checkpoint.Tensor(name: pair.0, shape: store.shapes[index], values: store.values(pair.1))
        }
        func tensors(_ kind: StateKind) -> [Checkpoint.Tensor] {
            zip(store.stateSlots, store.states).filter { $0.0.kind == kind }
                .map { Checkpoint.Tensor(name: $0.0.name, shape: $0.0.shape, values: store.values($0.1)) }
        }
        checkpoint.optimizerState = tensors(.optimizer)
        // A store without the persistent state (an inference plan) leaves the saved state as it was.
        if store.stateSlots.contains(where: { $0.kind == .persistent }) { checkpoint.persistentState = tensors(.persistent) }
        checkpoint.optimizerStep = store.step
    }

    /// Writes the compiled file atomically.
    func write(to path: String) throws {
        let ir = (try? program.inferenceGraph(dtype: dtype, withLoss: true).printed()) ?? ""
        let file = CompiledFile(sourcePath: program.source.path, source: program.source.text, ir: ir, checkpoint: checkpoint)
        do {
            try file.write(to: path)
        } catch let error as CompiledFileError {
            throw InputError(error.description)
        }
    }
}

/// Why a model's parameters do not fit this machine, or nil when they do: the checkpoint keeps each
/// value as a Double, and a run keeps the parameters, their gradients and the optimizer's state
/// (two tensors for Adam) in its precision.
func parameterMemoryShortfall(_ program: ModelProgram, dtype: DType) -> String? {
    let graph = program.model.graph
    var elements = 0
    for parameter in graph.parameters {
        let (sum, overflow) = elements.addingReportingOverflow(parameter.shape.rowElements)
        guard !overflow else { return "the model's parameters are beyond counting" }
        elements = sum
    }
    let perElement = 8 + (dtype == .f64 ? 8 : 4) * 4
    let (bytes, overflow) = elements.multipliedReportingOverflow(by: perElement)
    guard overflow || bytes > machineMemoryBytes else { return nil }
    return "the model's \(grouped(elements)) parameters need \(overflow ? "more than 9e18 bytes" : gigabytesText(bytes)) of memory to train, the machine has \(gigabytesText(machineMemoryBytes))"
}

/// Refuses, before any allocation, a model whose parameters do not fit this machine.
func requireParameterMemory(_ program: ModelProgram, dtype: DType) throws {
    if let shortfall = parameterMemoryShortfall(program, dtype: dtype) { throw InputError("\(program.source.path): error: \(shortfall)") }
}

/// A model before training: its parameters drawn from `seed`, its persistent state at its initial
/// values (running means 0, variances 1).
func initialCheckpoint(_ program: ModelProgram, dtype: DType, seed: Int) throws -> Checkpoint {
    try requireParameterMemory(program, dtype: dtype)
    let graph = program.model.graph
    var checkpoint = Checkpoint()
    checkpoint.dtype = dtype
    checkpoint.parameters = zip(graph.parameters, initialValues(for: graph.parameters, seed: seed)).map {
        Checkpoint.Tensor(name: $0.name, shape: $0.shape.dims, values: $1)
    }
    // An initializer's arguments come from the model: blame them, at their line, for values the
    // precision cannot hold (not the learning rate, later).
    let limit = dtype == .f32 ? Double(Float.greatestFiniteMagnitude) : Double.greatestFiniteMagnitude
    for (parameter, tensor) in zip(graph.parameters, checkpoint.parameters) {
        guard let bad = tensor.values.firstIndex(where: { !(abs($0) <= limit) }) else { continue }
        var place = program.source.path
        if let location = parameter.location {
            let (line, column) = program.source.lineAndColumn(of: location.start)
            place += ":\(line):\(column)"
        }
        throw InputError("\(place): error: parameter '\(parameter.name)' starts with \(tensor.values[bad]) at flat index \(bad) from its initializer \(parameter.initializer)\(dtype == .f32 ? "; in f32 every value must be within ±3.4e38" : ""); use a smaller scale")
    }
    checkpoint.persistentState = graph.states.filter { $0.kind == .persistent }.map {
        Checkpoint.Tensor(name: $0.name, shape: graph[$0.value].shape.dims,
                          values: [Double](repeating: $0.initial, count: graph[$0.value].shape.rowElements))
    }
    return checkpoint
}

func isCompiledFile(_ path: String) -> Bool {
    if path.hasSuffix(".nnc") { return true }
    // Only a regular file is looked into (opening a pipe would wait for a writer).
    var status = stat()
    guard stat(path, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else { return false }
    guard let handle = FileHandle(forReadingAtPath: path) else { return false }
    defer { try? handle.close() }
    return (try? handle.read(upToCount: 4)).map { [UInt8]($0) == CompiledFile.magic } ?? false
}

/// `nnc compile -o`: the compiled graph with its initial parameters.
/// `weights`: parameters and running statistics from a NumPy `.npz` (`compile --init`) instead of
/// the initial ones, so that weights from NumPy or PyTorch run without training.
func writeInitialModel(program: ModelProgram, dtype: DType, settings: TrainingSettings, weights: String? = nil, to path: String) throws {
    var checkpoint = try initialCheckpoint(program, dtype: dtype, seed: settings.seed)
    // Training the file goes on with these settings (the seed of --seed among them).
    checkpoint.settings = settings
    var state = ModelState(program: program, checkpoint: checkpoint)
    if let weights { try state.loadWeights(npz: weights) }
    try state.write(to: path)
}

/// Tensors by name (the first of a name), for lookups: a search per tensor would be quadratic in the
/// model's depth.
private func byName(_ tensors: [Checkpoint.Tensor]) -> [String: Checkpoint.Tensor] {
    Dictionary(tensors.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
}

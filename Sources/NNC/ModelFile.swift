import Foundation
import IR
import Parser
import Runtime

/// A model with its parameters: a `.nn` compiled with fresh initial values, or a `.nnc` read back.
struct ModelState {
    var program: ModelProgram
    var dtype: DType
    var parameters: [CompiledFile.Tensor]
    var states: [CompiledFile.Tensor] = []
    var metadata: [String: String] = [:]
    var history: [CompiledFile.Epoch] = []

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
            let savedType = DType(rawValue: file.metadata["dtype"] ?? "f32") ?? .f32
            var state = ModelState(program: program, dtype: requested ?? savedType, parameters: file.parameters,
                                   states: file.states, metadata: file.metadata, history: file.history)
            try state.checkParameters(against: program.model.graph.parameters, file: path)
            if requested != nil && requested != savedType { state.states = [] }
            return state
        }
        let program = try ModelProgram.load(path: path)
        let seed = seed ?? program.settings.training.seed
        let values = initialValues(for: program.model.graph.parameters, seed: seed)
        let tensors = zip(program.model.graph.parameters, values).map { CompiledFile.Tensor(name: $0.name, shape: $0.shape.dims, values: $1) }
        return ModelState(program: program, dtype: requested ?? .f32, parameters: tensors)
    }

    /// Every parameter of the graph is present with the right shape.
    func checkParameters(against expected: [Parameter], file: String) throws {
        for parameter in expected {
            guard let tensor = parameters.first(where: { $0.name == parameter.name }) else {
                throw InputError("\(file): error: the compiled file has no parameter '\(parameter.name)'")
            }
            guard tensor.shape == parameter.shape.dims, tensor.values.count == parameter.shape.rowElements else {
                throw InputError("\(file): error: parameter '\(parameter.name)' has shape \(tensor.shape.map(String.init).joined(separator: "x")), but the model needs \(parameter.shape.dims.map(String.init).joined(separator: "x"))")
            }
        }
    }

    /// Replaces parameters with those of a NumPy `.npz` (`--init W.npz`).
    mutating func loadWeights(npz path: String) throws {
        let arrays = try readNPZ(path: path)
        for (index, parameter) in program.model.graph.parameters.enumerated() {
            guard let array = arrays.first(where: { $0.name == parameter.name })?.array else {
                throw InputError("\(path): error: no array named '\(parameter.name)' (the file has \(arrays.map { "'\($0.name)'" }.joined(separator: ", ")))")
            }
            guard array.shape == parameter.shape.dims else {
                throw InputError("\(path): error: array '\(parameter.name)' has shape (\(array.shape.map(String.init).joined(separator: ", "))), but the model needs (\(parameter.shape.dims.map(String.init).joined(separator: ", ")))")
            }
            if let slot = parameters.firstIndex(where: { $0.name == parameter.name }) {
                parameters[slot].values = array.values
            } else {
                parameters.insert(CompiledFile.Tensor(name: parameter.name, shape: parameter.shape.dims, values: array.values), at: min(index, parameters.count))
            }
        }
    }

    /// Fills a parameter store from the saved tensors (and optimizer state when names match).
    func fill<T: KernelScalar>(_ store: ParameterStore<T>) {
        for (index, name) in store.names.enumerated() {
            if let tensor = parameters.first(where: { $0.name == name }) { store.load(tensor.values, into: store.parameters[index]) }
        }
        for (index, name) in store.stateNames.enumerated() {
            if let tensor = states.first(where: { $0.name == name }), tensor.values.count == store.states[index].count {
                store.load(tensor.values, into: store.states[index])
            }
        }
        store.step = Int(metadata["optimizer_step"] ?? "") ?? 0
    }

    /// Takes the values back from a store.
    mutating func take<T: KernelScalar>(_ store: ParameterStore<T>) {
        parameters = zip(store.names, store.parameters).enumerated().map { index, pair in
            CompiledFile.Tensor(name: pair.0, shape: store.shapes[index], values: store.values(pair.1))
        }
        states = zip(store.stateNames, store.states).map { CompiledFile.Tensor(name: $0, shape: [$1.count], values: store.values($1)) }
        metadata["optimizer_step"] = String(store.step)
    }

    /// Writes the compiled file atomically.
    func write(to path: String) throws {
        var metadata = self.metadata
        metadata["dtype"] = dtype.rawValue
        metadata["nnc_version"] = nncVersion
        let ir = (try? program.inferenceGraph(dtype: dtype, withLoss: true).printed()) ?? ""
        let file = CompiledFile(sourcePath: program.source.path, source: program.source.text, ir: ir, metadata: metadata,
                                parameters: parameters, states: states, history: history)
        do {
            try file.write(to: path, float64: dtype == .f64)
        } catch let error as CompiledFileError {
            throw InputError(error.description)
        }
    }
}

func isCompiledFile(_ path: String) -> Bool {
    if path.hasSuffix(".nnc") { return true }
    guard let handle = FileHandle(forReadingAtPath: path) else { return false }
    defer { try? handle.close() }
    return (try? handle.read(upToCount: 4)).map { [UInt8]($0) == CompiledFile.magic } ?? false
}

/// `nnc compile -o`: the compiled graph with its initial parameters.
func writeInitialModel(program: ModelProgram, dtype: DType, settings: TrainingSettings, to path: String) throws {
    let values = initialValues(for: program.model.graph.parameters, seed: settings.seed)
    let tensors = zip(program.model.graph.parameters, values).map { CompiledFile.Tensor(name: $0.name, shape: $0.shape.dims, values: $1) }
    var state = ModelState(program: program, dtype: dtype, parameters: tensors)
    state.metadata["seed"] = String(settings.seed)
    try state.write(to: path)
}

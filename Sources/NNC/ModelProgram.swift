import Foundation
import IR
import Parser

/// A model file taken through the front end: parsed, lowered and shape-checked. Every later stage
/// (training graph, optimized graph, plan) is one function away.
public struct ModelProgram: Sendable {
    /// The model's text and path.
    public let source: SourceFile
    /// Its syntax tree.
    public let ast: ModelAST
    /// The forward graph in inference mode (no dropout) with the loss.
    public let model: LoweredModel

    /// What the model says besides its layers: data files, loss, training settings.
    public var settings: ModelSettings { model.settings }

    /// Warnings about the model (legal, but probably not what was meant), rendered.
    public var renderedWarnings: String { model.warnings.map { $0.render(in: source) }.joined() }

    /// Reads, parses and checks a model file. Diagnostics are thrown as `DiagnosticError`.
    public static func load(path: String) throws -> ModelProgram {
        // A model is a few lines; a huge file is a mistake, not a model (and must not exhaust memory).
        let bytes: [UInt8]
        do { bytes = try readRegularFile(path: path, limit: 64 << 20, what: "a model file") } catch {
            throw InputError("\(path): error: \(error.message)")
        }
        // A compiled file is not source: say so instead of a lexer error per byte.
        if bytes.count >= 4, Array(bytes[0..<4]) == CompiledFile.magic {
            throw InputError("\(path): error: this is a compiled model (.nnc), not model source; run, eval, train, export and import read compiled models, check, compile, gradcheck and bench read .nn source (the source is inside: nnc train \(path) goes on training it)")
        }
        return try compile(SourceFile(path: path, bytes: bytes))
    }

    /// Parses, lowers and checks a model's text; its diagnostics are thrown as `DiagnosticError`.
    public static func compile(_ source: SourceFile) throws -> ModelProgram {
        let ast = try parseModel(source)
        let model = try lower(ast, dtype: .f32, training: false)
        return ModelProgram(source: source, ast: ast, model: model)
    }

    /// The model with a loss after its last layer (`--loss`, for a model without one, such as an
    /// imported ONNX graph): its source gains the line `loss KIND`.
    public func withLoss(_ loss: LossKind) throws -> ModelProgram {
        if let existing = settings.loss {
            guard existing == loss else {
                throw InputError("\(source.path): error: the model has 'loss \(existing.rawValue)' already; --loss adds a loss to a model without one")
            }
            return self
        }
        let text = source.text.hasSuffix("\n") || source.text.isEmpty ? source.text : source.text + "\n"
        return try ModelProgram.compile(SourceFile(path: source.path, text: text + "loss \(loss.rawValue)\n"))
    }

    /// The forward graph in the given precision; `training` adds dropout masks.
    public func forward(dtype: DType, training: Bool) throws -> LoweredModel {
        // Only dropout and batch norm differ in training: without them the graph already made serves.
        if dtype == .f32, !training || !hasTrainingModeLayers { return model }
        return try lower(ast, dtype: dtype, training: training)
    }

    /// Whether the model has layers that behave differently in training (dropout, batch norm).
    var hasTrainingModeLayers: Bool {
        ast.statements.contains {
            switch $0.kind {
            case .dropout, .batchNorm: return true
            case .input, .data, .train, .fc, .conv, .pool, .flatten, .activation, .loss, .globalAveragePool, .reshape, .prelu, .pad, .join, .from: return false
            }
        }
    }

    /// Forward, loss, backward and optimizer updates, before the passes.
    public func trainingGraph(dtype: DType, settings: TrainingSettings) throws -> Graph {
        let forward = try self.forward(dtype: dtype, training: true).graph
        guard forward.loss != nil else { throw InputError(noLossMessage) }
        return try forward.differentiated().withUpdates(settings.update)
    }

    /// Forward, loss and backward (gradients kept as results), no updates: for gradcheck and tests.
    public func gradientGraph(dtype: DType, training: Bool = false) throws -> Graph {
        let forward = try self.forward(dtype: dtype, training: training).graph
        guard forward.loss != nil else { throw InputError(noLossMessage) }
        return try forward.differentiated()
    }

    /// The forward graph with its loss (evaluation), or without it (`withLoss: false`, prediction).
    public func inferenceGraph(dtype: DType, withLoss: Bool) throws -> Graph {
        var graph = try forward(dtype: dtype, training: false).graph
        if !withLoss { graph.loss = nil }
        return try graph.optimized(verify: verifyPasses, recordLog: false).graph
    }

    /// Whether the loss sums over the batch (`sse`, `sum`) rather than averaging: an epoch's loss is
    /// then the sum of its steps' losses, not their sample-weighted mean.
    var lossSumsOverBatch: Bool { settings.loss == .sse || settings.loss == .sum }

    var noLossMessage: String {
        "\(source.path): error: the model has no loss to train; end it with a loss statement such as 'loss mse' or 'loss crossentropy'"
    }

    /// The file the model's `data` statement names, relative to the model file.
    public func resolve(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        let directory = (source.path as NSString).deletingLastPathComponent
        return directory.isEmpty ? path : (directory as NSString).appendingPathComponent(path)
    }

    /// What a data file must hold for this model.
    public var dataExpectation: (features: Int, targets: TargetKind) {
        (model.inputShape.rowElements, model.graph.targetKind)
    }
}

/// Debug builds (and tests) verify the graph after every pass.
#if DEBUG
let verifyPasses = true
#else
let verifyPasses = false
#endif

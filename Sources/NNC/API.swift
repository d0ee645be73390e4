import Foundation
import IR
import Parser
import Runtime

// The library's public face: a model to load, train, evaluate, run and save from Swift, which the
// command line uses too.
//
//     var model = try Model(source: "input 2\nfc 2->3\ntanh\nfc 3->1\ntanh\nloss mse")
//     let data = try Dataset.regression(features: [0, 0, 0, 1, 1, 0, 1, 1], featureCount: 2, targets: [0, 1, 1, 0], targetWidth: 1)
//     var settings = model.trainingSettings
//     settings.lr = 0.5; settings.epochs = 500; settings.batch = 4
//     try model.train(on: data, settings: settings)
//     let predictions = try model.predict([1, 0], count: 1)   // ≈ [1]
//     try model.save(to: "xor.nnc")

/// A model with its parameters: compiled from source, or read from a `.nnc` file with its checkpoint
/// (parameters, optimizer state, running statistics, training history).
public struct Model: Sendable {
    var state: ModelState

    init(state: ModelState) { self.state = state }

    /// Compiles a model from its source text; the parameters start from the model's initializers,
    /// drawn from `seed` (default: the model's `train … seed`).
    ///
    /// - Parameters:
    ///   - source: the model in nnc's language.
    ///   - path: the name diagnostics give the source (and relative `data` paths start from).
    ///   - dtype: the precision of parameters and computation.
    /// - Throws: `DiagnosticError` with every error of the source, with line and column.
    public init(source: String, path: String = "model.nn", dtype: DType = .f32, seed: Int? = nil) throws {
        let program = try ModelProgram.compile(SourceFile(path: path, text: source))
        state = ModelState(program: program, checkpoint: try initialCheckpoint(program, dtype: dtype, seed: seed ?? program.settings.training.seed))
    }

    /// Reads a model file: `.nn` source (fresh parameters) or a compiled `.nnc` (as saved).
    ///
    /// - Parameter dtype: the precision to use; converting a `.nnc` drops its optimizer state.
    /// - Throws: `DiagnosticError` for a source with errors; `InputError` or `CompiledFileError` for an
    ///   unreadable or corrupt file, naming it.
    public init(contentsOf path: String, dtype: DType? = nil) throws {
        state = try ModelState.open(path: path, dtype: dtype, seed: nil)
    }

    /// The model as compiled: source, syntax tree, forward graph, settings.
    public var program: ModelProgram { state.program }

    /// The precision of the parameters and of training and inference.
    public var dtype: DType { state.dtype }

    /// The training settings a run starts from: those a `.nnc` recorded, else the model's `train` statement.
    public var trainingSettings: TrainingSettings { state.checkpoint.settings ?? program.settings.training }

    /// The epochs of training so far, with loss and metrics.
    public var history: [Checkpoint.Epoch] { state.checkpoint.history }

    /// Parameter names in the model's order (`fc1.weight`, `fc1.bias`, `bn1.weight`, …), then the
    /// persistent state (`bn1.running_mean`, …).
    public var parameterNames: [String] { (state.checkpoint.parameters + state.checkpoint.persistentState).map(\.name) }

    /// A parameter's (or running statistic's) shape and values, row-major; nil for an unknown name.
    public func parameter(_ name: String) -> (shape: [Int], values: [Double])? {
        (state.checkpoint.parameters + state.checkpoint.persistentState).first { $0.name == name }.map { ($0.shape, $0.values) }
    }

    /// Replaces a parameter's (or running statistic's) values.
    ///
    /// - Throws: `InputError` for an unknown name or a value count that does not fit its shape.
    public mutating func setParameter(_ name: String, to values: [Double]) throws {
        func replace(_ tensors: inout [Checkpoint.Tensor]) throws -> Bool {
            guard let index = tensors.firstIndex(where: { $0.name == name }) else { return false }
            guard values.count == tensors[index].values.count else {
                throw InputError("parameter '\(name)' has \(tensors[index].values.count) values (shape \(tensors[index].shape)), not \(values.count)")
            }
            tensors[index].values = values
            return true
        }
        if try replace(&state.checkpoint.parameters) || replace(&state.checkpoint.persistentState) { return }
        throw InputError("no parameter named '\(name)' (the model has \(parameterNames.joined(separator: ", ")))")
    }

    /// The model's outputs for `count` input rows, row after row (`count × inputs` values in, `count ×
    /// outputs` out), computed in the model's precision (evaluation mode: no dropout, batch norm with
    /// its running statistics).
    ///
    /// - Throws: `InputError` when `inputs` does not hold `count` rows.
    public func predict(_ inputs: [Double], count: Int, threads: Int = 1) throws -> [Double] {
        guard count >= 1 else { return [] }
        return try inferenceOutputs(state, inputs: inputs, count: count, threads: threads)
    }

    /// `predict` for `Float` rows.
    public func predict(_ inputs: [Float], count: Int, threads: Int = 1) throws -> [Float] {
        try predict(inputs.map(Double.init), count: count, threads: threads).map(Float.init)
    }

    /// `predict` from and into memory the caller owns: `count` rows from `inputs`, the outputs
    /// written to `outputs` (which must hold `count ×` the model's output size).
    ///
    /// - Throws: `InputError` when either buffer does not fit `count` rows.
    public func predict(_ inputs: UnsafeBufferPointer<Float>, count: Int, into outputs: UnsafeMutableBufferPointer<Float>, threads: Int = 1) throws {
        let results = try predict(Array(inputs), count: count, threads: threads)
        guard results.count == outputs.count else {
            throw InputError("the output buffer holds \(outputs.count) values; \(count) rows of this model's output need \(results.count)")
        }
        for (index, value) in results.enumerated() { outputs[index] = value }
    }

    /// The loss on a data set (mean over samples; the sum for `sse` and `sum`) and, for classifiers,
    /// the accuracy.
    ///
    /// - Throws: `InputError` for a model without a loss.
    public func evaluate(_ data: Dataset, threads: Int = 1) throws -> (loss: Double, accuracy: Double?) {
        guard program.model.graph.loss != nil else { throw InputError(program.noLossMessage) }
        switch dtype {
        case .f32:
            let store = ParameterStore<Float>(graph: program.model.graph); state.fill(store)
            return try Evaluator<Float>(program: program, dtype: .f32, store: store, threads: threads, batch: min(1000, max(1, data.count))).evaluate(data)
        case .f64:
            let store = ParameterStore<Double>(graph: program.model.graph); state.fill(store)
            return try Evaluator<Double>(program: program, dtype: .f64, store: store, threads: threads, batch: min(1000, max(1, data.count))).evaluate(data)
        }
    }

    /// Trains the model on a data set (and reports on `test` after each epoch).
    ///
    /// A fresh model trains for `settings.epochs`; a model that has trained before goes on for that
    /// many more; one that was stopped mid-epoch finishes the run it was in (or `epochs` more when
    /// given). `onEvent` hears every step and epoch and may stop the run: the model then holds a
    /// checkpoint that a later `train` resumes exactly where it stopped.
    ///
    /// - Parameters:
    ///   - settings: optimizer, learning rate, batch, epochs, seed, schedule (default: `trainingSettings`).
    ///   - epochs: epochs to add to an interrupted run instead of finishing it.
    ///   - threads: worker threads for the kernels.
    /// - Throws: `InputError` when the model has no loss, the data does not fit the model, or the loss
    ///   becomes NaN or infinite (the model is left as it was).
    @discardableResult
    public mutating func train(on data: Dataset, test: Dataset? = nil, settings: TrainingSettings? = nil, epochs: Int? = nil, threads: Int = 1,
                               onEvent: (TrainingEvent) -> TrainingDecision = { _ in .continue }) throws -> TrainingSummary {
        guard program.model.graph.loss != nil else { throw InputError(program.noLossMessage) }
        guard data.count > 0 else { throw InputError("\(data.source): error: the data set is empty") }
        let expectation = program.expectation
        guard data.featureCount == expectation.featureCount, data.targetWidth == expectation.targetColumns else {
            throw InputError("\(data.source): error: the data has \(data.featureCount) features and \(data.targetWidth) targets per sample; the model needs \(expectation.featureCount) and \(expectation.targetColumns)")
        }
        if case .classLabels(let classes) = expectation.targets {
            for set in [data, test].compactMap({ $0 }) {
                if case .labels(let labels) = set.targets, let bad = labels.first(where: { $0 < 0 || Int($0) >= classes }) {
                    throw InputError("\(set.source): error: class label \(bad) is outside 0..<\(classes), the model's classes")
                }
            }
        }
        let settings = settings ?? trainingSettings
        // Validation data: a seeded share held out of the training data, or the test set.
        var training = data, test = test, validation: Dataset?
        switch settings.validation {
        case .fraction(let share)?: (training, validation) = data.holdingOut(share, seed: settings.seed)
        case .test?:
            guard let test else { throw InputError("\(data.source): error: 'validation test' needs test data (a 'data test' statement, --test-data, or an MNIST directory's test split)") }
            validation = test
        case nil:
            if settings.patience > 0 || settings.keepBest {
                throw InputError("'patience' and 'keep best' need validation data: add 'validation F' (a fraction of the training data) or 'validation test'")
            }
        }
        if settings.validation == .test { test = nil }  // reported as the validation set
        var startEpoch = state.checkpoint.epochsDone, startStep = 0
        var endEpoch = startEpoch + settings.epochs
        if let interruption = state.checkpoint.interruption {
            startStep = interruption.stepInEpoch
            endEpoch = epochs.map { startEpoch + $0 } ?? interruption.epochsTarget
        } else if let epochs {
            endEpoch = startEpoch + epochs
        }
        let job = TrainingJob(state: state, settings: settings, train: training, test: test, validation: validation, threads: threads,
                              startEpoch: startEpoch, startStep: startStep, endEpoch: endEpoch)
        let (trained, summary): (ModelState, TrainingSummary)
        switch dtype {
        case .f32: (trained, summary) = try runTraining(Float.self, job, onEvent: onEvent)
        case .f64: (trained, summary) = try runTraining(Double.self, job, onEvent: onEvent)
        }
        state = trained
        return summary
    }

    /// Writes the model as a compiled `.nnc` (source, optimized graph, checkpoint), atomically.
    public func save(to path: String) throws { try state.write(to: path) }

    /// Reads a data file (CSV, IDX, NPY/NPZ, an MNIST directory) as this model's input and targets.
    ///
    /// - Throws: `DataError` naming the file and the line and column, or byte offset.
    public func loadData(_ path: String) throws -> DataSplits { try Runtime.loadData(path: path, expecting: program.expectation) }
}

/// What training reports as it goes.
public enum TrainingEvent: Sendable {
    /// After each step.
    case step(StepReport)
    /// After each epoch.
    case epoch(EpochReport)
}

/// Where a run is after a step.
public struct StepReport: Sendable {
    /// The epoch (from 1) and the run's last epoch.
    public var epoch: Int, epochs: Int
    /// The step (from 1) and the steps of an epoch.
    public var step: Int, steps: Int
    /// The epoch's loss so far (mean per sample; the sum for `sse` and `sum`).
    public var loss: Double
    /// Samples per second in the epoch so far.
    public var samplesPerSecond: Double
    /// An estimate of the seconds left in the epoch.
    public var secondsLeftInEpoch: Double
}

/// An epoch's results.
public struct EpochReport: Sendable {
    /// The epoch (from 1), the run's last epoch, and the epoch the run started at (from 1).
    public var epoch: Int, epochs: Int, firstEpoch: Int
    /// The epoch's training loss (mean per sample; the sum for `sse` and `sum`).
    public var loss: Double
    /// The share of training samples classified right (classifiers), during the epoch.
    public var accuracy: Double?
    /// The loss on the test data after the epoch, when there is test data.
    public var testLoss: Double?
    /// The accuracy on the test data after the epoch (classifiers).
    public var testAccuracy: Double?
    /// The loss on the validation data after the epoch (`validation`).
    public var validationLoss: Double?
    /// The accuracy on the validation data after the epoch (classifiers).
    public var validationAccuracy: Double?
    /// The learning rate of the epoch's last step (after the schedule).
    public var learningRate: Double
    /// Seconds the epoch took, evaluation included.
    public var seconds: Double
    /// Training samples per second over the epoch.
    public var samplesPerSecond: Double
}

/// What an event handler wants next.
public enum TrainingDecision: Sendable {
    case `continue`
    /// Stop after this step, keeping a checkpoint that resumes here.
    case stop
}

/// A finished (or stopped) run.
public struct TrainingSummary: Sendable {
    /// Optimizer steps taken.
    public var steps: Int
    /// Samples trained on (over all steps).
    public var samples: Int
    /// Seconds spent in steps (data copy included, evaluation excluded).
    public var seconds: Double
    /// The last epoch's training loss (NaN when no epoch finished).
    public var finalLoss: Double
    /// The last epoch's training accuracy (classifiers).
    public var finalAccuracy: Double?
    /// Whether the handler stopped the run before its end.
    public var stopped: Bool
    /// The epoch (from 1) after which `patience` ended the run, its validation loss not having improved.
    public var stoppedEarlyAfter: Int?
    /// `keep best`: the epoch (from 1) whose parameters the model now holds.
    public var keptEpoch: Int?
}

extension Dataset {
    /// Splits off a seeded share of the samples for validation (at least one sample stays on each
    /// side); both parts keep the file's order.
    func holdingOut(_ share: Double, seed: Int) -> (training: Dataset, validation: Dataset) {
        var order = Array(0..<count)
        var random = MT19937(seed: derivedSeed(seed, -1))
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, min(i, Int(random.randomSample() * Double(i + 1)))) }
        let held = min(max(1, Int((share * Double(count)).rounded())), max(1, count - 1))
        return (rows(order[held...].sorted()), rows(order[..<held].sorted()))
    }
}

extension Dataset {
    /// A classification data set: `featureCount` features per sample, row after row, and an integer
    /// class label per sample.
    ///
    /// - Throws: `InputError` when the counts do not fit or a value is not finite.
    public static func classification(features: [Double], featureCount: Int, labels: [Int], name: String = "data") throws -> Dataset {
        try checkRows(features, featureCount: featureCount, samples: labels.count, name: name)
        guard labels.allSatisfy({ $0 >= 0 && $0 <= Int(Int32.max) }) else { throw InputError("\(name): error: class labels must be whole numbers from 0") }
        return Dataset(count: labels.count, featureCount: featureCount, features: .float64(features), targets: .labels(labels.map { Int32($0) }), source: name)
    }

    /// A regression data set: `featureCount` features and `targetWidth` target values per sample.
    ///
    /// - Throws: `InputError` when the counts do not fit or a value is not finite.
    public static func regression(features: [Double], featureCount: Int, targets: [Double], targetWidth: Int, name: String = "data") throws -> Dataset {
        guard targetWidth >= 1, targets.count % targetWidth == 0 else { throw InputError("\(name): error: \(targets.count) targets are not rows of \(targetWidth)") }
        try checkRows(features, featureCount: featureCount, samples: targets.count / targetWidth, name: name)
        guard targets.allSatisfy(\.isFinite) else { throw InputError("\(name): error: a target is not finite") }
        return Dataset(count: targets.count / targetWidth, featureCount: featureCount, features: .float64(features), targets: .values(targets, width: targetWidth), source: name)
    }

    static func checkRows(_ features: [Double], featureCount: Int, samples: Int, name: String) throws {
        guard featureCount >= 1, features.count == featureCount * samples else {
            throw InputError("\(name): error: \(features.count) feature values are not \(samples) rows of \(featureCount)")
        }
        guard features.allSatisfy(\.isFinite) else { throw InputError("\(name): error: a feature is not finite") }
    }
}

import Foundation
import Parser

/// Everything a `.nnc` file holds besides the model: the values a run needs to continue exactly
/// where another stopped. Typed fields, written by `CompiledFile` in its `CKPT` section.
///
/// The random streams need no state of their own: an epoch's sample order and a step's dropout
/// masks are drawn from generators seeded by (`settings.seed`, epoch, step), so the epoch and the
/// step within it (`epochsDone`, `interruption`) are the position of every stream.
public struct Checkpoint: Sendable, Equatable {
    /// A named tensor (row-major values, kept as Double whatever the file's precision).
    public struct Tensor: Sendable, Equatable {
        public var name: String
        public var shape: [Int]
        public var values: [Double]
        public init(name: String, shape: [Int], values: [Double]) { self.name = name; self.shape = shape; self.values = values }
    }

    /// One epoch of training history.
    public struct Epoch: Sendable, Equatable {
        public var loss: Double
        public var accuracy: Double?
        public var testLoss: Double?
        public var testAccuracy: Double?
        public var validationLoss: Double?
        public var validationAccuracy: Double?
        /// The learning rate of the epoch's last step.
        public var learningRate: Double?
        public init(loss: Double, accuracy: Double? = nil, testLoss: Double? = nil, testAccuracy: Double? = nil,
                    validationLoss: Double? = nil, validationAccuracy: Double? = nil) {
            self.loss = loss; self.accuracy = accuracy; self.testLoss = testLoss; self.testAccuracy = testAccuracy
            self.validationLoss = validationLoss; self.validationAccuracy = validationAccuracy
        }
    }

    /// The epoch with the lowest validation loss so far and its parameters (`keep best`).
    public struct Best: Sendable, Equatable {
        /// From 1.
        public var epoch: Int
        public var parameters: [Tensor]
        public var persistentState: [Tensor]
        public init(epoch: Int, parameters: [Tensor], persistentState: [Tensor]) {
            self.epoch = epoch; self.parameters = parameters; self.persistentState = persistentState
        }
    }

    /// Where an interrupted run stopped inside an epoch (`epochsDone` is that epoch's index).
    public struct Interruption: Sendable, Equatable {
        /// Steps of the epoch already taken.
        public var stepInEpoch: Int
        /// The epoch count the run was going to reach.
        public var epochsTarget: Int
        /// The epoch's running loss sum, correct predictions and samples so far.
        public var lossSum: Double
        public var correct: Int
        public var seen: Int
        public init(stepInEpoch: Int, epochsTarget: Int, lossSum: Double, correct: Int, seen: Int) {
            (self.stepInEpoch, self.epochsTarget, self.lossSum, self.correct, self.seen) = (stepInEpoch, epochsTarget, lossSum, correct, seen)
        }
    }

    public var dtype: DType = .f32
    public var parameters: [Tensor] = []
    /// Optimizer state (velocity, Adam's moments), by name (`fc1.weight.velocity`).
    public var optimizerState: [Tensor] = []
    /// Other persistent state that is not trained (running statistics), by name.
    public var persistentState: [Tensor] = []
    /// Optimizer steps taken (Adam's bias correction).
    public var optimizerStep = 0
    /// Whole epochs done (for an interrupted run: the epoch it stopped in).
    public var epochsDone = 0
    public var interruption: Interruption?
    /// The effective training settings (the model's, then the flags) of the run that wrote the file,
    /// or of `compile -o` (its seed); nil: the model's own.
    public var settings: TrainingSettings?
    /// The training data the run used, when given by a flag.
    public var dataPath: String?
    public var history: [Epoch] = []
    /// `keep best`: the best epoch so far (during a run), or the one whose parameters the model holds (after it).
    public var best: Best?

    public init() {}
}

// MARK: - The CKPT section

extension Checkpoint {
    /// The scalar fields, little-endian:
    ///
    ///     u8 dtype (0 f32, 1 f64) · u64 optimizer step · u64 epochs done
    ///     u8 interrupted; then u64 step in epoch, u64 epochs target, f64 loss sum, u64 correct, u64 seen
    ///     u8 has settings; then u8 optimizer (0 sgd, 1 adam), f64 lr, u64 epochs, u64 batch (0: all),
    ///        u64 seed, u8 shuffle, f64 momentum, u8 nesterov, f64 decay, f64 beta1, f64 beta2, f64 eps,
    ///        u8 schedule (0 constant, 1 step, 2 cosine, 3 onecycle), u64 its epochs between steps, f64 its factor
    ///     u8 has data path; then u64 length, UTF-8 bytes
    ///     u64 warmup epochs (absent in files written before it: 0)
    func encodedFields() -> [UInt8] {
        var w = Writer()
        w.bytes.append(dtype == .f64 ? 1 : 0)
        w.u64(UInt64(optimizerStep))
        w.u64(UInt64(epochsDone))
        w.bytes.append(interruption == nil ? 0 : 1)
        if let interruption {
            w.u64(UInt64(interruption.stepInEpoch)); w.u64(UInt64(interruption.epochsTarget))
            w.f64(interruption.lossSum); w.u64(UInt64(interruption.correct)); w.u64(UInt64(interruption.seen))
        }
        w.bytes.append(settings == nil ? 0 : 1)
        if let settings {
            w.bytes.append(settings.optimizer == .adam ? 1 : 0)
            w.f64(settings.learningRate)
            w.u64(UInt64(settings.epochs)); w.u64(UInt64(settings.batch ?? 0)); w.u64(UInt64(settings.seed))
            w.bytes.append(settings.shuffle ? 1 : 0)
            w.f64(settings.momentum)
            w.bytes.append(settings.nesterov ? 1 : 0)
            for value in [settings.decay, settings.beta1, settings.beta2, settings.eps] { w.f64(value) }
            switch settings.schedule {
            case .constant: w.bytes.append(0); w.u64(0); w.f64(1)
            case .step(let every, let gamma): w.bytes.append(1); w.u64(UInt64(every)); w.f64(gamma)
            case .cosine: w.bytes.append(2); w.u64(0); w.f64(1)
            case .onecycle: w.bytes.append(3); w.u64(0); w.f64(1)
            }
        }
        w.bytes.append(dataPath == nil ? 0 : 1)
        if let dataPath { let bytes = Array(dataPath.utf8); w.u64(UInt64(bytes.count)); w.bytes += bytes }
        // Later fields, each read only when present (files written before them end here).
        w.u64(UInt64(settings?.warmup ?? 0))
        //     u8 validation (0 none, 1 fraction, 2 test), f64 its fraction, u64 patience, u8 keep best
        switch settings?.validation {
        case nil: w.bytes.append(0); w.f64(0)
        case .fraction(let f)?: w.bytes.append(1); w.f64(f)
        case .test?: w.bytes.append(2); w.f64(0)
        }
        w.u64(UInt64(settings?.patience ?? 0))
        w.bytes.append(settings?.keepBest == true ? 1 : 0)
        return w.bytes
    }

    /// Reads the `CKPT` section; values out of their ranges (a valid checksum over nonsense) are errors.
    init(fields bytes: [UInt8], path: String) throws(CompiledFileError) {
        func fail(_ what: String) -> CompiledFileError { CompiledFileError(path: path, message: "corrupted: \(what)") }
        var r = Reader(bytes: bytes, position: 0)
        func byte() throws(CompiledFileError) -> UInt8 {
            guard let b = r.take(1)?.first else { throw fail("the checkpoint record is truncated") }
            return b
        }
        func flag(_ what: String) throws(CompiledFileError) -> Bool {
            let b = try byte()
            guard b <= 1 else { throw fail("\(what) is \(b), not 0 or 1") }
            return b == 1
        }
        /// A count from the file, at most 2^31 − 1 (epochs, steps, samples).
        func count(_ what: String) throws(CompiledFileError) -> Int {
            guard let v = r.u64() else { throw fail("the checkpoint record is truncated") }
            guard v <= UInt64(Int32.max) else { throw fail("\(what) is \(v), more than 2^31 − 1") }
            return Int(v)
        }
        func real() throws(CompiledFileError) -> Double {
            guard let v = r.f64() else { throw fail("the checkpoint record is truncated") }
            return v
        }
        self.init()
        dtype = try flag("the precision") ? .f64 : .f32
        optimizerStep = try count("the optimizer step")
        epochsDone = try count("the epochs done")
        if try flag("the interruption flag") {
            interruption = Interruption(stepInEpoch: try count("the step in the epoch"), epochsTarget: try count("the target epoch count"),
                                        lossSum: try real(), correct: try count("the correct count"), seen: try count("the samples seen"))
        }
        if try flag("the settings flag") {
            var settings = TrainingSettings()
            settings.optimizer = try flag("the optimizer") ? .adam : .sgd
            let values: [(String, Double)] = [
                ("lr", try real()), ("epochs", Double(try count("epochs"))), ("batch", Double(try count("the batch size"))),
                ("seed", Double(try count("the seed"))), ("shuffle", try flag("shuffle") ? 1 : 0), ("momentum", try real()),
                ("nesterov", try flag("nesterov") ? 1 : 0), ("decay", try real()), ("beta1", try real()), ("beta2", try real()),
                ("eps", try real()),
            ]
            for (key, value) in values where !(key == "batch" && value == 0) {
                if let complaint = settings.set(key, value) { throw fail("the saved training setting \(complaint)") }
            }
            let kind = try byte(), every = try count("the schedule's step"), gamma = try real()
            switch kind {
            case 0: settings.schedule = .constant
            case 1:
                guard every >= 1, gamma > 0, gamma.isFinite else { throw fail("the saved schedule 'step \(every) \(gamma)' is not valid") }
                settings.schedule = .step(every: every, gamma: gamma)
            case 2: settings.schedule = .cosine
            case 3: settings.schedule = .onecycle
            default: throw fail("unknown schedule \(kind)")
            }
            self.settings = settings
        }
        if try flag("the data path flag") {
            let length = try count("the data path's length")
            guard let text = r.take(length) else { throw fail("the checkpoint record is truncated") }
            dataPath = String(decoding: text, as: UTF8.self)
        }
        if r.position < bytes.count {
            let warmup = try count("the warmup epochs")
            if warmup > 0 {
                guard settings != nil else { throw fail("a warmup without training settings") }
                settings?.warmup = warmup
            }
        }
        if r.position < bytes.count {
            let kind = try byte(), fraction = try real(), patience = try count("the patience"), keepBest = try flag("keep best")
            switch kind {
            case 0: break
            case 1:
                guard fraction > 0, fraction < 1 else { throw fail("the validation fraction is \(fraction)") }
                settings?.validation = .fraction(fraction)
            case 2: settings?.validation = .test
            default: throw fail("unknown validation kind \(kind)")
            }
            if kind != 0 || patience > 0 || keepBest {
                guard settings?.validation != nil else { throw fail("patience or keep best without validation") }
            }
            settings?.patience = patience
            settings?.keepBest = keepBest
        }
        guard r.position == bytes.count else { throw fail("\(bytes.count - r.position) unexpected bytes after the checkpoint record") }
    }

    /// Reads a format-version-1 file's `META` section (`key=value` lines).
    init(version1Metadata text: String, path: String) throws(CompiledFileError) {
        var metadata: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            metadata[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        func fail(_ message: String) -> CompiledFileError { CompiledFileError(path: path, message: "corrupted (format version 1): \(message)") }
        func count(_ key: String) throws(CompiledFileError) -> Int? {
            guard let text = metadata[key] else { return nil }
            guard let value = Int(text), value >= 0, value <= Int(Int32.max) else { throw fail("'\(key)' is '\(text)'") }
            return value
        }
        self.init()
        dtype = metadata["dtype"] == "f64" ? .f64 : .f32
        optimizerStep = try count("optimizer_step") ?? 0
        epochsDone = try count("epochs_done") ?? 0
        dataPath = metadata["data"]
        if metadata["interrupted"] == "1" {
            guard let loss = Double(metadata["partial_loss"] ?? "0") else { throw fail("'partial_loss' is not a number") }
            interruption = Interruption(stepInEpoch: try count("step_in_epoch") ?? 0, epochsTarget: try count("epochs_target") ?? epochsDone,
                                        lossSum: loss, correct: try count("partial_correct") ?? 0, seen: try count("partial_seen") ?? 0)
        }
        if let optimizer = metadata["train.optimizer"] {
            var settings = TrainingSettings()
            guard let kind = OptimizerKind(rawValue: optimizer) else { throw fail("unknown optimizer '\(optimizer)'") }
            settings.optimizer = kind
            for key in TrainKeys.keys(for: kind) {
                guard let text = metadata["train." + key] else { continue }
                guard let value = Double(text), settings.set(key, value) == nil else { throw fail("the training setting '\(key)' is '\(text)'") }
            }
            self.settings = settings
        }
        // Version 1 also wrote 'nnc_version' and, from `compile -o`, 'seed'; neither was ever read.
    }
}

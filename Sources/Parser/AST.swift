import Foundation

/// The syntax tree of a model file: a list of statements, each with its source range.
public struct ModelAST: Sendable {
    public var source: SourceFile
    public var statements: [Statement]
}

public struct Statement: Sendable {
    public var kind: StatementKind
    /// The whole statement (with its `as NAME`).
    public var range: SourceRange
    /// The statement's first word.
    public var keywordRange: SourceRange
    /// `as NAME`: the name given to the statement's output.
    public var name: Name?
}

/// A value's name as written (`as a`, `add a`, `from a`).
public struct Name: Sendable, Equatable {
    public var text: String
    public var range: SourceRange
    public init(_ text: String, _ range: SourceRange) { self.text = text; self.range = range }
}

public enum StatementKind: Sendable {
    case input(dims: [Int], dimsRange: SourceRange)
    case fc(FullyConnected)
    case conv(Convolution)
    case pool(Pooling)
    case flatten
    case dropout(probability: Double, range: SourceRange)
    case activation(WordStatement)
    /// `globalavgpool`: [N,C,H,W] → [N,C]
    case globalAveragePool
    /// `reshape F` or `reshape CxHxW`: the same values per sample under another shape (PyTorch's view).
    case reshape(dims: [Int], dimsRange: SourceRange)
    /// `prelu [C]`: PReLU with one learned slope, or one per channel (feature) when C is given.
    case prelu(channels: Sized?)
    /// `pad …`: a border around an image's height and width.
    case pad(Padding)
    case batchNorm(BatchNorm)
    /// `add NAME` (current + NAME) or `concat NAME` ([current, NAME] along channels or features).
    case join(JoinKind, Name)
    /// `from NAME`: continue from an earlier value.
    case from(Name)
    case loss(LossKind)
    case data(test: Bool, path: String, pathRange: SourceRange)
    case train(TrainSpec)
}

/// A number written in the source with where it was written, for diagnostics that point at it.
public struct Sized: Sendable, Equatable {
    public var value: Int
    public var range: SourceRange
    public init(_ value: Int, _ range: SourceRange) { self.value = value; self.range = range }
}

/// `fc [I->]O [nobias] [init …]`
public struct FullyConnected: Sendable {
    public var inputs: Sized?
    public var outputs: Sized
    public var bias: Bool
    public var initializer: Initializer?
}

/// Two sizes written `A` (both the same) or `AxB` (height, width).
public struct SizePair: Sendable, Equatable {
    public var height: Sized
    public var width: Sized
    public init(_ height: Sized, _ width: Sized) { self.height = height; self.width = width }
    public var range: SourceRange { height.range.through(width.range) }
    public var description: String { height.value == width.value ? "\(height.value)" : "\(height.value)x\(width.value)" }
}

/// `conv [I->]O KHxKW [stride S|SHxSW] [pad P|PHxPW] [groups G] [dilation D|DHxDW] [nobias] [init …]`
public struct Convolution: Sendable {
    public var inputs: Sized?
    public var outputs: Sized
    public var kernelHeight: Sized
    public var kernelWidth: Sized
    public var stride: SizePair
    public var padding: SizePair
    public var dilation: SizePair
    public var groups: Sized
    public var bias: Bool
    public var initializer: Initializer?
}

/// `batchnorm [momentum M] [eps E]`
public struct BatchNorm: Sendable {
    public var momentum: Double = 0.1
    public var eps: Double = 1e-5
    public init() {}
}

public enum JoinKind: String, Sendable { case add, concat }

/// `pad P|PHxPW [BOTTOMxRIGHT] [reflect|replicate|value V]`: the first pair is the top and left
/// border (and all four when alone), the second the bottom and right.
public struct Padding: Sendable {
    public enum Mode: Sendable, Equatable { case constant(Double), reflect, replicate }
    public var begin: SizePair
    public var end: SizePair
    public var mode: Mode = .constant(0)
}

/// `maxpool KHxKW [stride S]`, `avgpool …`
public struct Pooling: Sendable {
    public enum Kind: String, Sendable { case max = "maxpool", average = "avgpool" }
    public var kind: Kind
    public var windowHeight: Sized
    public var windowWidth: Sized
    /// Defaults to the window.
    public var stride: SizePair?
    public var padding: SizePair
}

/// A statement the parser does not know: an activation (`tanh`, `leakyrelu 0.2`, `pow 3`) by its
/// word and argument tokens. The activation vocabulary lives with the ops (IR), where name
/// resolution turns the word into an activation or an "unknown statement" error.
public struct WordStatement: Sendable {
    public var word: String
    public var wordRange: SourceRange
    /// The tokens after the word, up to the end of the statement.
    public var arguments: [Token]
}

public enum LossKind: String, Sendable, CaseIterable {
    case mse, sse, sum, crossentropy, bce, nll
}

public enum Initializer: Sendable, Equatable, CustomStringConvertible {
    case uniform(low: Double, high: Double)
    case normal(mean: Double, std: Double)
    case xavier, he, zeros

    public static let names = ["uniform", "normal", "xavier", "he", "zeros"]

    public var description: String {
        switch self {
        case .uniform(let a, let b): return "uniform(\(formatNumber(a)),\(formatNumber(b)))"
        case .normal(let m, let s): return "normal(\(formatNumber(m)),\(formatNumber(s)))"
        case .xavier: return "xavier"
        case .he: return "he"
        case .zeros: return "zeros"
        }
    }
}

public enum OptimizerKind: String, Sendable, CaseIterable { case sgd, adam }

/// `train OPTIMIZER key value …`
public struct TrainSpec: Sendable {
    public var optimizer: OptimizerKind
    public var optimizerRange: SourceRange
    public var options: [TrainOption]
    /// `schedule …`, with where it was written.
    public var schedule: (LearningRateSchedule, SourceRange)?
    /// `validation F` or `validation test`, with the key's and the value's places.
    public var validation: (source: ValidationSource, range: SourceRange, valueRange: SourceRange)?
    /// `keep best`, where written.
    public var keepBest: SourceRange?
}

/// Where validation data comes from: a seeded fraction held out of the training data, or the test set.
public enum ValidationSource: Sendable, Equatable, CustomStringConvertible {
    case fraction(Double)
    case test

    public var description: String {
        switch self {
        case .fraction(let f): return formatNumber(f)
        case .test: return "test"
        }
    }
}

/// How the learning rate moves from epoch to epoch (PyTorch's schedulers, stepped once an epoch).
public enum LearningRateSchedule: Sendable, Equatable, CustomStringConvertible {
    /// The rate as given.
    case constant
    /// ×gamma every `every` epochs (StepLR): lr·gamma^⌊epoch/every⌋.
    case step(every: Int, gamma: Double)
    /// Cosine annealing to 0 over the run (CosineAnnealingLR, T_max = the run's epochs, eta_min = 0):
    /// lr·(1 + cos(π·epoch/T))/2.
    case cosine
    /// PyTorch's OneCycleLR with its defaults, stepped every batch: the rate rises from lr/25 to lr
    /// over the first 30% of the steps and falls to lr/25/10⁴ over the rest, both on a cosine; the
    /// momentum (SGD) or β1 (Adam) moves the other way, from 0.95 to 0.85 and back.
    case onecycle

    public static let names = ["constant", "step", "cosine", "onecycle"]
    /// The momenta onecycle moves between.
    public static let oneCycleMomenta = (low: OneCycle.lowMomentum, high: OneCycle.highMomentum)

    /// The factor on the learning rate in epoch `epoch` (from 0) of a run of `epochs`, for the
    /// schedules that change once an epoch (onecycle: its value at the epoch's first step).
    public func factor(epoch: Int, of epochs: Int) -> Double {
        factor(epoch: epoch, step: 0, stepsPerEpoch: 1, epochs: epochs)
    }

    /// The factor on the learning rate at step `step` (from 0) of epoch `epoch` (from 0), in a run
    /// of `epochs` epochs of `stepsPerEpoch` steps.
    public func factor(epoch: Int, step: Int, stepsPerEpoch: Int, epochs: Int) -> Double {
        switch self {
        case .constant: return 1
        case .step(let every, let gamma): return Foundation.pow(gamma, Double(epoch / max(1, every)))
        case .cosine: return (1 + Foundation.cos(Double.pi * Double(epoch) / Double(max(1, epochs)))) / 2
        case .onecycle: return OneCycle(epoch: epoch, step: step, stepsPerEpoch: stepsPerEpoch, epochs: epochs).values.rate
        }
    }

    /// The momentum (SGD) or β1 (Adam) the schedule sets at that step, or nil where it leaves them.
    public func momentum(epoch: Int, step: Int, stepsPerEpoch: Int, epochs: Int) -> Double? {
        guard self == .onecycle else { return nil }
        return OneCycle(epoch: epoch, step: step, stepsPerEpoch: stepsPerEpoch, epochs: epochs).values.momentum
    }

    public var description: String {
        switch self {
        case .constant: return "constant"
        case .step(let every, let gamma): return "step \(every) \(formatNumber(gamma))"
        case .cosine: return "cosine"
        case .onecycle: return "onecycle"
        }
    }
}

/// OneCycleLR's two phases (pct_start 0.3, div_factor 25, final_div_factor 10⁴, cosine annealing,
/// momentum between 0.85 and 0.95), at the step with `last_epoch` = the steps taken before it.
struct OneCycle {
    static let peakShare = 0.3, startDivisor = 25.0, finalDivisor = 1e4, lowMomentum = 0.85, highMomentum = 0.95
    var taken: Double, total: Double

    init(epoch: Int, step: Int, stepsPerEpoch: Int, epochs: Int) {
        taken = Double(epoch * stepsPerEpoch + step)
        total = Double(max(1, epochs * stepsPerEpoch))
    }

    /// start + (end − start)·(1 − cos(π·t))/2, written as PyTorch's `_annealing_cos`.
    func anneal(_ start: Double, _ end: Double, _ t: Double) -> Double { end + (start - end) / 2 * (1 + Foundation.cos(Double.pi * t)) }

    /// The factor on the peak rate, and the momentum.
    var values: (rate: Double, momentum: Double) {
        let peakEnd = OneCycle.peakShare * total - 1, end = total - 1
        let initial = 1 / OneCycle.startDivisor, final = initial / OneCycle.finalDivisor
        if taken <= peakEnd {
            let t = taken / peakEnd
            return (anneal(initial, 1, t), anneal(OneCycle.highMomentum, OneCycle.lowMomentum, t))
        }
        let t = end > peakEnd ? (taken - peakEnd) / (end - peakEnd) : 1
        return (anneal(1, final, t), anneal(OneCycle.lowMomentum, OneCycle.highMomentum, t))
    }
}

public struct TrainOption: Sendable {
    public var key: String
    public var value: Double
    public var keyRange: SourceRange
    public var valueRange: SourceRange
}

/// The keys each optimizer accepts, and which of them are integers or on/off switches.
public enum TrainKeys {
    public static let common = ["lr", "epochs", "batch", "seed", "shuffle", "decay", "schedule", "warmup", "validation", "patience", "keep"]
    public static func keys(for optimizer: OptimizerKind) -> [String] {
        switch optimizer {
        case .sgd: return common + ["momentum", "nesterov"]
        case .adam: return common + ["beta1", "beta2", "eps"]
        }
    }
    public static let integers: Set = ["epochs", "batch", "seed", "warmup", "patience"]
    public static let switches: Set = ["shuffle", "nesterov"]
}

/// Shortest text that reads back as the same Double (Swift's description), without a trailing ".0".
public func formatNumber(_ value: Double) -> String {
    if value == value.rounded(), abs(value) < 1e15 { return String(Int(value)) }
    return "\(value)"
}

import Parser

/// Training settings from the `train` statement (before command-line overrides).
public struct TrainingSettings: Sendable, Equatable {
    public var optimizer: OptimizerKind = .sgd
    public var lr: Double?
    public var epochs: Int = 1
    /// nil: the whole data set in one batch.
    public var batch: Int?
    public var seed: Int = 0
    public var shuffle: Bool = true
    public var momentum: Double = 0
    public var nesterov: Bool = false
    public var decay: Double = 0
    public var beta1: Double = 0.9
    public var beta2: Double = 0.999
    public var eps: Double = 1e-8
    public var schedule: LearningRateSchedule = .constant
    /// Linear warmup over this many epochs (PyTorch's LinearLR(start_factor = 1/(N+1), total_iters = N)
    /// chained with the schedule): the rate is multiplied by min(1, (epoch + 1)/(N + 1)).
    public var warmup: Int = 0
    /// Validation data: a held-out fraction of the training data, or the test set; nil: none.
    public var validation: ValidationSource?
    /// Stop when the validation loss has not improved for this many epochs (0: never).
    public var patience: Int = 0
    /// Keep the parameters of the epoch with the best validation loss (written at the end).
    public var keepBest = false

    public init() {}

    /// The learning rate's factor at a step: the schedule's, times the warmup's.
    public func learningRateFactor(epoch: Int, step: Int, stepsPerEpoch: Int, epochs: Int) -> Double {
        let warming = warmup > 0 ? min(1, Double(epoch + 1) / Double(warmup + 1)) : 1
        return schedule.factor(epoch: epoch, step: step, stepsPerEpoch: stepsPerEpoch, epochs: epochs) * warming
    }


    public var learningRate: Double { lr ?? (optimizer == .adam ? 0.001 : 0.01) }

    /// Applies one `key value` (from the model or a flag); returns a complaint when it does not fit.
    public mutating func set(_ key: String, _ value: Double) -> String? {
        if TrainKeys.integers.contains(key) {
            let lowest: Double = key == "seed" || key == "warmup" ? 0 : 1
            let highest = key == "seed" ? Int(UInt32.max) : Int(Int32.max)
            guard value == value.rounded(), value >= lowest, value <= Double(highest) else {
                return "'\(key)' must be a whole number from \(Int(lowest)) to \(highest), found \(formatNumber(value))"
            }
        } else if let complaint = TrainKeys.check(key: key, value: value) {
            return complaint
        }
        switch key {
        case "lr": lr = value
        case "epochs": epochs = Int(value)
        case "batch": batch = Int(value)
        case "seed": seed = Int(value)
        case "shuffle": shuffle = value != 0
        case "momentum": momentum = value
        case "nesterov": nesterov = value != 0
        case "decay": decay = value
        case "beta1": beta1 = value
        case "beta2": beta2 = value
        case "eps": eps = value
        case "warmup": warmup = Int(value)
        case "patience": patience = Int(value)
        default: return "unknown training option '\(key)'"
        }
        return nil
    }

    public var update: OptimizerUpdate {
        switch optimizer {
        // onecycle sets the momentum at every step (from 0.95): the update keeps a velocity for it.
        case .sgd: return .sgd(lr: learningRate, momentum: schedule == .onecycle ? LearningRateSchedule.oneCycleMomenta.high : momentum, nesterov: nesterov, decay: decay)
        case .adam: return .adam(lr: learningRate, beta1: beta1, beta2: beta2, eps: eps, decay: decay)
        }
    }
}

/// What the model file says besides its layers.
public struct ModelSettings: Sendable {
    public var dataPath: String?
    public var testDataPath: String?
    public var training = TrainingSettings()
    public var hasTrainStatement = false
    public var loss: LossKind?
}

/// One row of the summary table (like Keras' `summary()`).
public struct LayerSummary: Sendable {
    public var statement: String
    public var outputShape: Shape
    public var parameters: Int
    /// FLOPs per sample of the forward pass.
    public var flops: Int
    public var location: SourceRange
    /// Elements of persistent state the layer keeps (running statistics), not trained.
    public var persistentState: Int = 0
    /// The named value feeding the layer (`add a`, `concat a`, a layer after `from a`): "a (line 3)".
    public var source: String?
}

/// The forward graph of a model with everything `nnc check` shows.
public struct LoweredModel: Sendable {
    public var graph: Graph
    public var settings: ModelSettings
    public var layers: [LayerSummary]
    public var inputShape: Shape
    public var outputShape: Shape
    /// Warnings about a legal model (rendered by the commands; they do not stop compilation).
    public var warnings: [Diagnostic]

    public var parameterCount: Int { layers.reduce(0) { $0 + $1.parameters } }
    public var persistentStateCount: Int { layers.reduce(0) { $0 + $1.persistentState } }
    public var flopsPerSample: Int { layers.reduce(0) { $0 + $1.flops } }
}

/// The largest tensor nnc will make: 2^31 elements.
public let maxTensorElements = 1 << 31

/// Lowers a parsed model to the IR: composite layers become primitives (fc → matmul + bias_add,
/// mse → sub, pow 2, mean), every shape is checked, and parameters are named `fc1.weight`, … .
/// `training` adds dropout masks; otherwise dropout is the identity.
public func lower(_ ast: ModelAST, dtype: DType = .f32, training: Bool = false) throws(DiagnosticError) -> LoweredModel {
    var lowering = Lowering(ast: ast, dtype: dtype, training: training)
    lowering.run()
    if lowering.diagnostics.containsErrors {
        throw DiagnosticError(source: ast.source, diagnostics: lowering.diagnostics.filter { $0.severity == .error }.inFileOrder())
    }
    return LoweredModel(graph: lowering.graph, settings: lowering.settings, layers: lowering.layers,
                        inputShape: Shape(batched: true, lowering.inputDims ?? []),
                        outputShape: Shape(batched: true, lowering.shape), warnings: lowering.diagnostics.inFileOrder())
}

struct Lowering {
    let ast: ModelAST
    let training: Bool
    var graph: Graph
    var settings = ModelSettings()
    var layers: [LayerSummary] = []
    var diagnostics: [Diagnostic] = []

    var inputDims: [Int]?
    /// The current activation: its per-sample shape, its value, and the statement that made it.
    var shape: [Int] = []
    var value: ValueID?
    var producer: Statement?
    /// The statement that gave the current activation its shape (activations and dropout keep it):
    /// shape errors point at it.
    var shapeProducer: Statement?
    var denseCount = 0, convCount = 0, layerIndex = 0, otherCount = 0
    var lossStatement: Statement?
    var failed = false
    /// Where the current statement's nodes start (its summary row counts their FLOPs and parameters).
    var statementFirstNode = 0
    /// Named values (`as NAME`, and `input`): the value, its per-sample shape, the statement that named it.
    var names: [String: NamedValue] = [:]
    /// The names in the order they were defined (for did-you-mean and the unused-name warnings).
    var nameOrder: [String] = []
    /// The named value feeding the current statement (`add a`, `concat a`, or the first layer after `from a`).
    var feedingName: String?
    var batchNormCount = 0, preluCount = 0

    struct NamedValue {
        var value: ValueID
        var shape: [Int]
        var statement: Statement
        var range: SourceRange
        var used = false
    }

    init(ast: ModelAST, dtype: DType, training: Bool) {
        self.ast = ast
        self.training = training
        self.graph = Graph(dtype: dtype, source: ast.source)
    }

    var source: SourceFile { ast.source }
    /// A statement as written, for messages and the summary table (very long ones cut).
    func text(_ statement: Statement) -> String {
        let text = source.text(of: statement.range)
        guard text.utf8.count > 80, text.unicodeScalars.prefix(81).count > 80 else { return text }
        return String(String.UnicodeScalarView(text.unicodeScalars.prefix(80))) + "…"
    }

    mutating func error(_ code: DiagnosticCode, _ message: String, at range: SourceRange, notes: [Diagnostic.Note] = []) {
        diagnostics.append(Diagnostic(code, message, at: range, notes: notes))
    }

    func previousNote() -> [Diagnostic.Note] {
        guard let producer = shapeProducer ?? producer else { return [] }
        return [.init(.previousLayer, "the previous layer is '\(text(producer))'", at: producer.range)]
    }

    /// "the first is here", for a statement given twice.
    func firstNote(_ first: Statement) -> [Diagnostic.Note] { [.init(.firstDefinition, "the first is here", at: first.range)] }

    /// "W×H×…" of a shape, for messages.
    func dimsText(_ dims: [Int]) -> String { dims.map(String.init).joined(separator: "x") }

    mutating func run() {
        var trainStatement: Statement?, dataStatement: Statement?, testStatement: Statement?
        // Room for a few nodes and values a statement (an fc layer makes three of each), so that a long
        // model's graph and its name set grow without being copied and rehashed again and again.
        graph.reserveCapacity(nodes: 3 * ast.statements.count + 8, values: 3 * ast.statements.count + 8)
        for statement in ast.statements {
            switch statement.kind {
            case .data(let test, let path, _):
                if let earlier = test ? testStatement : dataStatement {
                    error(.statementGivenTwice, "the model has two 'data\(test ? " test" : "")' statements", at: statement.range, notes: firstNote(earlier))
                }
                if test { testStatement = statement; settings.testDataPath = path } else { dataStatement = statement; settings.dataPath = path }
                continue
            case .train(let spec):
                if let earlier = trainStatement {
                    error(.statementGivenTwice, "the model has two 'train' statements", at: statement.range, notes: firstNote(earlier))
                }
                trainStatement = statement
                settings.hasTrainStatement = true
                settings.training.optimizer = spec.optimizer
                if let (schedule, _) = spec.schedule { settings.training.schedule = schedule }
                if let validation = spec.validation { settings.training.validation = validation.source }
                if let keep = spec.keepBest {
                    settings.training.keepBest = true
                    if spec.validation == nil {
                        error(.valueOutOfRange, "'keep best' needs validation data to find the best epoch: add 'validation F' (a fraction of the training data) or 'validation test'", at: keep)
                    }
                }
                if let patience = spec.options.first(where: { $0.key == "patience" }), spec.validation == nil {
                    error(.valueOutOfRange, "'patience' needs validation data to watch: add 'validation F' (a fraction of the training data) or 'validation test'", at: patience.keyRange)
                }
                for option in spec.options {
                    if let complaint = settings.training.set(option.key, option.value) { error(.valueOutOfRange, complaint, at: option.valueRange) }
                }
                // A schedule that would not act within the run is a mistake in the file.
                let epochs = settings.training.epochs
                if let (schedule, range) = spec.schedule, case .step(let every, _) = schedule, every >= epochs {
                    error(.valueOutOfRange, "'schedule step \(every)' would first lower the rate after epoch \(every), but the run has \(epochs) epoch\(epochs == 1 ? "" : "s")", at: range)
                }
                if let warmup = spec.options.first(where: { $0.key == "warmup" }), Int(warmup.value) >= epochs {
                    error(.valueOutOfRange, "'warmup \(Int(warmup.value))' is as long as the run or longer (\(epochs) epoch\(epochs == 1 ? "" : "s"))", at: warmup.valueRange)
                }
                if let patience = spec.options.first(where: { $0.key == "patience" }), Int(patience.value) >= epochs {
                    error(.valueOutOfRange, "'patience \(Int(patience.value))' cannot stop a run of \(epochs) epoch\(epochs == 1 ? "" : "s")", at: patience.valueRange)
                }
                continue
            case .input(let dims, let range):
                if let first = ast.statements.first(where: { if case .input = $0.kind { return true }; return false }),
                   first.range != statement.range {
                    error(.statementGivenTwice, "the model has two 'input' statements", at: statement.range, notes: firstNote(first))
                    continue
                }
                if value != nil || lossStatement != nil {
                    error(.inputAfterLayers, "'input' must come before the layers", at: statement.range)
                    continue
                }
                guard checkSize(dims, what: "the input", at: range) else { failed = true; continue }
                defineInput(dims, at: statement)
                continue
            case .fc, .conv, .pool, .flatten, .dropout, .activation, .loss, .globalAveragePool, .reshape, .prelu, .pad, .batchNorm, .join, .from: break
            }
            if let lossStatement {
                error(.statementAfterLoss, "'\(text(statement))' comes after the loss; the loss must be the last layer statement",
                      at: statement.range, notes: [.init(.lossIsHere, "the loss is here", at: lossStatement.range)])
                continue
            }
            if failed {  // shapes are unknown after an error; later layers would only echo it
                if case .loss = statement.kind { lossStatement = statement }  // but a statement after the loss is still wrong
                continue
            }
            statementFirstNode = graph.nodes.count
            lowerLayer(statement)
            if let name = statement.name, !failed { define(name, at: statement) }
        }
        for name in nameOrder where name != "input" {
            guard let named = names[name], !named.used else { continue }
            diagnostics.append(Diagnostic(.unusedName, "'\(name)' is never used; 'add', 'concat' or 'from' would use it", at: named.range))
        }
        if ast.statements.isEmpty || (value == nil && !failed && !diagnostics.containsErrors) {
            let at = ast.statements.first?.range ?? SourceRange(start: 0, end: 0)
            error(.noLayers, "the model has no layers; write at least 'input N' or 'fc I->O'", at: at)
        }
        warnAboutSuspiciousEndings()
        // Without a loss, the model's output is its last layer's (what `run` and `bench` compute).
        if graph.output == nil, lossStatement == nil { graph.output = value }
    }

    /// Checks that a per-sample tensor stays below 2^31 elements.
    mutating func checkSize(_ dims: [Int], what: String, at range: SourceRange) -> Bool {
        var total = 1
        for d in dims {
            let (product, overflow) = total.multipliedReportingOverflow(by: d)
            if overflow || product > maxTensorElements {
                error(.tensorTooLarge, "\(what) would have \(overflow ? "more than 2^63" : String(product)) elements (\(dims.map(String.init).joined(separator: "×"))), more than the limit of 2^31", at: range)
                return false
            }
            total = product
        }
        return true
    }

    mutating func defineInput(_ dims: [Int], at statement: Statement) {
        inputDims = dims
        shape = dims
        value = graph.addSource(.input, name: "x", shape: Shape(batched: true, dims), at: statement.range)
        graph.input = value
        producer = statement
        shapeProducer = statement
        nameInput(at: statement)
        layers.append(LayerSummary(statement: text(statement), outputShape: Shape(batched: true, dims), parameters: 0, flops: 0, location: statement.range))
        if let name = statement.name { define(name, at: statement) }
    }

    /// `input` names the model's input (defined by `input` or by the first `fc I->O`).
    mutating func nameInput(at statement: Statement) {
        guard let value else { return }
        names["input"] = NamedValue(value: value, shape: shape, statement: statement, range: statement.keywordRange, used: true)
        nameOrder.append("input")
    }

    /// `as NAME`: names the current value.
    mutating func define(_ name: Name, at statement: Statement) {
        guard let value else { return }
        if statementWords.contains(name.text) || Parser.reservedWords.contains(name.text) {
            error(.reservedName, "\(quoted(name.text)) is a keyword and cannot name a value", at: name.range)
            return
        }
        if let earlier = names[name.text] {
            error(.nameGivenTwice, "'\(name.text)' is defined twice",
                  at: name.range, notes: [.init(.nameDefinedHere, "'\(name.text)' is defined here", at: earlier.range)])
            return
        }
        names[name.text] = NamedValue(value: value, shape: shape, statement: statement, range: name.range)
        nameOrder.append(name.text)
    }

    /// A named value used by `add`, `concat` or `from`, or an error with a did-you-mean.
    mutating func lookUp(_ name: Name) -> NamedValue? {
        guard var named = names[name.text] else {
            var message = "unknown name \(quoted(name.text))"
            if let guess = suggestion(for: name.text, among: nameOrder) { message += "; did you mean '\(guess)'?" }
            else if nameOrder.count > 1 { message += " (defined so far: \(nameOrder.joined(separator: ", ")))" }
            else { message += "; name a layer's output with 'as \(name.text)' first" }
            error(.unknownName, message, at: name.range)
            failed = true
            return nil
        }
        named.used = true
        names[name.text] = named
        return named
    }

    /// A persistent state tensor of the model (running statistics), found by name.
    mutating func addPersistentState(_ name: String, _ valueName: String, _ channels: Int, initial: Double, at statement: Statement) -> ValueID {
        let id = graph.addSource(.state(name: name), name: valueName, shape: .fixed(channels), at: statement.range)
        graph.states.append(PersistentState(name: name, value: id, kind: .persistent, initial: initial))
        return id
    }

    mutating func addParameter(_ name: String, _ valueName: String, _ dims: [Int], _ initializer: ParameterInit, at statement: Statement) -> ValueID? {
        guard checkSize(dims, what: "parameter \(name)", at: statement.range) else { return nil }
        let shape = Shape(batched: false, dims)
        let id = graph.addSource(.parameter(name: name), name: valueName, shape: shape, at: statement.range)
        graph.parameters.append(Parameter(name: name, value: id, shape: shape, initializer: initializer, location: statement.range))
        return id
    }

    /// Adds a node; an IR error here is a compiler bug, reported at the statement.
    mutating func emit(_ op: Op, _ operands: [ValueID], _ name: String, at statement: Statement) -> ValueID? {
        do {
            return try graph.add1(op, operands, name: name, at: statement.range, phase: .forward)
        } catch {
            self.error(.internalError, "\(error)", at: statement.range)
            failed = true
            return nil
        }
    }

    mutating func lowerLayer(_ statement: Statement) {
        switch statement.kind {
        case .fc(let fc): lowerDense(fc, statement)
        case .conv(let conv): lowerConvolution(conv, statement)
        case .pool(let pool): lowerPooling(pool, statement)
        case .flatten:
            guard let x = requireInput(statement) else { return }
            let flat = shape.reduce(1, *)
            if shape.count > 1 {
                guard let y = emit(.reshape(Shape(batched: true, [flat])), [x], "flat\(otherCount)", at: statement) else { return }
                otherCount += 1
                value = y
            }
            shape = [flat]
            finish(statement)
        case .dropout(let p, _):
            guard let x = requireInput(statement) else { return }
            if training && p > 0 {
                guard let mask = emit(.dropoutMask(probability: p), [x], "mask\(otherCount)", at: statement),
                      let y = emit(.multiply, [x, mask], "drop\(otherCount)", at: statement) else { return }
                otherCount += 1
                value = y
            }
            finish(statement)
        case .activation(let word): lowerActivation(word, statement)
        case .globalAveragePool:
            guard let x = requireInput(statement) else { return }
            guard shape.count == 3 else {
                error(.imageInputNeeded, "globalavgpool needs an image input (channels x height x width), but the previous layer produces \(shape.count == 1 ? "\(shape[0]) features" : dimsText(shape))",
                      at: statement.range, notes: previousNote())
                failed = true
                return
            }
            let window = [shape[1], shape[2]]
            guard let pooled = emit(.pool(.average, window: window, stride: window, padding: [0, 0]), [x], "gap\(otherCount)", at: statement),
                  let y = emit(.reshape(.batch(shape[0])), [pooled], "gapflat\(otherCount)", at: statement) else { return }
            otherCount += 1
            value = y
            shape = [shape[0]]
            finish(statement)
        case .reshape(let dims, let range):
            guard let x = requireInput(statement) else { return }
            let count = shape.reduce(1, *), wanted = dims.reduce(1, *)
            guard count == wanted else {
                error(.reshapeMismatch, "reshape to \(dimsText(dims)) needs \(wanted) values per sample, but the previous layer produces \(dimsText(shape)) (\(count))",
                      at: range, notes: previousNote())
                failed = true
                return
            }
            if dims != shape {
                guard let y = emit(.reshape(Shape(batched: true, dims)), [x], "view\(otherCount)", at: statement) else { return }
                otherCount += 1
                value = y
            }
            shape = dims
            finish(statement)
        case .prelu(let count): lowerPReLU(count, statement)
        case .pad(let padding): lowerPad(padding, statement)
        case .batchNorm(let spec): lowerBatchNorm(spec, statement)
        case .join(let kind, let name): lowerJoin(kind, name, statement)
        case .from(let name):
            guard let named = lookUp(name) else { return }
            if let current = value, let producer, !names.values.contains(where: { $0.value == current }) {
                diagnostics.append(Diagnostic(.unusedValue, "the output of '\(text(producer))' is never used: '\(text(statement))' continues from another value",
                                              at: producer.range, notes: [.init(.nameDefinedHere, "'from' is here", at: statement.range)]))
            }
            value = named.value
            shape = named.shape
            producer = named.statement
            shapeProducer = named.statement
            feedingName = name.text
            // `from` adds no row: the next layer's row says where its input comes from.
            return
        case .loss(let loss): lowerLoss(loss, statement)
        case .input, .data, .train: break
        }
    }

    /// The current value, or an error when no layer has defined the input yet.
    mutating func requireInput(_ statement: Statement) -> ValueID? {
        if let value { return value }
        error(.missingInput, "'\(text(statement))' needs an input; start the model with 'input N' (or 'input CxHxW' for images) or 'fc I->O'", at: statement.range)
        failed = true
        return nil
    }

    /// Ends a layer statement: its summary row, with the parameters it declared and the FLOPs of the
    /// nodes it added, per sample, as the op table counts them.
    mutating func finish(_ statement: Statement, outputShape: Shape? = nil) {
        producer = statement
        switch statement.kind {
        case .activation, .dropout: break
        case .input, .fc, .conv, .pool, .flatten, .loss, .data, .train, .globalAveragePool, .reshape, .prelu, .pad, .batchNorm, .join, .from: shapeProducer = statement
        }
        var parameters = 0, persistent = 0, flops = 0
        // By index: iterating the slice would copy every node.
        for index in statementFirstNode..<graph.nodes.count {
            let op = graph.nodes[index].op
            if op.isSource {
                let elements = graph.nodes[index].results.reduce(0) { $0 + graph[$1].shape.rowElements }
                if case .parameter = op { parameters += elements }
                if case .state = op { persistent += elements }  // running statistics
                continue
            }
            flops += op.flops(operands: graph.nodes[index].operands.map { graph[$0].shape.concrete(batch: 1) },
                              results: graph.nodes[index].results.map { graph[$0].shape.concrete(batch: 1) })
        }
        let source = feedingName.flatMap { name in names[name].map { "\(name) (line \(self.source.line(of: $0.statement.range.start)))" } }
        feedingName = nil
        layers.append(LayerSummary(statement: text(statement), outputShape: outputShape ?? Shape(batched: true, shape),
                                   parameters: parameters, flops: flops, location: statement.range, persistentState: persistent, source: source))
    }

    /// Warnings for legal models that are probably mistakes: probabilities regressed with a
    /// regression loss, and dropout as the last layer (it only adds noise to the output).
    mutating func warnAboutSuspiciousEndings() {
        func isLayer(_ statement: Statement) -> Bool {
            switch statement.kind {
            case .input, .data, .train: return false
            case .fc, .conv, .pool, .flatten, .dropout, .activation, .loss, .globalAveragePool, .reshape, .prelu, .pad, .batchNorm, .join, .from: return true
            }
        }
        // Only the last two layer statements matter (no copy of the statements: models can be long).
        guard let lastIndex = ast.statements.lastIndex(where: isLayer) else { return }
        let last = ast.statements[lastIndex]
        var beforeLoss: Statement? = last
        if case .loss(let loss) = last.kind {
            beforeLoss = ast.statements[..<lastIndex].last(where: isLayer)
            if let before = beforeLoss, case .activation(let word) = before.kind, word.word == "softmax", loss == .mse || loss == .sse || loss == .bce {
                diagnostics.append(Diagnostic(.softmaxBeforeRegressionLoss,
                                              "softmax before 'loss \(loss.rawValue)' regresses probabilities; for classification use 'loss crossentropy' (with or without the softmax)",
                                              at: before.range, notes: [.init(.lossIsHere, "the loss is here", at: last.range)]))
            }
        }
        if let before = beforeLoss, case .dropout = before.kind {
            diagnostics.append(Diagnostic(.dropoutAtTheEnd, "dropout as the last layer only adds noise to the output; put it before a layer with weights",
                                          at: before.range))
        }
    }

    mutating func lowerDense(_ fc: FullyConnected, _ statement: Statement) {
        if value == nil, let inputs = fc.inputs {
            // Without an 'input' statement, the first fc defines the input.
            inputDims = [inputs.value]
            shape = [inputs.value]
            value = graph.addSource(.input, name: "x", shape: .batch(inputs.value), at: inputs.range)
            graph.input = value
            nameInput(at: statement)
        }
        guard let x = requireInput(statement) else { return }
        guard shape.count == 1 else {
            let flat = shape.reduce(1, *)
            error(.flatInputNeeded, "fc needs a flat input, but the previous layer produces \(dimsText(shape)); add 'flatten' before it (it gives \(flat) features)",
                  at: statement.range, notes: previousNote())
            failed = true
            return
        }
        let features = shape[0]
        if let inputs = fc.inputs, inputs.value != features {
            let fix = "fc \(features)->\(fc.outputs.value)"
            if let producer, case .flatten = producer.kind {
                error(.featureMismatch, "flatten produces \(features) features; did you mean '\(fix)'?", at: inputs.range, notes: previousNote())
            } else {
                error(.featureMismatch, "fc expects \(inputs.value) input features, but the previous layer produces \(features)",
                      at: inputs.range, notes: previousNote() + [.init(.didYouMean, "did you mean '\(fix)'?", at: nil)])
            }
            failed = true
            return
        }
        let outputs = fc.outputs.value
        let index = layerIndex
        denseCount += 1
        layerIndex += 1
        let fanIn = features
        let bound = 1 / Double(fanIn).squareRoot()
        let (weightInit, biasInit) = initializers(fc.initializer, bound: bound, fanIn: fanIn, fanOut: outputs)
        guard let w = addParameter("fc\(denseCount).weight", "w\(index)", [features, outputs], weightInit, at: statement) else { failed = true; return }
        var b: ValueID?
        if fc.bias {
            guard let bias = addParameter("fc\(denseCount).bias", "b\(index)", [outputs], biasInit, at: statement) else { failed = true; return }
            b = bias
        }
        guard checkSize([outputs], what: "the output of '\(text(statement))'", at: statement.range),
              var y = emit(.matmul(transposeA: false, transposeB: false), [x, w], b == nil ? "z\(index)" : "mm\(index)", at: statement) else { failed = true; return }
        if let b {
            guard let z = emit(.biasAdd, [y, b], "z\(index)", at: statement) else { return }
            y = z
        }
        value = y
        shape = [outputs]
        finish(statement)
    }

    mutating func lowerConvolution(_ conv: Convolution, _ statement: Statement) {
        guard let x = value else {
            error(.imageInputNeeded, "a conv net needs its image size: start the model with 'input CxHxW' (e.g. 'input 1x28x28')", at: statement.range)
            failed = true
            return
        }
        guard shape.count == 3 else {
            error(.imageInputNeeded, "conv needs an image input (channels x height x width), but the previous layer produces \(shape.count == 1 ? "\(shape[0]) features" : dimsText(shape))",
                  at: statement.range, notes: previousNote())
            failed = true
            return
        }
        let (channels, height, width) = (shape[0], shape[1], shape[2])
        if let inputs = conv.inputs, inputs.value != channels {
            error(.channelMismatch, "conv expects \(inputs.value) input channels, but the previous layer produces \(channels)",
                  at: inputs.range, notes: previousNote() + [.init(.didYouMean, "did you mean 'conv \(channels)->\(conv.outputs.value) …'?", at: nil)])
            failed = true
            return
        }
        let (kh, kw) = (conv.kernelHeight.value, conv.kernelWidth.value)
        let geometry = ConvGeometry(strideH: conv.stride.height.value, strideW: conv.stride.width.value,
                                    padH: conv.padding.height.value, padW: conv.padding.width.value,
                                    dilationH: conv.dilation.height.value, dilationW: conv.dilation.width.value, groups: conv.groups.value)
        let outputs = conv.outputs.value
        let groups = geometry.groups
        guard channels % groups == 0, outputs % groups == 0 else {
            error(.invalidConvolution, "conv groups \(groups) must divide the input channels (\(channels)) and the output channels (\(outputs))",
                  at: conv.groups.range, notes: previousNote())
            failed = true
            return
        }
        guard let outHeight = windowOutputSize(input: height, window: kh, stride: geometry.strideH, padding: geometry.padH, dilation: geometry.dilationH),
              let outWidth = windowOutputSize(input: width, window: kw, stride: geometry.strideW, padding: geometry.padW, dilation: geometry.dilationW) else {
            let dilated = geometry.dilationH != 1 || geometry.dilationW != 1
            let padded = conv.padding.height.value > 0 || conv.padding.width.value > 0
            error(dilated ? .invalidConvolution : .windowTooLarge,
                  "conv kernel \(kh)x\(kw)\(dilated ? " dilated by \(conv.dilation.description)" : "") is larger than its input \(height)x\(width)\(padded ? " padded by \(conv.padding.description)" : "")",
                  at: conv.kernelHeight.range.through(conv.kernelWidth.range), notes: previousNote())
            failed = true
            return
        }
        let index = layerIndex
        convCount += 1
        layerIndex += 1
        // PyTorch's fans: per group of channels.
        let fanIn = channels / groups * kh * kw
        let bound = 1 / Double(fanIn).squareRoot()
        let (weightInit, biasInit) = initializers(conv.initializer, bound: bound, fanIn: fanIn, fanOut: outputs / groups * kh * kw)
        guard checkSize([outputs, outHeight, outWidth], what: "the output of '\(text(statement))'", at: statement.range),
              let w = addParameter("conv\(convCount).weight", "w\(index)", [outputs, channels / groups, kh, kw], weightInit, at: statement) else { failed = true; return }
        var b: ValueID?
        if conv.bias {
            guard let bias = addParameter("conv\(convCount).bias", "b\(index)", [outputs], biasInit, at: statement) else { failed = true; return }
            b = bias
        }
        guard var y = emit(.conv2d(geometry), [x, w], b == nil ? "z\(index)" : "c\(index)", at: statement) else { return }
        if let b {
            guard let z = emit(.biasAdd, [y, b], "z\(index)", at: statement) else { return }
            y = z
        }
        value = y
        shape = [outputs, outHeight, outWidth]
        finish(statement)
    }

    mutating func lowerPooling(_ pool: Pooling, _ statement: Statement) {
        guard let x = requireInput(statement) else { return }
        guard shape.count == 3 else {
            error(.imageInputNeeded, "\(pool.kind.rawValue) needs an image input (channels x height x width), but the previous layer produces \(shape.count == 1 ? "\(shape[0]) features" : dimsText(shape))",
                  at: statement.range, notes: previousNote())
            failed = true
            return
        }
        let (kh, kw) = (pool.windowHeight.value, pool.windowWidth.value)
        // The stride defaults to the window, per axis (as PyTorch's kernel_size default).
        let stride = pool.stride.map { [$0.height.value, $0.width.value] } ?? [kh, kw]
        let padding = [pool.padding.height.value, pool.padding.width.value]
        guard 2 * padding[0] <= kh, 2 * padding[1] <= kw else {
            error(.valueOutOfRange, "\(pool.kind.rawValue) padding \(pool.padding.description) must be at most half the window \(kh)x\(kw)",
                  at: pool.padding.range)
            failed = true
            return
        }
        guard let outHeight = windowOutputSize(input: shape[1], window: kh, stride: stride[0], padding: padding[0]),
              let outWidth = windowOutputSize(input: shape[2], window: kw, stride: stride[1], padding: padding[1]) else {
            error(.windowTooLarge, "\(pool.kind.rawValue) window \(kh)x\(kw) is larger than its input \(shape[1])x\(shape[2])",
                  at: pool.windowHeight.range.through(pool.windowWidth.range), notes: previousNote())
            failed = true
            return
        }
        let outShape = [shape[0], outHeight, outWidth]
        let kind: PoolKind = pool.kind == .max ? .max : .average
        guard let y = emit(.pool(kind, window: [kh, kw], stride: stride, padding: padding), [x], "p\(otherCount)", at: statement) else { return }
        otherCount += 1
        value = y
        shape = outShape
        finish(statement)
    }

    mutating func lowerActivation(_ word: WordStatement, _ statement: Statement) {
        // Resolved without errors by parseModel; a failure here is a model that skipped it.
        let meaning: ActivationWordMeaning
        switch resolveActivation(word) {
        case .success(let resolved): meaning = resolved
        case .failure(let diagnostic): diagnostics.append(diagnostic); failed = true; return
        }
        guard let x = requireInput(statement) else { return }
        switch meaning {
        case .softmax, .logSoftmax:
            guard shape.count == 1 else {
                error(.flatInputNeeded, "\(word.word) needs a flat input, but the previous layer produces \(dimsText(shape)); add 'flatten' before it",
                      at: statement.range, notes: previousNote())
                failed = true
                return
            }
            guard let y = emit(meaning == .softmax ? .softmax : .logSoftmax, [x], "h\(max(0, layerIndex - 1))", at: statement) else { return }
            value = y
        case .elementwise(.identity):
            break
        case .elementwise(let function):
            guard let y = emit(.activation(function), [x], "h\(max(0, layerIndex - 1))", at: statement) else { return }
            value = y
        }
        finish(statement)
    }

    mutating func lowerLoss(_ loss: LossKind, _ statement: Statement) {
        guard let prediction = requireInput(statement) else { return }
        lossStatement = statement
        settings.loss = loss
        graph.output = prediction
        if loss != .sum, shape.count != 1 {
            error(.flatInputNeeded, "loss \(loss.rawValue) needs a flat output, but the last layer produces \(dimsText(shape)); add 'flatten' and an 'fc' before it",
                  at: statement.range, notes: previousNote())
            failed = true
            return
        }
        let width = shape.reduce(1, *)
        func target(_ shape: Shape, _ kind: TargetKind) -> ValueID {
            graph.targetKind = kind
            let id = graph.addSource(.target, name: "y", shape: shape, at: statement.range)
            graph.target = id
            return id
        }
        var lossValue: ValueID?
        switch loss {
        case .mse, .sse:
            let y = target(.init(batched: true, shape), .values(width: width))
            if let difference = emit(.subtract, [prediction, y], "diff", at: statement),
               let squared = emit(.activation(.pow(2)), [difference], "sq", at: statement) {
                lossValue = emit(loss == .mse ? .meanAll : .sumAll, [squared], "loss", at: statement)
            }
        case .sum:
            lossValue = emit(.sumAll, [prediction], "loss", at: statement)
        case .bce:
            let y = target(.init(batched: true, shape), .values(width: width))
            lossValue = emit(.binaryCrossEntropy, [prediction, y], "loss", at: statement)
        case .nll:
            let labels = target(.batch(), .classLabels(classes: width))
            lossValue = emit(.nllLoss, [prediction, labels], "loss", at: statement)
        case .crossentropy:
            let labels = target(.batch(), .classLabels(classes: width))
            // softmax followed by cross-entropy stays as written here; the fusion pass turns it into
            // the numerically stable softmax_cross_entropy on the logits.
            if let producer, case .activation(let word) = producer.kind, case .success(.softmax) = resolveActivation(word) {
                lossValue = emit(.crossEntropy, [prediction, labels], "loss", at: statement)
            } else {
                lossValue = emit(.softmaxCrossEntropy, [prediction, labels], "loss", at: statement)
            }
        }
        graph.loss = lossValue
        if let lossValue, let node = graph.nodes.indices.last, graph.nodes[node].results == [lossValue] {
            // The loss ops belong to the loss phase.
            var index = node
            while index >= 0, graph.nodes[index].location == statement.range {
                if graph.nodes[index].op != .target { graph.nodes[index].phase = .loss }
                index -= 1
            }
        }
        finish(statement, outputShape: .scalar)
    }

    /// `batchnorm`: per channel of [N,C,H,W] or per feature of [N,F]; weight 1, bias 0, running mean 0
    /// and variance 1 (PyTorch's BatchNorm1d/2d). Training normalizes with the batch statistics and
    /// updates the running ones; evaluation uses the running ones.
    mutating func lowerBatchNorm(_ spec: BatchNorm, _ statement: Statement) {
        guard let x = requireInput(statement) else { return }
        guard shape.count == 1 || shape.count == 3 else {
            error(.imageInputNeeded, "batchnorm needs features or an image (channels x height x width), but the previous layer produces \(dimsText(shape))",
                  at: statement.range, notes: previousNote())
            failed = true
            return
        }
        batchNormCount += 1
        let channels = shape[0], k = batchNormCount
        guard let gamma = addParameter("bn\(k).weight", "bn\(k)w", [channels], .ones, at: statement),
              let beta = addParameter("bn\(k).bias", "bn\(k)b", [channels], .zeros, at: statement) else { failed = true; return }
        let mean = addPersistentState("bn\(k).running_mean", "bn\(k)mean", channels, initial: 0, at: statement)
        let variance = addPersistentState("bn\(k).running_var", "bn\(k)var", channels, initial: 1, at: statement)
        let operands = [x, gamma, beta, mean, variance]
        if training {
            do {
                let results = try graph.add(.batchNorm(eps: spec.eps, momentum: spec.momentum), operands,
                                            names: ["bn\(k)", "bn\(k)batchmean", "bn\(k)invstd"], at: statement.range, phase: .forward)
                value = results[0]
            } catch {
                self.error(.internalError, "\(error)", at: statement.range)
                failed = true
                return
            }
        } else {
            guard let y = emit(.batchNormInference(eps: spec.eps), operands, "bn\(k)", at: statement) else { return }
            value = y
        }
        finish(statement)
    }

    /// `prelu [C]`: PyTorch's PReLU(num_parameters = 1 or C), slopes starting at 0.25, named `preluK.weight`.
    mutating func lowerPReLU(_ count: Sized?, _ statement: Statement) {
        guard let x = requireInput(statement) else { return }
        guard shape.count == 1 || shape.count == 3 else {
            error(.imageInputNeeded, "prelu needs features or an image (channels x height x width), but the previous layer produces \(dimsText(shape))",
                  at: statement.range, notes: previousNote())
            failed = true
            return
        }
        let channels = shape[0]
        if let count, count.value != 1, count.value != channels {
            error(.channelMismatch, "prelu \(count.value) has one slope per channel, but the previous layer produces \(channels) channels",
                  at: count.range, notes: previousNote() + [.init(.didYouMean, "did you mean 'prelu \(channels)' (or 'prelu' for one shared slope)?", at: nil)])
            failed = true
            return
        }
        preluCount += 1
        guard let slopes = addParameter("prelu\(preluCount).weight", "prelu\(preluCount)a", [count?.value ?? 1], .constant(0.25), at: statement),
              let y = emit(.prelu, [x, slopes], "prelu\(preluCount)", at: statement) else { failed = true; return }
        value = y
        finish(statement)
    }

    /// `pad …`: a border around the height and width of an image.
    mutating func lowerPad(_ padding: Padding, _ statement: Statement) {
        guard let x = requireInput(statement) else { return }
        guard shape.count == 3 else {
            error(.imageInputNeeded, "pad needs an image input (channels x height x width), but the previous layer produces \(shape.count == 1 ? "\(shape[0]) features" : dimsText(shape))",
                  at: statement.range, notes: previousNote())
            failed = true
            return
        }
        let spec = PadSpec(top: padding.begin.height.value, bottom: padding.end.height.value, left: padding.begin.width.value, right: padding.end.width.value,
                           mode: { switch padding.mode { case .constant(let v): return .constant(v); case .reflect: return .reflect; case .replicate: return .replicate } }())
        if spec.mode == .reflect, max(spec.top, spec.bottom) >= shape[1] || max(spec.left, spec.right) >= shape[2] {
            error(.valueOutOfRange, "pad reflect needs borders smaller than the image \(shape[1])x\(shape[2]) (it mirrors without the edge)",
                  at: padding.begin.range.through(padding.end.range), notes: previousNote())
            failed = true
            return
        }
        let dims = [shape[0], shape[1] + spec.top + spec.bottom, shape[2] + spec.left + spec.right]
        guard checkSize(dims, what: "the output of '\(text(statement))'", at: statement.range),
              let y = emit(.pad(spec), [x], "pad\(otherCount)", at: statement) else { failed = true; return }
        otherCount += 1
        value = y
        shape = dims
        finish(statement)
    }

    /// `add NAME` and `concat NAME`: the current value joined with a named one.
    mutating func lowerJoin(_ kind: JoinKind, _ name: Name, _ statement: Statement) {
        guard let x = requireInput(statement), let named = lookUp(name) else { return }
        let fits = kind == .add ? named.shape == shape
            : named.shape.count == shape.count && !shape.isEmpty && Array(named.shape.dropFirst()) == Array(shape.dropFirst())
        guard fits else {
            let current = producer.map { " (from '\(text($0))')" } ?? ""
            let rule = kind == .add ? "the same shape" : "the same shape but for the channels"
            error(.joinShapeMismatch, "\(kind.rawValue) needs \(rule): the current value is \(dimsText(shape))\(current), '\(name.text)' is \(dimsText(named.shape)) (from '\(text(named.statement))')",
                  at: name.range, notes: previousNote() + [.init(.nameDefinedHere, "'\(name.text)' is defined here", at: named.range)])
            failed = true
            return
        }
        feedingName = name.text
        guard let y = emit(kind == .add ? .add : .concat, [x, named.value], "\(kind.rawValue)\(otherCount)", at: statement) else { return }
        otherCount += 1
        value = y
        if kind == .concat { shape[0] += named.shape[0] }
        finish(statement)
    }

    /// The weight and bias initializers of a layer: the one written (`xavier` and `he` resolved from
    /// the fan-in and fan-out, biases zero), or U(−bound, bound) for both.
    func initializers(_ written: Initializer?, bound: Double, fanIn: Int, fanOut: Int) -> (weight: ParameterInit, bias: ParameterInit) {
        switch written {
        case nil: return (.uniform(low: -bound, high: bound), .uniform(low: -bound, high: bound))
        case .xavier:
            let limit = (6 / Double(fanIn + fanOut)).squareRoot()
            return (.uniform(low: -limit, high: limit), .zeros)
        case .he: return (.normal(mean: 0, std: (2 / Double(fanIn)).squareRoot()), .zeros)
        case .uniform(let low, let high): return (.uniform(low: low, high: high), .uniform(low: low, high: high))
        case .normal(let mean, let std): return (.normal(mean: mean, std: std), .normal(mean: mean, std: std))
        case .zeros: return (.zeros, .zeros)
        }
    }
}

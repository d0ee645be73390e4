/// Parses a model file into a `ModelAST`. Every statement that fails is reported and skipped, so
/// all independent errors in a file are found in one run.
///
/// Verbs: `peek…` looks, `take…` consumes on a match and returns an optional, `expect…` consumes
/// or throws a diagnostic pointing at the offending token.
public struct Parser {
    /// The statements the parser knows. Any other word starts a `WordStatement` (an activation),
    /// resolved with the op vocabulary after parsing.
    public static let statementKeywords = ["input", "fc", "conv", "maxpool", "avgpool", "globalavgpool", "flatten", "reshape", "prelu", "pad", "dropout",
                                           "batchnorm", "add", "concat", "from", "loss", "data", "train"]
    /// Words that are not statements but may not name a value either.
    public static let reservedWords = ["as", "nobias", "init", "stride", "pad", "groups", "dilation", "momentum", "eps", "test", "x"]

    let source: SourceFile
    var tokens: [Token]
    var position = 0
    var diagnostics: [Diagnostic] = []

    init(source: SourceFile) {
        self.source = source
        var lexer = Lexer(source: source)
        self.tokens = lexer.tokenize()
        self.diagnostics = lexer.diagnostics
    }

    /// Parses the whole file; throws all diagnostics if there is any error. (Activation words are
    /// not checked here: `parseModel` in IR parses and resolves them, reporting both kinds together.)
    public static func parse(_ source: SourceFile) throws(DiagnosticError) -> ModelAST {
        let (ast, diagnostics) = parseRecovering(source)
        if !diagnostics.isEmpty { throw DiagnosticError(source: source, diagnostics: diagnostics) }
        return ast
    }

    /// The statements that parsed, and the diagnostics of those that did not (in file order).
    public static func parseRecovering(_ source: SourceFile) -> (ast: ModelAST, diagnostics: [Diagnostic]) {
        var parser = Parser(source: source)
        let statements = parser.parseStatements()
        return (ModelAST(source: source, statements: statements), parser.diagnostics.inFileOrder())
    }

    // MARK: Token verbs

    var current: Token { tokens[position] }

    func peek(_ kind: TokenKind) -> Bool { current.kind == kind }
    func peekWord(_ word: String) -> Bool { current.kind == .word && current.text == word }

    mutating func advance() -> Token {
        let token = tokens[position]
        if position < tokens.count - 1 { position += 1 }
        return token
    }

    mutating func take(_ kind: TokenKind) -> Token? { peek(kind) ? advance() : nil }
    mutating func takeWord(_ word: String) -> Token? { peekWord(word) ? advance() : nil }

    var atStatementEnd: Bool { peek(.separator) || peek(.end) }

    /// How the current token is named in messages.
    var currentDescription: String {
        switch current.kind {
        case .end: return "the end of the file"
        case .separator: return current.text == ";" ? "';'" : "the end of the line"
        case .string: return "a string"
        default: return quoted(current.text)
        }
    }

    func error(_ code: DiagnosticCode, _ message: String, at range: SourceRange? = nil, notes: [Diagnostic.Note] = []) -> Diagnostic {
        Diagnostic(code, message, at: range ?? current.range, notes: notes)
    }

    /// `expected WHAT, found …` at the current token.
    func expected(_ what: String) -> Diagnostic { error(.expectedToken, "expected \(what), found \(currentDescription)") }

    mutating func expect(_ kind: TokenKind, _ what: String) throws(Diagnostic) -> Token {
        guard let token = take(kind) else { throw expected(what) }
        return token
    }

    /// A word that must be one of `candidates`: `expected EXPECTED` when there is no word, else
    /// `unknown WHAT 'word'` with a did-you-mean (or `otherwise`, the list of what is accepted).
    mutating func expectWord(oneOf candidates: [String], expected what: String, unknown: String, code: DiagnosticCode,
                             otherwise: String? = nil) throws(Diagnostic) -> Token {
        guard current.kind == .word else { throw expected(what) }
        let word = advance()
        guard candidates.contains(word.text) else {
            throw error(code, unknownWordMessage(unknown, word.text, among: candidates, otherwise: otherwise), at: word.range)
        }
        return word
    }

    /// A non-negative integer literal, with overflow checked.
    mutating func expectInteger(_ what: String, minimum: Int) throws(Diagnostic) -> Sized {
        let token = current
        switch token.kind {
        case .integer:
            _ = advance()
            var value = 0
            for byte in token.text.utf8 {
                let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
                let (sum, overflow2) = times10.addingReportingOverflow(Int(byte) - 48)
                if overflow1 || overflow2 || sum > Int(Int32.max) {
                    throw error(.numberTooLarge, "\(what) \(token.text.utf8.count > 40 ? quoted(token.text) : token.text) is too large (the limit is \(Int32.max))", at: token.range)
                }
                value = sum
            }
            if value < minimum {
                throw error(.numberTooSmall, "\(what) must be at least \(minimum), found \(value)", at: token.range)
            }
            return Sized(value, token.range)
        case .number:
            throw error(.notWholeNumber, "\(what) must be a whole number of at least \(minimum), found \(quoted(token.text))", at: token.range)
        default:
            throw expected(what)
        }
    }

    mutating func expectNumber(_ what: String) throws(Diagnostic) -> (Double, SourceRange) {
        let token = current
        guard token.kind == .integer || token.kind == .number else { throw expected(what) }
        _ = advance()
        guard let value = Double(token.text), value.isFinite else {
            throw error(.notFinite, "\(what) must be a finite number, found \(quoted(token.text))", at: token.range)
        }
        return (value, token.range)
    }

    // MARK: Statements

    mutating func parseStatements() -> [Statement] {
        var statements: [Statement] = []
        while !peek(.end) {
            if take(.separator) != nil { continue }
            let start = current.range
            do throws(Diagnostic) {
                let kind = try parseStatement()
                var name: Name?
                if let word = takeWord("as") {
                    guard current.kind == .word else { throw expected("a name after 'as'") }
                    let token = advance()
                    name = Name(token.text, token.range)
                    if case .loss = kind { throw error(.nothingToName, "'as' names a layer's output; a loss has none to name", at: word.range) }
                    if case .data = kind { throw error(.nothingToName, "'as' names a layer's output; 'data' has none", at: word.range) }
                    if case .train = kind { throw error(.nothingToName, "'as' names a layer's output; 'train' has none", at: word.range) }
                }
                let end = tokens[max(0, position - 1)].range
                statements.append(Statement(kind: kind, range: start.through(end), keywordRange: start, name: name))
                if !atStatementEnd {
                    throw error(.expectedStatementEnd, "expected ';' or a new line after the statement, found \(currentDescription)")
                }
            } catch {
                diagnostics.append(error)
                while !atStatementEnd { _ = advance() }
            }
        }
        return statements
    }

    mutating func parseStatement() throws(Diagnostic) -> StatementKind {
        guard current.kind == .word else {
            throw error(.expectedStatement, "expected a statement (a layer, an activation, 'loss', 'data' or 'train'), found \(currentDescription)")
        }
        let keyword = advance()
        switch keyword.text {
        case "input":
            let (dims, range) = try parseDims("input")
            return .input(dims: dims, dimsRange: range)
        case "reshape":
            let (dims, range) = try parseDims("reshape")
            return .reshape(dims: dims, dimsRange: range)
        case "prelu":
            return .prelu(channels: peek(.integer) ? try expectInteger("prelu slope count", minimum: 1) : nil)
        case "pad": return .pad(try parsePadding())
        case "fc": return .fc(try parseFullyConnected())
        case "conv": return .conv(try parseConvolution())
        case "maxpool": return .pool(try parsePooling(.max))
        case "avgpool": return .pool(try parsePooling(.average))
        case "globalavgpool": return .globalAveragePool
        case "flatten": return .flatten
        case "batchnorm": return .batchNorm(try parseBatchNorm())
        case "add", "concat":
            return .join(JoinKind(rawValue: keyword.text) ?? .add, try expectName(after: keyword.text))
        case "from": return .from(try expectName(after: "from"))
        case "dropout":
            let (p, range) = try expectNumber("a drop probability")
            guard p >= 0, p < 1 else { throw error(.valueOutOfRange, "dropout probability must be in [0, 1), found \(formatNumber(p))", at: range) }
            return .dropout(probability: p, range: range)
        case "loss": return .loss(try parseLoss())
        case "data":
            let test = takeWord("test") != nil
            let path = try expect(.string, "a file name in double quotes")
            guard !path.text.isEmpty else { throw error(.emptyDataPath, "the data file name is empty", at: path.range) }
            return .data(test: test, path: path.text, pathRange: path.range)
        case "train": return .train(try parseTrain())
        default:
            // An activation (or a misspelt statement): its word and arguments, for name resolution.
            var arguments: [Token] = []
            while !atStatementEnd, !peekWord("as") { arguments.append(advance()) }
            return .activation(WordStatement(word: keyword.text, wordRange: keyword.range, arguments: arguments))
        }
    }

    /// `F` or `CxHxW` (at most 3 dimensions): the shape of `input` and `reshape`.
    mutating func parseDims(_ statement: String) throws(Diagnostic) -> ([Int], SourceRange) {
        let first = try expectInteger("\(statement) size", minimum: 1)
        var dims = [first.value]
        var range = first.range
        while take(.times) != nil {
            let next = try expectInteger("\(statement) size", minimum: 1)
            dims.append(next.value)
            range = range.through(next.range)
        }
        guard dims.count <= 3 else {
            throw error(.tooManyInputDimensions, "\(statement) takes at most 3 dimensions (channels x height x width), found \(dims.count)", at: range)
        }
        return (dims, range)
    }

    /// `[I ->] O`
    mutating func parseInputsAndOutputs(_ layer: String) throws(Diagnostic) -> (Sized?, Sized) {
        let first = try expectInteger("\(layer) size", minimum: 1)
        if take(.arrow) != nil {
            return (first, try expectInteger("\(layer) output size", minimum: 1))
        }
        return (nil, first)
    }

    /// `H x W` or a single `K` for a square window.
    mutating func parseWindow(_ what: String) throws(Diagnostic) -> (Sized, Sized) {
        let height = try expectInteger(what, minimum: 1)
        if take(.times) != nil { return (height, try expectInteger(what, minimum: 1)) }
        return (height, height)
    }

    /// Options that may follow a layer, in any order, each at most once.
    mutating func parseOptions(_ layer: String, allowed: [String], _ handle: (inout Parser, Token) throws(Diagnostic) -> Void) throws(Diagnostic) {
        var seen: Set<String> = []
        while !atStatementEnd, !peekWord("as") {
            let listed = allowed.map { "'\($0)'" }.joined(separator: ", ")
            let word = try expectWord(oneOf: allowed, expected: "one of \(listed) after \(layer)", unknown: "\(layer) option",
                                      code: .unknownOption, otherwise: "\(layer) takes \(listed)")
            guard seen.insert(word.text).inserted else { throw error(.optionGivenTwice, "'\(word.text)' is given twice", at: word.range) }
            try handle(&self, word)
        }
    }

    mutating func parseFullyConnected() throws(Diagnostic) -> FullyConnected {
        let (inputs, outputs) = try parseInputsAndOutputs("fc")
        var layer = FullyConnected(inputs: inputs, outputs: outputs, bias: true, initializer: nil)
        try parseOptions("fc", allowed: ["nobias", "init"]) { (parser: inout Parser, word: Token) throws(Diagnostic) in
            if word.text == "nobias" { layer.bias = false } else { layer.initializer = try parser.parseInitializer() }
        }
        return layer
    }

    /// The name after `add`, `concat` or `from`.
    mutating func expectName(after keyword: String) throws(Diagnostic) -> Name {
        guard current.kind == .word else { throw expected("a name after '\(keyword)'") }
        let token = advance()
        return Name(token.text, token.range)
    }

    /// `A` or `AxB`: one size for both axes, or height and width.
    mutating func parsePair(_ what: String, minimum: Int) throws(Diagnostic) -> SizePair {
        let first = try expectInteger(what, minimum: minimum)
        if take(.times) != nil { return SizePair(first, try expectInteger(what, minimum: minimum)) }
        return SizePair(first, first)
    }

    mutating func parsePadding() throws(Diagnostic) -> Padding {
        let begin = try parsePair("pad size", minimum: 0)
        let end = peek(.integer) ? try parsePair("pad size", minimum: 0) : begin
        var padding = Padding(begin: begin, end: end)
        var modeWord: Token?
        try parseOptions("pad", allowed: ["reflect", "replicate", "value"]) { (parser: inout Parser, word: Token) throws(Diagnostic) in
            if let first = modeWord {
                throw parser.error(.optionGivenTwice, "pad takes one of 'reflect', 'replicate' or 'value V'; '\(first.text)' is given already", at: word.range)
            }
            modeWord = word
            switch word.text {
            case "reflect": padding.mode = .reflect
            case "replicate": padding.mode = .replicate
            default:
                let (value, range) = try parser.expectNumber("a value for the border")
                guard value.isFinite else { throw parser.error(.notFinite, "the border value must be finite", at: range) }
                padding.mode = .constant(value)
            }
        }
        return padding
    }

    mutating func parseConvolution() throws(Diagnostic) -> Convolution {
        let (inputs, outputs) = try parseInputsAndOutputs("conv")
        let (kh, kw) = try parseWindow("conv kernel size")
        let here = SourceRange(start: kw.range.end, end: kw.range.end)
        var layer = Convolution(inputs: inputs, outputs: outputs, kernelHeight: kh, kernelWidth: kw,
                                stride: SizePair(Sized(1, here), Sized(1, here)), padding: SizePair(Sized(0, here), Sized(0, here)),
                                dilation: SizePair(Sized(1, here), Sized(1, here)), groups: Sized(1, here), bias: true, initializer: nil)
        try parseOptions("conv", allowed: ["stride", "pad", "groups", "dilation", "nobias", "init"]) { (parser: inout Parser, word: Token) throws(Diagnostic) in
            switch word.text {
            case "stride": layer.stride = try parser.parsePair("conv stride", minimum: 1)
            case "pad": layer.padding = try parser.parsePair("conv padding", minimum: 0)
            case "groups": layer.groups = try parser.expectInteger("conv groups", minimum: 1)
            case "dilation": layer.dilation = try parser.parsePair("conv dilation", minimum: 1)
            case "nobias": layer.bias = false
            default: layer.initializer = try parser.parseInitializer()
            }
        }
        return layer
    }

    mutating func parsePooling(_ kind: Pooling.Kind) throws(Diagnostic) -> Pooling {
        let (height, width) = try parseWindow("\(kind.rawValue) window size")
        let here = SourceRange(start: width.range.end, end: width.range.end)
        var layer = Pooling(kind: kind, windowHeight: height, windowWidth: width, stride: nil, padding: SizePair(Sized(0, here), Sized(0, here)))
        try parseOptions(kind.rawValue, allowed: ["stride", "pad"]) { (parser: inout Parser, word: Token) throws(Diagnostic) in
            if word.text == "stride" {
                layer.stride = try parser.parsePair("\(kind.rawValue) stride", minimum: 1)
            } else {
                layer.padding = try parser.parsePair("\(kind.rawValue) padding", minimum: 0)
            }
        }
        return layer
    }

    mutating func parseBatchNorm() throws(Diagnostic) -> BatchNorm {
        var layer = BatchNorm()
        try parseOptions("batchnorm", allowed: ["momentum", "eps"]) { (parser: inout Parser, word: Token) throws(Diagnostic) in
            let (value, range) = try parser.expectNumber("a value for '\(word.text)'")
            if word.text == "momentum" {
                guard value >= 0, value <= 1 else { throw parser.error(.valueOutOfRange, "batchnorm momentum must be in [0, 1], found \(formatNumber(value))", at: range) }
                layer.momentum = value
            } else {
                guard value > 0 else { throw parser.error(.valueOutOfRange, "batchnorm eps must be greater than 0, found \(formatNumber(value))", at: range) }
                layer.eps = value
            }
        }
        return layer
    }

    mutating func parseInitializer() throws(Diagnostic) -> Initializer {
        let word = try expectWord(oneOf: Initializer.names, expected: "an initializer (\(Initializer.names.joined(separator: ", ")))",
                                  unknown: "initializer", code: .unknownInitializer)
        switch word.text {
        case "xavier": return .xavier
        case "he": return .he
        case "uniform", "normal":
            _ = try expect(.leftParen, "'(' after \(word.text)")
            let (a, aRange) = try expectNumber(word.text == "uniform" ? "a lower bound" : "a mean")
            _ = try expect(.comma, "','")
            let (b, bRange) = try expectNumber(word.text == "uniform" ? "an upper bound" : "a standard deviation")
            _ = try expect(.rightParen, "')'")
            if word.text == "uniform" {
                guard a <= b else { throw error(.valueOutOfRange, "uniform bounds must be in order (low, high), found (\(formatNumber(a)), \(formatNumber(b)))", at: aRange.through(bRange)) }
                return .uniform(low: a, high: b)
            }
            guard b >= 0 else { throw error(.valueOutOfRange, "the standard deviation must not be negative, found \(formatNumber(b))", at: bRange) }
            return .normal(mean: a, std: b)
        default: return .zeros  // the only name left in Initializer.names
        }
    }

    mutating func parseLoss() throws(Diagnostic) -> LossKind {
        let names = LossKind.allCases.map(\.rawValue)
        let word = try expectWord(oneOf: names, expected: "a loss (\(names.joined(separator: ", ")))", unknown: "loss",
                                  code: .unknownLoss, otherwise: "expected one of \(names.joined(separator: ", "))")
        return LossKind(rawValue: word.text) ?? .mse
    }

    mutating func parseTrain() throws(Diagnostic) -> TrainSpec {
        let names = OptimizerKind.allCases.map(\.rawValue)
        let word = try expectWord(oneOf: names, expected: "an optimizer (\(names.joined(separator: ", ")))", unknown: "optimizer",
                                  code: .unknownOptimizer, otherwise: "expected one of \(names.joined(separator: ", "))")
        let optimizer = OptimizerKind(rawValue: word.text) ?? .sgd
        var spec = TrainSpec(optimizer: optimizer, optimizerRange: word.range, options: [])
        let keys = TrainKeys.keys(for: optimizer)
        while !atStatementEnd {
            let key = try expectWord(oneOf: keys, expected: "a training option (\(keys.joined(separator: ", ")))",
                                     unknown: "\(optimizer.rawValue) option", code: .unknownOption,
                                     otherwise: "\(optimizer.rawValue) takes \(keys.joined(separator: ", "))")
            if let earlier = spec.options.first(where: { $0.key == key.text }) {
                throw error(.optionGivenTwice, "'\(key.text)' is given twice", at: key.range, notes: [.init(.firstDefinition, "first given here", at: earlier.keyRange)])
            }
            if key.text == "schedule" {
                if let earlier = spec.schedule {
                    throw error(.optionGivenTwice, "'schedule' is given twice", at: key.range, notes: [.init(.firstDefinition, "first given here", at: earlier.1)])
                }
                spec.schedule = (try parseSchedule(), key.range)
                continue
            }
            if key.text == "validation" {
                if let earlier = spec.validation {
                    throw error(.optionGivenTwice, "'validation' is given twice", at: key.range, notes: [.init(.firstDefinition, "first given here", at: earlier.range)])
                }
                if let test = takeWord("test") {
                    spec.validation = (.test, key.range, test.range)
                } else {
                    let (fraction, range) = try expectNumber("a fraction of the training data, or 'test'")
                    guard fraction > 0, fraction < 1 else {
                        throw error(.valueOutOfRange, "the validation fraction must be between 0 and 1 (exclusive), found \(formatNumber(fraction))", at: range)
                    }
                    spec.validation = (.fraction(fraction), key.range, range)
                }
                continue
            }
            if key.text == "keep" {
                if let earlier = spec.keepBest {
                    throw error(.optionGivenTwice, "'keep best' is given twice", at: key.range, notes: [.init(.firstDefinition, "first given here", at: earlier)])
                }
                let best = try expectWord(oneOf: ["best"], expected: "'best' after 'keep'", unknown: "keep option", code: .unknownOption, otherwise: "keep takes 'best'")
                spec.keepBest = key.range.through(best.range)
                continue
            }
            let option: TrainOption
            if TrainKeys.switches.contains(key.text) {
                guard current.kind == .word, current.text == "on" || current.text == "off" else {
                    throw error(.expectedToken, "'\(key.text)' takes 'on' or 'off', found \(currentDescription)")
                }
                let value = advance()
                option = TrainOption(key: key.text, value: value.text == "on" ? 1 : 0, keyRange: key.range, valueRange: value.range)
            } else if TrainKeys.integers.contains(key.text) {
                let value = try expectInteger("'\(key.text)'", minimum: key.text == "seed" || key.text == "warmup" ? 0 : 1)
                option = TrainOption(key: key.text, value: Double(value.value), keyRange: key.range, valueRange: value.range)
            } else {
                let (value, range) = try expectNumber("a value for '\(key.text)'")
                try TrainKeys.check(key: key.text, value: value).map { message throws(Diagnostic) in throw error(.valueOutOfRange, message, at: range) }
                option = TrainOption(key: key.text, value: value, keyRange: key.range, valueRange: range)
            }
            spec.options.append(option)
        }
        return spec
    }
}

extension Parser {
    /// `constant`, `cosine`, `onecycle`, or `step S G` (every S epochs ×G).
    mutating func parseSchedule() throws(Diagnostic) -> LearningRateSchedule {
        let word = try expectWord(oneOf: LearningRateSchedule.names, expected: "a schedule (\(LearningRateSchedule.names.joined(separator: ", ")))",
                                  unknown: "schedule", code: .unknownOption, otherwise: "expected one of \(LearningRateSchedule.names.joined(separator: ", "))")
        switch word.text {
        case "step":
            let every = try expectInteger("the epochs between steps", minimum: 1)
            let (gamma, range) = try expectNumber("a factor (the rate is multiplied by it every \(every.value) epochs)")
            guard gamma > 0 else { throw error(.valueOutOfRange, "the schedule's factor must be greater than 0, found \(formatNumber(gamma))", at: range) }
            return .step(every: every.value, gamma: gamma)
        case "cosine": return .cosine
        case "onecycle": return .onecycle
        default: return .constant
        }
    }
}

extension TrainKeys {
    /// The range each real-valued key accepts; nil when the value is fine, else the complaint.
    public static func check(key: String, value: Double) -> String? {
        guard value.isFinite else { return "'\(key)' must be a finite number, found \(value)" }
        switch key {
        case "lr", "eps": return value > 0 ? nil : "'\(key)' must be greater than 0, found \(formatNumber(value))"
        case "momentum", "beta1", "beta2":
            return value >= 0 && value < 1 ? nil : "'\(key)' must be in [0, 1), found \(formatNumber(value))"
        case "decay": return value >= 0 ? nil : "'decay' must not be negative, found \(formatNumber(value))"
        default: return nil
        }
    }
}

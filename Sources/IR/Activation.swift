import Parser

/// An element-wise activation: the one vocabulary of the compiler. The language's words resolve to
/// it (`activationWords`), the IR's ops carry it, and the runtime's kernels (and GEMM and conv
/// epilogues) apply it. Softmax is not element-wise and is an op of its own.
///
/// Adding an activation: a case here with its word, FLOPs and derivative form, its scalar formula and
/// derivative in the runtime (Runtime/Kernels/Scalar.swift), and its gradcheck; every switch that must
/// handle it is exhaustive, so the compiler lists them.
public enum ActivationFunction: Hashable, Sendable, CustomStringConvertible {
    case identity, tanh, sigmoid, relu
    case leakyRelu(alpha: Double)
    case pow(Int)
    /// x for x > 0, α(eˣ − 1) otherwise (PyTorch's ELU).
    case elu(alpha: Double)
    /// λ·elu(x, α) with PyTorch's λ = 1.0507009873554805, α = 1.6732632423543772.
    case selu
    /// log(1 + eˣ), and x itself above 20 (PyTorch's Softplus with β = 1, threshold 20).
    case softplus
    /// GELU with the tanh approximation (PyTorch's `GELU(approximate='tanh')`):
    /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
    case gelu
    /// min(max(x, low), high): PyTorch's Hardtanh (−1, 1) and ReLU6 (0, 6), ONNX's Clip.
    case clip(low: Double, high: Double)
    /// x·sigmoid(x) (PyTorch's SiLU, "swish").
    case silu
    /// −x, |x|, eˣ, x/(1 + |x|) (PyTorch's Softsign), and k·x: the element-wise ops ONNX models use.
    case neg, abs, exp, softsign
    case scale(Double)

    /// Whether the derivative can be computed from the output y alone, so that the backward pass keeps
    /// y; otherwise it keeps the input x (pow, gelu), and backward fusions that only see y do not apply.
    public var derivativeFromOutput: Bool {
        switch self {
        // clip: 1 strictly between the bounds, which y shows as well as x.
        // exp: y; softsign: (1 − |y|)²; neg and scale: constants.
        case .identity, .tanh, .sigmoid, .relu, .leakyRelu, .elu, .selu, .clip, .neg, .exp, .softsign, .scale: return true
        // softplus: PyTorch differentiates from the input (its threshold is on x); abs needs x's sign.
        case .pow, .gelu, .softplus, .silu, .abs: return false
        }
    }

    /// Whether a GEMM or conv epilogue applies it (forward). pow stays a kernel of its own: its
    /// repeated product is not worth an epilogue case, and training keeps its input anyway.
    public var epilogueFusable: Bool {
        switch self {
        case .identity, .tanh, .sigmoid, .relu, .leakyRelu, .gelu, .elu, .selu, .softplus, .clip, .silu,
             .neg, .abs, .exp, .softsign, .scale: return true
        case .pow: return false
        }
    }

    /// Whether a backward kernel that sees only y and dy (the fused activation-and-bias gradient, the
    /// conv backward) can take its derivative.
    public var backwardFusable: Bool { epilogueFusable && derivativeFromOutput }

    public var description: String {
        switch self {
        case .identity: return "identity"
        case .tanh: return "tanh"
        case .sigmoid: return "sigmoid"
        case .relu: return "relu"
        case .gelu: return "gelu"
        case .elu(let alpha): return "elu(\(formatNumber(alpha)))"
        case .selu: return "selu"
        case .softplus: return "softplus"
        case .leakyRelu(let alpha): return "leakyrelu(\(formatNumber(alpha)))"
        case .pow(let k): return "pow(\(k))"
        case .clip(let low, let high): return "clip(\(formatNumber(low)),\(formatNumber(high)))"
        case .silu: return "silu"
        case .neg: return "neg"
        case .abs: return "abs"
        case .exp: return "exp"
        case .softsign: return "softsign"
        case .scale(let k): return "scale(\(formatNumber(k)))"
        }
    }

    /// FLOPs per element (rough: a transcendental function counts as several).
    public var flopsPerElement: Int {
        switch self {
        case .identity: return 0
        case .relu, .leakyRelu: return 1
        case .clip: return 2
        case .silu: return 5
        case .neg, .abs, .scale: return 1
        case .exp: return 4
        case .softsign: return 3
        case .pow(let k): return max(1, k - 1)
        case .tanh, .sigmoid, .elu, .selu, .softplus: return 4
        case .gelu: return 9
        }
    }
}

/// What an activation word of the language lowers to.
public enum ActivationWordMeaning: Sendable, Equatable {
    case elementwise(ActivationFunction)
    /// Row-wise softmax over the features (its own op).
    case softmax
    /// Row-wise log-softmax over the features (its own op).
    case logSoftmax
}

/// One word of the activation vocabulary: its name, the argument it takes, and what it means.
public struct ActivationWord: Sendable {
    public enum Argument: Sendable {
        case none
        /// An optional real number in [low, high), with a default.
        case optionalNumber(name: String, low: Double, high: Double, default: Double)
        /// A required whole number in low...high.
        case integer(name: String, low: Int, high: Int)
        /// A required finite number.
        case requiredNumber(name: String)
        /// Two optional numbers `LOW HIGH` with LOW < HIGH (both or neither), with defaults.
        case optionalRange(name: String, defaults: (Double, Double))
    }
    public var word: String
    public var argument: Argument
    /// The meaning for the argument (a range's two numbers; other kinds use the first).
    public var meaning: @Sendable ([Double]) -> ActivationWordMeaning

    init(word: String, argument: Argument, meaning: @escaping @Sendable ([Double]) -> ActivationWordMeaning) {
        self.word = word; self.argument = argument; self.meaning = meaning
    }
}

/// The activation words of the language, in the order the README lists them.
public let activationWords: [ActivationWord] = [
    ActivationWord(word: "tanh", argument: .none) { _ in .elementwise(.tanh) },
    ActivationWord(word: "sigmoid", argument: .none) { _ in .elementwise(.sigmoid) },
    ActivationWord(word: "relu", argument: .none) { _ in .elementwise(.relu) },
    ActivationWord(word: "leakyrelu", argument: .optionalNumber(name: "leakyrelu slope", low: 0, high: 1, default: 0.01)) {
        .elementwise(.leakyRelu(alpha: $0[0]))
    },
    ActivationWord(word: "gelu", argument: .none) { _ in .elementwise(.gelu) },
    ActivationWord(word: "elu", argument: .optionalNumber(name: "elu alpha", low: 0, high: .infinity, default: 1)) { .elementwise(.elu(alpha: $0[0])) },
    ActivationWord(word: "selu", argument: .none) { _ in .elementwise(.selu) },
    ActivationWord(word: "softplus", argument: .none) { _ in .elementwise(.softplus) },
    ActivationWord(word: "relu6", argument: .none) { _ in .elementwise(.clip(low: 0, high: 6)) },
    ActivationWord(word: "hardtanh", argument: .optionalRange(name: "hardtanh bounds", defaults: (-1, 1))) { .elementwise(.clip(low: $0[0], high: $0[1])) },
    ActivationWord(word: "silu", argument: .none) { _ in .elementwise(.silu) },
    ActivationWord(word: "softsign", argument: .none) { _ in .elementwise(.softsign) },
    ActivationWord(word: "neg", argument: .none) { _ in .elementwise(.neg) },
    ActivationWord(word: "abs", argument: .none) { _ in .elementwise(.abs) },
    ActivationWord(word: "exp", argument: .none) { _ in .elementwise(.exp) },
    ActivationWord(word: "scale", argument: .requiredNumber(name: "scale factor")) { .elementwise(.scale($0[0])) },
    ActivationWord(word: "softmax", argument: .none) { _ in .softmax },
    ActivationWord(word: "logsoftmax", argument: .none) { _ in .logSoftmax },
    ActivationWord(word: "identity", argument: .none) { _ in .elementwise(.identity) },
    ActivationWord(word: "pow", argument: .integer(name: "pow exponent", low: 1, high: 64)) { .elementwise(.pow(Int($0[0]))) },
]

/// Every word that may start a statement: the parser's keywords and the activations (for did-you-mean).
public var statementWords: [String] { Parser.statementKeywords + activationWords.map(\.word) }

/// Name resolution of a word statement: the activation it names, or the diagnostic that says why not.
public func resolveActivation(_ statement: WordStatement) -> Result<ActivationWordMeaning, Diagnostic> {
    guard let entry = activationWords.first(where: { $0.word == statement.word }) else {
        return .failure(Diagnostic(.unknownStatement, unknownWordMessage("statement", statement.word, among: statementWords),
                                   at: statement.wordRange))
    }
    var arguments = statement.arguments[...]
    func endOfStatement() -> Diagnostic? {
        guard let extra = arguments.first else { return nil }
        return Diagnostic(.expectedStatementEnd, "expected ';' or a new line after the statement, found \(describe(extra))", at: extra.range)
    }
    switch entry.argument {
    case .none:
        if let extra = arguments.first {
            return .failure(Diagnostic(.unexpectedArgument, "\(entry.word) takes no argument, found \(describe(extra))", at: extra.range))
        }
        return .success(entry.meaning([]))
    case .optionalNumber(let name, let low, let high, let value):
        var value = value
        if let token = arguments.first, token.kind == .integer || token.kind == .number {
            arguments = arguments.dropFirst()
            guard let number = Double(token.text), number.isFinite else {
                return .failure(Diagnostic(.notFinite, "\(name) must be a finite number, found \(quoted(token.text))", at: token.range))
            }
            guard number >= low, number < high else {
                return .failure(Diagnostic(.valueOutOfRange, "\(name) must be in [\(formatNumber(low)), \(formatNumber(high))), found \(formatNumber(number))", at: token.range))
            }
            value = number
        }
        if let error = endOfStatement() { return .failure(error) }
        return .success(entry.meaning([value]))
    case .requiredNumber(let name):
        guard let token = arguments.first else {
            let end = SourceRange(start: statement.wordRange.end, end: statement.wordRange.end)
            return .failure(Diagnostic(.expectedToken, "expected \(name) after '\(entry.word)'", at: end))
        }
        guard token.kind == .integer || token.kind == .number, let number = Double(token.text), number.isFinite else {
            return .failure(Diagnostic(.expectedToken, "expected a finite number for the \(name), found \(describe(token))", at: token.range))
        }
        arguments = arguments.dropFirst()
        if let error = endOfStatement() { return .failure(error) }
        return .success(entry.meaning([number]))
    case .optionalRange(let name, let defaults):
        var bounds = [defaults.0, defaults.1]
        if let first = arguments.first, first.kind == .integer || first.kind == .number {
            var numbers: [Double] = []
            for _ in 0..<2 {
                guard let token = arguments.first else {
                    let end = SourceRange(start: first.range.end, end: first.range.end)
                    return .failure(Diagnostic(.expectedToken, "expected two numbers for the \(name), LOW HIGH", at: end))
                }
                guard token.kind == .integer || token.kind == .number, let number = Double(token.text), number.isFinite else {
                    return .failure(Diagnostic(.expectedToken, "expected a finite number for the \(name), found \(describe(token))", at: token.range))
                }
                numbers.append(number)
                arguments = arguments.dropFirst()
            }
            guard numbers[0] < numbers[1] else {
                return .failure(Diagnostic(.valueOutOfRange, "the \(name) must be LOW HIGH with LOW < HIGH, found \(formatNumber(numbers[0])) \(formatNumber(numbers[1]))",
                                           at: first.range.through(statement.arguments[statement.arguments.count - arguments.count - 1].range)))
            }
            bounds = numbers
        }
        if let error = endOfStatement() { return .failure(error) }
        return .success(entry.meaning(bounds))
    case .integer(let name, let low, let high):
        guard let token = arguments.first else {
            let end = SourceRange(start: statement.wordRange.end, end: statement.wordRange.end)
            return .failure(Diagnostic(.expectedToken, "expected \(name) after '\(entry.word)'", at: end))
        }
        arguments = arguments.dropFirst()
        switch token.kind {
        case .integer:
            guard let value = Int(token.text), value <= Int(Int32.max) else {
                return .failure(Diagnostic(.numberTooLarge, "\(name) \(token.text.utf8.count > 40 ? quoted(token.text) : token.text) is too large (the limit is \(Int32.max))", at: token.range))
            }
            guard value >= low else {
                return .failure(Diagnostic(.numberTooSmall, "\(name) must be at least \(low), found \(value)", at: token.range))
            }
            guard value <= high else {
                return .failure(Diagnostic(.valueOutOfRange, "\(name) must be at most \(high), found \(value)", at: token.range))
            }
            if let error = endOfStatement() { return .failure(error) }
            return .success(entry.meaning([Double(value)]))
        case .number:
            return .failure(Diagnostic(.notWholeNumber, "\(name) must be a whole number of at least \(low), found \(quoted(token.text))", at: token.range))
        case .word, .string, .arrow, .times, .leftParen, .rightParen, .comma, .separator, .end:
            return .failure(Diagnostic(.expectedToken, "expected \(name), found \(describe(token))", at: token.range))
        }
    }
}

/// How a token is named in a message.
private func describe(_ token: Token) -> String {
    token.kind == .string ? "a string" : quoted(token.text)
}

/// Parses a model and resolves its activation words: every syntax and name error of the file in
/// one list, in file order. This is the front end's entry point (`Parser.parse` alone leaves
/// activation words unchecked).
public func parseModel(_ source: SourceFile) throws(DiagnosticError) -> ModelAST {
    let (ast, parseDiagnostics) = Parser.parseRecovering(source)
    var diagnostics = parseDiagnostics
    for statement in ast.statements {
        if case .activation(let word) = statement.kind, case .failure(let diagnostic) = resolveActivation(word) {
            diagnostics.append(diagnostic)
        }
    }
    if !diagnostics.isEmpty { throw DiagnosticError(source: source, diagnostics: diagnostics.inFileOrder()) }
    return ast
}

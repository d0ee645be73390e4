/// Every message the front end (lexer, parser, name resolution) and lowering can emit, each with a
/// stable id: `E0xx` errors, `W0xx` warnings, `N0xx` notes. Ids are never reused or renumbered, so
/// they can be searched for and documented (the README lists them). A diagnostic renders its id
/// after its severity: `m.nn:3:4: error[E027]: fc expects 4 input features, …`.
public enum DiagnosticCode: String, CaseIterable, Sendable {
    // Lexical and syntax errors.
    case unterminatedString = "E001"
    case unexpectedCharacter = "E002"
    case expectedToken = "E003"
    case numberTooLarge = "E004"
    case numberTooSmall = "E005"
    case notWholeNumber = "E006"
    case notFinite = "E007"
    case expectedStatementEnd = "E008"
    case expectedStatement = "E009"
    case unknownStatement = "E010"
    case unknownOption = "E011"
    case optionGivenTwice = "E012"
    case valueOutOfRange = "E013"
    case emptyDataPath = "E014"
    case tooManyInputDimensions = "E015"
    case unknownInitializer = "E016"
    case unknownLoss = "E017"
    case unknownOptimizer = "E018"
    case unexpectedArgument = "E019"
    // Errors in the model's structure and shapes (lowering).
    case statementGivenTwice = "E020"
    case inputAfterLayers = "E021"
    case statementAfterLoss = "E022"
    case noLayers = "E023"
    case tensorTooLarge = "E024"
    case missingInput = "E025"
    case flatInputNeeded = "E026"
    case featureMismatch = "E027"
    case imageInputNeeded = "E028"
    case channelMismatch = "E029"
    case windowTooLarge = "E030"
    case internalError = "E031"
    case noGradientRule = "E032"
    // Errors in graphs: named values.
    case unknownName = "E033"
    case nameGivenTwice = "E034"
    case joinShapeMismatch = "E035"
    case nothingToName = "E036"
    case reservedName = "E037"
    case invalidConvolution = "E038"
    case reshapeMismatch = "E039"
    // Warnings: legal models that are probably not what was meant.
    case softmaxBeforeRegressionLoss = "W001"
    case dropoutAtTheEnd = "W002"
    case unusedName = "W003"
    case unusedValue = "W004"
    // Notes attached to the messages above.
    case previousLayer = "N001"
    case firstDefinition = "N002"
    case lossIsHere = "N003"
    case didYouMean = "N004"
    case nameDefinedHere = "N005"

    public var severity: Diagnostic.Severity {
        switch rawValue.first {
        case "W": return .warning
        case "N": return .note
        default: return .error
        }
    }

    /// One line for the README's table.
    public var summary: String {
        switch self {
        case .unterminatedString: return "a string without its closing quote"
        case .unexpectedCharacter: return "a character or byte the language does not use"
        case .expectedToken: return "a token other than the one the grammar needs here"
        case .numberTooLarge: return "an integer above 2^31−1"
        case .numberTooSmall: return "an integer below the least the place allows (a size of 0)"
        case .notWholeNumber: return "a fraction or a sign where a whole number is needed"
        case .notFinite: return "a number that overflows (1e999)"
        case .expectedStatementEnd: return "more after a complete statement"
        case .expectedStatement: return "a line that does not start with a word"
        case .unknownStatement: return "a word that is neither a layer, an activation nor a statement (with did-you-mean)"
        case .unknownOption: return "an unknown layer or training option (with did-you-mean)"
        case .optionGivenTwice: return "an option given twice in one statement"
        case .valueOutOfRange: return "a value outside its range (a probability of 1, a negative learning rate, …)"
        case .emptyDataPath: return "data \"\""
        case .tooManyInputDimensions: return "an input of more than 3 dimensions"
        case .unknownInitializer: return "an unknown initializer (with did-you-mean)"
        case .unknownLoss: return "an unknown loss (with did-you-mean)"
        case .unknownOptimizer: return "an unknown optimizer (with did-you-mean)"
        case .unexpectedArgument: return "an activation given an argument it does not take, or missing one it needs"
        case .statementGivenTwice: return "two input, data or train statements"
        case .inputAfterLayers: return "an input statement after the first layer"
        case .statementAfterLoss: return "a layer after the loss"
        case .noLayers: return "a model without layers"
        case .tensorTooLarge: return "a tensor of more than 2^31 elements"
        case .missingInput: return "a layer before anything defines the input"
        case .flatInputNeeded: return "fc, softmax or a loss after an image-shaped layer (flatten missing)"
        case .featureMismatch: return "fc I->O where the previous layer gives other than I features"
        case .imageInputNeeded: return "conv or pooling without an image-shaped input"
        case .channelMismatch: return "conv I->O where the previous layer gives other than I channels"
        case .windowTooLarge: return "a kernel or window larger than its (padded) input"
        case .internalError: return "an op the compiler could not build (a compiler bug, reported at its statement)"
        case .noGradientRule: return "an op with no gradient rule on the way from the parameters to the loss"
        case .unknownName: return "add, concat or from names a value no 'as' defined before it (with did-you-mean)"
        case .nameGivenTwice: return "two statements named alike with 'as'"
        case .joinShapeMismatch: return "add or concat of values whose shapes do not fit"
        case .nothingToName: return "'as' after a statement without an output (loss, data, train)"
        case .reservedName: return "a keyword or activation word used as a name"
        case .invalidConvolution: return "conv groups that do not divide the channels, or a dilated kernel larger than its input"
        case .reshapeMismatch: return "reshape to a shape with another number of values than its input"
        case .unusedName: return "a name no add, concat or from uses"
        case .unusedValue: return "a layer's output that 'from' leaves behind unnamed (its branch computes nothing used)"
        case .nameDefinedHere: return "where a name was defined"
        case .softmaxBeforeRegressionLoss: return "softmax right before mse, sse or bce: probabilities regressed, usually a mistake for crossentropy"
        case .dropoutAtTheEnd: return "dropout as the last layer (right before the loss, or the output)"
        case .previousLayer: return "the layer whose output does not fit"
        case .firstDefinition: return "where something given twice was first given"
        case .lossIsHere: return "where the loss is"
        case .didYouMean: return "a corrected statement to use instead"
        }
    }
}

/// `unknown WHAT 'word'; did you mean 'x'?`, or, without a close candidate, the message followed by
/// `otherwise` (a list of what is accepted), for every unknown-word diagnostic.
public func unknownWordMessage(_ what: String, _ word: String, among candidates: [String], otherwise: String? = nil) -> String {
    var message = "unknown \(what) \(quoted(word))"
    if let guess = suggestion(for: word, among: candidates) { message += "; did you mean '\(guess)'?" }
    else if let otherwise { message += " (\(otherwise))" }
    return message
}

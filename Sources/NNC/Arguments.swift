import Parser

/// A command-line mistake: exit status 2 with the command's usage.
public struct UsageError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// An error in the user's input (model, data, compiled file, flag value): exit status 1.
public struct InputError: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Parsed command-line arguments: positionals, `--key value` options and `--flag` switches.
struct Arguments: Sendable {
    var positional: [String] = []
    var values: [String: String] = [:]
    var flags: Set<String> = []

    /// `valueOptions` take a value (`--lr 0.1` or `--lr=0.1`); `flagOptions` do not.
    init(_ arguments: [String], valueOptions: [String], flagOptions: [String]) throws(UsageError) {
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("-"), argument.count > 1, Double(argument) == nil else {
                positional.append(argument)
                continue
            }
            var name = argument, inlineValue: String?
            if let equals = argument.firstIndex(of: "=") {
                name = String(argument[..<equals])
                inlineValue = String(argument[argument.index(after: equals)...])
            }
            if valueOptions.contains(name) {
                if let inlineValue {
                    values[name] = inlineValue
                } else {
                    guard index < arguments.count else { throw UsageError(message: "\(name) needs a value") }
                    values[name] = arguments[index]
                    index += 1
                }
            } else if flagOptions.contains(name), inlineValue == nil {
                flags.insert(name)
            } else {
                var message = "unknown option '\(name)'"
                if let guess = suggestion(for: name, among: valueOptions + flagOptions) { message += "; did you mean '\(guess)'?" }
                throw UsageError(message: message)
            }
        }
    }

    func integer(_ name: String, minimum: Int = 1) throws(UsageError) -> Int? {
        guard let text = values[name] else { return nil }
        guard let value = Int(text), value >= minimum else { throw UsageError(message: "\(name) needs a whole number of at least \(minimum), got '\(text)'") }
        return value
    }

    func number(_ name: String) throws(UsageError) -> Double? {
        guard let text = values[name] else { return nil }
        guard let value = Double(text), value.isFinite else { throw UsageError(message: "\(name) needs a number, got '\(text)'") }
        return value
    }
}

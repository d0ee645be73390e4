import Foundation
import IR
import Parser

/// A command-line mistake: exit status 2 with the command's usage.
public struct UsageError: Error, CustomStringConvertible {
    /// What was wrong, in words.
    public var message: String
    public var description: String { message }
}

/// An error in the user's input (model, data, compiled file, flag value): exit status 1.
public struct InputError: Error, CustomStringConvertible {
    /// The message, naming the file and place: `FILE: error: …`.
    public var message: String
    /// An error with this message.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// `--loss KIND`: a loss for a model without one.
func lossFlag(_ arguments: Arguments) throws(UsageError) -> LossKind? {
    guard let text = arguments.values["--loss"] else { return nil }
    guard let loss = LossKind(rawValue: text) else {
        throw UsageError(message: "--loss takes \(LossKind.allCases.map(\.rawValue).joined(separator: ", ")), got '\(text)'")
    }
    return loss
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

/// The most worker threads a command takes: far more than any machine here has cores, far fewer than
/// would exhaust memory or the process's threads.
let maxThreads = 256

extension Arguments {
    /// `--threads N`, 1...maxThreads (default: all cores).
    func threads() throws(UsageError) -> Int {
        guard let text = values["--threads"] else { return ProcessInfo.processInfo.activeProcessorCount }
        guard let value = Int(text), value >= 1, value <= maxThreads else {
            throw UsageError(message: "--threads takes a whole number from 1 to \(maxThreads) (this machine has \(ProcessInfo.processInfo.activeProcessorCount) cores), got '\(text)'")
        }
        return value
    }
}

/// Checks a file a command will write, before any work: a name (not empty, not a directory), a
/// regular file or none yet (not a device, FIFO or directory), not one of the command's own inputs
/// (compared by device and inode, so also through links), in a directory that exists, is writable
/// and takes a new file. A symbolic link is followed (the write replaces its target). `flag` names
/// the option in messages.
func checkOutput(_ path: String, flag: String, inputs: [String]) throws {
    guard !path.isEmpty, !path.hasSuffix("/") else {
        throw UsageError(message: "\(flag) needs a file name, got '\(path)'")
    }
    // A symbolic link is followed: the checks are about the file the write will replace.
    let given = path, path = resolvedOutputPath(path)
    var link = stat()
    if lstat(path, &link) == 0, link.st_mode & S_IFMT == S_IFLNK {
        throw InputError("\(given): error: a loop of symbolic links; \(flag) needs a file to write")
    }
    var target = stat()
    let exists = stat(path, &target) == 0
    if exists, target.st_mode & S_IFMT != S_IFREG {
        throw InputError("\(given): error: not a regular file; \(flag) writes a regular file (replacing it), not a device, pipe or directory\(given == path ? "" : " (\(given) links to \(path))")")
    }
    /// The same file: by device and inode when both exist (also through links), else by resolved path.
    func isOutput(_ input: String) -> Bool {
        var source = stat()
        if exists, stat(input, &source) == 0 { return source.st_dev == target.st_dev && source.st_ino == target.st_ino }
        func absolute(_ p: String) -> String { URL(fileURLWithPath: p).standardizedFileURL.resolvingSymlinksInPath().path }
        return absolute(input) == absolute(path)
    }
    if let input = inputs.first(where: isOutput) {
        throw InputError("\(given): error: \(flag) names the command's own input \(input); writing it would destroy the input")
    }
    let directory = (path as NSString).deletingLastPathComponent
    let folder = directory.isEmpty ? "." : directory
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw InputError("\(given): error: cannot write: the directory \(folder) does not exist")
    }
    guard access(folder, W_OK) == 0 else {
        throw InputError("\(given): error: cannot write: the directory \(folder) is not writable")
    }
    // Permissions are not the whole story (root, read-only or special file systems): make the
    // temporary file the write will use, and remove it. (The name has this process's id: a file of
    // that name is a dead writer's with the same id, and goes too.)
    let probe = folder + "/." + (path as NSString).lastPathComponent + ".\(getpid()).tmp"
    let descriptor = open(probe, O_WRONLY | O_CREAT, 0o666)
    guard descriptor >= 0 else {
        throw InputError("\(given): error: cannot write in the directory \(folder): \(String(cString: strerror(errno)))")
    }
    close(descriptor)
    unlink(probe)
}

import Foundation

/// Where commands write: standard output and error, or strings (in tests).
public final class Console: @unchecked Sendable {
    private let writeOut: (String) -> Void
    private let writeError: (String) -> Void
    /// Whether output goes to a terminal (progress bars) or a log (plain lines).
    public let isTerminal: Bool
    private let lock = NSLock()
    private var capturedOut = ""
    private var capturedError = ""
    /// Tests stand in for Ctrl-C: a training run on this console stops after this many steps.
    var interruptAfterSteps: Int?

    /// A console writing through these functions (`isTerminal`: progress bars instead of plain lines).
    public init(isTerminal: Bool, out: @escaping (String) -> Void, error: @escaping (String) -> Void) {
        self.isTerminal = isTerminal
        self.writeOut = out
        self.writeError = error
    }

    /// The process's standard output and error.
    public static func standard() -> Console {
        Console(isTerminal: isatty(STDOUT_FILENO) == 1,
                out: { FileHandle.standardOutput.write(Data($0.utf8)) },
                error: { FileHandle.standardError.write(Data($0.utf8)) })
    }

    /// A console that keeps what is written (for tests).
    public static func capturing() -> Console {
        let console = Console(isTerminal: false, out: { _ in }, error: { _ in })
        console.capturing = true
        return console
    }
    private var capturing = false

    /// What a capturing console received on standard output.
    public var output: String { lock.withLock { capturedOut } }
    /// What a capturing console received on standard error.
    public var errors: String { lock.withLock { capturedError } }

    /// Writes to standard output.
    public func print(_ text: String, terminator: String = "\n") {
        if capturing { lock.withLock { capturedOut += text + terminator } } else { writeOut(text + terminator) }
    }

    /// Writes to standard error.
    public func error(_ text: String, terminator: String = "\n") {
        if capturing { lock.withLock { capturedError += text + terminator } } else { writeError(text + terminator) }
    }
}

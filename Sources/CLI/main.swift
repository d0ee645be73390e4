import Foundation
import NNC

// The executable only dispatches; every command lives in the NNC library, where tests call it.
exit(runCommandLine(Array(CommandLine.arguments.dropFirst()), console: .standard()))

import Foundation
import Testing
@testable import IR
import Parser

/// The catalog of diagnostics: stable, unique ids, each one reachable from a model, listed in the README.
@Suite struct DiagnosticCatalogTests {
    /// The diagnostics (errors, or the warnings of a model that compiles) of a model text.
    static func diagnostics(_ text: String) -> [Diagnostic] {
        let source = SourceFile(path: "m.nn", text: text)
        do {
            return try lower(try parseModel(source)).warnings
        } catch {
            return error.diagnostics
        }
    }

    /// A model for every front-end and lowering code (E031 and E032 come from the IR: VerifierTests).
    static let triggers: [(DiagnosticCode, String)] = [
        (.unterminatedString, "input 2\ndata \"abc"), (.unexpectedCharacter, "input 2 @"), (.expectedToken, "input 2\ndata 1"),
        (.numberTooLarge, "input 4294967296"), (.numberTooSmall, "input 0"), (.notWholeNumber, "input 2.5"),
        (.notFinite, "train sgd lr 1e999"), (.expectedStatementEnd, "input 2 3"), (.expectedStatement, "2->1"),
        (.unknownStatement, "input 2\nfx 2->3"), (.unknownOption, "input 2\nfc 2->3 nobais"), (.optionGivenTwice, "input 2\nfc 2->3 nobias nobias"),
        (.valueOutOfRange, "input 2\ndropout 1"), (.emptyDataPath, "data \"\""), (.tooManyInputDimensions, "input 1x2x3x4"),
        (.unknownInitializer, "input 2\nfc 2->1 init xavir"), (.unknownLoss, "input 2\nfc 2->1\nloss mes"), (.unknownOptimizer, "train adan"),
        (.unexpectedArgument, "input 2\ntanh 2"), (.statementGivenTwice, "input 2\nfc 2->1\ntrain sgd\ntrain sgd"),
        (.inputAfterLayers, "fc 2->1\ninput 2"), (.statementAfterLoss, "input 2\nfc 2->1\nloss mse\nrelu"), (.noLayers, "# nothing"),
        (.tensorTooLarge, "input 65536x65536x2"), (.missingInput, "relu"), (.flatInputNeeded, "input 1x4x4\nfc 3"),
        (.featureMismatch, "input 2\nfc 3->1"), (.imageInputNeeded, "input 4\nconv 1->2 3x3"), (.channelMismatch, "input 1x4x4\nconv 2->2 3x3"),
        (.windowTooLarge, "input 1x2x2\nconv 1->1 3x3"),
        (.unknownName, "input 2\nfc 2->2 as a\nadd b"), (.nameGivenTwice, "input 2\nfc 2->2 as a\nrelu as a\nadd a"),
        (.joinShapeMismatch, "input 2\nfc 2->3 as a\nfc 3->2\nadd a"), (.nothingToName, "input 2\nfc 2->1\nloss mse as l"),
        (.reservedName, "input 2\nfc 2->2 as relu\nadd relu"), (.reshapeMismatch, "input 2x3\nreshape 5"), (.invalidConvolution, "input 3x4x4\nconv 3->4 3x3 groups 2"),
        (.unusedName, "input 2\nfc 2->2 as a\nloss mse"), (.unusedValue, "input 2\nfc 2->2 as a\nrelu\nfrom a\nloss mse"),
        (.softmaxBeforeRegressionLoss, "input 3\nfc 3->2\nsoftmax\nloss mse"), (.dropoutAtTheEnd, "input 3\nfc 3->2\ndropout 0.5\nloss mse"),
    ]

    @Test func idsAreUniqueAndWellFormed() {
        let ids = DiagnosticCode.allCases.map(\.rawValue)
        #expect(Set(ids).count == ids.count)
        for code in DiagnosticCode.allCases {
            #expect(code.rawValue.count == 4 && "EWN".contains(code.rawValue.first!) && code.rawValue.dropFirst().allSatisfy(\.isNumber), "\(code)")
            #expect(!code.summary.isEmpty)
        }
    }

    @Test(arguments: triggers.indices)
    func everyCodeComesFromAModel(_ index: Int) {
        let (code, text) = Self.triggers[index]
        let found = Self.diagnostics(text)
        #expect(found.first?.code == code, "\(text): \(found.map { "\($0.code?.rawValue ?? "-") \($0.message)" })")
        #expect(found.first?.severity == code.severity)
    }

    @Test func everyErrorAndWarningCodeIsTriggeredOrTestedElsewhere() {
        let triggered = Set(Self.triggers.map(\.0)).union([.internalError, .noGradientRule])
        for code in DiagnosticCode.allCases where code.severity != .note {
            #expect(triggered.contains(code), "no test triggers \(code.rawValue) \(code)")
        }
    }

    @Test func notesCarryTheirCodes() {
        let mismatch = Self.diagnostics("input 2\nfc 2->3\nfc 4->1")
        #expect(mismatch.first?.notes.map(\.code) == [.previousLayer, .didYouMean])
        #expect(Self.diagnostics("input 2\nfc 2->1\ntrain sgd\ntrain sgd").first?.notes.map(\.code) == [.firstDefinition])
        #expect(Self.diagnostics("input 2\nfc 2->1\nloss mse\nrelu").first?.notes.map(\.code) == [.lossIsHere])
    }

    /// Warnings: where they point, how they render, and the models that must not get them.
    @Test func warnings() throws {
        let source = SourceFile(path: "w.nn", text: "input 3\nfc 3->2\nsoftmax\nloss mse\n")
        let model = try lower(try parseModel(source))
        #expect(model.warnings.count == 1)
        #expect(model.warnings[0].render(in: source) == """
        w.nn:3:1: warning[W001]: softmax before 'loss mse' regresses probabilities; for classification use 'loss crossentropy' (with or without the softmax)
        softmax
        ^~~~~~~
        w.nn:4:1: note: the loss is here

        """)
        #expect(Self.diagnostics("input 3\nfc 3->2\nsoftmax\nloss bce").first?.code == .softmaxBeforeRegressionLoss)
        // Dropout as the output of an inference model, too.
        #expect(Self.diagnostics("input 3\nfc 3->2\ndropout 0.1").map(\.code) == [.dropoutAtTheEnd])
        for fine in ["input 3\nfc 3->2\nsoftmax\nloss crossentropy", "input 3\nfc 3->2\nsoftmax", "input 3\ndropout 0.2\nfc 3->2\nloss mse",
                     "input 3\nfc 3->2\nsigmoid\nloss bce"] {
            #expect(Self.diagnostics(fine).isEmpty, "\(fine)")
        }
    }

    /// The README's table lists every id with its name.
    @Test func readmeListsEveryCode() throws {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("README.md")
        let text = try String(contentsOf: readme, encoding: .utf8)
        for code in DiagnosticCode.allCases {
            #expect(text.contains("| \(code.rawValue) | `\(code)` |"), "README lacks \(code.rawValue)")
        }
    }
}

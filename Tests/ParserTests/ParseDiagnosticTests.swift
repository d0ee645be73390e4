import Testing
import TestSupport
@testable import Parser
import IR

/// The parse diagnostics of a model that must fail, rendered.
func parseErrors(_ text: String, path: String = "m.nn") -> DiagnosticError? {
    do {
        _ = try parseModel(SourceFile(path: path, text: text))
        return nil
    } catch {
        return error
    }
}

/// One expected diagnostic: the marked model, the message, and how many columns the caret covers.
struct ExpectedError: CustomTestStringConvertible, Sendable {
    var marked: String
    var message: String
    var width: Int
    init(_ marked: String, _ message: String, width: Int = 1) { self.marked = marked; self.message = message; self.width = width }
    var testDescription: String { String(marked.map { $0 == "\n" ? "⏎" : $0 }) }
}

/// Checks that parsing the marked model gives exactly one diagnostic, rendered exactly as expected.
func expectSingleParseError(_ e: ExpectedError, sourceLocation: SourceLocation = #_sourceLocation) {
    let marked = Marked(e.marked)
    guard let error = parseErrors(marked.text) else {
        Issue.record("expected an error for \(e.marked)", sourceLocation: sourceLocation)
        return
    }
    #expect(error.diagnostics.count == 1, "\(error.rendered.withoutDiagnosticIDs)", sourceLocation: sourceLocation)
    #expect(error.diagnostics.first.map { Diagnostic(  $0.message, at: $0.range, severity: $0.severity).render(in: error.source).withoutDiagnosticIDs }
            == marked.error("1️⃣", e.message, width: e.width), sourceLocation: sourceLocation)
}

@Suite("Parse diagnostics: exact message, line and column")
struct ParseDiagnosticTests {
    static let unknownWordsCases: [ExpectedError] = [
        .init("input 2\n1️⃣fx 2->3\nloss mse", "unknown statement 'fx'; did you mean 'fc'?", width: 2),
        .init("input 2\nfc 2->3\n1️⃣tanhh\n", "unknown statement 'tanhh'; did you mean 'tanh'?", width: 5),
        .init("input 2\n1️⃣sigmod", "unknown statement 'sigmod'; did you mean 'sigmoid'?", width: 6),
        .init("input 2\n  1️⃣leakyrelo 0.1", "unknown statement 'leakyrelo'; did you mean 'leakyrelu'?", width: 9),
        .init("input 2;1️⃣sofmax", "unknown statement 'sofmax'; did you mean 'softmax'?", width: 6),
        .init("1️⃣inptu 2", "unknown statement 'inptu'; did you mean 'input'?", width: 5),
        .init("input 1x4x4\n1️⃣flaten", "unknown statement 'flaten'; did you mean 'flatten'?", width: 6),
        .init("input 1x4x4\n1️⃣maxpol 2", "unknown statement 'maxpol'; did you mean 'maxpool'?", width: 6),
        .init("input 2\n1️⃣FC 2->1", "unknown statement 'FC'; did you mean 'fc'?", width: 2),
        .init("input 2\n1️⃣banana", "unknown statement 'banana'", width: 6),
        .init("input 2\nfc 2->1\nloss 1️⃣mes", "unknown loss 'mes'; did you mean 'mse'?", width: 3),
        .init("input 2\nfc 2->1\nloss 1️⃣crossentropi", "unknown loss 'crossentropi'; did you mean 'crossentropy'?", width: 12),
        .init("input 2\nfc 2->1\nloss 1️⃣hinge", "unknown loss 'hinge' (expected one of mse, sse, sum, crossentropy, bce, nll)", width: 5),
        .init("input 2\nfc 2->1 init 1️⃣xavir", "unknown initializer 'xavir'; did you mean 'xavier'?", width: 5),
        .init("input 2\nfc 2->1 init 1️⃣unifrom(0,1)", "unknown initializer 'unifrom'; did you mean 'uniform'?", width: 7),
        .init("input 2\nfc 2->1 init 1️⃣glorot", "unknown initializer 'glorot'", width: 6),
        .init("input 1x4x4\nconv 1->2 3 init 1️⃣zero", "unknown initializer 'zero'; did you mean 'zeros'?", width: 4),
        .init("train 1️⃣adan lr 0.1", "unknown optimizer 'adan'; did you mean 'adam'?", width: 4),
        .init("train 1️⃣sdg", "unknown optimizer 'sdg'; did you mean 'sgd'?", width: 3),
        .init("train 1️⃣rmsprop", "unknown optimizer 'rmsprop' (expected one of sgd, adam)", width: 7),
        .init("train sgd lr 0.1 1️⃣epoch 10", "unknown sgd option 'epoch'; did you mean 'epochs'?", width: 5),
        .init("train adam 1️⃣beta 0.9", "unknown adam option 'beta'; did you mean 'beta1'?", width: 4),
        .init("train sgd 1️⃣beta1 0.9", "unknown sgd option 'beta1' (sgd takes lr, epochs, batch, seed, shuffle, decay, schedule, warmup, validation, patience, keep, momentum, nesterov)", width: 5),
        .init("train adam 1️⃣momentum 0.9", "unknown adam option 'momentum' (adam takes lr, epochs, batch, seed, shuffle, decay, schedule, warmup, validation, patience, keep, beta1, beta2, eps)", width: 8),
        .init("input 2\nfc 2->3 1️⃣nobais", "unknown fc option 'nobais'; did you mean 'nobias'?", width: 6),
        .init("input 2\nfc 2->3 1️⃣stride 2", "unknown fc option 'stride' (fc takes 'nobias', 'init')", width: 6),
        .init("input 1x8x8\nconv 1->2 3x3 1️⃣strid 2", "unknown conv option 'strid'; did you mean 'stride'?", width: 5),
        .init("input 1x8x8\nmaxpool 2 1️⃣groups 1", "unknown maxpool option 'groups' (maxpool takes 'stride', 'pad')", width: 6),
    ]

    static let malformedValuesCases: [ExpectedError] = [
        .init("train sgd lr 1️⃣abc", "expected a value for 'lr', found 'abc'", width: 3),
        .init("train sgd lr 1️⃣\n", "expected a value for 'lr', found the end of the line"),
        .init("train sgd epochs 1️⃣1.5", "'epochs' must be a whole number of at least 1, found '1.5'", width: 3),
        .init("train sgd epochs 1️⃣0", "'epochs' must be at least 1, found 0"),
        .init("train sgd batch 1️⃣-4", "'batch' must be a whole number of at least 1, found '-4'", width: 2),
        .init("train sgd seed 1️⃣1e3", "'seed' must be a whole number of at least 0, found '1e3'", width: 3),
        .init("train sgd seed 1️⃣99999999999", "'seed' 99999999999 is too large (the limit is 2147483647)", width: 11),
        .init("train sgd shuffle 1️⃣maybe", "'shuffle' takes 'on' or 'off', found 'maybe'", width: 5),
        .init("train sgd nesterov 1️⃣1", "'nesterov' takes 'on' or 'off', found '1'"),
        .init("train sgd shuffle 1️⃣;", "'shuffle' takes 'on' or 'off', found ';'"),
        .init("train sgd lr 1️⃣-0.1", "'lr' must be greater than 0, found -0.1", width: 4),
        .init("train sgd lr 1️⃣0", "'lr' must be greater than 0, found 0"),
        .init("train sgd momentum 1️⃣1", "'momentum' must be in [0, 1), found 1"),
        .init("train sgd decay 1️⃣-1e-4", "'decay' must not be negative, found -0.0001", width: 5),
        .init("train adam beta2 1️⃣1.5", "'beta2' must be in [0, 1), found 1.5", width: 3),
        .init("train adam eps 1️⃣0", "'eps' must be greater than 0, found 0"),
        .init("train sgd lr 1️⃣1e999", "a value for 'lr' must be a finite number, found '1e999'", width: 5),
        .init("train sgd 1️⃣0.1", "expected a training option (lr, epochs, batch, seed, shuffle, decay, schedule, warmup, validation, patience, keep, momentum, nesterov), found '0.1'", width: 3),
        .init("train sgd schedule 1️⃣cosin", "unknown schedule 'cosin'; did you mean 'cosine'?", width: 5),
        .init("train sgd schedule 1️⃣linear", "unknown schedule 'linear' (expected one of constant, step, cosine, onecycle)", width: 6),
        .init("train sgd schedule step 1️⃣0 0.5", "the epochs between steps must be at least 1, found 0"),
        .init("train sgd schedule step 5 1️⃣0", "the schedule's factor must be greater than 0, found 0"),
        .init("train sgd schedule step 1️⃣", "expected the epochs between steps, found the end of the file"),
        .init("train sgd schedule cosine 1️⃣schedule step 2 0.1", "'schedule' is given twice", width: 8),
        .init("train 1️⃣\"sgd\"", "expected an optimizer (sgd, adam), found a string", width: 5),
        .init("train sgd 2️⃣lr 0.1 1️⃣lr 0.2", "'lr' is given twice", width: 2),
        .init("input 2\nfc 2->3 nobias 1️⃣nobias", "'nobias' is given twice", width: 6),
        .init("input 1x8x8\nconv 1->2 3 stride 1 pad 0 1️⃣stride 2", "'stride' is given twice", width: 6),
        .init("input 2\nfc 2->3 init he 1️⃣init xavier", "'init' is given twice", width: 4),
        .init("input 2\ndropout 1️⃣1", "dropout probability must be in [0, 1), found 1"),
        .init("input 2\ndropout 1️⃣1.5", "dropout probability must be in [0, 1), found 1.5", width: 3),
        .init("input 2\ndropout 1️⃣-0.1", "dropout probability must be in [0, 1), found -0.1", width: 4),
        .init("input 2\ndropout 1️⃣high", "expected a drop probability, found 'high'", width: 4),
        .init("input 2\nleakyrelu 1️⃣-0.5", "leakyrelu slope must be in [0, 1), found -0.5", width: 4),
        .init("input 2\npow 1️⃣0", "pow exponent must be at least 1, found 0"),
        .init("input 2\npow 1️⃣65", "pow exponent must be at most 64, found 65", width: 2),
        .init("input 2\npow 1️⃣0.5", "pow exponent must be a whole number of at least 1, found '0.5'", width: 3),
        .init("input 2\nfc 2->1 init uniform 1️⃣-1,1", "expected '(' after uniform, found '-1'", width: 2),
        .init("input 2\nfc 2->1 init uniform(-1 1️⃣1)", "expected ',', found '1'"),
        .init("input 2\nfc 2->1 init uniform(-1,1️⃣", "expected an upper bound, found the end of the file"),
        .init("input 2\nfc 2->1 init normal(0,1️⃣-1)", "the standard deviation must not be negative, found -1", width: 2),
        .init("input 2\nfc 2->1 init uniform(1️⃣1,-1)", "uniform bounds must be in order (low, high), found (1, -1)", width: 4),
        .init("input 2\nfc 2->1 init 1️⃣", "expected an initializer (uniform, normal, xavier, he, zeros), found the end of the file"),
    ]

    static let sizesCases: [ExpectedError] = [
        .init("input 2\nfc 1️⃣99999999999999999999->1", "fc size 99999999999999999999 is too large (the limit is 2147483647)", width: 20),
        .init("input 2\nfc 2->1️⃣2147483648", "fc output size 2147483648 is too large (the limit is 2147483647)", width: 10),
        .init("input 1️⃣4294967296", "input size 4294967296 is too large (the limit is 2147483647)", width: 10),
        .init("fc 1️⃣0->0", "fc size must be at least 1, found 0"),
        .init("input 2\nfc 2->1️⃣0", "fc output size must be at least 1, found 0"),
        .init("input 1️⃣0", "input size must be at least 1, found 0"),
        .init("input 1x1️⃣0x28", "input size must be at least 1, found 0"),
        .init("fc 1️⃣-2->3", "fc size must be a whole number of at least 1, found '-2'", width: 2),
        .init("input 1️⃣-1", "input size must be a whole number of at least 1, found '-1'", width: 2),
        .init("input 1️⃣2.5", "input size must be a whole number of at least 1, found '2.5'", width: 3),
        .init("input 1️⃣1x2x3x4", "input takes at most 3 dimensions (channels x height x width), found 4", width: 7),
        .init("input 1x8x8\nconv 1->2 1️⃣-3", "conv kernel size must be a whole number of at least 1, found '-3'", width: 2),
        .init("input 1x8x8\nconv 1->2 3 pad 1️⃣-1", "conv padding must be a whole number of at least 0, found '-1'", width: 2),
        .init("input 1x8x8\nconv 1->2 3 stride 1️⃣0", "conv stride must be at least 1, found 0"),
        .init("input 1x8x8\nmaxpool 1️⃣0", "maxpool window size must be at least 1, found 0"),
        .init("input 1x8x8\navgpool 2 stride 1️⃣0", "avgpool stride must be at least 1, found 0"),
        .init("input 1x8x8\nconv 1->2 1️⃣\n", "expected conv kernel size, found the end of the line"),
    ]

    static let syntaxCases: [ExpectedError] = [
        .init("input 2\nfc 2->1️⃣\nloss mse", "expected fc output size, found the end of the line"),
        .init("input 2\nfc 2->1️⃣;loss mse", "expected fc output size, found ';'"),
        .init("input 2\nfc 2->1️⃣", "expected fc output size, found the end of the file"),
        .init("input 2\nfc 1️⃣->3", "expected fc size, found '->'", width: 2),
        .init("input 2\nfc 2 1️⃣3", "expected one of 'nobias', 'init' after fc, found '3'"),
        .init("input 2\nfc 2->1 1️⃣-> 3", "expected one of 'nobias', 'init' after fc, found '->'", width: 2),
        .init("input 2\ntanh 1️⃣2", "tanh takes no argument, found '2'"),
        .init("input 2\nleakyrelu 0.1 1️⃣2", "expected ';' or a new line after the statement, found '2'"),
        .init("input 2\npow 2 1️⃣x", "expected ';' or a new line after the statement, found 'x'"),
        .init("input 2\npow1️⃣", "expected pow exponent after 'pow'"),
        .init("input 2\npow 1️⃣relu", "expected pow exponent, found 'relu'", width: 4),
        .init("input 2\nleakyrelu 1️⃣1e999", "leakyrelu slope must be a finite number, found '1e999'", width: 5),
        .init("input 2\ngelu 1️⃣0.5", "gelu takes no argument, found '0.5'", width: 3),
        .init("input 2\nflatten 1️⃣now", "expected ';' or a new line after the statement, found 'now'", width: 3),
        .init("input 2\n1️⃣\"fc 2->1\"", "expected a statement (a layer, an activation, 'loss', 'data' or 'train'), found a string", width: 9),
        .init("input 2\n1️⃣2->1", "expected a statement (a layer, an activation, 'loss', 'data' or 'train'), found '2'"),
        .init("input 2\nfc 2->1\nloss1️⃣", "expected a loss (mse, sse, sum, crossentropy, bce, nll), found the end of the file"),
        .init("data 1️⃣", "expected a file name in double quotes, found the end of the file"),
        .init("data 1️⃣xor_csv", "expected a file name in double quotes, found 'xor_csv'", width: 7),
        .init("data test 1️⃣\n", "expected a file name in double quotes, found the end of the line"),
        .init("data 1️⃣\"\"", "the data file name is empty", width: 2),
        .init("input 2\ndata 1️⃣\"data/xor.csv\ntrain sgd", "unterminated string; add a closing '\"'", width: 13),
        .init("data 1️⃣\"abc", "unterminated string; add a closing '\"'", width: 4),
        .init("input 2 1️⃣@\nfc 2->1", "unexpected character '@'"),
        .init("input 2\nfc 2->1 1️⃣$%&", "unexpected character '$'", width: 3),
        .init("input 2\n1️⃣€ fc 2->1", "unexpected character '€'"),
        .init("input 2\nfc 2->1 1️⃣..", "unexpected character '.'", width: 2),
        .init("input 2\nrelu 1️⃣\u{7}", "unexpected byte 0x7"),
    ]

    @Test(arguments: unknownWordsCases) func unknownWordsGetSuggestions(_ e: ExpectedError) { expectSingleParseError(e) }
    @Test(arguments: malformedValuesCases) func malformedValues(_ e: ExpectedError) { expectSingleParseError(e) }
    @Test(arguments: sizesCases) func sizes(_ e: ExpectedError) { expectSingleParseError(e) }
    @Test(arguments: syntaxCases) func syntax(_ e: ExpectedError) { expectSingleParseError(e) }

    @Test func duplicateTrainKeyHasANoteAtTheFirst() throws {
        let marked = Marked("input 2\nfc 2->1\ntrain sgd 2️⃣lr 0.1 epochs 3 1️⃣lr 0.2")
        let error = try #require(parseErrors(marked.text))
        #expect(error.rendered.withoutDiagnosticIDs == marked.error("1️⃣", "'lr' is given twice", width: 2) + marked.note("2️⃣", "first given here"))
    }

    @Test func invalidUTF8() throws {
        let bytes = Array("input 2\nfc 2->1 ".utf8) + [0xFF, 0xFE] + Array(" nobias\nloss mse\n".utf8)
        let source = SourceFile(path: "m.nn", bytes: bytes)
        do {
            _ = try parseModel(source)
            Issue.record("invalid UTF-8 was accepted")
        } catch {
            #expect(error.rendered.withoutDiagnosticIDs == "m.nn:2:9: error: unexpected byte 0xFF\nfc 2->1 \u{FFFD}\u{FFFD} nobias\n        ^~\n")
        }
    }

    @Test func truncatedMultiByteCharacter() throws {
        let bytes = Array("input 2 ".utf8) + [0xE2, 0x82] + Array("\nfc 2->1\n".utf8)
        do {
            _ = try parseModel(SourceFile(path: "m.nn", bytes: bytes))
            Issue.record("a truncated UTF-8 sequence was accepted")
        } catch {
            #expect(error.diagnostics.count == 1)
            #expect(error.rendered.withoutDiagnosticIDs.hasPrefix("m.nn:1:9: error: unexpected byte 0xE2\n"))
        }
    }

    @Test func columnsCountCharactersNotBytes() throws {
        let marked = Marked("input 2 # größe ✓\nfc 2->3 # é\n1️⃣fx 2->1")
        let error = try #require(parseErrors(marked.text))
        #expect(error.rendered.withoutDiagnosticIDs == marked.error("1️⃣", "unknown statement 'fx'; did you mean 'fc'?", width: 2))
        let marked2 = Marked("data \"ü\" ; 1️⃣qqq")
        #expect(parseErrors(marked2.text)?.rendered.withoutDiagnosticIDs == marked2.error("1️⃣", "unknown statement 'qqq'", width: 3))
    }

    @Test func tabsAreShownAsSpacesUnderTheCaret() throws {
        let error = try #require(parseErrors("\tfx 2->1"))
        #expect(error.rendered.withoutDiagnosticIDs == "m.nn:1:2: error: unknown statement 'fx'; did you mean 'fc'?\n fx 2->1\n ^~\n")
    }

    /// Every independent error of a file is reported, in file order.
    @Test func allIndependentErrorsAreReportedInOrder() throws {
        let marked = Marked("""
        input 2 1️⃣@
        2️⃣fx 2->3
        tanh
        fc 3->1 init 3️⃣glorot
        loss 4️⃣mes
        data 5️⃣"data.csv
        train sgd lr 6️⃣abc epochs 7️⃣1.5
        8️⃣tanhh
        """)
        let error = try #require(parseErrors(marked.text))
        let expected = [
            marked.error("1️⃣", "unexpected character '@'"),
            marked.error("2️⃣", "unknown statement 'fx'; did you mean 'fc'?", width: 2),
            marked.error("3️⃣", "unknown initializer 'glorot'", width: 6),
            marked.error("4️⃣", "unknown loss 'mes'; did you mean 'mse'?", width: 3),
            marked.error("5️⃣", "unterminated string; add a closing '\"'", width: 9),
            marked.error("6️⃣", "expected a value for 'lr', found 'abc'", width: 3),
            marked.error("8️⃣", "unknown statement 'tanhh'; did you mean 'tanh'?", width: 5),
        ]
        // One error per statement: the statement is skipped after its first error ('epochs 1.5' is not reached).
        #expect(error.diagnostics.count == expected.count)
        #expect(error.diagnostics.map { $0.render(in: error.source).withoutDiagnosticIDs } == expected)
        #expect(error.rendered.withoutDiagnosticIDs == expected.joined())
    }

    @Test func errorsOnOneLineSeparatedBySemicolons() throws {
        let marked = Marked("input 2; 1️⃣fx 2->1; 2️⃣tanhh; loss 3️⃣mes")
        let error = try #require(parseErrors(marked.text))
        #expect(error.diagnostics.map(\.message) == ["unknown statement 'fx'; did you mean 'fc'?",
                                                     "unknown statement 'tanhh'; did you mean 'tanh'?",
                                                     "unknown loss 'mes'; did you mean 'mse'?"])
        let source = error.source
        #expect(error.diagnostics.map { source.lineAndColumn(of: $0.range.start).column } == [marked["1️⃣"].column, marked["2️⃣"].column, marked["3️⃣"].column])
    }

    @Test(arguments: [40, 1000, 3000])
    func longLinesAreCutAroundTheColumn(_ repeats: Int) throws {
        // Long lines also with multi-byte characters before the error (columns count characters).
        let prefix = repeats > 40 ? "input 2; data \"é✓\"; " : "input 2; "
        let padding = String(repeating: "relu; ", count: repeats)
        let error = try #require(parseErrors(prefix + padding + "fx 2->1"))
        let lines = error.rendered.withoutDiagnosticIDs.split(separator: "\n", omittingEmptySubsequences: false)
        let column = prefix.unicodeScalars.count + 6 * repeats + 1
        #expect(lines[0] == "m.nn:1:\(column): error: unknown statement 'fx'; did you mean 'fc'?")
        #expect(lines[1].hasPrefix("...") && lines[1].hasSuffix("fx 2->1"))
        #expect(lines[1].count <= 130)
        // The caret is under the 'fx' of the cut line.
        let caret = try #require(lines[2].firstIndex(of: "^"))
        let caretColumn = lines[2].distance(from: lines[2].startIndex, to: caret)
        #expect(Array(lines[1])[caretColumn...].starts(with: "fx"))
        #expect(lines[2].hasSuffix("^~"))
    }
}

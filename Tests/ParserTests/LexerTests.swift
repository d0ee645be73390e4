import Testing
@testable import Parser

func tokens(_ text: String) -> (kinds: [TokenKind], texts: [String], diagnostics: [Diagnostic]) {
    var lexer = Lexer(source: SourceFile(path: "m.nn", text: text))
    let tokens = lexer.tokenize()
    return (tokens.map(\.kind), tokens.map(\.text), lexer.diagnostics)
}

@Suite struct LexerTests {
    @Test(arguments: [
        ("3", TokenKind.integer), ("0", .integer), ("007", .integer),
        ("0.1", .number), ("-1", .number), ("+2", .number), ("1e-3", .number), ("1E+3", .number), ("1e3", .number),
        (".5", .number), ("-.5", .number), ("2.", .number), ("-0.25e-2", .number),
    ])
    func numbers(_ text: String, _ kind: TokenKind) {
        let lexed = tokens(text)
        #expect(lexed.kinds == [kind, .end])
        #expect(lexed.texts.first == text)
        #expect(lexed.diagnostics.isEmpty)
    }

    @Test func numbersHaveTheirValues() throws {
        let parsed = try statements("train sgd lr 1e-3 momentum .5 decay 2.5E-1")
        guard case .train(let spec) = parsed[0].kind else { Issue.record("not train"); return }
        #expect(spec.options.map(\.value) == [0.001, 0.5, 0.25])
    }

    @Test func dimensions() {
        #expect(tokens("1x28x28").kinds == [.integer, .times, .integer, .times, .integer, .end])
        #expect(tokens("3 x 3").kinds == [.integer, .times, .integer, .end])
        #expect(tokens("3xy").kinds == [.integer, .word, .end])
        #expect(tokens("3x").kinds == [.integer, .times, .end])
        #expect(tokens("xavier x").kinds == [.word, .times, .end])
        #expect(tokens("2->3").kinds == [.integer, .arrow, .integer, .end])
        #expect(tokens("uniform(-1,1)").kinds == [.word, .leftParen, .number, .comma, .integer, .rightParen, .end])
    }

    @Test func separatorsAndComments() {
        #expect(tokens("a;b\nc # d ; e\n").kinds == [.word, .separator, .word, .separator, .word, .separator, .end])
        // A run of separators is one token.
        #expect(tokens("a\n\n;\n b").kinds == [.word, .separator, .word, .end])
        #expect(tokens("# only a comment").kinds == [.end])
    }

    @Test func wordsWithDigitsAndUnderscores() {
        #expect(tokens("beta1 leaky_relu2").texts == ["beta1", "leaky_relu2", ""])
    }

    /// Two points are not a number: before the fix this produced an empty token forever (a hang).
    @Test func dotsAreJunkNotAnEmptyNumber() {
        let lexed = tokens("fc 2->1 ..")
        #expect(lexed.kinds == [.word, .integer, .arrow, .integer, .end])
        #expect(lexed.diagnostics.map(\.message) == ["unexpected character '.'"])
        #expect(lexed.diagnostics.first?.range == SourceRange(start: 8, end: 10))
        #expect(tokens("5..").kinds == [.integer, .end])
        #expect(tokens("-.").kinds == [.end])
        #expect(tokens("+.y").kinds == [.word, .end])
    }
}

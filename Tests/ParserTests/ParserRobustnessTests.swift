import Foundation
import Testing
import TestSupport
@testable import Parser
import IR

/// Checks what must hold for any input: tokens advance, diagnostics point inside the file and render.
func checkInvariants(_ source: SourceFile, sourceLocation: SourceLocation = #_sourceLocation) {
    var lexer = Lexer(source: source)
    let tokens = lexer.tokenize()
    var previousEnd = 0
    for token in tokens.dropLast() {
        if token.range.start < previousEnd || token.range.end <= token.range.start {
            Issue.record("bad token range \(token.range) after \(previousEnd) in \(Array(source.bytes.prefix(200)))", sourceLocation: sourceLocation)
            return
        }
        previousEnd = token.range.end
    }
    #expect(tokens.last?.kind == .end, sourceLocation: sourceLocation)
    do {
        _ = try parseModel(source)
    } catch {
        #expect(!error.diagnostics.isEmpty, sourceLocation: sourceLocation)
        for diagnostic in error.diagnostics {
            #expect(diagnostic.range.start >= 0 && diagnostic.range.end <= source.bytes.count, sourceLocation: sourceLocation)
            let rendered = diagnostic.render(in: source)
            #expect(rendered.hasPrefix("\(source.path):"), sourceLocation: sourceLocation)
            #expect(diagnostic.code != nil && rendered.contains(": error[\(diagnostic.code?.rawValue ?? "")]: "), sourceLocation: sourceLocation)
        }
    }
}

@Suite("Parser robustness: any bytes end in an AST or diagnostics")
struct ParserRobustnessTests {
    static let alphabet: [[UInt8]] = [
        "input", "fc", "conv", "maxpool", "avgpool", "flatten", "dropout", "tanh", "relu", "leakyrelu", "pow", "loss", "mse",
        "crossentropy", "data", "test", "train", "sgd", "adam", "lr", "epochs", "shuffle", "on", "init", "uniform", "normal",
        "xavier", "nobias", "stride", "pad", "1", "0", "-1", "2.5", "1e-3", "1e999", "99999999999999999999", "3x3", "1x28x28",
        "->", "-", ">", "x", "(", ")", ",", ";", "\n", "\r\n", "\"", "\"a.csv\"", "#", " ", "\t", ".", "..", "+", "e", "E",
        "\\", "é", "✓",
    ].map { Array($0.utf8) } + [[0xFF], [0xC3], [0xE2, 0x82], [0xF0, 0x9F, 0x98], [0x00], [0x7F], [0xED, 0xA0, 0x80]]

    @Test func randomTokenSoup() {
        var random = SplitMix64(seed: 1)
        for _ in 0..<2000 {
            var bytes: [UInt8] = []
            for _ in 0..<Int.random(in: 0..<40, using: &random) {
                bytes += ParserRobustnessTests.alphabet.randomElement(using: &random)!
                if Bool.random(using: &random) { bytes.append(UInt8(ascii: " ")) }
            }
            checkInvariants(SourceFile(path: "soup.nn", bytes: bytes))
        }
    }

    @Test func randomBytes() {
        var random = SplitMix64(seed: 2)
        for _ in 0..<1000 {
            let bytes = (0..<Int.random(in: 0..<64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            checkInvariants(SourceFile(path: "bytes.nn", bytes: bytes))
        }
    }

    @Test func everyPrefixOfAModel() {
        let model = Array("input 1x28x28 # c\nconv 1->8 3x3 stride 2 pad 1 nobias init uniform(-1e-2,1E-2)\nmaxpool 2 stride 1; relu\nflatten\ndropout 0.5\nfc 10 init he\nleakyrelu 0.1\nloss crossentropy\ndata test \"t\\\".csv\"\ntrain adam lr 1e-3 beta1 0.9 shuffle off\n".utf8)
        for end in 0...model.count { checkInvariants(SourceFile(path: "prefix.nn", bytes: Array(model[..<end]))) }
    }

    /// 10 MB of one word: one short diagnostic, quickly, without a 10 MB message.
    @Test func tenMegabytesOfOneToken() throws {
        for (name, byte) in [("word", UInt8(ascii: "a")), ("number", UInt8(ascii: "9"))] {
            let bytes = [UInt8](repeating: byte, count: 10 << 20)
            let clock = ContinuousClock()
            var rendered = ""
            let elapsed = clock.measure {
                do {
                    _ = try parseModel(SourceFile(path: "big.nn", bytes: bytes))
                } catch let error as DiagnosticError {
                    rendered = error.rendered.withoutDiagnosticIDs
                    #expect(error.diagnostics.count == 1)
                } catch {
                    Issue.record("unexpected \(error)")
                }
            }
            print("10 MB of one \(name): \(elapsed)")
            #expect(rendered.hasPrefix("big.nn:1:1: error: "))
            #expect(rendered.utf8.count < 1000, "the diagnostic should not quote 10 MB: \(rendered.utf8.count) bytes")
        }
        let error = try #require(parseErrors("fc " + String(repeating: "9", count: 100)))
        #expect(error.diagnostics.first?.message == "fc size '" + String(repeating: "9", count: 40) + "…' is too large (the limit is 2147483647)")
    }

    @Test func tenMegabytesOfNewlines() throws {
        let bytes = [UInt8](repeating: UInt8(ascii: "\n"), count: 10 << 20) + Array("fx 2->1\n".utf8)
        let clock = ContinuousClock()
        var rendered = ""
        let elapsed = clock.measure {
            do { _ = try parseModel(SourceFile(path: "lines.nn", bytes: bytes)) } catch let error as DiagnosticError { rendered = error.rendered.withoutDiagnosticIDs } catch { Issue.record("unexpected \(error)") }
        }
        print("10 MB of newlines: \(elapsed)")
        #expect(rendered == "lines.nn:10485761:1: error: unknown statement 'fx'; did you mean 'fc'?\nfx 2->1\n^~\n")
    }
}

import Foundation
import Testing
import TestSupport
@testable import IR
import Parser

/// Graph statements: names, add, concat, from, and their errors and warnings, each at its exact place.
@Suite("Graph diagnostics: names, joins, and the shapes they need")
struct GraphDiagnosticTests {
    /// Warnings of a model that compiles, rendered.
    static func warnings(_ text: String) throws -> String {
        let source = SourceFile(path: "m.nn", text: text)
        return try lower(try parseModel(source)).warnings.map { $0.render(in: source) }.joined()
    }

    @Test func unknownNameSuggestsTheClosest() throws {
        let m = Marked("input 2\nfc 2->2 as skip\nrelu\nadd 1️⃣skp\nloss mse")
        #expect(try loweringErrors(m.text).rendered == m.error("1️⃣", "unknown name 'skp'; did you mean 'skip'?", width: 3)
            .replacingFirst("error:", with: "error[E033]:"))
        let none = Marked("input 2\nfc 2->2\nfrom 1️⃣a")
        #expect(try loweringErrors(none.text).rendered.withoutDiagnosticIDs
                == none.error("1️⃣", "unknown name 'a'; name a layer's output with 'as a' first"))
        let list = Marked("input 2\nfc 2->2 as first\nfc 2->2 as second\nconcat 1️⃣zzz")
        #expect(try loweringErrors(list.text).rendered.withoutDiagnosticIDs
                == list.error("1️⃣", "unknown name 'zzz' (defined so far: input, first, second)", width: 3))
    }

    @Test func nameDefinedTwiceHasANoteAtTheFirst() throws {
        let m = Marked("input 2\nfc 2->2 as 2️⃣h\nrelu as 1️⃣h\nadd h")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs
                == m.error("1️⃣", "'h' is defined twice") + m.note("2️⃣", "'h' is defined here"))
        // `input` names the input already, and is a keyword.
        let input = Marked("input 2\nfc 2->2 as 1️⃣input")
        #expect(try loweringErrors(input.text).rendered.withoutDiagnosticIDs
                == input.error("1️⃣", "'input' is a keyword and cannot name a value", width: 5))
    }

    @Test func keywordsAreNotNames() throws {
        for word in ["relu", "fc", "add", "pad", "as", "gelu"] {
            let m = Marked("input 2\nfc 2->2 as 1️⃣\(word)\nadd \(word)")
            #expect(try loweringErrors(m.text).diagnostics.first?.render(in: SourceFile(path: "m.nn", text: m.text)).withoutDiagnosticIDs
                    == m.error("1️⃣", "'\(word)' is a keyword and cannot name a value", width: word.count), "\(word)")
        }
    }

    @Test func addNeedsTheSameShape() throws {
        let m = Marked("input 1x8x8\nconv 1->4 3x3 pad 1 as 3️⃣a\n2️⃣maxpool 2x2\nadd 1️⃣a\nloss sum")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs
                == m.error("1️⃣", "add needs the same shape: the current value is 4x4x4 (from 'maxpool 2x2'), 'a' is 4x8x8 (from 'conv 1->4 3x3 pad 1 as a')")
                + m.note("2️⃣", "the previous layer is 'maxpool 2x2'") + m.note("3️⃣", "'a' is defined here"))
    }

    @Test func concatNeedsTheSameShapeButForChannels() throws {
        let m = Marked("input 1x8x8\nconv 1->4 3x3 pad 1 as 3️⃣a\n2️⃣conv 4->2 3x3\nconcat 1️⃣a")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs
                == m.error("1️⃣", "concat needs the same shape but for the channels: the current value is 2x6x6 (from 'conv 4->2 3x3'), 'a' is 4x8x8 (from 'conv 1->4 3x3 pad 1 as a')")
                + m.note("2️⃣", "the previous layer is 'conv 4->2 3x3'") + m.note("3️⃣", "'a' is defined here"))
        // Features with features, images with images.
        let flat = try lowered("input 3\nfc 3->4 as a\nfc 4->2\nconcat a\nloss mse")
        #expect(flat.outputShape == .batch(6))
        let images = try lowered("input 2x5x5\nconv 2->3 3x3 pad 1 as a\nconv 3->1 1x1\nconcat a\nflatten\nloss sum")
        #expect(images.layers.last { $0.statement == "concat a" }?.outputShape == Shape(batched: true, [4, 5, 5]))
    }

    @Test func asWithNothingToName() throws {
        let m = Marked("input 2\nfc 2->1\nloss mse 1️⃣as l")
        #expect(parseErrorsOf(m.text) == m.error("1️⃣", "'as' names a layer's output; a loss has none to name", width: 2))
        let missing = Marked("input 2\nfc 2->1 as1️⃣\n")
        #expect(parseErrorsOf(missing.text) == missing.error("1️⃣", "expected a name after 'as', found the end of the line"))
        let from = Marked("input 2\nfrom1️⃣")
        #expect(parseErrorsOf(from.text) == from.error("1️⃣", "expected a name after 'from', found the end of the file"))
    }

    @Test func convGroupsAndDilation() throws {
        let m = Marked("2️⃣input 3x8x8\nrelu\nconv 3->4 3x3 groups 1️⃣2")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs
                == m.error("1️⃣", "conv groups 2 must divide the input channels (3) and the output channels (4)") + m.note("2️⃣", "the previous layer is 'input 3x8x8'"))
        let d = Marked("2️⃣input 1x4x4\nconv 1->1 1️⃣3x3 dilation 2")
        #expect(try loweringErrors(d.text).rendered.withoutDiagnosticIDs
                == d.error("1️⃣", "conv kernel 3x3 dilated by 2 is larger than its input 4x4", width: 3) + d.note("2️⃣", "the previous layer is 'input 1x4x4'"))
        let pool = Marked("input 1x4x4\nmaxpool 3x3 pad 1️⃣2")
        #expect(try loweringErrors(pool.text).rendered.withoutDiagnosticIDs
                == pool.error("1️⃣", "maxpool padding 2 must be at most half the window 3x3"))
    }

    @Test func warningsForUnusedNamesAndValues() throws {
        let m = Marked("input 2\nfc 2->2 as 1️⃣a\nloss mse")
        #expect(try Self.warnings(m.text).withoutDiagnosticIDs
                == m.error("1️⃣", "'a' is never used; 'add', 'concat' or 'from' would use it").replacingFirst("error:", with: "warning:"))
        let dead = Marked("input 2\nfc 2->2 as a\n1️⃣relu\n2️⃣from a\nloss mse")
        #expect(try Self.warnings(dead.text).withoutDiagnosticIDs
                == dead.error("1️⃣", "the output of 'relu' is never used: 'from a' continues from another value", width: 4)
                    .replacingFirst("error:", with: "warning:") + dead.note("2️⃣", "'from' is here"))
        #expect(try Self.warnings("input 2\nfc 2->2 as a\nrelu\nadd a\nloss mse").isEmpty)
    }

    @Test func namedValuesLiveAsLongAsTheirUsers() throws {
        // The residual's input stays alive (not overwritten in place) until the add reads it.
        let model = try lowered("input 4\nfc 4->4 as a\nrelu\nfc 4->4\nrelu\nadd a\nloss mse")
        let plan = try Plan(graph: try model.graph.optimized(verify: true).graph, batch: 3)
        let add = try #require(plan.graph.nodes.firstIndex { $0.op == .add })
        let a = plan.graph.nodes[add].operands[1]
        let buffer = try #require(plan.buffers.first { $0.values.contains(a) })
        #expect(buffer.lastUse >= add)
        #expect(!plan.inPlace.contains(where: { plan.graph.nodes[$0].operands.contains(a) && $0 < add }))
    }
}

extension String {
    func replacingFirst(_ target: String, with replacement: String) -> String {
        guard let range = range(of: target) else { return self }
        return replacingCharacters(in: range, with: replacement)
    }
}

/// The rendered parse and name errors of a model, without ids.
func parseErrorsOf(_ text: String) -> String? {
    do {
        _ = try parseModel(SourceFile(path: "m.nn", text: text))
        return nil
    } catch {
        return error.rendered.withoutDiagnosticIDs
    }
}

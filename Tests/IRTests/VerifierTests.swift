import Testing
@testable import IR
import Parser

/// The verifier rejects malformed graphs, naming the op and the statement it came from.
@Suite struct VerifierTests {
    static func graph() throws -> Graph {
        let ast = try parseModel(SourceFile(path: "v.nn", text: "input 3\nfc 3->4\ntanh\nfc 4->2\nloss mse"))
        return try lower(ast).graph.differentiated()
    }

    /// The error, rendered with its place (the statement of the node that failed).
    static func rejection(_ graph: Graph) -> IRError? {
        do { try graph.verify(); return nil } catch { return error }
    }

    @Test func wellFormedGraphsPass() throws {
        let graph = try Self.graph()
        try graph.verify()
        try graph.optimized(verify: true).graph.verify()
    }

    /// A name given twice gets the first free suffix, a suffixed name given again a suffix of its own.
    @Test func valueNamesStayUnique() throws {
        var graph = Graph(dtype: .f32, source: nil)
        let names = ["a", "a", "a.2", "a", "b", "a.2"].map { name in
            let value = graph.newValue(name, .fixed(1))
            return graph[value].name
        }
        #expect(names == ["a", "a.2", "a.2.2", "a.3", "b", "a.2.3"])
        // Past the table's first growth, every name still found.
        for k in 0..<300 { _ = graph.newValue("v\(k % 150)", .fixed(1)) }
        #expect(Set(graph.values.map(\.name)).count == graph.values.count)
        #expect(graph.values.filter { $0.name.hasPrefix("v149") }.map(\.name) == ["v149", "v149.2"])
    }

    @Test func useBeforeDefinition() throws {
        var graph = try Self.graph()
        // Move the tanh before the matmul that feeds it.
        let tanh = try #require(graph.nodes.firstIndex { $0.op == .activation(.tanh) })
        graph.nodes.insert(graph.nodes.remove(at: tanh), at: 0)
        let error = try #require(Self.rejection(graph))
        #expect(error.message.hasPrefix("tanh uses %"))
        #expect(error.message.hasSuffix("before it is defined"))
        #expect(error.rendered.hasPrefix("v.nn:3:1: error[E031]: internal error: tanh uses"))
    }

    @Test func valueDefinedTwice() throws {
        var graph = try Self.graph()
        let tanh = try #require(graph.nodes.firstIndex { $0.op == .activation(.tanh) })
        graph.nodes.insert(graph.nodes[tanh], at: tanh + 1)
        #expect(Self.rejection(graph)?.message.hasSuffix("is defined twice") == true)
    }

    @Test func shapesThatBreakTheRule() throws {
        var graph = try Self.graph()
        let matmul = try #require(graph.nodes.firstIndex { $0.op == .matmul(transposeA: false, transposeB: false) })
        graph.nodes[matmul].op = .matmul(transposeA: false, transposeB: true)
        let error = try #require(Self.rejection(graph))
        #expect(error.message.contains("matmul"))
        #expect(error.location != nil)
        // A declared result shape other than the rule's.
        var other = try Self.graph()
        let tanh = try #require(other.nodes.firstIndex { $0.op == .activation(.tanh) })
        other.nodes[tanh].op = .sumAll
        #expect(Self.rejection(other)?.message.contains("declared shapes") == true)
    }

    @Test func sourcesTakeNoOperands() throws {
        var graph = try Self.graph()
        let parameter = try #require(graph.nodes.firstIndex { $0.op.isSource && $0.op != .input })
        graph.nodes[parameter].operands = [try #require(graph.input)]
        #expect(Self.rejection(graph)?.message.hasSuffix("is a source and takes no operands") == true)
    }

    @Test func rootsMustBeDefined() throws {
        var graph = try Self.graph()
        let loss = try #require(graph.loss)
        graph.nodes.removeAll { $0.results.contains(loss) }
        // The backward pass still reads the loss's operands, but nothing defines the loss now.
        #expect(Self.rejection(graph)?.message.contains("never defined") == true)
    }

    @Test func autodiffErrorsNameTheStatement() throws {
        var graph = try lower(try parseModel(SourceFile(path: "a.nn", text: "input 2\nfc 2->2\nloss mse"))).graph
        // An op with no gradient rule on the path to the loss.
        let matmul = try #require(graph.nodes.firstIndex { $0.op == .matmul(transposeA: false, transposeB: false) })
        graph.nodes[matmul].op = .dense(.identity, bias: false)
        do {
            _ = try graph.differentiated()
            Issue.record("autodiff accepted an op without a gradient rule")
        } catch let error as AutodiffError {
            #expect(error.rendered == "a.nn:2:1: error[E032]: no gradient rule for 'dense.nobias'\nfc 2->2\n^~~~~~~\n")
        }
    }
}

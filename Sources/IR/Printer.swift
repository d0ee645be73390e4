import Foundation
import Parser

extension Graph {
    /// The line-oriented, diffable text form:
    ///
    ///     %x  : f32[N,2]  = input
    ///     %w0 : f32[2,3]  = param fc1.weight  uniform(-0.5,0.5)
    ///     %h0 : f32[N,3]  = dense %x, %w0, %b0, tanh        # xor.nn:2
    public func printed() -> String {
        let parameterInit = Dictionary(parameters.map { ($0.value, $0.initializer) }, uniquingKeysWith: { a, _ in a })
        var rows: [(lhs: String, type: String, rhs: String, comment: String)] = []
        var lastPhase: Phase?
        for node in nodes {
            if node.phase != lastPhase, node.phase != .forward || lastPhase != nil {
                rows.append(("", "", "", "# \(node.phase.rawValue)"))
            }
            lastPhase = node.phase
            let lhs = node.results.map { "%" + self[$0].name }.joined(separator: ", ")
            let type = node.results.map { dtype.rawValue + self[$0].shape.description }.joined(separator: ", ")
            var rhs: String
            if case .parameter(let name) = node.op {
                rhs = "param \(name)"
                if let initializer = node.results.first.flatMap({ parameterInit[$0] }) { rhs += "  \(initializer)" }
            } else if case .state(let name) = node.op {
                rhs = "state \(name)"
            } else if case .reshape(let shape) = node.op {
                rhs = "reshape %\(self[node.operands[0]].name) to \(shape)"
            } else if case .dense(let f, let bias) = node.op {
                rhs = (bias ? "dense " : "dense.nobias ") + node.operands.map { "%" + self[$0].name }.joined(separator: ", ")
                if f != .identity { rhs += ", \(f)" }
            } else {
                rhs = node.op.name
                if !node.operands.isEmpty { rhs += " " + node.operands.map { "%" + self[$0].name }.joined(separator: ", ") }
            }
            var comment = ""
            if let location = node.location, let source {
                let file = source.path.split(separator: "/").last.map(String.init) ?? source.path
                comment = "# \(file):\(source.line(of: location.start))"
            }
            rows.append((lhs.isEmpty ? "" : lhs, type, rhs, comment))
        }
        let lhsWidth = rows.map { $0.lhs.count }.max() ?? 0
        let typeWidth = rows.map { $0.type.count }.max() ?? 0
        let rhsWidth = min(60, rows.map { $0.rhs.count }.max() ?? 0)
        var out = ""
        for row in rows {
            if row.lhs.isEmpty && row.type.isEmpty && row.rhs.isEmpty { out += row.comment + "\n"; continue }
            var line: String
            if row.lhs.isEmpty {
                line = String(repeating: " ", count: lhsWidth + typeWidth + 5) + "  " + row.rhs
            } else {
                line = row.lhs.padding(toLength: lhsWidth, withPad: " ", startingAt: 0) + " : "
                    + row.type.padding(toLength: typeWidth, withPad: " ", startingAt: 0) + " = " + row.rhs
            }
            if !row.comment.isEmpty {
                let target = lhsWidth + typeWidth + 6 + rhsWidth + 2
                line += String(repeating: " ", count: max(2, target - line.count)) + row.comment
            }
            out += line + "\n"
        }
        var roles: [String] = []
        if let loss { roles.append("loss %\(self[loss].name)") }
        if let output { roles.append("output %\(self[output].name)") }
        if !roles.isEmpty { out += "# " + roles.joined(separator: ", ") + "\n" }
        return out
    }

    /// Graphviz DOT: one box per node, edges labelled with shapes.
    public func dot(name: String = "nnc") -> String {
        func quote(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        var out = "digraph \(quote(name)) {\n  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n"
        let producer = producers()
        let colors: [Phase: String] = [.forward: "#dbeafe", .loss: "#fde68a", .backward: "#fecaca", .update: "#d1fae5"]
        for (index, node) in nodes.enumerated() {
            var label = node.op.name
            if case .parameter(let name) = node.op { label = name }
            if case .state(let name) = node.op { label = "state \(name)" }
            label += "\\n" + node.results.map { "%\(self[$0].name) \(self[$0].shape)" }.joined(separator: ", ")
            let style = node.operands.isEmpty ? ", shape=ellipse" : ""
            out += "  n\(index) [label=\(quote(label).replacingOccurrences(of: "\\\\n", with: "\\n")), style=filled, fillcolor=\(quote(colors[node.phase] ?? "white"))\(style)];\n"
        }
        for (index, node) in nodes.enumerated() {
            for operand in node.operands {
                if let from = producer[operand.index] {
                    out += "  n\(from) -> n\(index) [label=\(quote(self[operand].shape.description)), fontsize=8];\n"
                }
            }
        }
        return out + "}\n"
    }
}

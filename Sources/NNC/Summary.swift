import Foundation
import IR

/// The `nnc check` table, like Keras' `summary()`: each layer, its output shape, parameters and
/// FLOPs per sample, then the totals.
func summaryTable(_ model: LoweredModel, path: String) -> String {
    // A "from" column only for graphs (a layer fed by a named value: add, concat, or after from).
    let graphColumn = model.layers.contains { $0.source != nil }
    var rows: [[String]] = [["layer", "output shape", "params", "FLOPs/sample"] + (graphColumn ? ["from"] : [])]
    for layer in model.layers {
        rows.append([layer.statement, layer.outputShape == .scalar ? "scalar" : layer.outputShape.description,
                     grouped(layer.parameters), grouped(layer.flops)] + (graphColumn ? [layer.source ?? ""] : []))
    }
    let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
    func format(_ row: [String]) -> String {
        var line = row[0] + String(repeating: " ", count: widths[0] - row[0].count) + "  "
            + row[1] + String(repeating: " ", count: widths[1] - row[1].count) + "  "
            + String(repeating: " ", count: widths[2] - row[2].count) + row[2] + "  "
            + String(repeating: " ", count: widths[3] - row[3].count) + row[3]
        if row.count > 4 { line += "  " + row[4] }
        return line.trailingSpacesRemoved
    }
    let rule = String(repeating: "─", count: widths.reduce(0, +) + 2 * (widths.count - 1))
    var out = "model \(path)\n" + format(rows[0]) + "\n" + rule + "\n"
    for row in rows.dropFirst() { out += format(row) + "\n" }
    out += rule + "\n"
    out += "total: \(grouped(model.parameterCount)) parameters (\(bytesText(model.parameterCount * 4)) in f32)"
    if model.persistentStateCount > 0 {
        out += " trained, and \(grouped(model.persistentStateCount)) values of other persistent state (running statistics)"
    }
    out += ", \(grouped(model.flopsPerSample)) FLOPs per sample (forward)\n"
    if let loss = model.settings.loss { out += "loss: \(loss.rawValue)" } else { out += "loss: none (inference only)" }
    out += ", input \(model.inputShape), output \(model.outputShape)\n"
    return out
}

extension String {
    var trailingSpacesRemoved: String {
        var text = self
        while text.hasSuffix(" ") { text.removeLast() }
        return text
    }
}

/// 1234567 → "1,234,567"
func grouped(_ value: Int) -> String {
    let digits = String(abs(value))
    var out = ""
    for (i, c) in digits.enumerated() {
        if i > 0, (digits.count - i) % 3 == 0 { out += "," }
        out.append(c)
    }
    return (value < 0 ? "-" : "") + out
}

func bytesText(_ bytes: Int) -> String {
    if bytes >= 1 << 20 { return String(format: "%.1f MiB", Double(bytes) / Double(1 << 20)) }
    if bytes >= 1 << 10 { return String(format: "%.1f KiB", Double(bytes) / Double(1 << 10)) }
    return "\(bytes) B"
}

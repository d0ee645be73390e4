import Foundation
import IR

/// The `nnc check` table, like Keras' `summary()`: each layer, its output shape, parameters and
/// FLOPs per sample, then the totals.
func summaryTable(_ model: LoweredModel, path: String) -> String {
    var rows: [[String]] = [["layer", "output shape", "params", "FLOPs/sample"]]
    for layer in model.layers {
        rows.append([layer.statement, layer.outputShape == .scalar ? "scalar" : layer.outputShape.description,
                     grouped(layer.parameters), grouped(layer.flops)])
    }
    let widths = (0..<4).map { column in rows.map { $0[column].count }.max() ?? 0 }
    func format(_ row: [String]) -> String {
        row[0].padding(toLength: widths[0], withPad: " ", startingAt: 0) + "  "
            + row[1].padding(toLength: widths[1], withPad: " ", startingAt: 0) + "  "
            + String(repeating: " ", count: widths[2] - row[2].count) + row[2] + "  "
            + String(repeating: " ", count: widths[3] - row[3].count) + row[3]
    }
    let rule = String(repeating: "─", count: widths.reduce(0, +) + 6)
    var out = "model \(path)\n" + format(rows[0]) + "\n" + rule + "\n"
    for row in rows.dropFirst() { out += format(row) + "\n" }
    out += rule + "\n"
    out += "total: \(grouped(model.parameterCount)) parameters (\(bytesText(model.parameterCount * 4)) in f32), \(grouped(model.flopsPerSample)) FLOPs per sample (forward)\n"
    if let loss = model.settings.loss { out += "loss: \(loss.rawValue)" } else { out += "loss: none (inference only)" }
    out += ", input \(model.inputShape), output \(model.outputShape)\n"
    return out
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

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
    // Each cell's width counted once, the table built as bytes (a model can have 100,000 layers).
    let counts = rows.map { $0.map(\.count) }
    let widths = rows[0].indices.map { column in counts.map { $0[column] }.max() ?? 0 }
    let rule = String(repeating: "─", count: widths.reduce(0, +) + 2 * (widths.count - 1))
    var bytes: [UInt8] = []
    bytes.reserveCapacity((rows.count + 4) * (widths.reduce(8, +) + 2 * widths.count))
    func spaces(_ n: Int) { if n > 0 { bytes.append(contentsOf: repeatElement(UInt8(ascii: " "), count: n)) } }
    func append(_ text: String) { bytes.append(contentsOf: text.utf8) }
    func append(_ row: [String], _ count: [Int]) {
        // Left, left, right, right, and the "from" column left (nothing, not spaces, when empty).
        append(row[0]); spaces(widths[0] - count[0] + 2)
        append(row[1]); spaces(widths[1] - count[1] + 2)
        spaces(widths[2] - count[2]); append(row[2]); spaces(2)
        spaces(widths[3] - count[3]); append(row[3])
        if row.count > 4, !row[4].isEmpty { spaces(2); append(row[4]) }
        bytes.append(UInt8(ascii: "\n"))
    }
    append("model \(path)\n")
    append(rows[0], counts[0])
    append(rule + "\n")
    for index in rows.indices.dropFirst() { append(rows[index], counts[index]) }
    var out = String(decoding: bytes, as: UTF8.self)
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

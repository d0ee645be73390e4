import Foundation
import IR

/// The training curves as an SVG: loss per epoch (train and test) and, for classifiers, accuracy.
func trainingPlot(_ history: [CompiledFile.Epoch], title: String) -> String {
    let width = 640.0, height = 360.0, left = 60.0, right = 20.0, top = 40.0, bottom = 40.0
    let hasAccuracy = history.contains { $0.accuracy != nil || $0.testAccuracy != nil }
    let panels = hasAccuracy ? 2 : 1
    let panelHeight = (height - top - bottom - Double(panels - 1) * 40) / Double(panels)
    func escape(_ s: String) -> String { s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;") }
    var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"Helvetica, sans-serif\" font-size=\"11\">\n"
    svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    svg += "<text x=\"\(Int(width / 2))\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">\(escape(title)): training history</text>\n"
    func panel(_ index: Int, _ label: String, _ series: [(String, String, [Double?])]) {
        let y0 = top + Double(index) * (panelHeight + 40)
        let values = series.flatMap { $0.2.compactMap { $0 } }.filter(\.isFinite)
        guard let low = values.min(), let high = values.max() else { return }
        let span = high > low ? high - low : 1
        let n = max(1, history.count - 1)
        func x(_ i: Int) -> Double { left + (width - left - right) * Double(i) / Double(n) }
        func y(_ v: Double) -> Double { y0 + panelHeight - (v - low) / span * panelHeight }
        svg += "<rect x=\"\(left)\" y=\"\(y0)\" width=\"\(width - left - right)\" height=\"\(panelHeight)\" fill=\"none\" stroke=\"#999\"/>\n"
        svg += "<text x=\"12\" y=\"\(y0 + panelHeight / 2)\" transform=\"rotate(-90 12 \(y0 + panelHeight / 2))\" text-anchor=\"middle\">\(label)</text>\n"
        svg += "<text x=\"\(left - 4)\" y=\"\(y0 + 10)\" text-anchor=\"end\">\(String(format: "%.4g", high))</text>\n"
        svg += "<text x=\"\(left - 4)\" y=\"\(y0 + panelHeight)\" text-anchor=\"end\">\(String(format: "%.4g", low))</text>\n"
        for (k, (name, color, points)) in series.enumerated() {
            let coordinates = points.enumerated().compactMap { i, v in v.flatMap { $0.isFinite ? String(format: "%.1f,%.1f", x(i), y($0)) : nil } }
            guard !coordinates.isEmpty else { continue }
            svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\" points=\"\(coordinates.joined(separator: " "))\"/>\n"
            svg += "<text x=\"\(width - right - 4)\" y=\"\(y0 + 14 + Double(k) * 14)\" text-anchor=\"end\" fill=\"\(color)\">\(name)</text>\n"
        }
    }
    panel(0, "loss", [("train loss", "#2563eb", history.map { $0.loss }), ("test loss", "#dc2626", history.map { $0.testLoss })])
    if hasAccuracy {
        panel(1, "accuracy", [("train accuracy", "#2563eb", history.map { $0.accuracy }), ("test accuracy", "#dc2626", history.map { $0.testAccuracy })])
    }
    svg += "<text x=\"\(Int(width / 2))\" y=\"\(Int(height - 10))\" text-anchor=\"middle\">epoch (1–\(history.count))</text>\n"
    return svg + "</svg>\n"
}

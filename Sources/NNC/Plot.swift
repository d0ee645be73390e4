import Foundation
import IR

/// The training curves as an SVG: loss per epoch (train, test, validation), accuracy for
/// classifiers, and the learning rate when it changes. Each panel has epoch ticks on its x axis, a
/// few round y ticks with light grid lines, and its legend to the right of the plot area, where it
/// cannot cover a line.
func trainingPlot(_ history: [CompiledFile.Epoch], title: String) -> String {
    let width = 760.0, left = 64.0, legendWidth = 150.0, right = legendWidth + 16, top = 40.0, panelHeight = 150.0, gap = 46.0
    let plotWidth = width - left - right
    let train = "#2563eb", test = "#dc2626", validation = "#16a34a"
    var panels: [(String, [(String, String, [Double?], Bool)])] = [
        ("loss", [("train loss", train, history.map { $0.loss }, false), ("test loss", test, history.map { $0.testLoss }, false),
                  ("validation loss", validation, history.map { $0.validationLoss }, true)]),
    ]
    if history.contains(where: { $0.accuracy != nil || $0.testAccuracy != nil || $0.validationAccuracy != nil }) {
        panels.append(("accuracy", [("train accuracy", train, history.map { $0.accuracy }, false),
                                    ("test accuracy", test, history.map { $0.testAccuracy }, false),
                                    ("validation accuracy", validation, history.map { $0.validationAccuracy }, true)]))
    }
    let rates = history.compactMap(\.learningRate)
    if let first = rates.first, rates.contains(where: { $0 != first }) {
        panels.append(("learning rate", [("learning rate", "#7c3aed", history.map { $0.learningRate }, false)]))
    }
    let height = top + Double(panels.count) * (panelHeight + gap) + 4
    func escape(_ s: String) -> String { s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;") }
    func number(_ v: Double) -> String { String(format: "%.1f", v) }
    var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"Helvetica, sans-serif\" font-size=\"11\">\n"
    svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    svg += "<text x=\"\(number(left + plotWidth / 2))\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">\(escape(title)): training history</text>\n"

    // Epochs 1…n on every panel's x axis; ticks at a round interval, at most about ten.
    let epochs = max(1, history.count)
    let epochStep = niceStep(Double(epochs) / 10, minimum: 1)
    func x(_ i: Int) -> Double { epochs == 1 ? left + plotWidth / 2 : left + plotWidth * Double(i) / Double(epochs - 1) }
    for (index, (label, series)) in panels.enumerated() {
        let y0 = top + Double(index) * (panelHeight + gap)
        let values = series.flatMap { $0.2.compactMap { $0 } }.filter(\.isFinite)
        guard var low = values.min(), var high = values.max() else { continue }
        if high == low { low -= max(abs(low) * 0.1, 1e-3); high += max(abs(high) * 0.1, 1e-3) }
        let step = niceStep((high - low) / 4)
        low = (low / step).rounded(.down) * step
        high = (high / step).rounded(.up) * step
        func y(_ v: Double) -> Double { y0 + panelHeight - (v - low) / (high - low) * panelHeight }
        // Grid and y ticks.
        var tick = low
        while tick <= high + step / 2 {
            svg += "<line x1=\"\(number(left))\" y1=\"\(number(y(tick)))\" x2=\"\(number(left + plotWidth))\" y2=\"\(number(y(tick)))\" stroke=\"#e5e7eb\"/>\n"
            svg += "<text x=\"\(number(left - 5))\" y=\"\(number(y(tick) + 4))\" text-anchor=\"end\" fill=\"#374151\">\(tickLabel(tick, step: step))</text>\n"
            tick += step
        }
        var epoch = 1
        while epoch <= epochs {
            let position = x(epoch - 1)
            if index > 0 || epochs > 1 {
                svg += "<line x1=\"\(number(position))\" y1=\"\(number(y0 + panelHeight))\" x2=\"\(number(position))\" y2=\"\(number(y0 + panelHeight + 4))\" stroke=\"#6b7280\"/>\n"
            }
            svg += "<text x=\"\(number(position))\" y=\"\(number(y0 + panelHeight + 16))\" text-anchor=\"middle\" fill=\"#374151\">\(epoch)</text>\n"
            epoch += Int(epochStep)
        }
        svg += "<rect x=\"\(number(left))\" y=\"\(number(y0))\" width=\"\(number(plotWidth))\" height=\"\(number(panelHeight))\" fill=\"none\" stroke=\"#9ca3af\"/>\n"
        svg += "<text x=\"14\" y=\"\(number(y0 + panelHeight / 2))\" transform=\"rotate(-90 14 \(number(y0 + panelHeight / 2)))\" text-anchor=\"middle\">\(label)</text>\n"
        svg += "<text x=\"\(number(left + plotWidth / 2))\" y=\"\(number(y0 + panelHeight + 32))\" text-anchor=\"middle\" fill=\"#374151\">epoch</text>\n"
        // Curves, and the legend beside the plot area.
        var row = 0
        for (name, color, points, dashed) in series {
            let coordinates = points.enumerated().compactMap { i, v in v.flatMap { $0.isFinite ? "\(number(x(i))),\(number(y($0)))" : nil } }
            guard !coordinates.isEmpty else { continue }
            let dash = dashed ? " stroke-dasharray=\"5 3\"" : ""
            if coordinates.count == 1 {
                let point = coordinates[0].split(separator: ",")
                svg += "<circle cx=\"\(point[0])\" cy=\"\(point[1])\" r=\"3\" fill=\"\(color)\"/>\n"
            } else {
                svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.8\"\(dash) points=\"\(coordinates.joined(separator: " "))\"/>\n"
            }
            let legendY = y0 + 12 + Double(row) * 16
            svg += "<line x1=\"\(number(left + plotWidth + 12))\" y1=\"\(number(legendY - 4))\" x2=\"\(number(left + plotWidth + 32))\" y2=\"\(number(legendY - 4))\" stroke=\"\(color)\" stroke-width=\"2\"\(dash)/>\n"
            svg += "<text x=\"\(number(left + plotWidth + 36))\" y=\"\(number(legendY))\" fill=\"\(color)\">\(name)</text>\n"
            row += 1
        }
    }
    return svg + "</svg>\n"
}

/// A round step (1, 2 or 5 × 10^k) near `rough`, at least `minimum`.
func niceStep(_ rough: Double, minimum: Double = 0) -> Double {
    guard rough.isFinite, rough > 0 else { return max(minimum, 1) }
    let magnitude = pow(10, (log10(rough)).rounded(.down))
    let fraction = rough / magnitude
    let nice: Double = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10
    return max(minimum, nice * magnitude)
}

/// A tick value with as many decimals as its step needs.
func tickLabel(_ value: Double, step: Double) -> String {
    if abs(value) < step / 2 { return "0" }
    if abs(value) >= 1e5 || abs(value) < 1e-3 { return String(format: "%.1e", value) }
    let decimals = max(0, Int((-log10(step)).rounded(.up)))
    return String(format: "%.\(decimals)f", value)
}

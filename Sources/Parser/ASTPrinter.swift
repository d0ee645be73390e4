extension ModelAST {
    /// One line per statement with its location and every field, for `nnc compile --emit ast`.
    public func printed() -> String {
        var out = "model \(source.path)\n"
        for statement in statements {
            let (line, column) = source.lineAndColumn(of: statement.range.start)
            out += "  \(line):\(column)  " + Self.describe(statement.kind) + (statement.name.map { " as \($0.text)" } ?? "") + "\n"
        }
        return out
    }

    static func describe(_ kind: StatementKind) -> String {
        func sized(_ s: Sized?) -> String { s.map { String($0.value) } ?? "inferred" }
        switch kind {
        case .input(let dims, _): return "Input(dims: \(dims.map(String.init).joined(separator: "x")))"
        case .fc(let fc):
            return "FullyConnected(inputs: \(sized(fc.inputs)), outputs: \(fc.outputs.value), bias: \(fc.bias), init: \(fc.initializer.map { "\($0)" } ?? "default"))"
        case .conv(let c):
            var text = "Convolution(inputs: \(sized(c.inputs)), outputs: \(c.outputs.value), kernel: \(c.kernelHeight.value)x\(c.kernelWidth.value), stride: \(c.stride.description), pad: \(c.padding.description)"
            if c.groups.value != 1 { text += ", groups: \(c.groups.value)" }
            if c.dilation.height.value != 1 || c.dilation.width.value != 1 { text += ", dilation: \(c.dilation.description)" }
            return text + ", bias: \(c.bias), init: \(c.initializer.map { "\($0)" } ?? "default"))"
        case .pool(let p):
            return "Pooling(kind: \(p.kind.rawValue), window: \(p.windowHeight.value)x\(p.windowWidth.value), stride: \(p.stride?.description ?? "window")"
                + (p.padding.height.value != 0 || p.padding.width.value != 0 ? ", pad: \(p.padding.description))" : ")")
        case .flatten: return "Flatten"
        case .dropout(let p, _): return "Dropout(probability: \(formatNumber(p)))"
        case .globalAveragePool: return "GlobalAveragePool"
        case .reshape(let dims, _): return "Reshape(dims: \(dims.map(String.init).joined(separator: "x")))"
        case .prelu(let channels): return "PReLU(slopes: \(channels.map { String($0.value) } ?? "1"))"
        case .pad(let p):
            let mode: String
            switch p.mode {
            case .constant(let value): mode = "constant \(formatNumber(value))"
            case .reflect: mode = "reflect"
            case .replicate: mode = "replicate"
            }
            return "Pad(top: \(p.begin.height.value), left: \(p.begin.width.value), bottom: \(p.end.height.value), right: \(p.end.width.value), mode: \(mode))"
        case .batchNorm(let b): return "BatchNorm(momentum: \(formatNumber(b.momentum)), eps: \(formatNumber(b.eps)))"
        case .join(let kind, let name): return "\(kind == .add ? "Add" : "Concat")(\(name.text))"
        case .from(let name): return "From(\(name.text))"
        case .activation(let a): return "Activation(" + ([a.word] + a.arguments.map(\.text)).joined(separator: " ") + ")"
        case .loss(let l): return "Loss(\(l.rawValue))"
        case .data(let test, let path, _): return "Data(\(test ? "test" : "train"): \"\(path)\")"
        case .train(let spec):
            return "Train(optimizer: \(spec.optimizer.rawValue)" + spec.options.map { ", \($0.key): \(TrainKeys.switches.contains($0.key) ? ($0.value != 0 ? "on" : "off") : formatNumber($0.value))" }.joined()
                + (spec.schedule.map { ", schedule: \($0.0)" } ?? "") + ")"
        }
    }
}

import IR

// PReLU and padding: the layers ONNX models bring (PyTorch's PReLU, ZeroPad2d, ConstantPad2d,
// ReflectionPad2d, ReplicationPad2d).

/// y = x for x > 0, a·x otherwise, with a the channel's slope (`shared`: one slope for all).
/// Layout [outer, channels, inner].
func preluForward<T: KernelScalar>(_ x: UnsafePointer<T>, slopes: UnsafePointer<T>, y: UnsafeMutablePointer<T>,
                                   outer: Int, channels: Int, inner: Int, shared: Bool) {
    for n in 0..<outer {
        for c in 0..<channels {
            let a = slopes[shared ? 0 : c], offset = (n * channels + c) * inner
            for i in 0..<inner {
                let v = x[offset + i]
                y[offset + i] = v > 0 ? v : a * v
            }
        }
    }
}

/// dx = dy where x > 0, a·dy elsewhere (PyTorch's rule, x = 0 included); d(a) = Σ dy·x over x ≤ 0,
/// per channel (or over everything for a shared slope), summed in Double.
func preluBackward<T: KernelScalar>(_ x: UnsafePointer<T>, slopes: UnsafePointer<T>, dy: UnsafePointer<T>, dx: UnsafeMutablePointer<T>,
                                    dSlopes: UnsafeMutablePointer<T>, outer: Int, channels: Int, inner: Int, shared: Bool) {
    var sums = [Double](repeating: 0, count: shared ? 1 : channels)
    for n in 0..<outer {
        for c in 0..<channels {
            let a = slopes[shared ? 0 : c], offset = (n * channels + c) * inner
            var sum = 0.0
            for i in 0..<inner {
                let v = x[offset + i], g = dy[offset + i]
                if v > 0 {
                    dx[offset + i] = g
                } else {
                    dx[offset + i] = a * g
                    sum += Double(g * v)
                }
            }
            sums[shared ? 0 : c] += sum
        }
    }
    for (index, sum) in sums.enumerated() { dSlopes[index] = T(sum) }
}

/// The source index along an axis of `size` for the padded position `i` (which may lie outside),
/// or nil where a constant fills it.
@inline(__always) func paddedSource(_ i: Int, size: Int, mode: PadMode) -> Int? {
    if i >= 0, i < size { return i }
    switch mode {
    case .constant: return nil
    case .reflect: return i < 0 ? -i : 2 * (size - 1) - i
    case .replicate: return i < 0 ? 0 : size - 1
    }
}

/// y = x with a border on each plane of [planes, H, W].
func padForward<T: KernelScalar>(_ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, planes: Int, height: Int, width: Int, spec: PadSpec) {
    let outHeight = height + spec.top + spec.bottom, outWidth = width + spec.left + spec.right
    var fill = T(0)
    if case .constant(let value) = spec.mode { fill = T(value) }
    for p in 0..<planes {
        let source = x + p * height * width, target = y + p * outHeight * outWidth
        for oy in 0..<outHeight {
            let row = target + oy * outWidth
            guard let iy = paddedSource(oy - spec.top, size: height, mode: spec.mode) else {
                for ox in 0..<outWidth { row[ox] = fill }
                continue
            }
            for ox in 0..<outWidth {
                row[ox] = paddedSource(ox - spec.left, size: width, mode: spec.mode).map { source[iy * width + $0] } ?? fill
            }
        }
    }
}

/// dx: each padded position's gradient added to the value it copies (constant borders drop theirs).
func padBackward<T: KernelScalar>(_ dy: UnsafePointer<T>, _ dx: UnsafeMutablePointer<T>, planes: Int, height: Int, width: Int, spec: PadSpec) {
    let outHeight = height + spec.top + spec.bottom, outWidth = width + spec.left + spec.right
    dx.update(repeating: 0, count: planes * height * width)
    for p in 0..<planes {
        let target = dx + p * height * width, source = dy + p * outHeight * outWidth
        for oy in 0..<outHeight {
            guard let iy = paddedSource(oy - spec.top, size: height, mode: spec.mode) else { continue }
            for ox in 0..<outWidth {
                if let ix = paddedSource(ox - spec.left, size: width, mode: spec.mode) { target[iy * width + ix] += source[oy * outWidth + ox] }
            }
        }
    }
}

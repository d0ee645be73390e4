import Testing
import IR
@testable import Runtime

/// GELU (tanh approximation) against PyTorch's `gelu(x, approximate='tanh')` and its autograd
/// derivative, computed by bench/reference/gelu_torch.py (torch 2.15.0+cu132), through the runtime's
/// element-wise kernels (25 points: three 8-lane vectors and a scalar tail).
@Suite struct GELUTests {
    static let xDouble: [Double] = [-8.0, -5.5, -3.0, -2.25, -1.5, -1.0, -0.75, -0.5, -0.1, -0.001, 0.0, 0.001, 0.1, 0.5, 0.75, 1.0, 1.5, 2.25, 3.0, 5.5, 8.0, 0.3333333333333333, -0.7071067811865476, 12.0, -12.0]
    static let yDouble: [Double] = [-0.0, -5.927640267522349e-09, -0.0036373920817729943, -0.02720132989728863, -0.10042842301976707, -0.1588080093917233, -0.17003944483437966, -0.15428599017485606, -0.04601724895456484, -0.000499601057786418, 0.0, 0.000500398942213582, 0.053982751045435165, 0.34571400982514394, 0.5799605551656203, 0.8411919906082768, 1.3995715769802328, 2.222798670102711, 2.996362607918227, 5.499999994072359, 8.0, 0.21018246132396926, -0.16958604445246214, 12.0, -0.0]
    static let dyDouble: [Double] = [0.0, -4.676552813680803e-08, -0.011584166630969648, -0.05991453451776224, -0.12771079315143308, -0.08296408384578258, 0.001061743862585618, 0.13263009646535764, 0.4204782107282433, 0.499202115706475, 0.5, 0.500797884293525, 0.5795217892717567, 0.8673699035346424, 0.9989382561374143, 1.0829640838457826, 1.127710793151433, 1.0599145345177623, 1.0115841666309695, 1.0000000467655281, 1.0, 0.756309741152593, 0.020315826197895126, 1.0, 0.0]
    static let xFloat: [Float] = [-8.0, -5.5, -3.0, -2.25, -1.5, -1.0, -0.75, -0.5, -0.10000000149011612, -0.0010000000474974513, 0.0, 0.0010000000474974513, 0.10000000149011612, 0.5, 0.75, 1.0, 1.5, 2.25, 3.0, 5.5, 8.0, 0.3333333432674408, -0.7071067690849304, 12.0, -12.0]
    static let yFloat: [Float] = [-0.0, -0.0, -0.0036374330520629883, -0.027201354503631592, -0.10042843222618103, -0.15880799293518066, -0.17003947496414185, -0.1542859971523285, -0.046017248183488846, -0.0004996010684408247, 0.0, 0.0005003989790566266, 0.053982753306627274, 0.3457140028476715, 0.5799605846405029, 0.8411920070648193, 1.3995715379714966, 2.2227985858917236, 2.9963626861572266, 5.5, 8.0, 0.21018247306346893, -0.16958603262901306, 12.0, -0.0]
    static let dyFloat: [Float] = [0.0, 0.0, -0.011584296822547913, -0.05991458147764206, -0.12771081924438477, -0.08296409249305725, 0.0010617375373840332, 0.1326301097869873, 0.4204781949520111, 0.4992021322250366, 0.5, 0.5007978677749634, 0.5795217752456665, 0.8673698902130127, 0.9989383220672607, 1.0829640626907349, 1.1277108192443848, 1.0599145889282227, 1.0115842819213867, 1.0, 1.0, 0.7563097476959229, 0.020315811038017273, 1.0, 0.0]

    static func check<T: KernelScalar>(_ x: [T], _ y: [T], _ dy: [T], tolerance: Double) {
        var out = [T](repeating: .nan, count: x.count), grad = [T](repeating: .nan, count: x.count)
        let ones = [T](repeating: 1, count: x.count)
        x.withUnsafeBufferPointer { px in
            out.withUnsafeMutableBufferPointer { activationForward(.gelu, px.baseAddress!, $0.baseAddress!, x.count) }
            ones.withUnsafeBufferPointer { pg in
                grad.withUnsafeMutableBufferPointer {
                    // The backward keeps the input x (gelu's derivative needs it).
                    activationBackward(.gelu, px.baseAddress!, pg.baseAddress!, $0.baseAddress!, x.count)
                }
            }
        }
        for i in x.indices {
            #expect(abs(Double(out[i]) - Double(y[i])) <= tolerance * (1 + abs(Double(y[i]))), "gelu(\(x[i])) = \(out[i]), PyTorch \(y[i])")
            #expect(abs(Double(grad[i]) - Double(dy[i])) <= tolerance * (1 + abs(Double(dy[i]))), "gelu'(\(x[i])) = \(grad[i]), PyTorch \(dy[i])")
        }
    }

    @Test func matchesPyTorchInF64() { Self.check(Self.xDouble, Self.yDouble, Self.dyDouble, tolerance: 1e-15) }
    @Test func matchesPyTorchInF32() { Self.check(Self.xFloat, Self.yFloat, Self.dyFloat, tolerance: 1e-6) }

    /// The derivative is taken from the input: fed the output instead, it would be wrong.
    @Test func derivativeNeedsTheInput() {
        #expect(!ActivationFunction.gelu.derivativeFromOutput)
        #expect(!ActivationFunction.gelu.backwardFusable)
        #expect(ActivationFunction.gelu.epilogueFusable)
        let x = 0.75, y = ActivationFunction.gelu.apply(x)
        #expect(abs(ActivationFunction.gelu.derivative(kept: x) - Self.dyDouble[14]) < 1e-15)
        #expect(abs(ActivationFunction.gelu.derivative(kept: y) - Self.dyDouble[14]) > 1e-3)
    }
}

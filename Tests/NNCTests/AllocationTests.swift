import AllocationCounter
import Foundation
import Testing
@testable import NNC
@testable import IR
@testable import Runtime
import Parser

/// Running a plan allocates nothing: after the first steps, many training steps make no malloc
/// call on the thread that runs them (the interpreter loop and every kernel it calls; the GEMM's
/// worker threads use scratch buffers allocated when the context is made).
@Suite(.serialized, .enabled(if: nnc_allocation_counting() != 0, "under a sanitizer, malloc is the sanitizer's and is not counted"))
struct AllocationTests {
    func stepsAllocate(_ text: String, batch: Int, threads: Int, steps: Int = 200, adam: Bool = false) throws -> UInt {
        let program = try ModelProgram.compile(SourceFile(path: "m.nn", text: text))
        let graph = try program.trainingGraph(dtype: .f32, settings: { var s = TrainingSettings(); s.momentum = 0.9; if adam { s.optimizer = .adam }; return s }()).optimized().graph
        let plan = try Plan(graph: graph, batch: batch)
        let store = ParameterStore<Float>(graph: graph)
        let session = try Session<Float>(plan: plan, store: store, threads: threads)
        let executable = try session.executable(batch: batch)
        for _ in 0..<3 { session.run(executable) }
        let before = nnc_allocation_count()
        for _ in 0..<steps { session.run(executable) }
        return UInt(nnc_allocation_count() - before)
    }

    @Test func counterSeesAllocations() {
        let before = nnc_allocation_count()
        let array = [Int](repeating: 1, count: Int.random(in: 1000...2000))
        #expect(array.count > 0)
        #expect(nnc_allocation_count() > before)
    }

    @Test func xorStepAllocatesNothing() throws {
        #expect(try stepsAllocate("input 2\nfc 2->3\ntanh\nfc 3->1\ntanh\nloss mse", batch: 1, threads: 1) == 0)
    }

    @Test func mlpStepAllocatesNothingOnOneThread() throws {
        #expect(try stepsAllocate("input 64\nfc 64->128\nrelu\nfc 128->10\nloss crossentropy", batch: 64, threads: 1) == 0)
    }

    /// With two threads, parallel GEMMs (both the split and the shared-packing paths), convolutions
    /// and pooling hand their work to the worker without boxing a closure.
    @Test func stepsOnTwoThreadsAllocateNothing() throws {
        #expect(try stepsAllocate("input 64\nfc 64->128\nrelu\nfc 128->10\nloss crossentropy", batch: 64, threads: 2) == 0)
        #expect(try stepsAllocate("input 784\nfc 784->256\nrelu\nfc 256->10\nloss crossentropy", batch: 128, threads: 2, steps: 10) == 0)
        let cnn = "input 1x12x12\nconv 1->4 3x3 pad 1\nrelu\nmaxpool 2x2\nflatten\nfc 144->10\nloss crossentropy"
        #expect(try stepsAllocate(cnn, batch: 8, threads: 2) == 0)
        #expect(try stepsAllocate("input 64\nfc 64->512\nrelu\nfc 512->10\nloss crossentropy", batch: 64, threads: 2, adam: true) == 0)
    }
}

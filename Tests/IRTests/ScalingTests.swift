import Testing
@testable import IR
import Parser

/// Every stage is linear in the model's size: the steps the compiler takes (counted, not timed)
/// for a model twice as deep are twice as many. Quadratic stages were found before (the fusion
/// passes' blockers, the planner's sorted live list, searches by name).
@Suite struct ScalingTests {
    /// A deep model: `blocks` residual blocks of fc, batch norm, relu and an add, trained with momentum.
    static func deepModel(blocks: Int) -> String {
        var lines = ["input 8", "fc 8->8", "relu as r0"]
        for k in 1...blocks {
            lines += ["fc 8->8", "batchnorm", "tanh", "fc 8->8", "add r\(k - 1)", "relu as r\(k)"]
        }
        lines += ["fc 8->2", "loss crossentropy", "train sgd lr 0.1 momentum 0.9 batch 4"]
        return lines.joined(separator: "\n") + "\n"
    }

    /// A plain chain: `layers` fc and tanh pairs, trained with SGD (its backward pass leaves a hole in
    /// the arena per layer, which made the planner quadratic).
    static func chainModel(layers: Int) -> String {
        (["input 4"] + Array(repeating: "fc 4->4\ntanh", count: layers) + ["loss mse", "train sgd lr 0.1 batch 32"])
            .joined(separator: "\n") + "\n"
    }

    /// The steps of everything `nnc train` does before the first step: lower, differentiate, add the
    /// updates, run the passes, plan the memory.
    static func steps(blocks: Int) throws -> Int {
        try steps(deepModel(blocks: blocks))
    }

    static func steps(_ text: String) throws -> Int {
        let counter = WorkCounter()
        try WorkCounter.$current.withValue(counter) {
            let ast = try parseModel(SourceFile(path: "deep.nn", text: text))
            let model = try lower(ast, training: true)
            let training = try model.graph.differentiated().withUpdates(model.settings.training.update)
            let optimized = try training.optimized(recordLog: false).graph
            _ = try Plan(graph: optimized, batch: model.settings.training.batch ?? 4)
        }
        return counter.steps
    }

    @Test func compilingIsLinearInDepth() throws {
        let small = try Self.steps(blocks: 500), large = try Self.steps(blocks: 2000)
        #expect(small > 500 * 20)
        // Four times the blocks: four times the steps, give or take the fixed part.
        let ratio = Double(large) / Double(small)
        #expect(ratio > 3.6 && ratio < 4.4, "500 blocks: \(small) steps, 2000 blocks: \(large) steps")
    }

    @Test func compilingAChainIsLinearInDepth() throws {
        let small = try Self.steps(Self.chainModel(layers: 1000)), large = try Self.steps(Self.chainModel(layers: 4000))
        let ratio = Double(large) / Double(small)
        #expect(ratio > 3.6 && ratio < 4.4, "1000 layers: \(small) steps, 4000 layers: \(large) steps")
    }

    /// The planner's first fit over holes places every buffer where the plain first fit (sort the
    /// live buffers by offset, take the first gap) does.
    @Test(arguments: [(200, 60, 40, 15), (10, 3000, 2000, 400)])
    func firstFitMatchesTheSortedScan(sets: Int, maxBuffers: Int, positions: Int, maxLife: Int) {
        var seed: UInt64 = 12345
        func random(_ n: Int) -> Int {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Int((seed >> 33) % UInt64(n))
        }
        for _ in 0..<sets {
            var buffers: [Plan.Buffer] = (0..<(1 + random(maxBuffers))).map { index in
                let first = random(positions)
                return Plan.Buffer(values: [ValueID(index)], offset: -1, bytes: random(5) == 0 ? 0 : 64 * (1 + random(8)),
                                   firstUse: first, lastUse: first + random(maxLife))
            }
            buffers.sort { ($0.firstUse, $0.values[0].index) < ($1.firstUse, $1.values[0].index) }
            // The reference: the live buffers sorted by offset, the first gap that fits.
            var live: [(offset: Int, bytes: Int, lastUse: Int)] = []
            var expected: [Int] = [], arena = 0
            for buffer in buffers {
                live.removeAll { $0.lastUse < buffer.firstUse }
                live.sort { $0.offset < $1.offset }
                var offset = 0
                for block in live {
                    if block.offset - offset >= buffer.bytes { break }
                    offset = max(offset, block.offset + block.bytes)
                }
                expected.append(offset)
                live.append((offset, buffer.bytes, buffer.lastUse))
                arena = max(arena, offset + buffer.bytes)
            }
            let peak = Plan.placeFirstFit(&buffers)
            #expect(buffers.map(\.offset) == expected)
            #expect(peak == arena)
        }
    }
}

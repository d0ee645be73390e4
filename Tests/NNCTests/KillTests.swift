import Foundation
import Testing
import TestSupport
@testable import NNC
@testable import IR

/// SIGKILL while `nnc train` goes on training a compiled file in place, at 20 random moments: the
/// file always loads (the old run or the new one, never half of one), the next run removes the
/// temporary file a killed writer left, and training on from whatever survived ends where an
/// uninterrupted run does.
@Suite struct KillTests {
    @Test func killedRunsLeaveALoadableFileAndResumeExactly() throws {
        let products = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        guard let nnc = [products, products.deletingLastPathComponent()].map({ $0.appendingPathComponent("nnc").path })
            .first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            Issue.record("nnc was not built next to \(products.path)")
            return
        }
        let directory = try FrontEnd.scratch()
        let model = directory.appendingPathComponent("k.nn").path, data = directory.appendingPathComponent("k.csv").path
        try "input 8\nfc 8->32\ntanh\nfc 32->3\nloss crossentropy\ntrain sgd lr 0.05 momentum 0.9 epochs 40 batch 4 seed 2\n"
            .write(toFile: model, atomically: true, encoding: .utf8)
        var random = SplitMix64(seed: 5)
        let rows = (0..<400).map { i in ((0..<8).map { _ in String(Double(random.next() % 1000) / 1000) } + [String(i % 3)]).joined(separator: ",") }
        try rows.joined(separator: "\n").write(toFile: data, atomically: true, encoding: .utf8)

        // The reference: two runs of 40 epochs, uninterrupted.
        let file = directory.appendingPathComponent("k.nnc").path, reference = directory.appendingPathComponent("reference.nnc").path
        #expect(try runProcess(nnc, ["train", model, "--data", data, "-o", reference, "--threads", "1"]).status == 0)
        #expect(try runProcess(nnc, ["train", reference, "--data", data, "--threads", "1"]).status == 0)
        let expected = try CompiledFile.read(path: reference).checkpoint

        #expect(try runProcess(nnc, ["train", model, "--data", data, "-o", file, "--threads", "1"]).status == 0)
        let first = try CompiledFile.read(path: file).checkpoint
        var kills = 0
        for _ in 0..<20 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: nnc)
            process.arguments = ["train", file, "--data", data, "--threads", "1"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            usleep(UInt32(random.next() % 400_000))
            if process.isRunning { kill(process.processIdentifier, SIGKILL); kills += 1 }
            process.waitUntilExit()
            // Whatever happened, the file is a whole checkpoint: the first run's, or one more run on.
            let survived = try CompiledFile.read(path: file).checkpoint
            #expect(survived.epochsDone == first.epochsDone || survived.epochsDone == first.epochsDone + 40, "\(survived.epochsDone)")
            if survived.epochsDone != first.epochsDone {
                // A run finished before the kill: start over from the first run's file.
                try first.saveOver(file)
            }
        }
        #expect(kills > 0, "no run was killed")
        // The next run cleans up after the killed writers and ends where the uninterrupted one does.
        #expect(try runProcess(nnc, ["train", file, "--data", data, "--threads", "1"]).status == 0)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".tmp") }
        #expect(leftovers.isEmpty, "\(leftovers)")
        let resumed = try CompiledFile.read(path: file).checkpoint
        #expect(resumed.parameters == expected.parameters)
        #expect(resumed.epochsDone == expected.epochsDone)
    }
}

extension Checkpoint {
    /// Writes this checkpoint as a compiled file with the model of an existing one.
    func saveOver(_ path: String) throws {
        var file = try CompiledFile.read(path: path)
        file.checkpoint = self
        try file.write(to: path)
    }
}

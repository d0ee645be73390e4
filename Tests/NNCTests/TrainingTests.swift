import Foundation
import Testing
@testable import NNC
@testable import IR
@testable import Runtime
import Parser

/// A scratch directory for one test.
func temporaryDirectory() -> String {
    let path = NSTemporaryDirectory() + "nnc-tests-" + UUID().uuidString
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

@discardableResult
func nnc(_ arguments: String...) -> (status: Int32, output: String, errors: String) {
    let console = Console.capturing()
    let status = runCommandLine(arguments, console: console)
    return (status, console.output, console.errors)
}

/// `nnc train …` stopped as by Ctrl-C after `steps` steps.
func nnc(interruptingAfter steps: Int, _ arguments: String...) -> (status: Int32, output: String, errors: String) {
    let console = Console.capturing()
    console.interruptAfterSteps = steps
    let status = runCommandLine(arguments, console: console)
    return (status, console.output, console.errors)
}

func write(_ text: String, to path: String) {
    _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
}

/// 50 rows of three features and a class label (0, 1 or 2) in DIRECTORY/data.csv.
func writeClassifierData(in directory: String) {
    var csv = "a,b,c,label\n"
    var random = MT19937(seed: 3)
    for _ in 0..<50 {
        let a = random.uniform(-1, 1), b = random.uniform(-1, 1), c = random.uniform(-1, 1)
        csv += "\(a),\(b),\(c),\(a + b > 0 ? (c > 0 ? 2 : 1) : 0)\n"
    }
    write(csv, to: directory + "/data.csv")
}

@Suite(.serialized) struct TrainingTests {
    /// A small classifier with momentum, shuffling and dropout: everything resuming must restore.
    func classifier(in directory: String) -> String {
        writeClassifierData(in: directory)
        write("input 3\nfc 3->8\nrelu\ndropout 0.1\nfc 8->3\nloss crossentropy\ndata \"data.csv\"\ntrain sgd lr 0.1 momentum 0.9 batch 8 epochs 6 seed 4\n",
              to: directory + "/m.nn")
        return directory + "/m.nn"
    }

    @Test func interruptedRunResumesToTheSameParameters() throws {
        let directory = temporaryDirectory()
        let model = classifier(in: directory)
        let full = nnc("train", model, "-o", directory + "/full.nnc", "--threads", "1")
        #expect(full.status == 0, "\(full.errors)")
        let stopped = nnc(interruptingAfter: 17, "train", model, "-o", directory + "/checkpoint.nnc", "--threads", "1")
        #expect(stopped.status == 130)
        #expect(stopped.errors.contains("interrupted: wrote the checkpoint"))
        let checkpoint = try CompiledFile.read(path: directory + "/checkpoint.nnc")
        #expect(checkpoint.checkpoint.interruption != nil)
        let resumed = nnc("train", directory + "/checkpoint.nnc", "-o", directory + "/resumed.nnc", "--threads", "1")
        #expect(resumed.status == 0, "\(resumed.errors)")
        let a = try CompiledFile.read(path: directory + "/full.nnc"), b = try CompiledFile.read(path: directory + "/resumed.nnc")
        #expect(a.checkpoint.parameters == b.checkpoint.parameters)
        #expect(a.checkpoint.optimizerState == b.checkpoint.optimizerState)
        #expect(a.checkpoint.history.count == 6 && b.checkpoint.history.count == 6)
        #expect(a.checkpoint.history.last == b.checkpoint.history.last)
    }

    @Test func sameSeedSameThreadsIsBitIdentical() throws {
        let directory = temporaryDirectory()
        let model = classifier(in: directory)
        #expect(nnc("train", model, "-o", directory + "/a.nnc").status == 0)
        #expect(nnc("train", model, "-o", directory + "/b.nnc").status == 0)
        #expect(try CompiledFile.read(path: directory + "/a.nnc").checkpoint.parameters == CompiledFile.read(path: directory + "/b.nnc").checkpoint.parameters)
    }

    @Test func continuingACompiledFileTrainsMoreEpochs() throws {
        let directory = temporaryDirectory()
        let model = classifier(in: directory)
        #expect(nnc("train", model, "-o", directory + "/a.nnc", "--epochs", "2").status == 0)
        let more = nnc("train", directory + "/a.nnc", "--epochs", "3")
        #expect(more.status == 0, "\(more.errors)")
        #expect(more.output.contains("epoch 5/5"))
        #expect(try CompiledFile.read(path: directory + "/a.nnc").checkpoint.history.count == 5)
    }

    @Test func trainingPrintsEpochsAndSummaryAndWritesFiles() throws {
        let directory = temporaryDirectory()
        let model = classifier(in: directory)
        let run = nnc("train", model, "-o", directory + "/m.nnc", "--plot", directory + "/curves.svg", "--test-data", directory + "/data.csv")
        #expect(run.status == 0)
        #expect(run.output.contains("epoch 1/6: loss "))
        #expect(run.output.contains("test accuracy"))
        #expect(run.output.contains("trained 42 steps (300 samples) in "))
        #expect(run.output.contains("µs/step"))
        #expect(run.output.contains(", accuracy "))
        let svg = try String(contentsOfFile: directory + "/curves.svg", encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("polyline"))
        let evaluation = nnc("eval", directory + "/m.nnc", "--data", directory + "/data.csv")
        #expect(evaluation.status == 0)
        #expect(evaluation.output.contains("50 samples, loss ") && evaluation.output.contains("accuracy"))
        write("0.5,0.5,0.5\n-1,-1,-1\n", to: directory + "/x.csv")
        let predictions = nnc("run", directory + "/m.nnc", "--input", directory + "/x.csv")
        #expect(predictions.status == 0)
        let lines = predictions.output.split(separator: "\n")
        #expect(lines.count == 2)
        // Each printed value reads back to the same Float.
        for value in lines[0].split(separator: ",") { #expect(Float(String(value)).map { "\($0)" } == String(value)) }
    }

    @Test func divergingLossStopsWithEpochAndStepAndWritesNothing() throws {
        let directory = temporaryDirectory()
        write("1,2\n2,4\n3,6\n", to: directory + "/d.csv")
        write("input 1\nfc 1->1\nloss mse\ndata \"d.csv\"\ntrain sgd lr 1000 epochs 50 batch 1 shuffle off\n", to: directory + "/m.nn")
        let run = nnc("train", directory + "/m.nn", "-o", directory + "/m.nnc")
        #expect(run.status == 1)
        #expect(run.errors.contains("the loss became"))
        #expect(run.errors.contains("at epoch "))
        #expect(run.errors.contains(", step "))
        #expect(!FileManager.default.fileExists(atPath: directory + "/m.nnc"))
    }

    @Test func dataErrorsNameFileLineAndColumn() throws {
        let directory = temporaryDirectory()
        write("input 2\nfc 2->1\nloss mse\ndata \"d.csv\"\n", to: directory + "/m.nn")
        write("1,2,3\n4,x,6\n", to: directory + "/d.csv")
        let run = nnc("train", directory + "/m.nn", "-o", directory + "/m.nnc")
        #expect(run.status == 1)
        #expect(run.errors.contains("d.csv:2:3: error:"))
        write("1,2\n", to: directory + "/d.csv")
        #expect(nnc("train", directory + "/m.nn", "-o", directory + "/m.nnc").errors.contains("d.csv:1:"))
        write("input 2\nfc 2->3\nloss crossentropy\ndata \"d.csv\"\n", to: directory + "/c.nn")
        write("1,2,3\n", to: directory + "/d.csv")
        let labels = nnc("train", directory + "/c.nn", "-o", directory + "/c.nnc")
        #expect(labels.status == 1)
        #expect(labels.errors.contains("d.csv:1:5: error:"))
        write("input 2\nfc 2->1\nloss mse\n", to: directory + "/nodata.nn")
        #expect(nnc("train", directory + "/nodata.nn").errors.contains("no training data"))
    }

    @Test func compiledFileErrors() throws {
        let directory = temporaryDirectory()
        let model = classifier(in: directory)
        #expect(nnc("compile", model, "-o", directory + "/m.nnc").status == 0)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: directory + "/m.nnc")))
        // The round trip keeps everything.
        let file = try CompiledFile.decode(bytes, path: "m.nnc")
        #expect(try CompiledFile.decode(file.encoded(), path: "again") == file)
        func expectError(_ data: [UInt8], _ message: String) {
            write("", to: directory + "/bad.nnc")
            _ = FileManager.default.createFile(atPath: directory + "/bad.nnc", contents: Data(data))
            let result = nnc("eval", directory + "/bad.nnc", "--data", directory + "/data.csv")
            #expect(result.status == 1)
            #expect(result.errors.contains(message), "\(result.errors)")
        }
        expectError(Array(bytes.prefix(bytes.count / 2)), "truncated")
        expectError(Array(bytes.prefix(10)), "truncated")
        var corrupted = bytes
        corrupted[bytes.count / 2] ^= 0x55
        expectError(corrupted, "corrupted: the checksum does not match")
        expectError(Array("hello, world".utf8), "not a compiled nnc file")
        var newer = bytes
        newer[4] = 9
        expectError(newer, "written by a newer nnc (format version 9")
        expectError([], "not a compiled nnc file")
        // Random damage never crashes.
        var random = MT19937(seed: 9)
        for _ in 0..<300 {
            var damaged = bytes
            for _ in 0..<1 + random.randomInt(below: 4) { damaged[random.randomInt(below: damaged.count)] = UInt8(random.randomInt(below: 256)) }
            _ = try? CompiledFile.decode(damaged, path: "x")
            _ = try? CompiledFile.decode(Array(damaged.prefix(random.randomInt(below: damaged.count))), path: "x")
        }
    }

    @Test func weightsExportAndInitRoundTrip() throws {
        let directory = temporaryDirectory()
        let model = classifier(in: directory)
        #expect(nnc("train", model, "-o", directory + "/m.nnc", "--epochs", "1").status == 0)
        #expect(nnc("export", directory + "/m.nnc", "--weights", directory + "/w.npz").status == 0)
        let arrays = try readNPZ(path: directory + "/w.npz")
        #expect(arrays.map(\.name).sorted() == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"])
        #expect(arrays.first { $0.name == "fc1.weight" }?.array.shape == [3, 8])
        // --init loads them: one epoch with lr 0 leaves them unchanged.
        #expect(nnc("train", model, "--init", directory + "/w.npz", "--lr", "1e-30", "--epochs", "1", "-o", directory + "/n.nnc").status == 0)
        let original = try CompiledFile.read(path: directory + "/m.nnc").checkpoint.parameters
        let loaded = try CompiledFile.read(path: directory + "/n.nnc").checkpoint.parameters
        for (a, b) in zip(original, loaded) { #expect(a.name == b.name); for (x, y) in zip(a.values, b.values) { #expect(abs(x - y) < 1e-6) } }
        // A wrong shape is an error naming the array.
        try writeNPZ(path: directory + "/bad.npz", arrays: [("fc1.weight", [2, 2], false, [1, 2, 3, 4])])
        let bad = nnc("train", model, "--init", directory + "/bad.npz")
        #expect(bad.status == 1)
        #expect(bad.errors.contains("'fc1.weight' has shape (2, 2)"))
        #expect(nnc("export", directory + "/m.nnc", "--onnx", directory + "/m.onnx").status == 0)
        #expect(FileManager.default.fileExists(atPath: directory + "/m.onnx"))
    }

    @Test func flagsOverrideTrainSettingsAndBadFlagsAreUsageErrors() throws {
        let directory = temporaryDirectory()
        let model = classifier(in: directory)
        let run = nnc("train", model, "--epochs", "1", "--lr", "0.05", "--batch", "50", "--limit", "20", "-o", directory + "/m.nnc")
        #expect(run.status == 0)
        #expect(run.output.contains("trained 1 steps (20 samples)"))
        #expect(nnc("train", model, "--epochs", "0").status == 2)
        #expect(nnc("train", model, "--lr", "abc").status == 2)
        #expect(nnc("train", model, "--beta1", "0.9").status == 2)   // not an sgd key
        #expect(nnc("train", model, "--shuffle", "maybe").status == 2)
        #expect(nnc("train", model, "--epocs", "3").errors.contains("did you mean '--epochs'?"))
    }
}

/// Outputs are checked before any work (issue "Reliability", items 4, 6, 7, 8).
@Suite(.serialized) struct OutputCheckTests {
    @Test func threadsAreCapped() throws {
        let directory = temporaryDirectory()
        writeClassifierData(in: directory)
        write("input 3\nfc 3->3\nloss crossentropy\ndata \"data.csv\"\n", to: directory + "/m.nn")
        for command in ["train", "bench"] {
            let result = nnc(command, directory + "/m.nn", "--threads", "20000")
            #expect(result.status == 2, "\(command)")
            #expect(result.errors.contains("--threads takes a whole number from 1 to 256"), "\(result.errors)")
        }
        #expect(nnc("train", directory + "/m.nn", "--threads", "256", "--epochs", "1", "-o", directory + "/m.nnc").status == 0)
        for (command, flag) in [("run", "--input"), ("eval", "--data")] {
            let result = nnc(command, directory + "/m.nnc", flag, directory + "/data.csv", "--threads", "0")
            #expect(result.status == 2 && result.errors.contains("--threads takes"), "\(command): \(result.errors)")
        }
    }

    @Test func outputsNeverReplaceInputs() throws {
        let directory = temporaryDirectory()
        writeClassifierData(in: directory)
        let model = directory + "/m.nn"
        let text = "input 3\nfc 3->3\nloss crossentropy\ndata \"data.csv\"\ntrain sgd epochs 2\n"
        write(text, to: model)
        let same = nnc("train", model, "-o", model)
        #expect(same.status == 1 && same.errors.contains("-o names the command's own input"), "\(same.errors)")
        #expect(!same.output.contains("epoch"), "nothing trained")
        #expect(try String(contentsOfFile: model, encoding: .utf8) == text)
        // Through a symbolic link, and the data file too.
        try FileManager.default.createSymbolicLink(atPath: directory + "/link.nnc", withDestinationPath: model)
        #expect(nnc("train", model, "-o", directory + "/link.nnc").status == 1)
        #expect(nnc("train", model, "-o", directory + "/data.csv").status == 1)
        #expect(try String(contentsOfFile: model, encoding: .utf8) == text)
        #expect(nnc("train", model, "-o", directory + "/m.nnc", "--plot", directory + "/m.nnc").status == 1)
        #expect(nnc("compile", model, "-o", model).status == 1)
        #expect(nnc("train", model, "-o", directory + "/m.nnc").status == 0)
        // A compiled file trains in place, with or without -o.
        #expect(nnc("train", directory + "/m.nnc", "-o", directory + "/m.nnc", "--epochs", "1").status == 0)
        #expect(nnc("run", directory + "/m.nnc", "--input", directory + "/data.csv", "--output", directory + "/m.nnc").status == 1)
        #expect(nnc("export", directory + "/m.nnc", "--weights", directory + "/m.nnc").status == 1)
        #expect((try? CompiledFile.read(path: directory + "/m.nnc")) != nil, "the compiled file survived")
    }

    @Test func unwritableAndNonRegularOutputsAreRefusedBeforeTraining() throws {
        let directory = temporaryDirectory()
        writeClassifierData(in: directory)
        let model = directory + "/m.nn"
        write("input 3\nfc 3->3\nloss crossentropy\ndata \"data.csv\"\ntrain sgd epochs 3\n", to: model)
        let missing = nnc("train", model, "-o", directory + "/nodir/x.nnc")
        #expect(missing.status == 1 && missing.errors.contains("does not exist") && !missing.output.contains("epoch"), "\(missing.errors)")
        #expect(nnc("train", model, "-o", "").status == 2)
        #expect(nnc("train", model, "-o", directory + "/newdir/").status == 2)
        let device = nnc("train", model, "-o", "/dev/null")
        #expect(device.status == 1 && device.errors.contains("not a regular file"), "\(device.errors)")
        let folder = nnc("train", model, "-o", directory)
        #expect(folder.status == 1 && folder.errors.contains("not a regular file"), "\(folder.errors)")
        // A directory that permissions call writable but that takes no files (/proc, even for root):
        // found before training, said once.
        #expect(nnc("train", model, "-o", directory + "/m.nnc").status == 0)
        let outputs = [nnc("train", model, "-o", "/proc/x.nnc"), nnc("train", model, "-o", directory + "/y.nnc", "--plot", "/proc/x.svg"),
                       nnc("run", directory + "/m.nnc", "--input", directory + "/data.csv", "--output", "/proc/x.txt"),
                       nnc("export", directory + "/m.nnc", "--onnx", "/proc/x.onnx"), nnc("export", directory + "/m.nnc", "--weights", "/proc/x.npz")]
        for result in outputs {
            #expect(result.status == 1 && result.errors.hasPrefix("/proc/x.") && result.errors.components(separatedBy: "error:").count == 2
                    && result.errors.contains("cannot write in the directory /proc") && !result.output.contains("epoch"), "\(result.errors)")
        }
        // A symbolic link is followed: its target is written (also one not there yet), the link stays.
        try FileManager.default.createSymbolicLink(atPath: directory + "/latest.nnc", withDestinationPath: "v1.nnc")
        #expect(nnc("train", model, "-o", directory + "/latest.nnc").status == 0)
        #expect((try? CompiledFile.read(path: directory + "/v1.nnc")) != nil)
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: directory + "/latest.nnc")) == "v1.nnc")
        try FileManager.default.createSymbolicLink(atPath: directory + "/null.nnc", withDestinationPath: "/dev/null")
        #expect(nnc("train", model, "-o", directory + "/null.nnc").errors.contains("not a regular file"))
        try FileManager.default.createSymbolicLink(atPath: directory + "/loop1", withDestinationPath: "loop2")
        try FileManager.default.createSymbolicLink(atPath: directory + "/loop2", withDestinationPath: "loop1")
        #expect(nnc("train", model, "-o", directory + "/loop1").errors.contains("a loop of symbolic links"))
        // The write itself says what failed, once.
        #expect(throws: CompiledFileError.self) { try writeAtomically(Data([1, 2, 3]), to: "/proc/nnc-test.txt") }
        do { try writeAtomically(Data([1, 2, 3]), to: "/proc/nnc-test.txt") } catch {
            #expect(error.description == "/proc/nnc-test.txt: error: cannot write the file: No such file or directory")
        }
    }
}

/// A temporary file of a killed writer is removed by the next write to the same path.
@Test func staleTemporaryFilesOfDeadWritersAreRemoved() throws {
    let directory = temporaryDirectory()
    // No process has a pid this large (Linux caps pids at 2^22).
    let stale = directory + "/.m.nnc.2000000000.tmp", live = directory + "/.m.nnc.\(getpid() == 1 ? 2 : 1).tmp"
    write("half a file", to: stale)
    write("pid 1 runs", to: live)
    try writeAtomically(Data("x".utf8), to: directory + "/m.nnc")
    #expect(!FileManager.default.fileExists(atPath: stale))
    #expect(FileManager.default.fileExists(atPath: live), "a running process's file stays")
    #expect(try String(contentsOfFile: directory + "/m.nnc", encoding: .utf8) == "x")
}

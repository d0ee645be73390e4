import Foundation
import IR
import Parser
import Runtime
import Synchronization

/// Set by the SIGINT and SIGTERM handlers; the training loop checks it after each step (atomic: a
/// signal handler writes it, and the tests run trainings on several threads at once).
let interruptRequested = Atomic<Int32>(0)

struct Interrupted: Error { var checkpoint: String }

/// Everything one training run needs.
struct TrainingJob {
    var state: ModelState
    var settings: TrainingSettings
    var train: Dataset
    var test: Dataset?
    /// Held-out data watched by `patience` and `keep best`.
    var validation: Dataset?
    var threads: Int
    /// Where to start: absolute epoch and step within it (resuming a checkpoint).
    var startEpoch = 0
    var startStep = 0
    /// Epochs to reach (absolute).
    var endEpoch: Int
}

let trainKeyFlags = ["--lr", "--epochs", "--batch", "--seed", "--shuffle", "--momentum", "--nesterov", "--decay", "--beta1", "--beta2", "--eps", "--warmup",
                     "--patience"]

/// `--schedule constant|cosine|onecycle|"step S G"`.
func scheduleFlag(_ text: String) throws(UsageError) -> LearningRateSchedule {
    let words = text.split(separator: " ").map(String.init)
    switch words.first {
    case "constant" where words.count == 1: return .constant
    case "cosine" where words.count == 1: return .cosine
    case "onecycle" where words.count == 1: return .onecycle
    case "step" where words.count == 3:
        guard let every = Int(words[1]), every >= 1, let gamma = Double(words[2]), gamma > 0, gamma.isFinite else { break }
        return .step(every: every, gamma: gamma)
    default: break
    }
    var message = "--schedule takes constant, cosine, onecycle or \"step S G\" (every S epochs ×G), got '\(text)'"
    if let word = words.first, let guess = suggestion(for: word, among: LearningRateSchedule.names), guess != word { message += "; did you mean '\(guess)'?" }
    throw UsageError(message: message)
}

let trainCommand = Command(
    name: "train", summary: "train a model on its data; write the trained graph (.nnc)",
    usage: "nnc train MODEL.nn|MODEL.nnc [--data PATH] [--test-data PATH] [--epochs N] [--lr X] [--batch N] [--seed S] [--momentum X] [--dtype f32|f64] [--limit N] [--init W.npz] [--loss KIND] [--threads N] [-o OUT.nnc] [--plot FILE.svg]",
    details: """
    Uses the model's `data` and `train` statements; every training key can be overridden by a flag:
    --lr, --epochs, --batch, --seed, --shuffle on|off, --momentum, --nesterov on|off, --decay,
    --beta1, --beta2, --eps, --schedule constant|cosine|onecycle|"step S G", --warmup N,
    --validation F|test, --patience P, --keep-best. Also:
      --data PATH        training data (CSV, IDX, NPY/NPZ, or an MNIST-layout directory)
      --test-data PATH   evaluation data, reported after each epoch (default: the model's `data test`,
                         or the test split of an MNIST directory)
      --limit N          use the first N training samples
      --dtype f32|f64    precision (f64 reproduces the NumPy tutorials exactly)
      --init W.npz       start from the parameters in a NumPy .npz (names like fc1.weight)
      --loss KIND        add 'loss KIND' to a model without a loss (an imported ONNX model):
                         mse, sse, sum, crossentropy, bce or nll
      --threads N        worker threads (default: all cores)
      --log-every N      print every N-th epoch (default: about ten lines)
      -o OUT.nnc         output file (default: MODEL.nnc in the current directory)
      --plot FILE.svg    write the loss (and accuracy) curves
    A .nnc continues training from its saved parameters and optimizer state; a checkpoint written by
    Ctrl-C resumes where it stopped.
    """,
    valueOptions: ["--data", "--test-data", "--limit", "--dtype", "--init", "--threads", "-o", "--plot", "--log-every", "--schedule", "--loss", "--validation"] + trainKeyFlags,
    flagOptions: ["--keep-best"]
) { arguments, console in
    let path = try onePath(arguments, "model file")
    let threads = try arguments.threads()
    let requestedType: DType? = arguments.values["--dtype"] == nil ? nil : try dtype(arguments)
    let seedFlag = try arguments.integer("--seed", minimum: 0)
    var state = try ModelState.open(path: path, dtype: requestedType, seed: seedFlag)
    if let loss = try lossFlag(arguments) { state.program = try state.program.withLoss(loss) }
    let program = state.program
    if !isCompiledFile(path), !program.renderedWarnings.isEmpty { console.error(program.renderedWarnings, terminator: "") }
    guard program.model.graph.loss != nil else { throw InputError(program.noLossMessage) }

    // Settings: the model's train statement, then what a compiled file recorded, then the flags.
    var settings = state.checkpoint.settings ?? program.settings.training
    let resuming = isCompiledFile(path)
    for flag in trainKeyFlags {
        guard let text = arguments.values[flag] else { continue }
        let key = String(flag.dropFirst(2))
        guard TrainKeys.keys(for: settings.optimizer).contains(key) else {
            throw UsageError(message: "\(flag) does not apply to the \(settings.optimizer.rawValue) optimizer")
        }
        let value: Double
        if TrainKeys.switches.contains(key) {
            guard text == "on" || text == "off" else { throw UsageError(message: "\(flag) takes on or off, got '\(text)'") }
            value = text == "on" ? 1 : 0
        } else {
            guard let number = Double(text), number.isFinite else { throw UsageError(message: "\(flag) needs a number, got '\(text)'") }
            value = number
        }
        if let complaint = settings.set(key, value) { throw UsageError(message: "\(flag): \(complaint)") }
    }
    if let text = arguments.values["--schedule"] { settings.schedule = try scheduleFlag(text) }
    if let text = arguments.values["--validation"] {
        if text == "test" {
            settings.validation = .test
        } else {
            guard let share = Double(text), share > 0, share < 1 else { throw UsageError(message: "--validation takes a fraction between 0 and 1 (exclusive) or 'test', got '\(text)'") }
            settings.validation = .fraction(share)
        }
    }
    if arguments.flags.contains("--keep-best") { settings.keepBest = true }
    for (flag, value) in [("--warmup", settings.warmup), ("--patience", settings.patience)] where arguments.values[flag] != nil && value >= settings.epochs {
        throw UsageError(message: "\(flag) \(value) is as long as the run or longer (\(settings.epochs) epochs)")
    }
    if let weights = arguments.values["--init"] { try state.loadWeights(npz: weights) }

    // Data.
    let dataPath = arguments.values["--data"] ?? state.checkpoint.dataPath ?? program.settings.dataPath.map(program.resolve)
    guard let dataPath else {
        throw InputError("\(program.source.path): error: no training data; add a 'data \"FILE\"' statement to the model or pass --data PATH")
    }
    let expectation = program.expectation
    let splits = try loadData(path: dataPath, expecting: expectation)
    var train = splits.train
    if let limit = try arguments.integer("--limit") { train = train.prefix(limit) }
    guard train.count > 0 else { throw InputError("\(dataPath): error: the data set is empty") }
    var test = splits.test
    if let testPath = arguments.values["--test-data"] ?? program.settings.testDataPath.map(program.resolve) {
        test = try loadData(path: testPath, expecting: expectation).train
    }

    state.checkpoint.dataPath = arguments.values["--data"] ?? state.checkpoint.dataPath
    // The outputs, before any epoch: a run must not end in a file it cannot write, nor write over its inputs.
    let outputPath = arguments.values["-o"] ?? (resuming ? path : defaultOutputPath(for: path))
    let inputs = [path, dataPath] + [arguments.values["--init"], arguments.values["--test-data"]].compactMap { $0 }
    // A compiled file may be trained in place (a checkpoint goes on where it is).
    try checkOutput(outputPath, flag: "-o", inputs: resuming ? Array(inputs.dropFirst()) : inputs)
    if let plot = arguments.values["--plot"] { try checkOutput(plot, flag: "--plot", inputs: inputs + [outputPath]) }
    let flagEpochs = resuming && state.checkpoint.interruption != nil ? arguments.values["--epochs"].flatMap { Int($0) } : nil
    let logEvery = try arguments.integer("--log-every")
    var model = Model(state: state)

    // Ctrl-C and SIGTERM (a scheduler stopping the job) both finish the step and write a checkpoint.
    let previousHandler = signal(SIGINT) { _ in interruptRequested.store(1, ordering: .relaxed) }
    let previousTerminate = signal(SIGTERM) { _ in interruptRequested.store(1, ordering: .relaxed) }
    defer { signal(SIGINT, previousHandler); signal(SIGTERM, previousTerminate); interruptRequested.store(0, ordering: .relaxed) }
    var lastDraw: UInt64 = 0, stepsTaken = 0, barShown = false
    let summary: TrainingSummary
    do {
        summary = try model.train(on: train, test: test, settings: settings, epochs: flagEpochs, threads: threads) { event in
            switch event {
            case .step(let report):
                stepsTaken += 1
                if console.isTerminal {
                    let now = DispatchTime.now().uptimeNanoseconds
                    if now - lastDraw > 100_000_000 || report.step == report.steps {
                        lastDraw = now
                        barShown = true
                        console.print(progressBar(report), terminator: "")
                    }
                }
                if interruptRequested.load(ordering: .relaxed) != 0 || console.interruptAfterSteps.map({ stepsTaken >= $0 }) == true {
                    if barShown { console.print("") }
                    return .stop
                }
            case .epoch(let report):
                if barShown { console.print("\r\u{1B}[K", terminator: ""); barShown = false }
                let every = logEvery ?? max(1, (report.epochs - report.firstEpoch + 1) / 10)
                if console.isTerminal || report.epoch == report.firstEpoch || report.epoch == report.epochs || (report.epoch - report.firstEpoch + 1) % every == 0 {
                    console.print(epochLine(report, showRate: settings.schedule != .constant || settings.warmup > 0))
                }
            }
            return .continue
        }
    } catch {
        if barShown { console.print("") }
        throw error
    }
    try model.save(to: outputPath)
    if summary.stopped { throw Interrupted(checkpoint: outputPath) }
    if let plot = arguments.values["--plot"] {
        try writeAtomically(Data(trainingPlot(model.history, title: (program.source.path as NSString).lastPathComponent).utf8), to: plot)
    }
    var line = "trained \(summary.steps) steps (\(summary.samples) samples) in \(String(format: "%.3f", summary.seconds)) s: "
    line += "\(formatRate(summary.seconds * 1e6 / Double(max(1, summary.steps)))) µs/step, \(grouped(Int((Double(summary.samples) / max(summary.seconds, 1e-9)).rounded()))) samples/s, "
    line += "final loss \(formatLoss(summary.finalLoss))"
    if let accuracy = summary.finalAccuracy { line += ", accuracy \(String(format: "%.4f", accuracy))" }
    console.print(line)
    if let epoch = summary.stoppedEarlyAfter {
        console.print("stopped early after epoch \(epoch): the validation loss has not improved for \(settings.patience) epochs")
    }
    if let epoch = summary.keptEpoch, let loss = model.history[epoch - 1].validationLoss {
        console.print("kept the parameters of epoch \(epoch) (validation loss \(formatLoss(loss)))")
    }
    console.print("wrote \(outputPath)")
}

/// `epoch 3/10: loss …, lr …, accuracy …, test loss …, test accuracy … (1.20 s, 50,000 samples/s)`.
func epochLine(_ report: EpochReport, showRate: Bool) -> String {
    var line = "epoch \(report.epoch)/\(report.epochs): loss \(formatLoss(report.loss))"
    if showRate { line += ", lr \(formatLoss(report.learningRate))" }
    if let accuracy = report.accuracy { line += ", accuracy \(String(format: "%.4f", accuracy))" }
    if let testLoss = report.testLoss { line += ", test loss \(formatLoss(testLoss))" }
    if let testAccuracy = report.testAccuracy { line += ", test accuracy \(String(format: "%.4f", testAccuracy))" }
    if let loss = report.validationLoss { line += ", val loss \(formatLoss(loss))" }
    if let accuracy = report.validationAccuracy { line += ", val accuracy \(String(format: "%.4f", accuracy))" }
    return line + String(format: " (%.2f s, %@ samples/s)", report.seconds, grouped(Int(report.samplesPerSecond)))
}

extension ModelProgram {
    var expectation: DataExpectation {
        let (features, targets) = dataExpectation
        switch targets {
        case .none: return DataExpectation(featureCount: features, targets: .none)
        case .values(let width): return DataExpectation(featureCount: features, targets: .values(count: width))
        case .classLabels(let classes): return DataExpectation(featureCount: features, targets: .classLabels(classes: classes))
        }
    }
}

func formatRate(_ value: Double) -> String {
    value >= 100 ? String(format: "%.0f", value) : value >= 10 ? String(format: "%.1f", value) : String(format: "%.3f", value)
}

func formatLoss(_ value: Double) -> String { String(format: "%.6g", value) }

/// A seed for one epoch's shuffle or one step's dropout masks, derived from the run's seed so that
/// a resumed run draws exactly what an uninterrupted one would.
func derivedSeed(_ seed: Int, _ a: Int, _ b: Int = 0) -> UInt32 {
    var h = UInt64(truncatingIfNeeded: seed) &* 0x9E37_79B9_7F4A_7C15
    h ^= UInt64(truncatingIfNeeded: a) &+ 0xBF58_476D_1CE4_E5B9 &+ (h << 6) &+ (h >> 2)
    h ^= UInt64(truncatingIfNeeded: b) &+ 0x94D0_49BB_1331_11EB &+ (h << 6) &+ (h >> 2)
    return UInt32(truncatingIfNeeded: h ^ (h >> 32))
}

/// The order of the samples in an epoch: Fisher–Yates from the epoch's seed, or the file order.
func epochOrder(into order: inout [Int], shuffle: Bool, seed: Int, epoch: Int) {
    for i in order.indices { order[i] = i }
    guard shuffle, order.count > 1 else { return }
    var random = MT19937(seed: derivedSeed(seed, epoch))
    for i in stride(from: order.count - 1, to: 0, by: -1) {
        let j = min(i, Int(random.randomSample() * Double(i + 1)))
        order.swapAt(i, j)
    }
}

/// Index of the largest value in a row.
@inline(__always) func argmax<T: KernelScalar>(_ row: UnsafePointer<T>, _ count: Int) -> Int {
    var best = 0
    for i in 1..<max(1, count) where row[i] > row[best] { best = i }
    return best
}

/// One training run: steps over the epochs of `job`, reporting each step and epoch. Returns the
/// trained state (with an interruption record when `onEvent` stopped it) and the run's figures.
func runTraining<T: KernelScalar>(_ type: T.Type, _ job: TrainingJob, onEvent: (TrainingEvent) -> TrainingDecision) throws -> (ModelState, TrainingSummary) {
    var state = job.state
    let program = state.program
    let settings = job.settings
    let batch = min(settings.batch ?? job.train.count, job.train.count)
    let trainingGraph = try program.trainingGraph(dtype: state.dtype, settings: settings).optimized(verify: verifyPasses, recordLog: false).graph
    let plan = try Plan(graph: trainingGraph, batch: batch)
    let store = ParameterStore<T>(graph: trainingGraph)
    state.fill(store)
    // Values that are already infinite or NaN in this precision come from the input, not from the
    // learning rate: name them where they enter.
    for (index, name) in store.names.enumerated() {
        if let bad = store.values(store.parameters[index]).firstIndex(where: { !$0.isFinite }) {
            throw InputError("\(program.source.path): error: parameter '\(name)' holds \(store.values(store.parameters[index])[bad]) at flat index \(bad) before training (from its initializer, --init or the compiled file)\(T.self == Float.self ? "; in f32 every value must be within ±3.4e38" : "")")
        }
    }
    for data in [job.train, job.test, job.validation].compactMap({ $0 }) {
        if let (sample, feature, value) = data.firstValueBeyond(T.self == Float.self ? Double(Float.greatestFiniteMagnitude) : .greatestFiniteMagnitude) {
            throw InputError("\(data.source): error: sample \(sample + 1), feature \(feature + 1) is \(value)\(value.isFinite ? ", beyond float32's range (±3.4e38): train in f64 (--dtype f64) or scale the data" : "")")
        }
    }
    let session = try Session<T>(plan: plan, store: store, threads: job.threads, seed: settings.seed)
    let hasDropout = trainingGraph.nodes.contains { if case .dropoutMask = $0.op { return true }; return false }
    let classes: Int? = { if case .classLabels(let c) = trainingGraph.targetKind { return c }; return nil }()
    let sumLoss = program.lossSumsOverBatch

    // Evaluation on test and validation data shares the parameter store, and the training session's
    // threads (a second set would poll for work while the first trains).
    func evaluator(_ data: Dataset?) throws -> Evaluator<T>? {
        guard let data, data.count > 0 else { return nil }
        return try Evaluator<T>(program: program, dtype: state.dtype, store: store, threads: job.threads, batch: min(1000, data.count), context: session.context)
    }
    let testEvaluator = try evaluator(job.test), validationEvaluator = try evaluator(job.validation)
    var stoppedEarlyAfter: Int?
    // The epoch (from 0) with the lowest validation loss so far, over the whole history.
    var best: (epoch: Int, loss: Double)?
    for (index, entry) in state.checkpoint.history.enumerated() {
        if let loss = entry.validationLoss, best.map({ loss < $0.loss }) ?? true { best = (index, loss) }
    }

    guard let input = session.inputPointer else { throw InputError("the model has no input") }
    let target = session.targetPointer
    let output = trainingGraph.output.map(session.pointer)
    let outputWidth = trainingGraph.output.map { trainingGraph[$0].shape.rowElements } ?? 0
    let count = job.train.count
    let stepsPerEpoch = (count + batch - 1) / batch
    let full = try session.executable(batch: batch)
    let partial = count % batch == 0 ? full : try session.executable(batch: count % batch)

    // A small data set converted once: its steps copy rows, and it stays in cache.
    let converted = ConvertedRows<T>(job.train)
    defer { converted?.deallocate() }
    let stepwiseSchedule = settings.schedule == .onecycle
    var order = [Int](repeating: 0, count: count)
    var clockEvery = 1
    // The rate and time left in the epoch, as of the last clock read.
    var rate = 0.0, secondsLeft = 0.0
    var steps = 0, samples = 0
    var seconds = 0.0
    var finalLoss = Double.nan, finalAccuracy: Double?

    for epoch in job.startEpoch..<max(job.startEpoch, job.endEpoch) {
        epochOrder(into: &order, shuffle: settings.shuffle, seed: settings.seed, epoch: epoch)
        // A resumed epoch goes on from the sums it had.
        let resumed = epoch == job.startEpoch ? state.checkpoint.interruption : nil
        var lossSum = resumed?.lossSum ?? 0
        var correct = resumed?.correct ?? 0
        var seen = resumed?.seen ?? 0
        let firstStep = epoch == job.startEpoch ? job.startStep : 0
        state.checkpoint.interruption = nil
        let epochStart = DispatchTime.now().uptimeNanoseconds
        // The steps' time runs from the epoch's start to the last step's end, everything the loop
        // does included (what the peers' loops time too), evaluation after the epoch not. The clock
        // is read about every 20 µs and at the epoch's last step: a read costs tens of nanoseconds,
        // a tiny network's step a few hundred (a step's report may be that much behind; the number of
        // steps between reads carries over from epoch to epoch, as the XOR network's are 4 steps).
        var stepsEnd = epochStart
        var clocked = (step: firstStep, seen: seen)
        for step in firstStep..<stepsPerEpoch {
            // The schedule's rate (and onecycle's momentum) for this step: onecycle's change every step,
            // the other schedules' (and the warmup's) every epoch.
            if step == firstStep || stepwiseSchedule {
                session.learningRateFactor = settings.learningRateFactor(epoch: epoch, step: step, stepsPerEpoch: stepsPerEpoch, epochs: job.endEpoch)
                session.momentumOverride = settings.schedule.momentum(epoch: epoch, step: step, stepsPerEpoch: stepsPerEpoch, epochs: job.endEpoch)
            }
            let start = step * batch
            let rows = min(batch, count - start)
            order.withUnsafeBufferPointer { all in
                let indices = UnsafeBufferPointer(rebasing: all[start..<(start + rows)])
                if let converted {
                    converted.copy(indices, features: input, targets: target)
                    return
                }
                job.train.copyBatch(indices, features: input, targets: target, context: session.context)
                // The next batch's rows start loading while this step computes.
                let next = min(count, start + rows + batch)
                if start + rows < next { job.train.prefetchRows(UnsafeBufferPointer(rebasing: all[(start + rows)..<next])) }
            }
            if hasDropout { session.reseed(derivedSeed(settings.seed, epoch, step + 1)) }
            session.run(rows == batch ? full : partial)
            let loss = session.lossValue
            guard loss.isFinite else {
                throw InputError("training stopped: the loss became \(loss.isNaN ? "NaN" : "infinite") at epoch \(epoch + 1), step \(step + 1); nothing was written (try a smaller learning rate, e.g. --lr \(formatNumber(settings.learningRate / 10)))")
            }
            lossSum += sumLoss ? loss : loss * Double(rows)
            seen += rows
            if let classes, let output, let target {
                for r in 0..<rows where argmax(output + r * outputWidth, classes) == Int(target[r]) { correct += 1 }
            }
            steps += 1
            samples += rows
            if step + 1 - clocked.step >= clockEvery || step == stepsPerEpoch - 1 {
                let now = DispatchTime.now().uptimeNanoseconds
                seconds += Double(now - stepsEnd) / 1e9
                clockEvery = max(1, min(1024, (step + 1 - clocked.step) * 20_000 / max(1, Int(now - stepsEnd))))
                stepsEnd = now
                clocked = (step + 1, seen)
                let elapsed = Double(stepsEnd - epochStart) / 1e9
                rate = Double(clocked.seen) / max(elapsed, 1e-9)
                secondsLeft = elapsed / Double(max(1, clocked.step - firstStep)) * Double(stepsPerEpoch - step - 1)
            }
            let report = StepReport(epoch: epoch + 1, epochs: job.endEpoch, step: step + 1, steps: stepsPerEpoch,
                                    loss: sumLoss ? lossSum : lossSum / Double(seen), samplesPerSecond: rate, secondsLeftInEpoch: secondsLeft)
            if onEvent(.step(report)) == .stop {
                state.take(store)
                state.checkpoint.epochsDone = epoch
                state.checkpoint.interruption = Checkpoint.Interruption(stepInEpoch: step + 1, epochsTarget: job.endEpoch,
                                                                        lossSum: lossSum, correct: correct, seen: seen)
                state.checkpoint.settings = settings
                return (state, TrainingSummary(steps: steps, samples: samples, seconds: seconds, finalLoss: finalLoss, finalAccuracy: finalAccuracy, stopped: true))
            }
        }
        let epochLoss = sumLoss ? lossSum : lossSum / Double(max(1, seen))
        var entry = CompiledFile.Epoch(loss: epochLoss)
        if classes != nil { entry.accuracy = Double(correct) / Double(max(1, seen)) }
        entry.learningRate = settings.learningRate * session.learningRateFactor
        if let testEvaluator, let test = job.test {
            (entry.testLoss, entry.testAccuracy) = testEvaluator.evaluate(test)
        }
        if let validationEvaluator, let validation = job.validation {
            (entry.validationLoss, entry.validationAccuracy) = validationEvaluator.evaluate(validation)
        }
        state.checkpoint.history.append(entry)
        // keep best: the parameters of the epoch with the lowest validation loss so far.
        if let loss = entry.validationLoss, best.map({ loss < $0.loss }) ?? true { best = (epoch, loss) }
        let bestEpoch = best?.epoch
        if settings.keepBest, bestEpoch == epoch, entry.validationLoss != nil {
            var snapshot = state
            snapshot.take(store)
            state.checkpoint.best = Checkpoint.Best(epoch: epoch + 1, parameters: snapshot.checkpoint.parameters,
                                                    persistentState: snapshot.checkpoint.persistentState)
        }
        finalLoss = epochLoss
        finalAccuracy = entry.accuracy
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - epochStart) / 1e9
        let report = EpochReport(epoch: epoch + 1, epochs: job.endEpoch, firstEpoch: job.startEpoch + 1, loss: epochLoss, accuracy: entry.accuracy,
                                 testLoss: entry.testLoss, testAccuracy: entry.testAccuracy,
                                 validationLoss: entry.validationLoss, validationAccuracy: entry.validationAccuracy,
                                 learningRate: settings.learningRate * session.learningRateFactor, seconds: elapsed,
                                 samplesPerSecond: Double(seen) / max(elapsed, 1e-9))
        if onEvent(.epoch(report)) == .stop, epoch + 1 < job.endEpoch {
            // Stopped between epochs: the next run starts the next epoch of this one.
            state.take(store)
            state.checkpoint.epochsDone = epoch + 1
            state.checkpoint.interruption = Checkpoint.Interruption(stepInEpoch: 0, epochsTarget: job.endEpoch, lossSum: 0, correct: 0, seen: 0)
            state.checkpoint.settings = settings
            return (state, TrainingSummary(steps: steps, samples: samples, seconds: seconds, finalLoss: finalLoss, finalAccuracy: finalAccuracy, stopped: true))
        }
        // patience: the validation loss has not improved for that many epochs.
        if settings.patience > 0, let bestEpoch, epoch - bestEpoch >= settings.patience, epoch + 1 < job.endEpoch {
            stoppedEarlyAfter = epoch + 1
            break
        }
    }
    state.take(store)
    state.checkpoint.interruption = nil
    state.checkpoint.epochsDone = stoppedEarlyAfter ?? max(job.startEpoch, job.endEpoch)
    state.checkpoint.settings = settings
    if settings.keepBest, let best = state.checkpoint.best {
        state.checkpoint.parameters = best.parameters
        if !best.persistentState.isEmpty { state.checkpoint.persistentState = best.persistentState }
    }
    return (state, TrainingSummary(steps: steps, samples: samples, seconds: seconds, finalLoss: finalLoss, finalAccuracy: finalAccuracy, stopped: false,
                                   stoppedEarlyAfter: stoppedEarlyAfter, keptEpoch: settings.keepBest ? state.checkpoint.best?.epoch : nil))
}

func progressBar(_ report: StepReport) -> String {
    let width = 30
    let filled = report.steps > 0 ? width * report.step / report.steps : width
    let bar = String(repeating: "=", count: filled) + (filled < width ? ">" : "") + String(repeating: " ", count: max(0, width - filled - 1))
    return "\r\u{1B}[Kepoch \(report.epoch)/\(report.epochs) [\(bar)] \(report.step)/\(report.steps)  \(grouped(Int(report.samplesPerSecond))) samples/s  loss \(formatLoss(report.loss))  ETA \(String(format: "%.0f", max(0, report.secondsLeftInEpoch))) s"
}

/// Loss and accuracy of a model on a data set, batch by batch, sharing a parameter store.
final class Evaluator<T: KernelScalar> {
    let session: Session<T>
    let graph: Graph
    let batch: Int
    let sumLoss: Bool

    init(program: ModelProgram, dtype: DType, store: ParameterStore<T>, threads: Int, batch: Int, context: GEMMContext? = nil) throws {
        graph = try program.inferenceGraph(dtype: dtype, withLoss: true)
        sumLoss = program.lossSumsOverBatch
        self.batch = max(1, batch)
        session = try Session<T>(plan: try Plan(graph: graph, batch: self.batch), store: store, threads: threads, context: context)
    }

    /// Mean loss (sum for sum-type losses) and accuracy (for classifiers).
    func evaluate(_ data: Dataset) -> (loss: Double, accuracy: Double?) {
        guard let input = session.inputPointer else { return (.nan, nil) }
        let target = session.targetPointer
        let output = graph.output.map(session.pointer)
        let width = graph.output.map { graph[$0].shape.rowElements } ?? 0
        let classes: Int? = { if case .classLabels(let c) = graph.targetKind { return c }; return nil }()
        var lossSum = 0.0, correct = 0
        let indices = Array(0..<data.count)
        var start = 0
        while start < data.count {
            let rows = min(batch, data.count - start)
            indices.withUnsafeBufferPointer { all in
                let slice = UnsafeBufferPointer(rebasing: all[start..<(start + rows)])
                data.copyFeatures(slice, into: input)
                if let target { data.copyTargets(slice, into: target) }
            }
            guard let executable = try? session.executable(batch: rows) else { return (.nan, nil) }
            session.run(executable)
            let loss = session.lossValue
            lossSum += sumLoss ? loss : loss * Double(rows)
            if let classes, let output, let target {
                for r in 0..<rows where argmax(output + r * width, classes) == Int(target[r]) { correct += 1 }
            }
            start += rows
        }
        return (sumLoss ? lossSum : lossSum / Double(max(1, data.count)), classes.map { _ in Double(correct) / Double(max(1, data.count)) })
    }
}

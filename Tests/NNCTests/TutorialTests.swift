import Foundation
import Testing
import TestSupport
@testable import NNC
import IR

// The classic "neural network from scratch" NumPy tutorials, reproduced by nnc in f64: each model
// in models/ is trained through the library exactly as `nnc train MODEL.nn --dtype f64` does, and its
// starting weights, trained weights and predictions are compared with the NumPy reference scripts
// in bench/tutorials/ (NAME.py; float64, the tutorials' own code). The numbers below are those
// scripts' output (bench/tutorials/swift_literals.py prints them); `python3
// bench/tutorials/compare.py` does the same comparison through the nnc binary.

/// One tutorial: its reference numbers from NumPy.
struct TutorialReference: Sendable, CustomTestStringConvertible {
    var model: String
    /// Parameters (row-major) before training: the weights nnc draws from the model's seed.
    var start: [String: [Double]]
    /// Parameters after the model's `train` schedule.
    var final: [String: [Double]]
    /// Rows to predict (features only) and the outputs for them, row-major.
    var input: [[Double]]
    var predictions: [Double]
    var testDescription: String { model }
}

let tutorialReferences: [TutorialReference] = [
    TutorialReference(
        model: "neuron",
        start: ["fc1.weight": [-0.165955990594852, 0.4406489868843162, -0.9997712503653102]],
        final: ["fc1.weight": [9.672993027736892, -0.20784349926631962, -4.62963668773159]],
        input: [[1.0, 0.0, 0.0]],
        predictions: [0.9999370428352157]),
    TutorialReference(
        model: "trask2",
        start: ["fc1.weight": [-0.165955990594852, 0.4406489868843162, -0.9997712503653102]],
        final: ["fc1.weight": [9.672993027736892, -0.20784349926631962, -4.62963668773159]],
        input: [[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]],
        predictions: [0.009663999526856808, 0.007864660283667993, 0.9935893055233577, 0.9921199740202594]),
    TutorialReference(
        model: "trask3",
        start: ["fc1.weight": [-0.165955990594852, 0.4406489868843162, -0.9997712503653102, -0.39533485473632046, -0.7064882183657739, -0.8153228104624044, -0.6274795772446582, -0.3088785459139045, -0.20646505153866013, 0.07763346800671389, -0.1616109711934104, 0.370439000793519], "fc2.weight": [-0.5910955005369651, 0.7562348727818908, -0.9452248136041477, 0.34093502035680445]],
        final: ["fc1.weight": [4.601357097887596, 4.171971929551631, -6.309562451905658, -4.197451175646528, -2.584134836000851, -5.814479292280624, -6.6079343531196, -3.683961233012224, 0.9753867879450967, -2.0268577531413277, 2.5294975091880962, 5.8437173946047976], "fc2.weight": [-6.967657631412923, 7.141019485765206, -10.319173822748821, 7.861284050871796]],
        input: [[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]],
        predictions: [0.0026057015375216177, 0.996722116665879, 0.9970171337897594, 0.0038675584616160805]),
    TutorialReference(
        model: "loy",
        start: ["fc1.weight": [0.417022004702574, 0.7203244934421581, 0.00011437481734488664, 0.30233257263183977, 0.14675589081711304, 0.0923385947687978, 0.1862602113776709, 0.34556072704304774, 0.39676747423066994, 0.538816734003357, 0.4191945144032948, 0.6852195003967595], "fc2.weight": [0.20445224973151743, 0.8781174363909454, 0.027387593197926163, 0.6704675101784022]],
        final: ["fc1.weight": [6.560830427326441, 5.993884739679121, -2.7784932805144607, 1.277129433846545, -2.954574730167197, 5.982360144558155, 6.510299758617731, 1.4344785353845722, 0.10245642618747712, -1.2265763236010203, -0.05647766918737264, -2.0056050919637407], "fc2.weight": [-6.9675637261570715, 11.458114752350193, -6.9049129844078925, -1.7884038798902575]],
        input: [[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]],
        predictions: [0.009653536891312238, 0.9689474876711288, 0.9688615817138353, 0.03645155766022024]),
    TutorialReference(
        model: "xor",
        start: ["fc1.weight": [-0.082977995297426, 0.2203244934421581, -0.4998856251826551, -0.19766742736816023, -0.35324410918288696, -0.4076614052312022], "fc1.bias": [-0.3137397886223291, -0.15443927295695226, -0.10323252576933006], "fc2.weight": [0.038816734003356945, -0.0808054855967052, 0.1852195003967595], "fc2.bias": [-0.29554775026848257]],
        final: ["fc1.weight": [-0.30043495602849996, 1.1867640314693273, -2.2969805512055346, -0.6473373031402722, 0.9889542982893917, -2.3049406207817937], "fc1.bias": [0.2641904644841977, -1.575958627385345, 0.780464451283596], "fc2.weight": [1.1055954536373125, -2.031487013483255, -2.357706645964225], "fc2.bias": [-0.6099028696544306]],
        input: [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]],
        predictions: [0.0008954525827741679, 0.9758596869536216, 0.9777660748038901, -0.0016677847278169509]),
    TutorialReference(
        model: "habr",
        start: ["fc1.weight": [-0.165955990594852, 0.4406489868843162, -0.9997712503653102, -0.39533485473632046, -0.7064882183657739, -0.8153228104624044, -0.6274795772446582, -0.3088785459139045, -0.20646505153866013, 0.07763346800671389, -0.1616109711934104, 0.370439000793519], "fc2.weight": [-0.5910955005369651, 0.7562348727818908, -0.9452248136041477, 0.34093502035680445]],
        final: ["fc1.weight": [-0.07781014426330969, 0.39822531154147206, -0.7702564435305064, -0.4260657932148217, -0.6179347695136124, -0.8649253451299467, -0.40596674152402656, -0.3383419982383936, -0.14665556584354073, 0.049846087787991135, -0.013006902258436545, 0.35445377182685867], "fc2.weight": [-0.5181224765849961, 0.7704440339870067, -0.7463459252712524, 0.36403093972548767]],
        input: [[37.0, 43.0, 12.0], [8.0, 9.0, 11.0], [5.0, 15.0, 0.0], [16.0, 1.0, 12.0], [7.0, 45.0, 6.0], [25.0, 20.0, 37.0], [18.0, 20.0, 11.0], [42.0, 28.0, 29.0], [14.0, 4.0, 23.0], [23.0, 41.0, 49.0]],
        predictions: [-3217581044.2783136, -741370.2657596343, -1077.292969156493, -968938.3211526584, 10676922.623366753, -423281745.04637367, -53453105.84051937, -4378380732.932154, -2569403.343315748, -1228599593.8278978]),
    TutorialReference(
        model: "weidman",
        start: ["fc1.weight": [0.4723112111687236, 0.6151427089551101, -1.7262271543679046, 0.9281967620586, -0.6075488808149324, -1.2213605218872623]],
        final: ["fc1.weight": [0.04884841192790712, 0.3371681866354678, -1.868055596132348, 0.9678834808136303, 0.12072560655158593, -0.8575618753672662]],
        input: [[0.4723112111687236, 0.6151427089551101, -1.7262271543679046], [0.9281967620586, -0.6075488808149324, -1.2213605218872623], [1.0062714840142817, 0.1921749658981332, -0.8679955831756838]],
        predictions: [0.20842440932268583, 0.9033471630546023, 0.7374635114639374, 0.6840212701708387, 0.3978029225393845, 0.7806820789887485])
]

/// models/ next to Tests/.
private let tutorialModels = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("models")

/// A fresh directory for one test's files.
private func tutorialScratch() throws -> URL { try scratchDirectory("tutorials") }

/// Runs `nnc ARGS…` through the library and returns what it printed; records a failure on a
/// non-zero exit status.
@discardableResult
private func runNNC(_ arguments: [String]) -> String {
    let console = Console.capturing()
    let status = runCommandLine(arguments, console: console)
    #expect(status == 0, "nnc \(arguments.joined(separator: " ")) exited with \(status): \(console.errors)")
    return console.output
}

/// |actual − expected| ≤ tolerance·max(1, |expected|) element-wise (absolute for values up to 1).
private func expectCloseToNumPy(_ actual: [Double], _ expected: [Double], _ what: String, tolerance: Double = 1e-6,
                                sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(actual.count == expected.count, "\(what): \(actual.count) values, expected \(expected.count)",
            sourceLocation: sourceLocation)
    let worst = zip(actual, expected).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
    #expect(worst <= tolerance, "\(what): differs from NumPy by up to \(worst)\n  nnc:   \(actual)\n  numpy: \(expected)",
            sourceLocation: sourceLocation)
}

private func expectParametersMatchNumPy(_ file: CompiledFile, _ expected: [String: [Double]], _ what: String,
                                        sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(Set(file.checkpoint.parameters.map(\.name)) == Set(expected.keys), "\(what): parameters \(file.checkpoint.parameters.map(\.name))",
            sourceLocation: sourceLocation)
    for (name, values) in expected.sorted(by: { $0.key < $1.key }) {
        guard let tensor = file.checkpoint.parameters.first(where: { $0.name == name }) else { continue }
        expectCloseToNumPy(tensor.values, values, "\(what) \(name)", sourceLocation: sourceLocation)
    }
}

/// Trains models/NAME.nn in f64 like `nnc train` and checks the starting weights (`nnc compile -o`),
/// the trained weights and the predictions (`nnc run`) against NumPy.
@Test(arguments: tutorialReferences)
func tutorialReproducesNumPy(_ reference: TutorialReference) throws {
    let model = tutorialModels.appendingPathComponent("\(reference.model).nn").path
    let scratch = try tutorialScratch()
    defer { try? FileManager.default.removeItem(at: scratch) }
    let start = scratch.appendingPathComponent("start.nnc").path
    let trained = scratch.appendingPathComponent("trained.nnc").path
    let input = scratch.appendingPathComponent("input.csv").path

    runNNC(["compile", model, "--dtype", "f64", "-o", start])
    expectParametersMatchNumPy(try CompiledFile.read(path: start), reference.start, "\(reference.model) starting")

    runNNC(["train", model, "--dtype", "f64", "-o", trained])
    expectParametersMatchNumPy(try CompiledFile.read(path: trained), reference.final, "\(reference.model) trained")

    let rows = reference.input.map { $0.map { "\($0)" }.joined(separator: ",") }
    try (rows.joined(separator: "\n") + "\n").write(toFile: input, atomically: true, encoding: .utf8)
    let printed = runNNC(["run", trained, "--input", input])
    let predictions = printed.split(separator: "\n").flatMap { $0.split(separator: ",").compactMap { Double($0) } }
    expectCloseToNumPy(predictions, reference.predictions, "\(reference.model) predictions")
}

/// The numbers the single-neuron tutorial prints: starting weights, trained weights and the
/// prediction for the new situation [1, 0, 0].
@Test func neuronPrintsTheTutorialsNumbers() throws {
    let model = tutorialModels.appendingPathComponent("neuron.nn").path
    let scratch = try tutorialScratch()
    defer { try? FileManager.default.removeItem(at: scratch) }
    let start = scratch.appendingPathComponent("start.nnc").path
    let trained = scratch.appendingPathComponent("trained.nnc").path
    let input = scratch.appendingPathComponent("new.csv").path

    runNNC(["compile", model, "--dtype", "f64", "-o", start])
    let initial = try #require(try CompiledFile.read(path: start).checkpoint.parameters.first { $0.name == "fc1.weight" })
    expectCloseToNumPy(initial.values, [-0.16595599, 0.44064899, -0.99977125], "starting weights", tolerance: 1e-8)

    runNNC(["train", model, "--dtype", "f64", "-o", trained])
    let final = try #require(try CompiledFile.read(path: trained).checkpoint.parameters.first { $0.name == "fc1.weight" })
    expectCloseToNumPy(final.values, [9.67299303, -0.2078435, -4.62963669], "trained weights", tolerance: 1e-8)

    try "1,0,0\n".write(toFile: input, atomically: true, encoding: .utf8)
    let prediction = runNNC(["run", trained, "--input", input]).split(separator: "\n").compactMap { Double($0) }
    expectCloseToNumPy(prediction, [0.99993704], "prediction for [1, 0, 0]", tolerance: 1e-8)
}

/// The layer library's XOR network in f32 (the default) learns XOR: the final epoch's mean squared
/// error and that of the trained network's predictions are below 0.01.
@Test func xorConvergesInF32() throws {
    let model = tutorialModels.appendingPathComponent("xor.nn").path
    let scratch = try tutorialScratch()
    defer { try? FileManager.default.removeItem(at: scratch) }
    let trained = scratch.appendingPathComponent("xor.nnc").path
    let input = scratch.appendingPathComponent("xor.csv").path

    runNNC(["train", model, "-o", trained])
    let file = try CompiledFile.read(path: trained)
    let last = try #require(file.checkpoint.history.last)
    #expect(file.checkpoint.history.count == 1000)
    #expect(last.loss < 0.01, "final epoch loss \(last.loss)")

    try "0,0\n0,1\n1,0\n1,1\n".write(toFile: input, atomically: true, encoding: .utf8)
    let outputs = runNNC(["run", trained, "--input", input]).split(separator: "\n").compactMap { Double($0) }
    try #require(outputs.count == 4)
    let mse = zip(outputs, [0.0, 1, 1, 0]).map { ($0 - $1) * ($0 - $1) }.reduce(0, +) / 4
    #expect(mse < 0.01, "predictions \(outputs)")
}

import Testing
@testable import Parser
import IR

/// Parses a model that must be valid and returns its statements.
func statements(_ text: String, path: String = "m.nn") throws -> [Statement] {
    try parseModel(SourceFile(path: path, text: text)).statements
}

/// The one statement of a one-line model, in the `--emit ast` form (every field).
func described(_ text: String) throws -> String {
    let parsed = try statements(text)
    try #require(parsed.count == 1, "expected one statement in \(text)")
    return ModelAST.describe(parsed[0].kind)
}

struct StatementCase: CustomTestStringConvertible, Sendable {
    var source: String
    var ast: String
    init(_ source: String, _ ast: String) { self.source = source; self.ast = ast }
    var testDescription: String { source }
}

@Suite("Every statement and option parses to the right AST")
struct ASTTests {
    static let inputs: [StatementCase] = [
        .init("input 2", "Input(dims: 2)"),
        .init("input 3x4", "Input(dims: 3x4)"),
        .init("input 1x28x28", "Input(dims: 1x28x28)"),
        .init("input 3 x 32 x 32", "Input(dims: 3x32x32)"),
        .init("input 2147483647", "Input(dims: 2147483647)"),
    ]

    static let denseLayers: [StatementCase] = [
        .init("fc 2->3", "FullyConnected(inputs: 2, outputs: 3, bias: true, init: default)"),
        .init("fc 2 -> 3", "FullyConnected(inputs: 2, outputs: 3, bias: true, init: default)"),
        .init("fc 128", "FullyConnected(inputs: inferred, outputs: 128, bias: true, init: default)"),
        .init("fc 3->1 nobias", "FullyConnected(inputs: 3, outputs: 1, bias: false, init: default)"),
        .init("fc 2->3 init uniform(-1,1)", "FullyConnected(inputs: 2, outputs: 3, bias: true, init: uniform(-1,1))"),
        .init("fc 2->3 init uniform( -0.5 , 0.5 )", "FullyConnected(inputs: 2, outputs: 3, bias: true, init: uniform(-0.5,0.5))"),
        .init("fc 2->3 init uniform(-1e-2,1E-2)", "FullyConnected(inputs: 2, outputs: 3, bias: true, init: uniform(-0.01,0.01))"),
        .init("fc 2->3 init normal(0,0.01)", "FullyConnected(inputs: 2, outputs: 3, bias: true, init: normal(0,0.01))"),
        .init("fc 2->3 init normal(-1.5,2)", "FullyConnected(inputs: 2, outputs: 3, bias: true, init: normal(-1.5,2))"),
        .init("fc 2->3 init xavier", "FullyConnected(inputs: 2, outputs: 3, bias: true, init: xavier)"),
        .init("fc 2->3 init he", "FullyConnected(inputs: 2, outputs: 3, bias: true, init: he)"),
        .init("fc 2->3 init zeros", "FullyConnected(inputs: 2, outputs: 3, bias: true, init: zeros)"),
        .init("fc 3->1 nobias init uniform(-1,1)", "FullyConnected(inputs: 3, outputs: 1, bias: false, init: uniform(-1,1))"),
        .init("fc 10 init he nobias", "FullyConnected(inputs: inferred, outputs: 10, bias: false, init: he)"),
    ]

    static let convolutions: [StatementCase] = [
        .init("conv 1->32 3x3", "Convolution(inputs: 1, outputs: 32, kernel: 3x3, stride: 1, pad: 0, bias: true, init: default)"),
        .init("conv 16 5", "Convolution(inputs: inferred, outputs: 16, kernel: 5x5, stride: 1, pad: 0, bias: true, init: default)"),
        .init("conv 3->8 3x5", "Convolution(inputs: 3, outputs: 8, kernel: 3x5, stride: 1, pad: 0, bias: true, init: default)"),
        .init("conv 1->4 3 stride 2", "Convolution(inputs: 1, outputs: 4, kernel: 3x3, stride: 2, pad: 0, bias: true, init: default)"),
        .init("conv 1->4 3 pad 1", "Convolution(inputs: 1, outputs: 4, kernel: 3x3, stride: 1, pad: 1, bias: true, init: default)"),
        .init("conv 1->4 3 nobias", "Convolution(inputs: 1, outputs: 4, kernel: 3x3, stride: 1, pad: 0, bias: false, init: default)"),
        .init("conv 1->4 3 init he", "Convolution(inputs: 1, outputs: 4, kernel: 3x3, stride: 1, pad: 0, bias: true, init: he)"),
        .init("conv 3->16 3x3 stride 2 pad 1 nobias init xavier",
              "Convolution(inputs: 3, outputs: 16, kernel: 3x3, stride: 2, pad: 1, bias: false, init: xavier)"),
        .init("conv 3->16 3x3 init normal(0,0.1) nobias pad 2 stride 3",
              "Convolution(inputs: 3, outputs: 16, kernel: 3x3, stride: 3, pad: 2, bias: false, init: normal(0,0.1))"),
        .init("conv 8 1x7 pad 0 init zeros stride 1",
              "Convolution(inputs: inferred, outputs: 8, kernel: 1x7, stride: 1, pad: 0, bias: true, init: zeros)"),
    ]

    static let others: [StatementCase] = [
        .init("maxpool 2x2", "Pooling(kind: maxpool, window: 2x2, stride: window)"),
        .init("maxpool 3", "Pooling(kind: maxpool, window: 3x3, stride: window)"),
        .init("maxpool 3x3 stride 2", "Pooling(kind: maxpool, window: 3x3, stride: 2)"),
        .init("avgpool 2x2", "Pooling(kind: avgpool, window: 2x2, stride: window)"),
        .init("avgpool 2 stride 1", "Pooling(kind: avgpool, window: 2x2, stride: 1)"),
        .init("avgpool 2x4", "Pooling(kind: avgpool, window: 2x4, stride: window)"),
        .init("flatten", "Flatten"),
        .init("dropout 0.5", "Dropout(probability: 0.5)"),
        .init("dropout 0", "Dropout(probability: 0)"),
        .init("dropout 0.999", "Dropout(probability: 0.999)"),
        .init("dropout 25e-2", "Dropout(probability: 0.25)"),
        .init("tanh", "Activation(tanh)"),
        .init("sigmoid", "Activation(sigmoid)"),
        .init("relu", "Activation(relu)"),
        .init("leakyrelu", "Activation(leakyrelu)"),  // the word as written; lowering resolves the default slope
        .init("leakyrelu 0.2", "Activation(leakyrelu 0.2)"),
        .init("leakyrelu 0", "Activation(leakyrelu 0)"),
        .init("leakyrelu 1e-1", "Activation(leakyrelu 1e-1)"),
        .init("softmax", "Activation(softmax)"),
        .init("identity", "Activation(identity)"),
        .init("pow 2", "Activation(pow 2)"),
        .init("pow 3", "Activation(pow 3)"),
        .init("pow 1", "Activation(pow 1)"),
        .init("loss mse", "Loss(mse)"),
        .init("loss sse", "Loss(sse)"),
        .init("loss sum", "Loss(sum)"),
        .init("loss crossentropy", "Loss(crossentropy)"),
        .init("loss bce", "Loss(bce)"),
        .init(#"data "data/xor.csv""#, #"Data(train: "data/xor.csv")"#),
        .init(#"data test "data/test.csv""#, #"Data(test: "data/test.csv")"#),
        .init(#"data "my data/x y.csv""#, #"Data(train: "my data/x y.csv")"#),
        .init(#"data "/abs/path.npy""#, #"Data(train: "/abs/path.npy")"#),
    ]

    static let trains: [StatementCase] = [
        .init("train sgd", "Train(optimizer: sgd)"),
        .init("train adam", "Train(optimizer: adam)"),
        .init("train sgd lr 0.1 epochs 1000 batch 1 seed 1 shuffle off momentum 0.9 nesterov on decay 1e-4",
              "Train(optimizer: sgd, lr: 0.1, epochs: 1000, batch: 1, seed: 1, shuffle: off, momentum: 0.9, nesterov: on, decay: 0.0001)"),
        .init("train sgd shuffle on nesterov off seed 0 momentum 0 decay 0",
              "Train(optimizer: sgd, shuffle: on, nesterov: off, seed: 0, momentum: 0, decay: 0)"),
        .init("train adam lr 1e-3 beta1 0.8 beta2 0.99 eps 1e-7 epochs 5 batch 64 seed 42 shuffle on decay 0.01",
              "Train(optimizer: adam, lr: 0.001, beta1: 0.8, beta2: 0.99, eps: 1e-07, epochs: 5, batch: 64, seed: 42, shuffle: on, decay: 0.01)"),
        .init("train sgd lr 5", "Train(optimizer: sgd, lr: 5)"),
    ]

    @Test(arguments: inputs) func input(_ c: StatementCase) throws { #expect(try described(c.source) == c.ast) }
    @Test(arguments: denseLayers) func fullyConnected(_ c: StatementCase) throws { #expect(try described(c.source) == c.ast) }
    @Test(arguments: convolutions) func convolution(_ c: StatementCase) throws { #expect(try described(c.source) == c.ast) }
    @Test(arguments: others) func otherStatements(_ c: StatementCase) throws { #expect(try described(c.source) == c.ast) }
    @Test(arguments: trains) func train(_ c: StatementCase) throws { #expect(try described(c.source) == c.ast) }

    @Test func structuredFields() throws {
        let parsed = try statements("fc 2->3 nobias init normal(0.5,2)\nconv 3->16 3x5 stride 2 pad 1\nmaxpool 2x3 stride 1\ntrain adam lr 0.01 shuffle off\n")
        try #require(parsed.count == 4)
        guard case .fc(let fc) = parsed[0].kind else { Issue.record("not fc"); return }
        #expect(fc.inputs == Sized(2, SourceRange(start: 3, end: 4)))
        #expect(fc.outputs == Sized(3, SourceRange(start: 6, end: 7)))
        #expect(fc.bias == false)
        #expect(fc.initializer == .normal(mean: 0.5, std: 2))
        #expect(parsed[0].keywordRange == SourceRange(start: 0, end: 2))
        #expect(parsed[0].range == SourceRange(start: 0, end: 33))
        guard case .conv(let conv) = parsed[1].kind else { Issue.record("not conv"); return }
        #expect([conv.inputs?.value, conv.outputs.value, conv.kernelHeight.value, conv.kernelWidth.value, conv.stride.height.value, conv.stride.width.value, conv.padding.height.value, conv.padding.width.value] == [3, 16, 3, 5, 2, 2, 1, 1])
        #expect(conv.bias && conv.initializer == nil)
        guard case .pool(let pool) = parsed[2].kind else { Issue.record("not pool"); return }
        #expect(pool.kind == .max && pool.windowHeight.value == 2 && pool.windowWidth.value == 3 && pool.stride?.height.value == 1 && pool.stride?.width.value == 1)
        guard case .train(let spec) = parsed[3].kind else { Issue.record("not train"); return }
        #expect(spec.optimizer == .adam)
        #expect(spec.options.map(\.key) == ["lr", "shuffle"])
        #expect(spec.options.map(\.value) == [0.01, 0])
    }

    @Test func dataPathEscapes() throws {
        let parsed = try statements(#"data "a \"q\" b\\c""#)
        guard case .data(let test, let path, let range) = parsed.first?.kind else { Issue.record("not data"); return }
        #expect(!test)
        #expect(path == #"a "q" b\c"#)
        #expect(range == SourceRange(start: 5, end: 19))
    }

    @Test func semicolonsNewlinesAndComments() throws {
        let text = """
        # A comment on its own line
        input 2; fc 2->3;tanh   # a trailing comment

        ;;
        fc 3->1 ; tanh;
        \t loss mse # done
        data "x.csv"; train sgd lr 0.1
        """
        let ast = try parseModel(SourceFile(path: "m.nn", text: text))
        #expect(ast.printed() == """
        model m.nn
          2:1  Input(dims: 2)
          2:10  FullyConnected(inputs: 2, outputs: 3, bias: true, init: default)
          2:18  Activation(tanh)
          5:1  FullyConnected(inputs: 3, outputs: 1, bias: true, init: default)
          5:11  Activation(tanh)
          6:3  Loss(mse)
          7:1  Data(train: "x.csv")
          7:15  Train(optimizer: sgd, lr: 0.1)

        """)
    }

    @Test func crlfLineEndings() throws {
        let parsed = try statements("input 2\r\nfc 2->1\r\nloss mse\r\n")
        #expect(parsed.map { ModelAST.describe($0.kind) } == ["Input(dims: 2)", "FullyConnected(inputs: 2, outputs: 1, bias: true, init: default)", "Loss(mse)"])
    }

    @Test func emptyAndCommentOnlyFilesHaveNoStatements() throws {
        #expect(try statements("").isEmpty)
        #expect(try statements("\n\n;\n").isEmpty)
        #expect(try statements("# nothing here\n   # still nothing").isEmpty)
    }

    @Test func statementRangesCoverTheStatementOnly() throws {
        let source = SourceFile(path: "m.nn", text: "input 1x28x28  # c\nconv 1->8 3x3 stride 2 ;relu\n")
        let parsed = try parseModel(source).statements
        #expect(parsed.map { source.text(of: $0.range) } == ["input 1x28x28", "conv 1->8 3x3 stride 2", "relu"])
        #expect(parsed.map { source.text(of: $0.keywordRange) } == ["input", "conv", "relu"])
    }
}

import Testing
import TestSupport
@testable import IR
import Parser

/// Parses and lowers a model that must be valid.
func lowered(_ text: String, path: String = "m.nn", training: Bool = false) throws -> LoweredModel {
    try lower(try parseModel(SourceFile(path: path, text: text)), training: training)
}

/// The diagnostics of a model that parses but must fail to lower.
func loweringErrors(_ text: String, path: String = "m.nn") throws -> DiagnosticError {
    let ast = try parseModel(SourceFile(path: path, text: text))
    do {
        _ = try lower(ast)
    } catch {
        return error
    }
    Issue.record("the model lowered without errors: \(text)")
    return DiagnosticError(source: ast.source, diagnostics: [])
}

@Suite("Shape and structure diagnostics: exact message, line, column and notes")
struct LoweringDiagnosticTests {
    /// The example of DESIGN §3, character for character.
    @Test func designExample() throws {
        let error = try loweringErrors("fc 2->3\ntanh\nfc 4->1\n", path: "models/bad.nn")
        #expect(error.rendered.withoutDiagnosticIDs == """
        models/bad.nn:3:4: error: fc expects 4 input features, but the previous layer produces 3
        fc 4->1
           ^
        models/bad.nn:1:1: note: the previous layer is 'fc 2->3'
        models/bad.nn: note: did you mean 'fc 3->1'?

        """)
    }

    @Test func shapeMismatchAfterAnInputStatement() throws {
        let m = Marked("input 2\n2️⃣fc 2->3\nrelu\ndropout 0.5\nfc 1️⃣4->1\nloss mse")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs
                == m.error("1️⃣", "fc expects 4 input features, but the previous layer produces 3")
                + m.note("2️⃣", "the previous layer is 'fc 2->3'") + "m.nn: note: did you mean 'fc 3->1'?\n")
    }

    @Test func firstFcMustMatchTheInput() throws {
        let m2 = Marked("2️⃣input 5\nfc 1️⃣4->2")
        #expect(try loweringErrors(m2.text).rendered.withoutDiagnosticIDs
                == m2.error("1️⃣", "fc expects 4 input features, but the previous layer produces 5")
                + m2.note("2️⃣", "the previous layer is 'input 5'") + "m.nn: note: did you mean 'fc 5->2'?\n")
    }

    @Test func flattenThenWrongFc() throws {
        let m = Marked("input 1x28x28\nconv 1->32 3x3\nrelu\nmaxpool 2x2\n2️⃣flatten\nfc 1️⃣100->10\nloss crossentropy")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs
                == m.error("1️⃣", "flatten produces 5408 features; did you mean 'fc 5408->10'?", width: 3)
                + m.note("2️⃣", "the previous layer is 'flatten'"))
    }

    @Test func convWithoutInput() throws {
        let m = Marked("1️⃣conv 1->4 3x3\nloss mse")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs
                == m.error("1️⃣", "a conv net needs its image size: start the model with 'input CxHxW' (e.g. 'input 1x28x28')", width: 13))
    }

    @Test func convKernelLargerThanInput() throws {
        let m = Marked("2️⃣input 1x5x5\nconv 1->4 1️⃣7x7")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs
                == m.error("1️⃣", "conv kernel 7x7 is larger than its input 5x5", width: 3) + m.note("2️⃣", "the previous layer is 'input 1x5x5'"))
        let padded = Marked("input 1x5x6\n2️⃣conv 1->4 2\nrelu\nconv 4->4 1️⃣3x9 pad 1")
        #expect(try loweringErrors(padded.text).rendered.withoutDiagnosticIDs
                == padded.error("1️⃣", "conv kernel 3x9 is larger than its input 4x5 padded by 1", width: 3)
                + padded.note("2️⃣", "the previous layer is 'conv 1->4 2'"))
    }

    @Test func poolWindowLargerThanInput() throws {
        let m = Marked("2️⃣input 1x5x5\nmaxpool 1️⃣6x6")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs
                == m.error("1️⃣", "maxpool window 6x6 is larger than its input 5x5", width: 3) + m.note("2️⃣", "the previous layer is 'input 1x5x5'"))
        let single = Marked("input 3x8x8\n2️⃣conv 3->2 3 stride 2\nrelu\navgpool 1️⃣4")
        #expect(try loweringErrors(single.text).rendered.withoutDiagnosticIDs
                == single.error("1️⃣", "avgpool window 4x4 is larger than its input 3x3")
                + single.note("2️⃣", "the previous layer is 'conv 3->2 3 stride 2'"))
    }

    @Test func fcAfterConvWithoutFlatten() throws {
        let m = Marked("input 1x5x5\n2️⃣conv 4 3\nrelu\n1️⃣fc 10\nloss crossentropy")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs
                == m.error("1️⃣", "fc needs a flat input, but the previous layer produces 4x3x3; add 'flatten' before it (it gives 36 features)", width: 5)
                + m.note("2️⃣", "the previous layer is 'conv 4 3'"))
    }

    @Test func convAndPoolNeedImages() throws {
        let conv = Marked("input 4\n2️⃣fc 4->8\ntanh\n1️⃣conv 8->2 3")
        #expect(try loweringErrors(conv.text).rendered.withoutDiagnosticIDs
                == conv.error("1️⃣", "conv needs an image input (channels x height x width), but the previous layer produces 8 features", width: 11)
                + conv.note("2️⃣", "the previous layer is 'fc 4->8'"))
        let pool = Marked("2️⃣input 3x4\n1️⃣maxpool 2")
        #expect(try loweringErrors(pool.text).rendered.withoutDiagnosticIDs
                == pool.error("1️⃣", "maxpool needs an image input (channels x height x width), but the previous layer produces 3x4", width: 9)
                + pool.note("2️⃣", "the previous layer is 'input 3x4'"))
    }

    @Test func convChannelMismatch() throws {
        let m = Marked("2️⃣input 3x8x8\nconv 1️⃣1->2 3")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs
                == m.error("1️⃣", "conv expects 1 input channels, but the previous layer produces 3")
                + m.note("2️⃣", "the previous layer is 'input 3x8x8'") + "m.nn: note: did you mean 'conv 3->2 …'?\n")
    }

    @Test func imageLossAndSoftmaxNeedFlatInputs() throws {
        let loss = Marked("2️⃣input 1x4x4\n1️⃣loss mse")
        #expect(try loweringErrors(loss.text).rendered.withoutDiagnosticIDs
                == loss.error("1️⃣", "loss mse needs a flat output, but the last layer produces 1x4x4; add 'flatten' and an 'fc' before it", width: 8)
                + loss.note("2️⃣", "the previous layer is 'input 1x4x4'"))
        let softmax = Marked("2️⃣input 1x4x4\n1️⃣softmax")
        #expect(try loweringErrors(softmax.text).rendered.withoutDiagnosticIDs
                == softmax.error("1️⃣", "softmax needs a flat input, but the previous layer produces 1x4x4; add 'flatten' before it", width: 7)
                + softmax.note("2️⃣", "the previous layer is 'input 1x4x4'"))
    }

    @Test func layersNeedAnInput() throws {
        let m = Marked("1️⃣tanh\nfc 2->1")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs
                == m.error("1️⃣", "'tanh' needs an input; start the model with 'input N' (or 'input CxHxW' for images) or 'fc I->O'", width: 4))
        let fc = Marked("1️⃣fc 3\nloss mse")
        #expect(try loweringErrors(fc.text).rendered.withoutDiagnosticIDs
                == fc.error("1️⃣", "'fc 3' needs an input; start the model with 'input N' (or 'input CxHxW' for images) or 'fc I->O'", width: 4))
    }

    @Test func duplicateStatementsPointAtTheFirst() throws {
        let m = Marked("""
        2️⃣input 2
        1️⃣input 3
        fc 2->1
        loss mse
        4️⃣data "a.csv"
        3️⃣data "b.csv"
        6️⃣data test "c.csv"
        5️⃣data test "d.csv"
        8️⃣train sgd
        7️⃣train adam lr 0.1
        """)
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs == [
            m.error("1️⃣", "the model has two 'input' statements", width: 7) + m.note("2️⃣", "the first is here"),
            m.error("3️⃣", "the model has two 'data' statements", width: 12) + m.note("4️⃣", "the first is here"),
            m.error("5️⃣", "the model has two 'data test' statements", width: 17) + m.note("6️⃣", "the first is here"),
            m.error("7️⃣", "the model has two 'train' statements", width: 17) + m.note("8️⃣", "the first is here"),
        ].joined())
    }

    @Test func inputAfterLayers() throws {
        let m = Marked("fc 2->1\n1️⃣input 2")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs == m.error("1️⃣", "'input' must come before the layers", width: 7))
    }

    @Test func statementAfterTheLoss() throws {
        let m = Marked("input 2\nfc 2->1\n2️⃣loss mse\n1️⃣tanh\ndata \"x.csv\"\ntrain sgd")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs
                == m.error("1️⃣", "'tanh' comes after the loss; the loss must be the last layer statement", width: 4)
                + m.note("2️⃣", "the loss is here"))
    }

    @Test func parameterOverTwoToThe31Elements() throws {
        let fc = Marked("input 65536\n1️⃣fc 65536->65536\nloss mse")
        #expect(try loweringErrors(fc.text).rendered.withoutDiagnosticIDs
                == fc.error("1️⃣", "parameter fc1.weight would have 4294967296 elements (65536×65536), more than the limit of 2^31", width: 15))
        let conv = Marked("input 50000x1x1\nconv 50000->3 1\n1️⃣conv 3->1073741824 1")
        #expect(try loweringErrors(conv.text).rendered.withoutDiagnosticIDs
                == conv.error("1️⃣", "parameter conv2.weight would have 3221225472 elements (1073741824×3×1×1), more than the limit of 2^31", width: 20))
        // Exactly 2^31 is allowed (no data is allocated by lowering).
        #expect(try lowered("input 2\nfc 2->1073741824").parameterCount == 2 * 1073741824 + 1073741824)
        let input = Marked("input 1️⃣1x50000x50000")
        #expect(try loweringErrors(input.text).rendered.withoutDiagnosticIDs
                == input.error("1️⃣", "the input would have 2500000000 elements (1×50000×50000), more than the limit of 2^31", width: 13))
        let activations = Marked("input 1x32768x32768\n1️⃣conv 1->3 1")
        #expect(try loweringErrors(activations.text).rendered.withoutDiagnosticIDs
                == activations.error("1️⃣", "the output of 'conv 1->3 1' would have 3221225472 elements (3×32768×32768), more than the limit of 2^31", width: 11))
    }

    @Test(arguments: ["", "\n\n", "# just a comment\n", ";;"])
    func emptyModel(_ text: String) throws {
        let error = try loweringErrors(text)
        #expect(error.diagnostics.count == 1)
        #expect(error.rendered.withoutDiagnosticIDs.hasPrefix("m.nn:1:1: error: the model has no layers; write at least 'input N' or 'fc I->O'\n"))
    }

    @Test func onlySettingsIsNoModel() throws {
        let m = Marked("1️⃣data \"x.csv\"\ntrain sgd")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs
                == m.error("1️⃣", "the model has no layers; write at least 'input N' or 'fc I->O'", width: 12))
    }

    /// Independent errors are all reported, in file order; a shape error does not hide the later
    /// errors that do not depend on shapes.
    @Test func severalIndependentErrors() throws {
        let m = Marked("""
        2️⃣input 2
        1️⃣input 3
        4️⃣fc 2->3
        fc 3️⃣4->1
        fc 1->1
        6️⃣loss mse
        5️⃣relu
        8️⃣data "a.csv"
        7️⃣data "b.csv"
        """)
        let error = try loweringErrors(m.text)
        #expect(error.diagnostics.count == 4)
        #expect(error.rendered.withoutDiagnosticIDs == [
            m.error("1️⃣", "the model has two 'input' statements", width: 7) + m.note("2️⃣", "the first is here"),
            m.error("3️⃣", "fc expects 4 input features, but the previous layer produces 3") + m.note("4️⃣", "the previous layer is 'fc 2->3'")
                + "m.nn: note: did you mean 'fc 3->1'?\n",
            m.error("5️⃣", "'relu' comes after the loss; the loss must be the last layer statement", width: 4) + m.note("6️⃣", "the loss is here"),
            m.error("7️⃣", "the model has two 'data' statements", width: 12) + m.note("8️⃣", "the first is here"),
        ].joined())
    }

    /// Statements longer than a screen are cut when quoted.
    @Test func longStatementsAreCutInMessages() throws {
        let long = "fc " + String(repeating: "0", count: 200) + "1->1"
        let error = try loweringErrors("input 2\nfc 2->1\nloss mse\n" + long)
        let message = try #require(error.diagnostics.first?.message)
        #expect(message.hasPrefix("'fc 000"))
        #expect(message.hasSuffix("…' comes after the loss; the loss must be the last layer statement"))
        #expect(message.count < 160)
    }
}

/// reshape, prelu and pad: their errors with exact places.
@Suite struct BorderLayerDiagnosticTests {
    @Test func reshapeToAnotherSize() throws {
        let m = Marked("input 2x3x4\nreshape 1️⃣5x5\nloss sum")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs
                == m.error("1️⃣", "reshape to 5x5 needs 25 values per sample, but the previous layer produces 2x3x4 (24)", width: 3)
                + "m.nn:1:1: note: the previous layer is 'input 2x3x4'\n")
    }

    @Test func preluSlopesMustMatchTheChannels() throws {
        let m = Marked("input 3x4x4\nprelu 1️⃣4")
        let rendered = try loweringErrors(m.text).rendered.withoutDiagnosticIDs
        #expect(rendered.hasPrefix(m.error("1️⃣", "prelu 4 has one slope per channel, but the previous layer produces 3 channels")))
        #expect(rendered.hasSuffix("m.nn: note: did you mean 'prelu 3' (or 'prelu' for one shared slope)?\n"))
        #expect(try lowered("input 3x4x4\nprelu 3\nprelu\nprelu 1").graph.parameters.map(\.shape.dims) == [[3], [1], [1]])
    }

    @Test func reflectionNeedsBordersSmallerThanTheImage() throws {
        let m = Marked("input 1x3x5\npad 1️⃣1x2 3x1 reflect")
        #expect(try loweringErrors(m.text).rendered.withoutDiagnosticIDs.hasPrefix(
            m.error("1️⃣", "pad reflect needs borders smaller than the image 3x5 (it mirrors without the edge)", width: 7)))
        let padded = try lowered("input 1x3x5\npad 1x2 2x1 reflect")
        #expect(padded.outputShape.dims == [1, 6, 8])
    }

    @Test func padTakesOneModeAndAnImage() throws {
        let twice = Marked("input 1x3x5\npad 1 reflect 1️⃣value 2")
        do {
            _ = try parseModel(SourceFile(path: "m.nn", text: twice.text))
            Issue.record("two modes parsed")
        } catch {
            #expect(error.rendered.withoutDiagnosticIDs.hasPrefix(twice.error("1️⃣", "pad takes one of 'reflect', 'replicate' or 'value V'; 'reflect' is given already", width: 5)))
        }
        let flat = Marked("input 4\n1️⃣pad 1")
        #expect(try loweringErrors(flat.text).rendered.withoutDiagnosticIDs.hasPrefix(
            flat.error("1️⃣", "pad needs an image input (channels x height x width), but the previous layer produces 4 features", width: 5)))
    }
}

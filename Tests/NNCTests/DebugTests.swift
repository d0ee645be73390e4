import Testing
@testable import NNC
@testable import IR
@testable import Runtime
import Parser

@Test func debugLinear() throws {
    let program = try ModelProgram.compile(SourceFile(path: "lin.nn", text: "input 2\nfc 2->1 nobias\nloss sse\n"))
    let graph = try program.gradientGraph(dtype: .f64).optimized(verify: true).graph
    print(graph.printed())
    let plan = try Plan(graph: graph, batch: 1)
    print(plan.printed())
    let store = ParameterStore<Double>(graph: graph)
    store.parameters[0][0] = 0.5; store.parameters[0][1] = -0.25
    let session = try Session<Double>(plan: plan, store: store, threads: 1)
    session.inputPointer![0] = 1; session.inputPointer![1] = 2
    session.targetPointer![0] = 3
    try session.run(batch: 1)
    print("loss", session.lossValue, "grad", session.pointer(graph.gradients[0]!)[0], session.pointer(graph.gradients[0]!)[1])
    for v in graph.values.indices { print(graph.values[v].name, session.pointer(ValueID(v))[0]) }
}

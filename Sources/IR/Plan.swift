import Foundation
/// A plan that cannot be made for the requested batch size (too large for the machine or the
/// tensor limit). Its message is for the user.
public struct PlanError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}

/// Where a value lives while a plan runs.
public enum Storage: Hashable, Sendable {
    /// In the model's parameter store: parameters and optimizer state, kept across steps.
    case parameter(Int)
    case state(Int)
    /// In the step's arena, at a byte offset.
    case arena(offset: Int)
}

/// A linear schedule over one arena: every value gets storage; arena offsets come from the
/// values' lifetimes (first and last use), element-wise ops write in place where the operand dies,
/// reshapes alias their operand. Made for a concrete batch size; running it allocates nothing.
public struct Plan: Sendable {
    public struct Buffer: Sendable {
        /// The values sharing this buffer (an op in place, a reshape alias).
        public var values: [ValueID]
        public var offset: Int
        public var bytes: Int
        /// Schedule positions of the first definition and the last use.
        public var firstUse: Int
        public var lastUse: Int
    }

    public var graph: Graph
    public var batch: Int
    public var storage: [Storage?]
    public var buffers: [Buffer]
    public var arenaBytes: Int
    /// Bytes if every value had a buffer of its own.
    public var unplannedBytes: Int
    /// Nodes that write their result over an operand.
    public var inPlace: Set<Int>

    public var savedBytes: Int { unplannedBytes - arenaBytes }

    /// The largest arena a plan may ask for: the machine's physical memory.
    public static var defaultMemoryLimit: Int { Int(clamping: ProcessInfo.processInfo.physicalMemory) }

    /// Plans `graph` for batches of up to `batch` rows. Values in `keep` (and the graph's roots and
    /// gradients) live to the end of the step so they can be read afterwards.
    public init(graph: Graph, batch: Int, keep: [ValueID] = [], memoryLimit: Int = Plan.defaultMemoryLimit) throws(PlanError) {
        guard batch >= 1 else { throw PlanError(message: "the batch size must be at least 1") }
        // Sizes come from the user (--batch): check them before any arithmetic that could overflow.
        for value in graph.values where value.shape.batched {
            let (elements, overflow) = value.shape.rowElements.multipliedReportingOverflow(by: batch)
            guard !overflow, elements <= maxTensorElements else {
                throw PlanError(message: "batch \(batch) is too large: %\(value.name) would have \(overflow ? "more than 2^63" : String(elements)) elements (\(value.shape.plain.replacingOccurrences(of: "N", with: String(batch)))), more than the limit of 2^31")
            }
        }
        self.graph = graph
        self.batch = batch
        let alignment = 64
        let elementBytes = graph.dtype.byteSize
        var storage = [Storage?](repeating: nil, count: graph.values.count)
        // Storage classes: a value that reuses another's buffer joins its class.
        var classOf = Array(0..<graph.values.count)
        func root(_ v: Int) -> Int { var v = v; while classOf[v] != v { v = classOf[v] }; return v }
        var first = [Int](repeating: Int.max, count: graph.values.count)
        var last = [Int](repeating: -1, count: graph.values.count)
        var persistent = [Bool](repeating: false, count: graph.values.count)
        let end = graph.nodes.count
        var lastUse = [Int](repeating: -1, count: graph.values.count)
        for (position, node) in graph.nodes.enumerated() { for operand in node.operands { lastUse[operand.index] = position } }
        let kept = Set(graph.roots + graph.gradients.compactMap { $0 } + keep)
        for value in kept { lastUse[value.index] = end }
        // The input and target are never overwritten, so a plan can run again on the same data.
        var readOnly = [Bool](repeating: false, count: graph.values.count)
        for node in graph.nodes where node.op == .input || node.op == .target {
            for r in node.results { readOnly[r.index] = true; lastUse[r.index] = end }
        }
        var inPlace: Set<Int> = []
        // The last use of any value in a storage class (a buffer may be written in place only when
        // every value in it is dead after this node, aliases included).
        var classLastUse = lastUse

        // By name through dictionaries: a search per node would be quadratic in the model's depth.
        WorkCounter.count(graph.nodes.count + graph.values.count)
        let parameterIndex = Dictionary(graph.parameters.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { first, _ in first })
        let stateIndex = Dictionary(graph.states.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { first, _ in first })
        for (position, node) in graph.nodes.enumerated() {
            if case .parameter(let name) = node.op {
                let index = parameterIndex[name] ?? 0
                storage[node.results[0].index] = .parameter(index)
                persistent[node.results[0].index] = true
                continue
            }
            if case .state(let name) = node.op {
                guard let index = stateIndex[name] else {
                    throw PlanError(message: "internal error: the state '\(name)' is not among the graph's states")
                }
                storage[node.results[0].index] = .state(index)
                persistent[node.results[0].index] = true
                continue
            }
            // Reuse an operand's buffer: reshape always aliases; element-wise ops when the operand dies here.
            var reused: Int?
            if case .reshape = node.op, !persistent[node.operands[0].index] {
                reused = node.operands[0].index
            } else if node.op.elementwise {
                let resultBytes = graph[node.results[0]].shape.elements(batch: batch)
                for operand in node.operands where !persistent[operand.index] && !readOnly[root(operand.index)]
                    && classLastUse[root(operand.index)] == position
                    && graph[operand].shape.elements(batch: batch) == resultBytes {
                    reused = operand.index
                    break
                }
                if reused != nil { inPlace.insert(position) }
            }
            // The input and target are filled before the step starts: live from the first instruction.
            if node.op == .input || node.op == .target { first[node.results[0].index] = 0; continue }
            for (k, result) in node.results.enumerated() {
                if k == 0, let reused {
                    let r = root(reused)
                    classOf[result.index] = r
                    classLastUse[r] = max(classLastUse[r], lastUse[result.index])
                }
                first[root(result.index)] = min(first[root(result.index)], position)
            }
        }
        for value in graph.values.indices where !persistent[value] {
            let r = root(value)
            last[r] = max(last[r], lastUse[value], first[r])
        }
        // Assign offsets: walk buffers by first use; free those whose last use is before; first fit.
        var members: [Int: [ValueID]] = [:]
        for value in graph.values.indices where !persistent[value] && first[root(value)] != Int.max {
            members[root(value), default: []].append(ValueID(value))
        }
        var buffers: [Buffer] = []
        var unplanned = 0
        for (r, values) in members {
            let bytes = values.map { graph[$0].shape.elements(batch: batch) * elementBytes }.max() ?? 0
            for value in values { unplanned += (graph[value].shape.elements(batch: batch) * elementBytes + alignment - 1) / alignment * alignment }
            buffers.append(Buffer(values: values.sorted(), offset: 0, bytes: (bytes + alignment - 1) / alignment * alignment,
                                  firstUse: first[r], lastUse: last[r]))
        }
        buffers.sort { ($0.firstUse, $0.values[0]) < ($1.firstUse, $1.values[0]) }
        let arena = Plan.placeFirstFit(&buffers)
        for buffer in buffers { for value in buffer.values { storage[value.index] = .arena(offset: buffer.offset) } }
        guard arena <= memoryLimit else {
            throw PlanError(message: "batch \(batch) needs \(arena >> 20) MiB of working memory, more than this machine's \(memoryLimit >> 20) MiB; use a smaller batch")
        }
        self.storage = storage
        self.buffers = buffers
        self.arenaBytes = arena
        self.unplannedBytes = unplanned
        self.inPlace = inPlace
    }

    /// Sets the offset of each buffer (sorted by first use): the lowest where it fits among those
    /// still live at its first use. Returns the arena's size.
    static func placeFirstFit(_ buffers: inout [Buffer]) -> Int {
        // Buffers in the order they die, to free each before the first buffer that starts after it.
        let byLastUse = buffers.indices.sorted { (buffers[$0].lastUse, $0) < (buffers[$1].lastUse, $1) }
        var dying = byLastUse.startIndex
        var space = FirstFitSpace()
        for index in buffers.indices {
            // A buffer used only at one position that defines it still needs room then.
            while dying < byLastUse.endIndex, buffers[byLastUse[dying]].lastUse < buffers[index].firstUse {
                space.free(offset: buffers[byLastUse[dying]].offset, bytes: buffers[byLastUse[dying]].bytes)
                dying += 1
            }
            buffers[index].offset = space.place(bytes: buffers[index].bytes)
        }
        return space.peak
    }

    /// The text of `--emit plan`.
    public func printed() -> String {
        var out = "# plan for batch \(batch): \(graph.nodes.count) instructions\n"
        for (position, node) in graph.nodes.enumerated() {
            let results = node.results.map { "%" + graph[$0].name }.joined(separator: ", ")
            let operands = node.operands.map { "%" + graph[$0].name }.joined(separator: ", ")
            out += String(format: "%4d  ", position) + (results.isEmpty ? "" : results + " = ") + node.op.name
                + (operands.isEmpty ? "" : " " + operands) + (inPlace.contains(position) ? "   (in place)" : "") + "\n"
        }
        out += "# buffers (offset, bytes, live range in instructions, values)\n"
        for buffer in buffers.sorted(by: { ($0.offset, $0.firstUse) < ($1.offset, $1.firstUse) }) {
            out += String(format: "  @%-9d %9d B  [%3d, %3d]  ", buffer.offset, buffer.bytes, buffer.firstUse, buffer.lastUse)
                + buffer.values.map { "%" + graph[$0].name }.joined(separator: " ") + "\n"
        }
        let persistentBytes = graph.parameters.reduce(0) { $0 + $1.shape.rowElements } * graph.dtype.byteSize
            + graph.states.reduce(0) { $0 + graph[$1.value].shape.rowElements } * graph.dtype.byteSize
        out += "# arena: \(arenaBytes) bytes peak (one buffer per value: \(unplannedBytes) bytes; saved \(savedBytes) bytes, \(unplannedBytes > 0 ? savedBytes * 100 / unplannedBytes : 0)%)\n"
        out += "# parameters and optimizer state: \(persistentBytes) bytes\n"
        return out
    }
}

/// First-fit placement in one arena: a buffer goes to the lowest offset where it fits among the
/// buffers still live. The free space below the top (the end of the highest live buffer) is kept as
/// sorted, disjoint, non-adjacent holes, so a placement scans the holes, not every live buffer (a
/// deep model keeps its forward activations live until the backward pass: thousands of buffers).
struct FirstFitSpace {
    private var holes: [(offset: Int, bytes: Int)] = []
    private var top = 0
    /// The highest top so far: the arena's size.
    private(set) var peak = 0

    mutating func place(bytes: Int) -> Int {
        // An empty buffer takes no room; offset 0 is as good as any.
        guard bytes > 0 else { return 0 }
        let found = holes.firstIndex(where: { $0.bytes >= bytes })
        WorkCounter.count(found.map { $0 + 1 } ?? holes.count)
        if let index = found {
            let offset = holes[index].offset
            if holes[index].bytes == bytes { holes.remove(at: index) } else { holes[index].offset += bytes; holes[index].bytes -= bytes }
            return offset
        }
        let offset = top
        top += bytes
        peak = max(peak, top)
        return offset
    }

    mutating func free(offset: Int, bytes: Int) {
        guard bytes > 0 else { return }
        var start = offset, end = offset + bytes
        // The first hole above this block (binary search), then merge with the neighbours.
        var low = 0, high = holes.count
        while low < high {
            let mid = (low + high) / 2
            if holes[mid].offset < offset { low = mid + 1 } else { high = mid }
        }
        var index = low
        // Inserting or removing a hole moves those above it.
        WorkCounter.count(holes.count - index + 1)
        if index > 0, holes[index - 1].offset + holes[index - 1].bytes == start {
            start = holes[index - 1].offset
            holes.remove(at: index - 1)
            index -= 1
        }
        if index < holes.count, holes[index].offset == end {
            end += holes[index].bytes
            holes.remove(at: index)
        }
        if end == top { top = start } else { holes.insert((start, end - start), at: index) }
    }
}

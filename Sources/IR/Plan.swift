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

    /// An upper bound on the arena of a plan of `graph` at `batch`, and of the graph the passes make
    /// from it when they add no values (only fold-batchnorm does, on evaluation graphs): every value,
    /// parameters included, in a buffer of its own. Nil when a tensor is over the limit or the sum
    /// overflows (the plan says which). A bound within the machine's memory means a plan cannot fail
    /// for memory, without running the passes and the planner.
    public static func arenaBound(of graph: Graph, batch: Int) -> Int? {
        guard batch >= 1 else { return nil }
        var total = 0
        for value in graph.values {
            let (elements, overflow) = value.shape.rowElements.multipliedReportingOverflow(by: value.shape.batched ? batch : 1)
            guard !overflow, elements <= maxTensorElements else { return nil }
            // At most 2^31 elements of 8 bytes, rounded up to the alignment: no overflow.
            let (sum, sumOverflow) = total.addingReportingOverflow((elements * graph.dtype.byteSize + 63) / 64 * 64)
            guard !sumOverflow else { return nil }
            total = sum
        }
        return total
    }

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
        for position in graph.nodes.indices { for operand in graph.nodes[position].operands { lastUse[operand.index] = position } }
        for value in graph.roots + graph.gradients.compactMap({ $0 }) + keep { lastUse[value.index] = end }
        // The input and target are never overwritten, so a plan can run again on the same data; nor
        // are constants (the loss gradient's seed), written once when the plan is made runnable.
        var readOnly = [Bool](repeating: false, count: graph.values.count)
        func filledBeforeTheStep(_ op: Op) -> Bool {
            switch op { case .input, .target, .constant: return true; default: return false }
        }
        for position in graph.nodes.indices where filledBeforeTheStep(graph.nodes[position].op) {
            for r in graph.nodes[position].results { readOnly[r.index] = true; lastUse[r.index] = end }
        }
        var inPlace: Set<Int> = []
        // The last use of any value in a storage class (a buffer may be written in place only when
        // every value in it is dead after this node, aliases included).
        var classLastUse = lastUse

        // Each parameter and state by the value its source node makes (a search per node would be
        // quadratic in the model's depth; a dictionary by name hashes every name).
        WorkCounter.count(graph.nodes.count + graph.values.count)
        var parameterOf = [Int](repeating: -1, count: graph.values.count)
        var stateOf = [Int](repeating: -1, count: graph.values.count)
        for (index, parameter) in graph.parameters.enumerated().reversed() { parameterOf[parameter.value.index] = index }
        for (index, state) in graph.states.enumerated().reversed() { stateOf[state.value.index] = index }
        /// A source node's index among the parameters or states: by its value, else by its name.
        func persistentIndex(_ result: Int, _ byValue: [Int], _ kind: String, _ name: String, byName: () -> Int?) throws(PlanError) -> Int {
            if result >= 0, byValue[result] >= 0 { return byValue[result] }
            guard result >= 0, let index = byName() else {
                throw PlanError(message: "internal error: the \(kind) '\(name)' is not among the graph's \(kind)s")
            }
            return index
        }
        // By index: `for node in graph.nodes` copies every node.
        for position in graph.nodes.indices {
            let result = graph.nodes[position].results.first?.index ?? -1
            switch graph.nodes[position].op {
            case .parameter(let name):
                storage[result] = .parameter(try persistentIndex(result, parameterOf, "parameter", name) { graph.parameters.firstIndex { $0.name == name } })
                persistent[result] = true
                continue
            case .state(let name):
                storage[result] = .state(try persistentIndex(result, stateOf, "state", name) { graph.states.firstIndex { $0.name == name } })
                persistent[result] = true
                continue
            default: break
            }
            let node = graph.nodes[position]
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
            // The input, target and constants are filled before the step starts: live from the first instruction.
            if filledBeforeTheStep(node.op) { first[node.results[0].index] = 0; continue }
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
        // The values of each class, by its root (an array per root, not a dictionary: a deep model
        // has hundreds of thousands).
        // Members are listed in the order of their indices, so each list is sorted.
        var members = [[ValueID]](repeating: [], count: graph.values.count)
        for value in graph.values.indices where !persistent[value] && first[root(value)] != Int.max {
            members[root(value)].append(ValueID(value))
        }
        var buffers: [Buffer] = []
        var unplanned = 0
        func aligned(_ bytes: Int) -> Int { (bytes + alignment - 1) / alignment * alignment }
        for r in members.indices where !members[r].isEmpty {
            var bytes = 0
            for value in members[r] {
                let valueBytes = graph[value].shape.elements(batch: batch) * elementBytes
                bytes = max(bytes, valueBytes)
                unplanned += aligned(valueBytes)
            }
            buffers.append(Buffer(values: members[r], offset: 0, bytes: aligned(bytes), firstUse: first[r], lastUse: last[r]))
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
                + (operands.isEmpty ? "" : " " + operands) + (inPlace.contains(position) ? "   (in place)" : "")
                + (node.op.isConstant ? "   (written once, before the first step)" : "") + "\n"
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
/// disjoint, non-adjacent holes in a tree ordered by offset, each node knowing the largest hole
/// below it, so the lowest hole that fits is found in a walk down the tree: O(log holes) for a
/// placement and for a release. (A deep model's backward pass leaves a hole per layer: a scan of the
/// holes made planning quadratic in depth, 2.3 s for 100,000 layers.)
struct FirstFitSpace {
    /// The holes, a treap: ordered by offset, heap-ordered by a fixed pseudo-random priority (its
    /// shape, not its contents, depends on the priorities), each node with the largest hole in its
    /// subtree. Nodes live in arrays; removed ones are reused.
    private var offsets: [Int] = [], sizes: [Int] = [], largest: [Int] = []
    private var priorities: [UInt64] = [], left: [Int] = [], right: [Int] = []
    private var unused: [Int] = []
    /// The walk down to a hole, kept between placements (not an array made per buffer).
    private var path: [Int] = []
    private var root = -1
    private var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
    private var top = 0
    /// The highest top so far: the arena's size.
    private(set) var peak = 0

    mutating func place(bytes: Int) -> Int {
        // An empty buffer takes no room; offset 0 is as good as any.
        guard bytes > 0 else { return 0 }
        if root >= 0 && largest[root] >= bytes {
            // The leftmost hole that fits: left while the left subtree has one, else this node if it
            // fits, else right.
            path.removeAll(keepingCapacity: true)
            var node = root
            while true {
                WorkCounter.count(1)
                path.append(node)
                if left[node] >= 0 && largest[left[node]] >= bytes { node = left[node] } else if sizes[node] >= bytes { break } else { node = right[node] }
            }
            let offset = offsets[node]
            if sizes[node] == bytes {
                root = remove(offset, from: root)
            } else {
                // Shrunk from below: it stays between its neighbours.
                offsets[node] += bytes
                sizes[node] -= bytes
                for step in path.reversed() { refresh(step) }
            }
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
        // The holes below this block and those above it; merge with the adjacent one of each.
        var (below, above) = split(root, at: offset)
        if below >= 0 {
            let last = rightmost(below)
            if offsets[last] + sizes[last] == start {
                start = offsets[last]
                below = remove(start, from: below)
            }
        }
        if above >= 0 {
            let first = leftmost(above)
            if offsets[first] == end {
                end += sizes[first]
                above = remove(offsets[first], from: above)
            }
        }
        if end == top {
            top = start
            root = merge(below, above)
        } else {
            root = merge(merge(below, makeNode(offset: start, bytes: end - start)), above)
        }
    }

    private mutating func makeNode(offset: Int, bytes: Int) -> Int {
        seed = seed &* 6364136223846793005 &+ 1442695040888963407
        let node: Int
        if let reused = unused.popLast() {
            node = reused
            (offsets[node], sizes[node], largest[node], priorities[node], left[node], right[node]) = (offset, bytes, bytes, seed, -1, -1)
        } else {
            node = offsets.count
            offsets.append(offset); sizes.append(bytes); largest.append(bytes)
            priorities.append(seed); left.append(-1); right.append(-1)
        }
        return node
    }

    private mutating func refresh(_ node: Int) {
        var most = sizes[node]
        if left[node] >= 0 { most = max(most, largest[left[node]]) }
        if right[node] >= 0 { most = max(most, largest[right[node]]) }
        largest[node] = most
    }

    /// (holes below `offset`, holes at or above it).
    private mutating func split(_ node: Int, at offset: Int) -> (Int, Int) {
        guard node >= 0 else { return (-1, -1) }
        WorkCounter.count(1)
        if offsets[node] < offset {
            let (low, high) = split(right[node], at: offset)
            right[node] = low
            refresh(node)
            return (node, high)
        } else {
            let (low, high) = split(left[node], at: offset)
            left[node] = high
            refresh(node)
            return (low, node)
        }
    }

    /// All of `low` (at lower offsets) and `high`.
    private mutating func merge(_ low: Int, _ high: Int) -> Int {
        if low < 0 { return high }
        if high < 0 { return low }
        WorkCounter.count(1)
        if priorities[low] > priorities[high] {
            right[low] = merge(right[low], high)
            refresh(low)
            return low
        } else {
            left[high] = merge(low, left[high])
            refresh(high)
            return high
        }
    }

    /// The tree without the hole at `offset` (which it holds).
    private mutating func remove(_ offset: Int, from tree: Int) -> Int {
        let (below, rest) = split(tree, at: offset)
        let (hole, above) = split(rest, at: offset + 1)
        if hole >= 0 { unused.append(hole) }
        return merge(below, above)
    }

    private func leftmost(_ node: Int) -> Int {
        var node = node
        while left[node] >= 0 { node = left[node] }
        return node
    }

    private func rightmost(_ node: Int) -> Int {
        var node = node
        while right[node] >= 0 { node = right[node] }
        return node
    }
}

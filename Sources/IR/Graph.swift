import Parser

/// An SSA value: produced by exactly one node, with a static shape.
public struct ValueID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var index: Int
    public init(_ index: Int) { self.index = index }
    public static func < (a: ValueID, b: ValueID) -> Bool { a.index < b.index }
    public var description: String { "v\(index)" }
}

public struct Value: Sendable {
    public var name: String
    public var shape: Shape
}

/// Which part of a training step a node belongs to (for printing and per-phase timing).
public enum Phase: String, Sendable { case forward, loss, backward, update }

public struct Node: Sendable {
    public var op: Op
    public var operands: ValueList
    public var results: ValueList
    /// The statement this node came from.
    public var location: SourceRange?
    public var phase: Phase

    public init(op: Op, operands: ValueList, results: ValueList, location: SourceRange?, phase: Phase) {
        self.op = op; self.operands = operands; self.results = results; self.location = location; self.phase = phase
    }

    public init(op: Op, operands: [ValueID], results: [ValueID], location: SourceRange?, phase: Phase) {
        self.init(op: op, operands: ValueList(operands), results: ValueList(results), location: location, phase: phase)
    }
}

/// A node's operands or results: up to four values inline, more in an array. A node is made, copied
/// and rewritten many times over in a compile (a deep model has a million of them): an array of
/// its own for each list would be two allocations per node. Inline indices are 32-bit (a node takes
/// 112 bytes, 32 less than with 64-bit ones); a list with a larger index goes to the array.
public struct ValueList: RandomAccessCollection, ExpressibleByArrayLiteral, Equatable, Sendable, CustomStringConvertible {
    private var inline: (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)
    private var spill: [ValueID]? = nil
    private var inlineCount: UInt8 = 0

    public init<S: Sequence>(_ values: S) where S.Element == ValueID {
        let all = Array(values)
        if all.count > 4 || all.contains(where: { UInt32(exactly: $0.index) == nil }) { spill = all; return }
        inlineCount = UInt8(all.count)
        withUnsafeMutableBytes(of: &inline) { raw in
            for (i, value) in all.enumerated() { raw.storeBytes(of: UInt32(value.index), toByteOffset: i * 4, as: UInt32.self) }
        }
    }

    public init() {}

    public init(one value: ValueID) {
        if let index = UInt32(exactly: value.index) { inline.0 = index; inlineCount = 1 } else { spill = [value] }
    }

    public var count: Int { spill?.count ?? Int(inlineCount) }
    public init(arrayLiteral values: ValueID...) { self.init(values) }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    public subscript(position: Int) -> ValueID {
        if let spill { return spill[position] }
        precondition(position >= 0 && position < Int(inlineCount), "value list index out of range")
        return ValueID(Int(withUnsafeBytes(of: inline) { $0.load(fromByteOffset: position * 4, as: UInt32.self) }))
    }

    public static func == (a: ValueList, b: ValueList) -> Bool { a.elementsEqual(b) }
    public var description: String { Array(self).description }
}

/// The nodes using each value, in node order: one flat list with an offset per value (no array per
/// value: passes build this for every graph, and graphs can have a million values).
public struct Users: Sendable {
    let offsets: [Int]
    let list: [Int]
    /// The indices of the nodes that use the value with this index.
    public subscript(valueIndex: Int) -> ArraySlice<Int> { list[offsets[valueIndex]..<offsets[valueIndex + 1]] }
}

/// How a parameter starts. Lowering resolves the language's `xavier` and `he` to these from the
/// layer's fan-in and fan-out, so the runtime draws only these three.
public enum ParameterInit: Sendable, Equatable, CustomStringConvertible {
    case uniform(low: Double, high: Double)
    case normal(mean: Double, std: Double)
    case zeros
    /// A batch norm's weight.
    case ones
    /// Every element the same (a PReLU's slopes, 0.25).
    case constant(Double)

    public var description: String {
        switch self {
        case .uniform(let a, let b): return "uniform(\(formatNumber(a)),\(formatNumber(b)))"
        case .normal(let m, let s): return "normal(\(formatNumber(m)),\(formatNumber(s)))"
        case .zeros: return "zeros"
        case .ones: return "ones"
        case .constant(let value): return "constant(\(formatNumber(value)))"
        }
    }
}

/// A trainable parameter: its value, the layer it belongs to and how it starts.
public struct Parameter: Sendable {
    public var name: String          // fc1.weight
    public var value: ValueID
    public var shape: Shape
    public var initializer: ParameterInit
    public var location: SourceRange?
}

/// What a persistent non-parameter tensor is for: it decides which table of a checkpoint keeps it.
public enum StateKind: Sendable, Equatable {
    /// Optimizer state (velocity, Adam's moments): belongs to a training run.
    case optimizer
    /// Other state kept across steps and saved with the model (running statistics), not trained.
    case persistent
}

/// A persistent non-parameter tensor of the graph.
public struct PersistentState: Sendable {
    public var name: String
    public var value: ValueID
    public var kind: StateKind
    /// Every element's value before the first step (0; a running variance starts at 1).
    public var initial: Double
    public init(name: String, value: ValueID, kind: StateKind, initial: Double = 0) {
        self.name = name; self.value = value; self.kind = kind; self.initial = initial
    }
}

/// What the target tensor holds.
public enum TargetKind: Sendable, Equatable {
    case none
    /// Real values, as many per sample as the output has.
    case values(width: Int)
    /// One integer class index per sample.
    case classLabels(classes: Int)
}

/// A list of nodes in SSA form over values with static shapes. Nodes are kept in a valid
/// execution order (every operand is produced before it is used).
public struct Graph: Sendable {
    public var dtype: DType
    public var source: SourceFile?
    public private(set) var values: [Value] = []
    public var nodes: [Node] = []
    public var parameters: [Parameter] = []
    /// Persistent tensors that are not parameters (optimizer state, running statistics), each found
    /// by its name.
    public var states: [PersistentState] = []

    public var input: ValueID?
    public var target: ValueID?
    public var targetKind: TargetKind = .none
    /// The model's prediction (after the last activation).
    public var output: ValueID?
    public var loss: ValueID?
    /// d(loss)/d(parameter), by parameter index, once autodiff has run.
    public var gradients: [ValueID?] = []

    public init(dtype: DType, source: SourceFile?) {
        self.dtype = dtype
        self.source = source
    }

    public subscript(value: ValueID) -> Value { values[value.index] }

    /// Adds a value with a name that is unique in the graph.
    public mutating func newValue(_ name: String, _ shape: Shape) -> ValueID {
        var unique = name
        var hash = NameTable.hash(name)
        var suffix = 2
        while names.contains(unique, hash: hash, in: values) {
            unique = "\(name).\(suffix)"
            hash = NameTable.hash(unique)
            suffix += 1
        }
        names.append(hash: hash)
        values.append(Value(name: unique, shape: shape))
        return ValueID(values.count - 1)
    }

    private var names = NameTable()
    /// Room for this many nodes and values, so that a pass growing the graph copies it once.
    mutating func reserveCapacity(nodes nodeCount: Int, values valueCount: Int) {
        nodes.reserveCapacity(nodeCount)
        values.reserveCapacity(valueCount)
        names.reserveCapacity(valueCount)
    }

    /// The op's shape rule applied to the operands, its error placed at the statement.
    private func resultShapes(_ op: Op, _ operands: [ValueID], at location: SourceRange?) throws(IRError) -> [Shape] {
        do {
            return try op.resultShapes(operands.map { self[$0].shape })
        } catch {
            throw IRError(error.message, at: location, in: source)
        }
    }

    /// Appends a node, applying the op's shape rule. Returns its results.
    @discardableResult
    public mutating func add(_ op: Op, _ operands: [ValueID], names: [String], at location: SourceRange?, phase: Phase) throws(IRError) -> [ValueID] {
        let shapes = try resultShapes(op, operands, at: location)
        guard shapes.count == names.count else { throw IRError("\(op.name) makes \(shapes.count) results, \(names.count) names given", at: location, in: source) }
        // A plain loop: a closure over `self` here cost a retain and release per value.
        var results: [ValueID] = []
        results.reserveCapacity(shapes.count)
        for index in shapes.indices { results.append(newValue(names[index], shapes[index])) }
        WorkCounter.count(1)
        nodes.append(Node(op: op, operands: operands, results: results, location: location, phase: phase))
        return results
    }

    /// Appends a single-result node (without the arrays of names and results `add` takes and makes).
    public mutating func add1(_ op: Op, _ operands: [ValueID], name: String, at location: SourceRange?, phase: Phase) throws(IRError) -> ValueID {
        let shapes = try resultShapes(op, operands, at: location)
        guard shapes.count == 1 else { throw IRError("\(op.name) makes \(shapes.count) results, 1 name given", at: location, in: source) }
        let result = newValue(name, shapes[0])
        WorkCounter.count(1)
        nodes.append(Node(op: op, operands: ValueList(operands), results: ValueList(one: result), location: location, phase: phase))
        return result
    }

    /// Appends a source node (input, target, parameter, state) with a declared shape.
    public mutating func addSource(_ op: Op, name: String, shape: Shape, at location: SourceRange?) -> ValueID {
        let value = newValue(name, shape)
        WorkCounter.count(1)
        nodes.append(Node(op: op, operands: ValueList(), results: ValueList(one: value), location: location, phase: .forward))
        return value
    }

    /// The node producing each value (index into nodes).
    public func producers() -> [Int?] {
        WorkCounter.count(nodes.count)
        var producer = [Int?](repeating: nil, count: values.count)
        // By index: a `for node in nodes` copies every node (a retain and release each).
        for index in nodes.indices { for result in nodes[index].results { producer[result.index] = index } }
        return producer
    }

    /// The nodes using each value.
    public func users() -> Users {
        WorkCounter.count(nodes.count + values.count)
        var offsets = [Int](repeating: 0, count: values.count + 1)
        for index in nodes.indices { for operand in nodes[index].operands { offsets[operand.index + 1] += 1 } }
        for index in values.indices { offsets[index + 1] += offsets[index] }
        var next = offsets, list = [Int](repeating: 0, count: offsets[values.count])
        for index in nodes.indices {
            for operand in nodes[index].operands { list[next[operand.index]] = index; next[operand.index] += 1 }
        }
        return Users(offsets: offsets, list: list)
    }

    /// Values that must survive to the end of a step: the loss, the output, the gradients.
    public var roots: [ValueID] { [loss, output].compactMap { $0 } }

    /// Checks that the graph is well formed: operands defined before use, each value produced
    /// once, shapes as the op table says. Run after every pass in tests and debug builds.
    public func verify() throws(IRError) {
        var defined = [Bool](repeating: false, count: values.count)
        for node in nodes {
            for operand in node.operands {
                guard operand.index >= 0, operand.index < values.count, defined[operand.index] else {
                    throw IRError("\(node.op.name) uses %\(operand.index >= 0 && operand.index < values.count ? self[operand].name : "?") before it is defined", at: node.location, in: source)
                }
            }
            if node.op.isSource {
                guard node.operands.isEmpty, node.results.count == 1 else { throw IRError("\(node.op.name) is a source and takes no operands", at: node.location, in: source) }
            } else {
                let shapes: [Shape]
                do { shapes = try node.op.resultShapes(node.operands.map { self[$0].shape }) }
                catch { throw IRError(error.message, at: node.location, in: source) }
                guard shapes == node.results.map({ self[$0].shape }) else {
                    throw IRError("\(node.op.name): declared shapes \(node.results.map { self[$0].shape }) but the rule gives \(shapes)", at: node.location, in: source)
                }
            }
            for result in node.results {
                guard result.index < values.count else { throw IRError("\(node.op.name) defines an unknown value", at: node.location, in: source) }
                guard !defined[result.index] else { throw IRError("%\(self[result].name) is defined twice", at: node.location, in: source) }
                defined[result.index] = true
            }
        }
        for root in roots + gradients.compactMap({ $0 }) where root.index < 0 || root.index >= values.count || !defined[root.index] {
            throw IRError("%\(root.index >= 0 && root.index < values.count ? self[root].name : "?") is used as a result but never defined", in: source)
        }
    }
}

/// The values' names, to keep them unique: an open-addressing hash table of value indices by a
/// 64-bit FNV-1a hash of the name, mixed. It holds no strings: a graph copied to grow copies arrays of
/// integers, not a set of strings to retain, and a name is hashed once.
struct NameTable: Sendable {
    /// Value index + 1 in each slot (0: empty).
    private var slots: [UInt32] = []
    /// The hash of each value's name, by value index: names are compared only when hashes agree,
    /// and the table grows without rehashing names.
    private var hashes: [UInt64] = []

    static func hash(_ name: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        // FNV's low bits mix poorly (names differ in their last digits); the table uses them.
        hash ^= hash >> 33
        hash = hash &* 0xff51_afd7_ed55_8ccd
        return hash ^ (hash >> 33)
    }

    func contains(_ name: String, hash: UInt64, in values: [Value]) -> Bool {
        guard !slots.isEmpty else { return false }
        let mask = slots.count - 1
        var slot = Int(truncatingIfNeeded: hash) & mask
        while slots[slot] != 0 {
            let index = Int(slots[slot]) - 1
            if hashes[index] == hash && values[index].name == name { return true }
            slot = (slot + 1) & mask
        }
        return false
    }

    /// Records the name of the next value (index `hashes.count`), not already in the table.
    mutating func append(hash: UInt64) {
        hashes.append(hash)
        if 2 * hashes.count > slots.count { grow(to: hashes.count) } else { place(hashes.count - 1) }
    }

    mutating func reserveCapacity(_ capacity: Int) {
        hashes.reserveCapacity(capacity)
        if 2 * capacity > slots.count { grow(to: capacity) }
    }

    private mutating func place(_ index: Int) {
        let mask = slots.count - 1
        var slot = Int(truncatingIfNeeded: hashes[index]) & mask
        while slots[slot] != 0 { slot = (slot + 1) & mask }
        // A graph with 2^32 values would not fit in memory.
        slots[slot] = UInt32(truncatingIfNeeded: index + 1)
    }

    /// A table at most half full with `capacity` names, the names so far placed again.
    private mutating func grow(to capacity: Int) {
        var size = max(64, slots.count)
        while size < 2 * capacity { size *= 2 }
        slots = [UInt32](repeating: 0, count: size)
        for index in hashes.indices { place(index) }
    }
}

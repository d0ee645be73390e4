import Synchronization

/// Counts the steps the compiler takes, for tests that check that every stage is linear in the
/// model's size by counting, not timing: nodes made and scanned, passes' walks over the graph, the
/// memory planner's probes. Off (nil) unless a test sets it for its task.
public final class WorkCounter: Sendable {
    private let count = Atomic<Int>(0)
    public init() { WorkCounter.live.add(1, ordering: .relaxed) }
    deinit { WorkCounter.live.subtract(1, ordering: .relaxed) }
    public var steps: Int { count.load(ordering: .relaxed) }
    func add(_ steps: Int) { count.add(steps, ordering: .relaxed) }

    @TaskLocal public static var current: WorkCounter?
    /// How many counters exist: while none does, counting is one load, not a task-local lookup (the
    /// planner counts every probe).
    private static let live = Atomic<Int>(0)
    /// Adds to the current task's counter, if any.
    static func count(_ steps: Int) {
        guard live.load(ordering: .relaxed) > 0 else { return }
        current?.add(steps)
    }
}

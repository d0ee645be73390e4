import Synchronization

/// Counts the steps the compiler takes, for tests that check that every stage is linear in the
/// model's size by counting, not timing: nodes made and scanned, passes' walks over the graph, the
/// memory planner's probes. Off (nil) unless a test sets it for its task.
public final class WorkCounter: Sendable {
    private let count = Atomic<Int>(0)
    public init() {}
    public var steps: Int { count.load(ordering: .relaxed) }
    func add(_ steps: Int) { count.add(steps, ordering: .relaxed) }

    @TaskLocal public static var current: WorkCounter?
    /// Adds to the current task's counter, if any.
    static func count(_ steps: Int) { current?.add(steps) }
}

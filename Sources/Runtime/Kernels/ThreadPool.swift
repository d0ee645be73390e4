import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Persistent worker threads woken per `run` (used by `GEMMContext.parallelFor`).
///
/// Worker 0 is the calling thread; workers 1..<threads are persistent threads. A job is published by
/// bumping `generation`; idle workers poll for a while and then sleep on a condition variable. All
/// threads, the caller included, claim the job's indices one at a time.
/// A job is a function that captures nothing plus a pointer to its state on the caller's stack, so
/// nothing is allocated per job (a capturing closure would need a heap box to be shared with the
/// workers). One `run` at a time per pool: a nested or concurrent `run` executes serially on its
/// calling thread (as worker 0).
final class WorkerPool: @unchecked Sendable {
    let threads: Int
    private let generation = Atomic<Int>(0)
    private let pending = Atomic<Int>(0)
    /// The next index of the current job to hand out: threads claim indices one at a time, so a
    /// thread the machine delays (a shared VM) does fewer of them instead of holding the others up.
    private let nextIndex = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let shutdown = Atomic<Bool>(false)
    /// A job is in flight (guards against a nested or concurrent `run`, which then runs inline).
    private let busy = Atomic<Bool>(false)
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>

    // The current job. Written by the caller before `generation` is bumped (release) and read by
    // workers after they observe the new generation (acquire).
    private var job: ((UnsafeRawPointer, Int, Int) -> Void)?
    private var jobState: UnsafeRawPointer?
    private var jobCount = 0

    /// How long an idle worker keeps polling for the next job before it sleeps. A training step's
    /// serial stretches between parallel calls last up to a few hundred µs; waking a sleeping thread
    /// costs about as much again (measured: the MLP's first GEMM took 600 µs instead of 370 when the
    /// worker slept between steps), so the worker polls through them.
    private let spinNanoseconds: UInt64 = 20_000_000

    init(threads: Int) {
        self.threads = max(1, threads)
        mutex = .allocate(capacity: 1)
        cond = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
        if self.threads > 1 {
            for w in 1..<self.threads {
                let thread = Thread { [self] in self.workerLoop(w) }
                thread.name = "nnc-gemm-\(w)"
                thread.stackSize = 1 << 20
                thread.start()
            }
        }
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    /// Tells the workers to exit (they hold a reference to the pool until they do).
    func stop() {
        shutdown.store(true, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        pthread_mutex_lock(mutex)
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
    }

    /// Part `worker` of `threads` contiguous parts of 0..<count (for bodies that split their own work).
    @inline(__always) static func range(_ count: Int, worker: Int, of threads: Int) -> Range<Int> {
        let lo = count * worker / threads
        let hi = count * (worker + 1) / threads
        return lo..<hi
    }

    /// Runs function(state, i, worker) for every i in 0..<count; returns when all are done.
    func run(_ count: Int, state: UnsafeRawPointer, _ function: @escaping (UnsafeRawPointer, Int, Int) -> Void) {
        if count <= 0 { return }
        if threads == 1 || count == 1 {
            for i in 0..<count { function(state, i, 0) }
            return
        }
        // A run from inside a job (or from a second thread at the same time) would deadlock: it runs
        // on the calling thread instead. (Callers must still not share a worker's scratch.)
        if !busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged {
            for i in 0..<count { function(state, i, 0) }
            return
        }
        defer { busy.store(false, ordering: .releasing) }
        job = function
        jobState = state
        jobCount = count
        nextIndex.store(0, ordering: .relaxed)
        pending.store(threads - 1, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(cond)
            pthread_mutex_unlock(mutex)
        }
        runClaimed(function, state, count, worker: 0)
        var spins = 0
        while pending.load(ordering: .acquiring) != 0 {
            spins += 1
            if spins > 64 { sched_yield() }
        }
        job = nil
        jobState = nil
    }

    /// Runs the current job's indices this thread claims until none are left.
    @inline(__always)
    private func runClaimed(_ function: (UnsafeRawPointer, Int, Int) -> Void, _ state: UnsafeRawPointer, _ count: Int, worker: Int) {
        while true {
            let i = nextIndex.wrappingAdd(1, ordering: .relaxed).oldValue
            if i >= count { return }
            function(state, i, worker)
        }
    }

    private func workerLoop(_ w: Int) {
        // Generation 0 is the state before the first job; jobs may be published before this thread
        // first runs, so it must not read its starting point from `generation`.
        var seen = 0
        // Until its first job the thread sleeps: a pool made ahead of its use (a session set up before
        // the data is read, one kept for evaluation) must not take a core from the work in between.
        var polls = false
        while true {
            // Wait for a new generation: spin, then sleep.
            // Poll with plain loads (no system calls: sched_yield slowed the caller's serial work),
            // reading the clock every 256 polls.
            var spins = 0
            var current = generation.load(ordering: .acquiring)
            var deadline: UInt64 = 0
            while current == seen && polls {
                spins += 1
                if spins & 255 == 0 {
                    let now = DispatchTime.now().uptimeNanoseconds
                    if deadline == 0 { deadline = now + spinNanoseconds } else if now > deadline { break }
                }
                current = generation.load(ordering: .acquiring)
            }
            if current == seen {
                pthread_mutex_lock(mutex)
                sleepers.add(1, ordering: .sequentiallyConsistent)
                current = generation.load(ordering: .sequentiallyConsistent)
                while current == seen {
                    pthread_cond_wait(cond, mutex)
                    current = generation.load(ordering: .sequentiallyConsistent)
                }
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
                pthread_mutex_unlock(mutex)
            }
            seen = current
            polls = true
            if shutdown.load(ordering: .acquiring) { return }
            if let function = job, let state = jobState {
                runClaimed(function, state, jobCount, worker: w)
            }
            pending.subtract(1, ordering: .releasing)
        }
    }
}

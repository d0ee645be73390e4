import Foundation
import Synchronization
import CPrefetch
#if canImport(Glibc)
import Glibc
#endif

/// Persistent worker threads woken per `run` (used by `GEMMContext.parallelFor`).
///
/// Worker 0 is the calling thread; workers 1..<threads are persistent threads. A job is published by
/// bumping `generation`; idle workers poll for a while and then sleep on a condition variable. Each
/// thread, the caller included, owns a contiguous share of the job's indices (the same share in every
/// job of that size) and runs it in order, then takes what is left of the others' shares from their
/// back ends.
/// A job is a function that captures nothing plus a pointer to its state on the caller's stack, so
/// nothing is allocated per job (a capturing closure would need a heap box to be shared with the
/// workers). One `run` at a time per pool: a nested or concurrent `run` executes serially on its
/// calling thread (as worker 0).
final class WorkerPool: @unchecked Sendable {
    let threads: Int
    private let generation = Atomic<Int>(0)
    private let pending = Atomic<Int>(0)
    /// Each thread's share of the current job: front and back index (32 bits each, packed), one cache
    /// line per thread. Owned shares keep an index on the same core from op to op, so a sample's data
    /// stays in that core's cache through a step (measured on a 2-core Zen 4 VM: a CNN training step
    /// took 7.6 ms with indices handed out one at a time, 4.0–4.9 ms with shares); taking from the
    /// others' backs still finishes the share of a thread the machine delays (a shared VM).
    private let shares: UnsafeMutablePointer<Atomic<UInt64>>
    private static let shareStride = 8
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
        shares = .allocate(capacity: self.threads * WorkerPool.shareStride)
        for slot in 0..<(self.threads * WorkerPool.shareStride) { (shares + slot).initialize(to: Atomic<UInt64>(0)) }
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
        shares.deinitialize(count: threads * WorkerPool.shareStride)
        shares.deallocate()
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
        // (Shares pack two 32-bit indices; no step has that many parts.)
        if threads == 1 || count == 1 || count >= 1 << 31 {
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
        for w in 0..<threads {
            let share = WorkerPool.range(count, worker: w, of: threads)
            shares[w * WorkerPool.shareStride].store(UInt64(share.lowerBound) << 32 | UInt64(share.upperBound), ordering: .relaxed)
        }
        pending.store(threads - 1, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(cond)
            pthread_mutex_unlock(mutex)
        }
        runShares(function, state, worker: 0)
        // Wait for the others with the spin-wait hint; give the core away only after a few µs (a
        // machine with more threads than cores): yielding after 64 bare polls, a fraction of a µs,
        // put a system call into the join of most short parallel ops (the batch-1 Fashion CNN,
        // 2-core Zen 4: 49,700 → 51,300 calls/s with the hint and the longer wait).
        var spins = 0
        while pending.load(ordering: .acquiring) != 0 {
            nnc_pause()
            spins += 1
            if spins > 256 { sched_yield() }
        }
        job = nil
        jobState = nil
    }

    /// Runs this thread's share of the current job from its front, then what is left of the others'
    /// from their backs.
    @inline(__always)
    private func runShares(_ function: (UnsafeRawPointer, Int, Int) -> Void, _ state: UnsafeRawPointer, worker: Int) {
        while let i = take(from: worker, front: true) { function(state, i, worker) }
        for k in 1..<threads {
            let other = (worker + k) % threads
            while let i = take(from: other, front: false) { function(state, i, worker) }
        }
    }

    /// The next index of a thread's share, from its front (its owner) or its back (the others); nil
    /// when the share is done.
    @inline(__always)
    private func take(from owner: Int, front: Bool) -> Int? {
        let share = shares + owner * WorkerPool.shareStride
        var packed = share.pointee.load(ordering: .relaxed)
        while true {
            let first = packed >> 32, end = packed & 0xFFFF_FFFF
            if first >= end { return nil }
            let (exchanged, found) = share.pointee.compareExchange(expected: packed, desired: front ? packed + (1 << 32) : packed - 1,
                                                                   ordering: .relaxed)
            if exchanged { return Int(front ? first : end - 1) }
            packed = found
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
                nnc_pause()
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
                runShares(function, state, worker: w)
            }
            pending.subtract(1, ordering: .releasing)
        }
    }
}

// swift-tools-version:6.0
import PackageDescription

// Release builds use the host's vector units: with -march=native, Swift SIMD types lower to AVX2/FMA.
let fast: [SwiftSetting] = [.unsafeFlags(["-Xcc", "-march=native", "-enforce-exclusivity=unchecked"], .when(configuration: .release))]
// The kernels and the interpreter are optimized in debug builds too: the tests exercise the same
// specialized, allocation-free code that release runs (and run faster).
let optimizedInDebug: [SwiftSetting] = [.unsafeFlags(["-O"], .when(configuration: .debug))]

let package = Package(
    name: "nnc",
    products: [
        .executable(name: "nnc", targets: ["CLI"]),
        .library(name: "NNC", targets: ["NNC"]),
    ],
    targets: [
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        // A header-only module for the cache prefetch hint (the data loader fetches the next batch's rows early).
        .systemLibrary(name: "CPrefetch", path: "Sources/CPrefetch"),
        .target(name: "Parser"),
        .target(name: "IR", dependencies: ["Parser"]),
        .target(name: "Runtime", dependencies: ["IR", "CZlib", "CPrefetch"], swiftSettings: fast + optimizedInDebug),
        // ONNX files in and out: the protobuf wire format by hand, import to the language, export of graphs.
        .target(name: "ONNX", dependencies: ["Parser", "IR"]),
        .target(name: "NNC", dependencies: ["Parser", "IR", "Runtime", "ONNX"], swiftSettings: fast),
        .executableTarget(name: "CLI", dependencies: ["NNC"]),
        // The library in a program of its own: train XOR from a model string, predict, save, reload.
        .executableTarget(name: "xor-example", dependencies: ["NNC"], path: "Examples/XOR"),
        // Helpers shared by the test targets (marked model texts, a seeded generator).
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "ParserTests", dependencies: ["Parser", "IR", "TestSupport"]),
        .testTarget(name: "IRTests", dependencies: ["IR", "Parser", "TestSupport"]),
        // Counts malloc calls in the test process, to check that a training step allocates nothing.
        .target(name: "AllocationCounter", path: "Tests/AllocationCounter"),
        .testTarget(name: "RuntimeTests", dependencies: ["Runtime", "IR", "TestSupport"]),
        .testTarget(name: "NNCTests", dependencies: ["NNC", "Runtime", "IR", "Parser", "ONNX", "AllocationCounter", "TestSupport"]),
    ]
)

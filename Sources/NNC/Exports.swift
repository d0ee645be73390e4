// The types of the public API that live in the modules below NNC, so that `import NNC` is enough.
@_exported import struct IR.TrainingSettings
@_exported import enum IR.DType
@_exported import struct IR.Checkpoint
@_exported import struct Parser.DiagnosticError
@_exported import struct Runtime.Dataset
@_exported import struct Runtime.DataSplits
@_exported import struct Runtime.DataError

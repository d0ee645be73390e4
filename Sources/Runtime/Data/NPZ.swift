import Foundation

// .npz files: zip archives of .npy members, as numpy.savez (stored) and numpy.savez_compressed (deflated) write them.
// The reader trusts the central directory (numpy writes ZIP64 local headers with sizes 0xFFFFFFFF), checks every
// offset and size against the archive, inflates deflated members through zlib and checks each member's CRC-32.

struct ZipEntry {
    var name: String
    var method: Int
    var flags: Int
    var crc: UInt32
    var compressedSize: Int
    var size: Int
    var localHeaderOffset: Int
    /// Where the member's data starts (after the local header), filled in by `zipEntryData`.
    var dataOffset: Int = 0
}

@inline(__always) private func u16(_ b: [UInt8], _ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 }
@inline(__always) private func u32(_ b: [UInt8], _ o: Int) -> Int { u16(b, o) | u16(b, o + 2) << 16 }
@inline(__always) private func u64(_ b: [UInt8], _ o: Int) -> UInt64 { UInt64(u32(b, o)) | UInt64(u32(b, o + 4)) << 32 }

private let eocdSignature = 0x0605_4B50
private let centralSignature = 0x0201_4B50
private let localSignature = 0x0403_4B50

func hasZipMagic(_ b: [UInt8]) -> Bool {
    b.count >= 4 && b[0] == 0x50 && b[1] == 0x4B && (b[2] == 3 || b[2] == 5) && (b[3] == 4 || b[3] == 6)
}

/// Reads the central directory of a zip archive.
func readZipDirectory(_ b: [UInt8]) throws(ParseFailure) -> [ZipEntry] {
    if b.isEmpty { throw ParseFailure("the file is empty (expected an .npz zip archive)") }
    if b.count < 22 {
        throw ParseFailure("not a zip archive (or truncated): \(bytesText(b.count)) is too short for the end-of-directory record", at: 0)
    }
    // The end-of-central-directory record is in the last 22 + 65535 bytes.
    var eocd = -1
    var o = b.count - 22
    let lowest = max(0, b.count - 22 - 65535)
    while o >= lowest {
        if b[o] == 0x50 && b[o + 1] == 0x4B && b[o + 2] == 5 && b[o + 3] == 6 {
            // The comment length must reach exactly the end of the file (or the record is a false match).
            if o + 22 + u16(b, o + 20) <= b.count { eocd = o; break }
        }
        o -= 1
    }
    if eocd < 0 {
        if hasZipMagic(b) {
            throw ParseFailure("truncated zip archive: the end-of-central-directory record is missing", at: b.count)
        }
        throw ParseFailure("not a zip archive: no end-of-central-directory record", at: 0)
    }
    let entries = u16(b, eocd + 10)
    let cdSize = u32(b, eocd + 12)
    let cdOffset = u32(b, eocd + 16)
    if entries == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
        throw ParseFailure("ZIP64 archives (more than 65535 members or over 4 GiB) are not supported", at: eocd)
    }
    if u16(b, eocd + 4) != 0 || u16(b, eocd + 6) != 0 {
        throw ParseFailure("multi-disk zip archives are not supported", at: eocd)
    }
    if cdOffset > eocd || cdSize > eocd - cdOffset {
        throw ParseFailure("corrupt zip archive: the central directory (\(bytesText(cdSize)) at byte \(cdOffset)) lies outside the file", at: eocd + 12)
    }
    var result: [ZipEntry] = []
    var p = cdOffset
    let end = cdOffset + cdSize
    for k in 0..<entries {
        guard p + 46 <= end, u32(b, p) == centralSignature else {
            throw ParseFailure("corrupt zip archive: central directory entry \(k + 1) of \(entries) is missing or damaged", at: p)
        }
        let flags = u16(b, p + 8)
        let method = u16(b, p + 10)
        let crc = UInt32(u32(b, p + 16))
        var compressed = u32(b, p + 20)
        var size = u32(b, p + 24)
        let nameLen = u16(b, p + 28)
        let extraLen = u16(b, p + 30)
        let commentLen = u16(b, p + 32)
        var localOffset = u32(b, p + 42)
        let nameStart = p + 46
        guard nameStart + nameLen + extraLen + commentLen <= end else {
            throw ParseFailure("corrupt zip archive: central directory entry \(k + 1) runs past the directory", at: p)
        }
        let name = String(decoding: b[nameStart..<nameStart + nameLen], as: UTF8.self)
        // ZIP64 extended information (0x0001): the 64-bit values of the fields that are 0xFFFFFFFF, in order.
        var e = nameStart + nameLen
        let extraEnd = e + extraLen
        while e + 4 <= extraEnd {
            let id = u16(b, e), len = u16(b, e + 2)
            let dataEnd = e + 4 + len
            if dataEnd > extraEnd { break }
            if id == 0x0001 {
                var q = e + 4
                func next() throws(ParseFailure) -> Int {
                    guard q + 8 <= dataEnd else { throw ParseFailure("corrupt zip archive: short ZIP64 field in '\(name)'", at: e) }
                    let v = u64(b, q)
                    q += 8
                    guard v <= UInt64(Int.max / 2) else { throw ParseFailure("corrupt zip archive: ZIP64 size too large in '\(name)'", at: q - 8) }
                    return Int(v)
                }
                if size == 0xFFFF_FFFF { size = try next() }
                if compressed == 0xFFFF_FFFF { compressed = try next() }
                if localOffset == 0xFFFF_FFFF { localOffset = try next() }
            }
            e = dataEnd
        }
        result.append(ZipEntry(name: name, method: method, flags: flags, crc: crc, compressedSize: compressed, size: size, localHeaderOffset: localOffset))
        p = nameStart + nameLen + extraLen + commentLen
    }
    return result
}

/// The uncompressed bytes of a member, with its CRC checked. `entry.dataOffset` is set.
func zipEntryData(_ b: [UInt8], _ entry: inout ZipEntry) throws(ParseFailure) -> [UInt8] {
    let lo = entry.localHeaderOffset
    guard lo <= b.count - 30, u32(b, lo) == localSignature else {
        throw ParseFailure("corrupt zip archive: the local header of '\(entry.name)' is missing or damaged", at: min(lo, b.count))
    }
    if entry.flags & 1 != 0 {
        throw ParseFailure("'\(entry.name)' is encrypted, which is not supported", at: lo)
    }
    let dataStart = lo + 30 + u16(b, lo + 26) + u16(b, lo + 28)
    entry.dataOffset = dataStart
    guard dataStart <= b.count, entry.compressedSize <= b.count - dataStart else {
        throw ParseFailure("truncated zip archive: '\(entry.name)' needs \(bytesText(entry.compressedSize)) of data, but only \(bytesText(max(0, b.count - dataStart))) follow", at: min(dataStart, b.count))
    }
    let raw = b[dataStart..<dataStart + entry.compressedSize]
    let data: [UInt8]
    switch entry.method {
    case 0:
        if entry.size != entry.compressedSize {
            throw ParseFailure("corrupt zip archive: stored member '\(entry.name)' has different sizes (\(entry.compressedSize) and \(entry.size))", at: lo)
        }
        data = Array(raw)
    case 8:
        // Deflate expands at most ~1032:1; a larger claimed size is a lie, not a reason to allocate.
        if entry.size / 1032 > entry.compressedSize + 1 {
            throw ParseFailure("corrupt zip archive: '\(entry.name)' claims \(bytesText(entry.size)) from \(bytesText(entry.compressedSize)) of compressed data", at: lo)
        }
        do { data = try inflateRaw(raw, expectedSize: entry.size) } catch {
            throw ParseFailure("in member '\(entry.name)': \(error.message)", at: dataStart + (error.offset ?? 0))
        }
    default:
        throw ParseFailure("'\(entry.name)' uses compression method \(entry.method), which is not supported (only stored and deflate)", at: lo + 8)
    }
    let crc = crc32Of(data)
    if crc != entry.crc {
        throw ParseFailure("corrupt zip archive: CRC-32 mismatch in '\(entry.name)' (stored \(hex32(entry.crc)), computed \(hex32(crc)))", at: dataStart)
    }
    return data
}

/// Members of an .npz: their NPY headers, read first; their data, decompressed on demand.
struct NPZMember {
    var name: String  // without ".npy"
    var header: NPYHeader
    var entry: ZipEntry
    /// The whole archive (shared, not copied).
    var archive: [UInt8]

    /// The member's bytes (header and data), decompressed and checked against its CRC-32.
    func bytes() throws(ParseFailure) -> [UInt8] {
        var entry = entry
        return try zipEntryData(archive, &entry)
    }
}

/// The most bytes the members of an archive may decompress to: what the machine has.
let maxArchiveBytes = Int(min(ProcessInfo.processInfo.physicalMemory, UInt64(Int.max)))

/// Reads every `.npy` member of an .npz archive (other members are ignored).
/// The members' NPY headers, read from the first bytes of each (a deflated member is decompressed
/// only that far). Each header's size must be the size the archive's directory gives the member, and
/// all of them together must fit the machine's memory: a zip bomb is refused before it inflates.
func parseNPZMembers(_ b: [UInt8]) throws(ParseFailure) -> [NPZMember] {
    var result: [NPZMember] = []
    var total = 0
    for var entry in try readZipDirectory(b) {
        if entry.name.hasSuffix("/") { continue }
        guard entry.name.hasSuffix(".npy") else { continue }
        let prefix = try zipEntryPrefix(b, &entry, maxBytes: 1 << 16)
        let header: NPYHeader
        do { header = try parseNPYHeader(prefix, prefixOnly: true) } catch {
            // A damaged header is better told by the member's checksum, where checking it costs
            // little: a stored member, or a deflated one of at most 64 MiB.
            if entry.method == 0 || entry.size <= 1 << 26 { _ = try zipEntryData(b, &entry) }
            throw npzMemberFailure(error, entry)
        }
        let (dataBytes, overflow) = header.count.multipliedReportingOverflow(by: header.dtype.size)
        guard !overflow, dataBytes + header.dataOffset == entry.size else {
            throw ParseFailure("in member '\(entry.name)': its header's shape \(header.shapeText) needs \(overflow ? "more than 2^63" : String(dataBytes + header.dataOffset)) bytes, but the archive says it holds \(bytesText(entry.size))", at: entry.localHeaderOffset)
        }
        total += entry.size
        guard total <= maxArchiveBytes else {
            throw ParseFailure("the arrays need \(gigabytes(total)) in memory; the machine has \(gigabytes(maxArchiveBytes))", at: entry.localHeaderOffset)
        }
        result.append(NPZMember(name: String(entry.name.dropLast(4)), header: header, entry: entry, archive: b))
    }
    return result
}

/// "3.2 GB".
func gigabytes(_ bytes: Int) -> String { String(format: "%.1f GB", Double(bytes) / 1e9) }

/// A member's first bytes (at most `maxBytes`), without decompressing the rest.
func zipEntryPrefix(_ b: [UInt8], _ entry: inout ZipEntry, maxBytes: Int) throws(ParseFailure) -> [UInt8] {
    let lo = entry.localHeaderOffset
    guard lo >= 0, lo <= b.count - 30, u32(b, lo) == localSignature else {
        throw ParseFailure("corrupt zip archive: the local header of '\(entry.name)' is missing or damaged", at: min(max(lo, 0), b.count))
    }
    let dataStart = lo + 30 + u16(b, lo + 26) + u16(b, lo + 28)
    entry.dataOffset = dataStart
    guard dataStart <= b.count, entry.compressedSize <= b.count - dataStart else {
        throw ParseFailure("truncated zip archive: '\(entry.name)' needs \(bytesText(entry.compressedSize)) of data, but only \(bytesText(max(0, b.count - dataStart))) follow", at: min(dataStart, b.count))
    }
    let raw = b[dataStart..<dataStart + entry.compressedSize]
    switch entry.method {
    case 0: return Array(raw.prefix(maxBytes))
    case 8:
        do { return try inflateRawPrefix(raw, maxBytes: min(maxBytes, max(entry.size, 1))) } catch {
            throw ParseFailure("in member '\(entry.name)': \(error.message)", at: dataStart + (error.offset ?? 0))
        }
    default:
        throw ParseFailure("'\(entry.name)' uses compression method \(entry.method), which is not supported (only stored and deflate)", at: lo + 8)
    }
}

/// A failure inside a member, placed in the archive: absolute for stored members, member-relative for deflated ones.
func npzMemberFailure(_ f: ParseFailure, _ entry: ZipEntry) -> ParseFailure {
    guard let off = f.offset else { return f }  // such messages name the array themselves
    if entry.method == 0 { return ParseFailure("in member '\(entry.name)': \(f.message)", at: entry.dataOffset + off) }
    return ParseFailure("in member '\(entry.name)' (at byte \(off) of its decompressed data): \(f.message)", at: entry.localHeaderOffset)
}

/// Reads what numpy.savez / numpy.savez_compressed write: each `.npy` member, named without ".npy", in archive order.
public func readNPZ(path: String) throws -> [(name: String, array: NPYArray)] {
    let raw = try readFileBytes(path: path)
    do throws(ParseFailure) {
        var arrays: [(name: String, array: NPYArray)] = []
        for m in try parseNPZMembers(raw) {
            arrays.append((name: m.name, array: NPYArray(shape: m.header.shape, values: npyDoubles(try m.bytes(), m.header),
                                                         isFloat64: m.header.dtype.kind == .float && m.header.dtype.size == 8)))
        }
        return arrays
    } catch {
        throw error.dataError(path: path)
    }
}

/// The bytes of a zip archive with stored (uncompressed) members.
func encodeZip(_ members: [(name: String, data: [UInt8])]) throws(ParseFailure) -> [UInt8] {
    var out: [UInt8] = []
    var central: [UInt8] = []
    func le16(_ v: Int, _ a: inout [UInt8]) { a += [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
    func le32(_ v: Int, _ a: inout [UInt8]) { le16(v & 0xFFFF, &a); le16((v >> 16) & 0xFFFF, &a) }
    if members.count >= 0xFFFF { throw ParseFailure("too many arrays (\(members.count)) for a zip archive without ZIP64") }
    let dosTime = 0, dosDate = (0 << 9) | (1 << 5) | 1  // 1980-01-01 00:00
    for m in members {
        let name = Array(m.name.utf8)
        if name.count > 0xFFFF { throw ParseFailure("the name '\(m.name.prefix(40))…' is too long") }
        let offset = out.count
        if m.data.count >= 0xFFFF_FFFF || offset >= 0xFFFF_FFFF {
            throw ParseFailure("the archive would exceed 4 GiB, which needs ZIP64 (not supported)")
        }
        let crc = Int(crc32Of(m.data))
        // Local file header.
        le32(localSignature, &out); le16(20, &out); le16(0x0800, &out); le16(0, &out)
        le16(dosTime, &out); le16(dosDate, &out); le32(crc, &out)
        le32(m.data.count, &out); le32(m.data.count, &out)
        le16(name.count, &out); le16(0, &out)
        out += name
        out += m.data
        // Central directory entry.
        le32(centralSignature, &central); le16(20, &central); le16(20, &central); le16(0x0800, &central); le16(0, &central)
        le16(dosTime, &central); le16(dosDate, &central); le32(crc, &central)
        le32(m.data.count, &central); le32(m.data.count, &central)
        le16(name.count, &central); le16(0, &central); le16(0, &central)
        le16(0, &central); le16(0, &central); le32(0o100644 << 16, &central); le32(offset, &central)
        central += name
    }
    let cdOffset = out.count
    if cdOffset + central.count >= 0xFFFF_FFFF {
        throw ParseFailure("the archive would exceed 4 GiB, which needs ZIP64 (not supported)")
    }
    out += central
    le32(eocdSignature, &out); le16(0, &out); le16(0, &out)
    le16(members.count, &out); le16(members.count, &out)
    le32(central.count, &out); le32(cdOffset, &out); le16(0, &out)
    return out
}

/// Writes an .npz archive like numpy.savez (stored members `NAME.npy`), atomically: a temporary file in the same
/// directory, then a rename.
public func writeNPZ(path: String, arrays: [(name: String, shape: [Int], float64: Bool, values: [Double])]) throws {
    var members: [(name: String, data: [UInt8])] = []
    do {
        var seen = Set<String>()
        for a in arrays {
            if !seen.insert(a.name).inserted { throw ParseFailure("two arrays are named '\(a.name)'") }
            do {
                members.append((a.name + ".npy", try encodeNPY(shape: a.shape, float64: a.float64, values: a.values)))
            } catch {
                throw ParseFailure("array '\(a.name)': \(error.message)")
            }
        }
        let bytes = try encodeZip(members)
        try writeFileAtomically(path: path, bytes: bytes)
    } catch let e as ParseFailure {
        throw DataError(path: path, message: e.message)
    }
}

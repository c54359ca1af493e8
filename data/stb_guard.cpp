#include "data/stb_guard.h"

#include <algorithm>

#include "data/image_io.h"

namespace qf::data {

namespace {

// Walks a DHT segment as stbi__process_marker does: while the declared
// length lasts, a class/id byte, 16 code counts, then as many symbol bytes as
// the counts add up to. Like stb it reads past the segment if the tables do,
// and reads bytes past the end of the file as 0.
void check_dht(const uint8_t* p, const uint8_t* end, int length, const std::string& name) {
    auto next = [&]() -> int { return p < end ? *p++ : 0; };
    while (length > 0) {
        const int table = next();
        if ((table >> 4) > 1 || (table & 15) > 3) return;  // stb rejects it
        int symbols = 0;
        for (int i = 0; i < 16; ++i) symbols += next();
        if (symbols > 256)
            throw ImageError(name + ": corrupt JPEG (a Huffman table declares " + std::to_string(symbols) +
                             " symbols, at most 256 are possible)");
        for (int i = 0; i < symbols; ++i) next();
        length -= 17 + symbols;
    }
}

bool is_restart(uint8_t marker) { return marker >= 0xd0 && marker <= 0xd7; }

// `p` is just past the SOI marker.
void check_jpeg(const uint8_t* p, const uint8_t* end, const std::string& name) {
    while (p < end) {
        // Like stbi__get_marker: skip to a 0xFF, then past any fill 0xFFs.
        while (p < end && *p != 0xff) ++p;
        while (p < end && *p == 0xff) ++p;
        if (p >= end) return;
        const uint8_t marker = *p++;
        if (marker == 0xd9) return;  // EOI
        // The markers stb reads past; any other makes it fail, so the walk ends.
        const bool has_segment = marker == 0xc4 || marker == 0xdb || marker == 0xdd || marker == 0xdc ||
                                 (marker >= 0xe0 && marker <= 0xef) || marker == 0xfe ||
                                 (marker >= 0xc0 && marker <= 0xc2) || marker == 0xda;
        if (!has_segment || end - p < 2) return;
        const size_t length = size_t(p[0]) << 8 | p[1];
        if (length < 2) return;
        const uint8_t* segment_end = (size_t(end - p) < length) ? end : p + length;
        if (marker == 0xc4) check_dht(p + 2, end, int(length) - 2, name);
        p = segment_end;
        if (marker == 0xda) {
            // Entropy-coded data runs to the first 0xFF followed by a byte
            // other than 0x00 (a stuffed 0xFF), 0xFF (fill) or a restart marker.
            while (p + 1 < end) {
                if (p[0] == 0xff && p[1] != 0x00 && p[1] != 0xff && !is_restart(p[1])) break;
                ++p;
            }
        }
    }
}

// `p` is just past the 8-byte PNG signature. stb copies the first IDAT
// chunk into a buffer it allocates only for a non-empty one, so an empty
// first IDAT makes it call memcpy(NULL, ..., 0): undefined behaviour
// (UBSan stops there). No encoder writes one; refuse the file.
void check_png(const uint8_t* p, const uint8_t* end, const std::string& name) {
    while (end - p >= 8) {
        const uint32_t length = uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
        const std::string type(reinterpret_cast<const char*>(p + 4), 4);
        if (type == "IDAT") {
            if (length == 0)
                throw ImageError(name + ": unsupported PNG (its first IDAT chunk is empty)");
            return;
        }
        if (type == "IEND" || uint64_t(end - p) < 12 + uint64_t(length)) return;
        p += 12 + size_t(length);  // length, type, data, CRC
    }
}

}  // namespace

void check_stb_hazards(const uint8_t* bytes, size_t size, const std::string& name) {
    // stb takes a file for JPEG if it starts with 0xFF, any fill 0xFFs, then SOI (0xD8).
    const uint8_t* p = bytes;
    const uint8_t* const end = bytes + size;
    static const uint8_t png_signature[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    if (size >= 8 && std::equal(png_signature, png_signature + 8, bytes)) return check_png(bytes + 8, end, name);
    if (p == end || *p != 0xff) return;
    while (p < end && *p == 0xff) ++p;
    if (p < end && *p == 0xd8) check_jpeg(p + 1, end, name);
}

}  // namespace qf::data

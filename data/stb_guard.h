// Checks for inputs that Debian's stb_image 2.27 mishandles, run before stb
// sees the bytes. Each check guards one bug that upstream fixed after 2.27
// and that tests/fuzz/fuzz_image.cpp found here:
//   - JPEG: a DHT (Huffman table) segment whose code counts add up to more
//     than 256 symbols overflows stbi__huffman's fixed arrays
//     (stbi__build_huffman writes size[k++] past 257 entries).
//   - PNG: an empty first IDAT chunk makes stbi__parse_png_file memcpy 0
//     bytes to a NULL buffer (undefined behaviour; upstream still does it).
// The JPEG walk follows stb's own parse (segment lengths, entropy-coded data
// ending at the first 0xFF followed by a byte other than 0x00 or a restart
// marker), and stops where stb would stop with an error.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace qf::data {

// Throws ImageError (naming `name`) if the bytes hit a known stb 2.27 bug.
void check_stb_hazards(const uint8_t* bytes, size_t size, const std::string& name);

}  // namespace qf::data

// Decoding and writing 8-bit images (JPEG, PNG, BMP) with stb_image, wrapped
// defensively.
//
// Debian's stb_image (v2.27) predates several upstream fuzzing fixes, so every
// input passes these checks before stb decodes a pixel:
//   - the file is no larger than DecodeLimits::max_file_bytes;
//   - stbi_info parses only the header, and the declared width x height must
//     be positive and at most DecodeLimits::max_pixels ("declared size
//     absurd" otherwise): a 20-byte PNG header cannot make us allocate 30 GB;
//   - stb itself is compiled with only the JPEG, PNG and BMP decoders and with
//     STBI_MAX_DIMENSIONS (data/stb_impl.cpp).
// tests/fuzz/fuzz_image.cpp runs decode_image under libFuzzer + ASan/UBSan.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace qf::data {

// An 8-bit image: rows of interleaved channels (height x width x channels).
struct Image {
    int width = 0, height = 0, channels = 0;
    std::vector<uint8_t> pixels;
};

// Longest side stb will accept (its STBI_MAX_DIMENSIONS, set in stb_impl.cpp).
inline constexpr int max_image_side = 1 << 16;

struct DecodeLimits {
    size_t max_file_bytes = size_t(64) << 20;  // 64 MiB
    int64_t max_pixels = int64_t(1) << 26;     // 67M pixels, e.g. 8192 x 8192
};

// Thrown for a file that cannot be read or decoded; the message names it.
struct ImageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Decodes JPEG/PNG/BMP bytes into `out` with `channels` channels (1: gray,
// 3: RGB; stb converts from whatever the file holds). `name` names the bytes
// in error messages. `out`'s buffer is reused across calls. Throws ImageError.
void decode_image(const uint8_t* bytes, size_t size, int channels,
                  const DecodeLimits& limits, const std::string& name, Image& out);

// Reads a whole file (refusing one over limits.max_file_bytes) into `bytes`,
// reusing its buffer. Throws ImageError.
void read_file_bytes(const std::string& path, size_t max_bytes, std::vector<uint8_t>& bytes);

// Writes `image` as PNG, JPEG (quality 95) or BMP, chosen by the extension of
// `path` (case-insensitive). Throws ImageError.
void write_image(const std::string& path, const Image& image);

// True for the extensions qforge reads: .jpg .jpeg .png .bmp, any case.
bool has_image_extension(const std::string& filename);

}  // namespace qf::data

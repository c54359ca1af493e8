// What stb_impl.cpp adds around stb_image, for image_io.cpp only.
#pragma once
#include <cstddef>

namespace qf::data::detail {

// stbi_info_from_memory that keeps the reason the matching format's header
// parser refused the bytes (stbi_info reports "unknown image type" instead).
bool stb_read_header(const unsigned char* bytes, int length, int* width, int* height, int* channels,
                     const char** reason);

// The largest single allocation stb may make on this thread; larger ones fail
// as "outofmem" instead of being attempted. stb 2.27 sizes some buffers from
// unchecked fields (a PNG IDAT chunk's declared length, zlib output growth),
// so a small file could otherwise ask for gigabytes.
void set_stb_allocation_limit(size_t bytes);

}  // namespace qf::data::detail

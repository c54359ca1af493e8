// The one translation unit that compiles stb's implementations, configured
// for qforge: only the decoders we read (JPEG, PNG, BMP), a dimension cap,
// and no stdio-based loading (we hand stb bytes we have already size-checked).
// Debian's prebuilt libstb.so is deliberately not linked: it has every
// decoder compiled in and no dimension cap.
#include "data/stb_impl.h"

#include <cstdint>
#include <cstdlib>

#include "data/image_io.h"

namespace qf::data::detail {

namespace {
thread_local size_t stb_allocation_limit = SIZE_MAX;
void* stb_malloc(size_t bytes) { return bytes > stb_allocation_limit ? nullptr : std::malloc(bytes); }
void* stb_realloc(void* p, size_t bytes) { return bytes > stb_allocation_limit ? nullptr : std::realloc(p, bytes); }
}  // namespace

void set_stb_allocation_limit(size_t bytes) { stb_allocation_limit = bytes; }

}  // namespace qf::data::detail

#define STBI_MALLOC(bytes) qf::data::detail::stb_malloc(bytes)
#define STBI_REALLOC(p, bytes) qf::data::detail::stb_realloc(p, bytes)
#define STBI_FREE(p) std::free(p)
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_NO_STDIO
#define STBI_MAX_DIMENSIONS qf::data::max_image_side
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>

#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb_image_resize.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

namespace qf::data::detail {

// stbi_info_from_memory tries every format in turn and, when all refuse,
// reports "unknown image type", losing the reason the right format's parser
// gave (such as "too large" for an absurd declared size). This picks the
// format by its signature, in stbi_load's order, and keeps that reason. Only
// headers are parsed; no pixel is decoded.
bool stb_read_header(const unsigned char* bytes, int length, int* width, int* height, int* channels,
                     const char** reason) {
    stbi__context context;
    stbi__start_mem(&context, bytes, length);
    int ok = 0;
    if (stbi__jpeg_test(&context))
        ok = stbi__jpeg_info(&context, width, height, channels);
    else if (stbi__png_test(&context))
        ok = stbi__png_info(&context, width, height, channels);
    else if (stbi__bmp_test(&context))
        ok = stbi__bmp_info(&context, width, height, channels);
    else {
        *reason = "not a JPEG, PNG or BMP file";
        return false;
    }
    if (!ok) *reason = stbi_failure_reason() ? stbi_failure_reason() : "unknown reason";
    return ok != 0;
}

}  // namespace qf::data::detail

#include "data/image_io.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "data/stb_guard.h"
#include "data/stb_impl.h"

#define STBI_NO_STDIO
#include <stb_image.h>
#include <stb_image_write.h>

namespace qf::data {

namespace {

std::string lowercase_extension(const std::string& filename) {
    size_t slash = filename.find_last_of('/');
    size_t dot = filename.find_last_of('.');
    if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
    std::string ext = filename.substr(dot);
    for (char& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return ext;
}

const char* failure_reason() {
    const char* reason = stbi_failure_reason();
    return reason ? reason : "unknown reason";
}

}  // namespace

bool has_image_extension(const std::string& filename) {
    std::string ext = lowercase_extension(filename);
    return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp";
}

void decode_image(const uint8_t* bytes, size_t size, int channels,
                  const DecodeLimits& limits, const std::string& name, Image& out) {
    if (channels != 1 && channels != 3)
        throw std::invalid_argument("decode_image: channels must be 1 or 3, got " + std::to_string(channels));
    if (size > limits.max_file_bytes)
        throw ImageError(name + ": " + std::to_string(size) + " bytes, over the limit of " +
                         std::to_string(limits.max_file_bytes));
    if (size == 0) throw ImageError(name + ": empty file");
    // stb takes an int length; max_file_bytes should keep us far below, but
    // a caller may raise it.
    if (size > size_t(INT32_MAX)) throw ImageError(name + ": file too large for the decoder");
    const int length = static_cast<int>(size);

    check_stb_hazards(bytes, size, name);

    // Header only (stbi_info): no pixel is decoded and nothing sized by the
    // file is allocated until the declared size has passed the cap.
    int width = 0, height = 0, file_channels = 0;
    const char* header_error = nullptr;
    if (!detail::stb_read_header(bytes, length, &width, &height, &file_channels, &header_error)) {
        const std::string reason = header_error;
        if (reason == "too large")
            throw ImageError(name + ": declared size absurd (over stb's limits: a side over " +
                             std::to_string(max_image_side) + " pixels or over 1 GiB decoded), refused before decoding");
        throw ImageError(name + ": not a readable JPEG/PNG/BMP header (" + reason + ")");
    }
    if (width <= 0 || height <= 0)
        throw ImageError(name + ": declared size " + std::to_string(width) + "x" +
                         std::to_string(height) + " is empty");
    if (int64_t(width) * height > limits.max_pixels)
        throw ImageError(name + ": declared size absurd (" + std::to_string(width) + "x" +
                         std::to_string(height) + " is over the cap of " +
                         std::to_string(limits.max_pixels) + " pixels), refused before decoding");

    // No legitimate buffer of stb's is larger than 8 bytes per declared pixel
    // (4 channels of 16 bits) or twice the file (PNG's concatenated IDAT).
    struct AllocationLimit {
        explicit AllocationLimit(size_t bytes) { detail::set_stb_allocation_limit(bytes); }
        ~AllocationLimit() { detail::set_stb_allocation_limit(SIZE_MAX); }
    } allocation_limit(size_t(8) * size_t(width) * size_t(height) + 2 * size + (size_t(1) << 20));

    int decoded_width = 0, decoded_height = 0, ignored = 0;
    std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
        stbi_load_from_memory(bytes, length, &decoded_width, &decoded_height, &ignored, channels),
        stbi_image_free);
    if (!pixels) throw ImageError(name + ": corrupt or truncated image (" + std::string(failure_reason()) + ")");
    // The decoder must agree with the header it was checked against.
    if (decoded_width != width || decoded_height != height)
        throw ImageError(name + ": decoded size differs from the declared size");

    out.width = width;
    out.height = height;
    out.channels = channels;
    out.pixels.assign(pixels.get(), pixels.get() + size_t(width) * height * channels);
}

void read_file_bytes(const std::string& path, size_t max_bytes, std::vector<uint8_t>& bytes) {
    std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), std::fclose);
    if (!file) throw ImageError(path + ": cannot open (" + std::strerror(errno) + ")");
    if (std::fseek(file.get(), 0, SEEK_END) != 0) throw ImageError(path + ": cannot seek");
    long end = std::ftell(file.get());
    if (end < 0) throw ImageError(path + ": cannot tell its size");
    if (size_t(end) > max_bytes)
        throw ImageError(path + ": " + std::to_string(end) + " bytes, over the limit of " +
                         std::to_string(max_bytes));
    std::rewind(file.get());
    bytes.resize(size_t(end));
    if (end > 0 && std::fread(bytes.data(), 1, bytes.size(), file.get()) != bytes.size())
        throw ImageError(path + ": short read");
}

void write_image(const std::string& path, const Image& image) {
    if (image.width <= 0 || image.height <= 0 || image.channels < 1 || image.channels > 4 ||
        image.pixels.size() != size_t(image.width) * image.height * image.channels)
        throw ImageError(path + ": invalid image to write (" + std::to_string(image.width) + "x" +
                         std::to_string(image.height) + "x" + std::to_string(image.channels) + ")");
    const std::string ext = lowercase_extension(path);
    const int w = image.width, h = image.height, c = image.channels;
    const uint8_t* data = image.pixels.data();
    int ok = 0;
    if (ext == ".png")
        ok = stbi_write_png(path.c_str(), w, h, c, data, w * c);
    else if (ext == ".jpg" || ext == ".jpeg")
        ok = stbi_write_jpg(path.c_str(), w, h, c, data, 95);
    else if (ext == ".bmp")
        ok = stbi_write_bmp(path.c_str(), w, h, c, data);
    else
        throw ImageError(path + ": unknown image extension (expected .png, .jpg, .jpeg or .bmp)");
    if (!ok) throw ImageError(path + ": cannot write");
}

}  // namespace qf::data

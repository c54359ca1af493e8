// libFuzzer target for the defensive image decoder (data/image_io.h) and the
// transforms that run on whatever it decodes. Any input must end in either a
// decoded image or an ImageError: never a crash, a leak, or undefined
// behaviour (the build adds ASan and UBSan).
#include <cstddef>
#include <cstdint>
#include <random>

#include "data/image_io.h"
#include "data/transforms.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace qf::data;
    // Smaller caps than the defaults keep each run fast; the checks are the same.
    DecodeLimits limits;
    limits.max_file_bytes = size_t(1) << 20;
    limits.max_pixels = int64_t(1) << 20;
    const int channels = (size & 1) ? 1 : 3;

    static Image image;
    try {
        decode_image(data, size, channels, limits, "fuzz input", image);
    } catch (const ImageError&) {
        return 0;
    }
    if (image.width <= 0 || image.height <= 0 || image.channels != channels ||
        image.pixels.size() != size_t(image.width) * image.height * channels)
        __builtin_trap();  // the wrapper broke its promise

    // Resize and random-resized-crop over the decoded size, whatever it is.
    TransformOptions options;
    options.size = 8;
    options.resize_shorter = 9;
    options.crop = CropMode::random_resized;
    options.horizontal_flip = true;
    std::mt19937 rng{uint32_t(size)};
    static TransformScratch scratch;
    float out[3 * 8 * 8];
    ImageView view{image.pixels.data(), image.width, image.height, image.channels};
    apply_transforms(view, options, true, rng, 8, 8, out, scratch);
    apply_transforms(view, options, false, rng, 8, 8, out, scratch);
    return 0;
}

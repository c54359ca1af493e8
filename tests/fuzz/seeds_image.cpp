// Writes a small seed corpus for fuzz_image into the folder given as the only
// argument: PNG, JPEG and BMP files, grayscale and colour, of a few sizes.
#include <cstdio>
#include <string>

#include "data/image_io.h"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: seeds_image OUTDIR\n");
        return 2;
    }
    const std::string dir = argv[1];
    using qf::data::Image;
    int written = 0;
    for (int channels : {1, 3}) {
        for (int size : {1, 5, 16}) {
            Image image{size, size + 1, channels, {}};
            for (int i = 0; i < size * (size + 1) * channels; ++i) image.pixels.push_back(uint8_t(i * 37));
            for (const char* ext : {".png", ".jpg", ".bmp"}) {
                std::string name = dir + "/seed_c" + std::to_string(channels) + "_s" + std::to_string(size) + ext;
                qf::data::write_image(name, image);
                ++written;
            }
        }
    }
    std::printf("wrote %d seeds to %s\n", written, dir.c_str());
    return 0;
}

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
    // Regression seeds: long, thin images, resized to 9 pixels across by
    // fuzz_image. stb_image_resize's setup of a downsampled axis costs its
    // input x output pixels, so a 16 x 26115 image (to 9 x 14690) once took
    // over 10 s under ASan, before data/transforms.cpp resized only the crop.
    struct Shape {
        int width, height, channels;
    };
    for (Shape s : {Shape{65536, 10, 1}, Shape{16, 26115, 3}, Shape{1, 16000, 1}, Shape{16000, 2, 3}}) {
        Image image{s.width, s.height, s.channels, {}};
        image.pixels.resize(size_t(s.width) * s.height * s.channels);
        for (size_t i = 0; i < image.pixels.size(); ++i) image.pixels[i] = uint8_t(i / 65536 * 37);
        std::string name = dir + "/seed_long_" + std::to_string(s.width) + "x" + std::to_string(s.height) + ".png";
        qf::data::write_image(name, image);
        ++written;
    }
    std::printf("wrote %d seeds to %s\n", written, dir.c_str());
    return 0;
}

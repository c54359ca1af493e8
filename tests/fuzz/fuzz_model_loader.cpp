// libFuzzer target for the int8 model loader (infer/model.h): any bytes must
// either load or be refused with a ModelError; nothing else may escape, crash,
// or trip ASan/UBSan. A model that loads and is small is also run once, so a
// graph the checks accept must be one the kernels can run.
// Built and run by tests/fuzz/run.sh (seeds: tests/infer/write_seed_models.cpp).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "infer/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        qf::infer::Model model = qf::infer::Model::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz");
        if (model.activation_elements() > (1 << 14)) return 0;  // keep each input fast
        const qf::infer::InputSpec& in = model.input();
        std::vector<float> image(size_t(in.channels) * in.height * in.width);
        for (size_t i = 0; i < image.size(); ++i) image[i] = float(int(i % 7) - 3);
        model.run(image.data(), 1);
    } catch (const qf::infer::ModelError&) {
    }
    return 0;
}

#include "nn/models.h"

#include <stdexcept>

namespace qf::nn {

const std::vector<std::string>& model_archs() {
    static const std::vector<std::string> archs = {"lenet", "resnet20", "mbv2"};
    return archs;
}

std::shared_ptr<Sequential> lenet(const ModelSpec& s, std::mt19937& rng) {
    if (s.image_size % 4 != 0)
        throw std::invalid_argument("lenet needs an image size divisible by 4, got " +
                                    std::to_string(s.image_size));
    const int side = s.image_size / 4;
    auto m = std::make_shared<Sequential>();
    m->add(std::make_shared<ConvBnAct>(s.in_channels, 32, 5, 1, 1, Act::ReLU, rng));
    m->add(std::make_shared<MaxPool2d>(2, 2));
    m->add(std::make_shared<ConvBnAct>(32, 64, 5, 1, 1, Act::ReLU, rng));
    m->add(std::make_shared<MaxPool2d>(2, 2));
    m->add(std::make_shared<Flatten>());
    m->add(std::make_shared<Linear>(64 * side * side, 128, true, Act::ReLU, rng));
    m->add(std::make_shared<Linear>(128, s.num_classes, true, Act::None, rng));
    return m;
}

std::shared_ptr<Sequential> resnet20(const ModelSpec& s, std::mt19937& rng) {
    auto m = std::make_shared<Sequential>();
    m->add(std::make_shared<ConvBnAct>(s.in_channels, 16, 3, 1, 1, Act::ReLU, rng));
    int in = 16;
    for (int width : {16, 32, 64}) {
        for (int i = 0; i < 3; i++) {
            const int stride = (i == 0 && width != 16) ? 2 : 1;
            m->add(std::make_shared<BasicBlock>(in, width, stride, rng));
            in = width;
        }
    }
    m->add(std::make_shared<GlobalAvgPool>());
    m->add(std::make_shared<Linear>(64, s.num_classes, true, Act::None, rng));
    return m;
}

std::shared_ptr<Sequential> mbv2(const ModelSpec& s, std::mt19937& rng) {
    auto m = std::make_shared<Sequential>();
    m->add(std::make_shared<ConvBnAct>(s.in_channels, 16, 3, 1, 1, Act::ReLU6, rng));
    struct Stage { int in, out, stride; };
    for (Stage st : {Stage{16, 16, 1}, {16, 24, 2}, {24, 24, 1}, {24, 32, 2}, {32, 32, 1}})
        m->add(std::make_shared<InvertedResidual>(st.in, st.out, st.stride, 4, rng));
    m->add(std::make_shared<ConvBnAct>(32, 128, 1, 1, 1, Act::ReLU6, rng));
    m->add(std::make_shared<GlobalAvgPool>());
    m->add(std::make_shared<Linear>(128, s.num_classes, true, Act::None, rng));
    return m;
}

std::shared_ptr<Sequential> build_model(const ModelSpec& spec, uint32_t seed) {
    if (spec.num_classes < 1 || spec.in_channels < 1)
        throw std::invalid_argument("model: num_classes and in_channels must be positive");
    std::mt19937 rng(seed);
    if (spec.arch == "lenet") return lenet(spec, rng);
    if (spec.arch == "resnet20") return resnet20(spec, rng);
    if (spec.arch == "mbv2") return mbv2(spec, rng);
    std::string valid;
    for (const auto& a : model_archs()) valid += (valid.empty() ? "" : ", ") + a;
    throw std::invalid_argument("unknown model arch '" + spec.arch + "' (expected one of " + valid + ")");
}

int64_t count_parameters(const Module& m) {
    int64_t n = 0;
    for (const auto& p : m.parameters()) n += p.tensor.numel();
    return n;
}

}  // namespace qf::nn

// Freeze: the int8 graph computes what the QAT fake-quant forward simulated.
#include <doctest/doctest.h>

#include <cmath>

#include "infer/model.h"
#include "quant/freeze.h"
#include "quant/parity.h"

using namespace qf;
using namespace qf::quant;

namespace {
Tensor images(int n, uint32_t seed) {
    std::mt19937 rng(seed);
    return Tensor::randn({n, 1, 28, 28}, rng);
}

// A QAT model with trained-looking BN statistics and calibrated ranges.
std::shared_ptr<nn::Sequential> calibrated(const std::string& arch, const QatOptions& o) {
    auto fp32 = nn::build_model({arch, 10, 1, 28}, 0);
    fp32->train();
    {
        NoGrad ng;
        for (int i = 0; i < 3; i++) fp32->forward(images(16, 10 + i));
    }
    auto qat = prepare_qat(fp32, o);
    qat->train();
    QatSchedule{.freeze_bn_after = 0}.apply(*qat, 0);
    NoGrad ng;
    for (int i = 0; i < 4; i++) qat->forward(images(32, 20 + i));
    qat->eval();
    return qat;
}
}  // namespace

TEST_CASE("a frozen model's int8 logits match the fake-quant forward's, for every reference model") {
    for (const std::string& arch : nn::model_archs()) {
        for (bool per_channel : {true, false}) {
            CAPTURE(arch);
            CAPTURE(per_channel);
            QatOptions o;
            o.weight.per_channel = per_channel;
            auto qat = calibrated(arch, o);
            infer::ModelSpec spec = freeze(*qat, {});
            infer::Model int8(spec, arch);

            const int n = 64;
            Tensor x = images(n, 77);
            Tensor sim;
            {
                NoGrad ng;
                sim = qat->forward(x);
            }
            std::span<const int8_t> q = int8.run_quantized(x.data(), n);
            const double s = spec.output.scale;
            const int32_t z = spec.output.zero_point;
            int64_t within_one = 0, exact = 0, same_top1 = 0;
            for (int i = 0; i < n; i++) {
                // Top-1 of the quantized logits on both sides (ties go to the first class).
                int best_sim = 0, best_int = 0;
                double best_qs = -1e9;
                for (int k = 0; k < 10; k++) {
                    const double qs = std::nearbyint(sim.data()[i * 10 + k] / s) + z;
                    const int qi = q[i * 10 + k];
                    within_one += std::fabs(qs - qi) <= 1;
                    exact += qs == qi;
                    if (qs > best_qs) best_qs = qs, best_sim = k;
                    if (q[i * 10 + k] > q[i * 10 + best_int]) best_int = k;
                }
                same_top1 += best_sim == best_int;
            }
            const std::string what = arch + (per_channel ? " per-channel" : " per-tensor");
            MESSAGE(what << ": exact " << exact << "/" << n * 10
                         << ", within 1 step " << within_one << "/" << n * 10 << ", same top-1 " << same_top1 << "/" << n);
            CHECK(within_one >= 0.99 * n * 10);
            CHECK(same_top1 >= n - 2);  // random weights: many near-ties; the trained-model figure is the parity report's
        }
    }
}

TEST_CASE("freeze writes a file that infer loads, about a quarter of the fp32 size") {
    auto qat = calibrated("lenet", QatOptions{});
    infer::ModelSpec spec = freeze(*qat, {});
    std::vector<uint8_t> bytes = infer::model_to_bytes(spec);
    int64_t fp32_bytes = 0;
    for (const auto& p : qat->parameters()) fp32_bytes += p.tensor.numel() * 4;
    CHECK(bytes.size() < 0.3 * fp32_bytes);
    CHECK_NOTHROW(infer::Model::from_bytes(bytes, "lenet.int8"));
}

TEST_CASE("freeze refuses a model that was not prepared for QAT, naming the module") {
    auto fp32 = nn::build_model({"lenet", 10, 1, 28}, 0);
    CHECK_THROWS_WITH_AS(freeze(*fp32, {}), doctest::Contains("'0'"), QuantError);
}

TEST_CASE("the parity checker agrees with a direct comparison and finds a planted divergence") {
    auto qat = calibrated("resnet20", QatOptions{});
    infer::ModelSpec spec = freeze(*qat, {});
    {
        infer::Model int8(spec, "resnet20");
        ParityChecker check(*qat, int8);
        Tensor x = images(32, 5);
        check.add_batch(x.data(), 32);
        CHECK(check.report().images == 32);
        CHECK(check.report().within_one() >= 99.0);
        // The integer add rescales both inputs with Q31 multipliers before
        // adding; the simulation adds exactly. A handful of values per
        // hundred thousand land 2 steps apart there, never more.
        INFO(check.report().summary());
        const std::string& d = check.report().first_divergence;
        CHECK((d.empty() || (d.find(".add'") != std::string::npos && d.find("up to 2 steps") != std::string::npos)));
    }
    // Corrupt the bias of the int8 graph's third op: parity must name it.
    auto& conv = std::get<infer::Conv2dSpec>(spec.ops[2].op);
    for (int32_t& b : conv.bias) b += 1 << 16;
    infer::Model bad(spec, "resnet20-bad");
    ParityChecker check(*qat, bad);
    Tensor x = images(8, 6);
    check.add_batch(x.data(), 8);
    CHECK(check.report().first_divergence.find("op 2 '" + spec.ops[2].name + "'") == 0);
}

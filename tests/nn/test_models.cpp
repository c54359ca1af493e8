#include <doctest/doctest.h>

#include <set>

#include "nn/models.h"

using namespace qf;
using namespace qf::nn;

namespace {
Tensor forward_batch(Module& m, int n, int c, int side) {
    std::mt19937 rng(1);
    NoGrad ng;
    return m.forward(Tensor::randn({n, c, side, side}, rng));
}
}  // namespace

TEST_CASE("reference models produce logits of the right shape") {
    for (const std::string& arch : model_archs()) {
        CAPTURE(arch);
        auto m = build_model({arch, 10, 1, 28}, 0);
        CHECK(forward_batch(*m, 3, 1, 28).shape() == Shape{3, 10});
        m->eval();
        CHECK(forward_batch(*m, 1, 1, 28).shape() == Shape{1, 10});
    }
}

TEST_CASE("lenet has the parameter count of DESIGN.md's architecture") {
    auto m = build_model({"lenet", 10, 1, 28}, 0);
    // conv 1->32 5x5, BN, conv 32->64 5x5, BN, fc 3136->128, fc 128->10
    CHECK(count_parameters(*m) == 800 + 64 + 51200 + 128 + 3136 * 128 + 128 + 1290);
}

TEST_CASE("state names are unique, dotted, and BN statistics are buffers") {
    auto m = build_model({"resnet20", 10, 1, 28}, 0);
    std::set<std::string> names;
    for (const auto& t : m->state()) CHECK(names.insert(t.name).second);
    CHECK(names.count("0.conv.weight"));
    CHECK(names.count("4.shortcut.bn.running_var"));  // first block of stage 2 projects
    CHECK_FALSE(names.count("1.shortcut.conv.weight"));
    for (const auto& b : m->buffers()) CHECK_FALSE(b.tensor.requires_grad());
    int no_decay = 0;
    for (const auto& p : m->parameters()) no_decay += !p.decay;
    CHECK(no_decay > 0);
}

TEST_CASE("the same seed builds the same weights") {
    auto a = build_model({"mbv2", 10, 1, 28}, 7), b = build_model({"mbv2", 10, 1, 28}, 7),
         c = build_model({"mbv2", 10, 1, 28}, 8);
    CHECK(a->parameters()[0].tensor.values() == b->parameters()[0].tensor.values());
    CHECK(a->parameters()[0].tensor.values() != c->parameters()[0].tensor.values());
}

TEST_CASE("train and eval reach every child") {
    auto m = build_model({"mbv2", 10, 1, 28}, 0);
    m->eval();
    std::function<void(const Module&)> all_eval = [&](const Module& x) {
        CHECK_FALSE(x.training());
        for (const auto& [n, c] : x.children()) all_eval(*c);
    };
    all_eval(*m);
}

TEST_CASE("bad model specs are refused with a message") {
    CHECK_THROWS_WITH_AS(build_model({"vgg", 10, 1, 28}, 0), doctest::Contains("lenet, resnet20, mbv2"),
                         std::invalid_argument);
    CHECK_THROWS_AS(build_model({"lenet", 10, 1, 30}, 0), std::invalid_argument);
    CHECK_THROWS_AS(build_model({"lenet", 0, 1, 28}, 0), std::invalid_argument);
}

// Optimizers and schedules against PyTorch 1.13 (tests/fixtures/gen_optim.py).
#include <doctest/doctest.h>

#include <cmath>

#include "format/safetensors.h"
#include "train/optimizer.h"
#include "train/schedule.h"

using namespace qf;
using namespace qf::train;

namespace {

const char* kFixture = "tests/fixtures/optim.safetensors";
const std::vector<double> kLrs = {0.1, 0.05, 0.02, 0.01};  // LRS of gen_optim.py

void check_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); i++) {
        INFO(what, "[", i, "]: ", got[i], " vs PyTorch ", want[i]);
        CHECK(std::fabs(got[i] - want[i]) <= 1e-6f + 1e-5f * std::fabs(want[i]));
    }
}

// Runs the fixture's steps with `cfg` on "w" (decayed) and "b" (a bias) and
// compares parameters and state with PyTorch's for `case_name`.
void check_case(const std::string& case_name, OptimizerConfig cfg) {
    INFO("case ", case_name);
    safetensors::File f = safetensors::read(kFixture);
    Tensor w = Tensor::from({3, 4}, f.floats("init.w")), b = Tensor::from({4}, f.floats("init.b"));
    auto opt = make_optimizer(cfg, {{"w", w, true}, {"b", b, false}});
    for (size_t s = 0; s < kLrs.size(); s++) {
        opt->zero_grad();
        std::vector<float> gw = f.floats("grad." + std::to_string(s) + ".w");
        std::vector<float> gb = f.floats("grad." + std::to_string(s) + ".b");
        std::copy(gw.begin(), gw.end(), w.grad());
        std::copy(gb.begin(), gb.end(), b.grad());
        opt->step(kLrs[s]);
    }
    CHECK(opt->step_count() == (int64_t)kLrs.size());
    check_close(w.values(), f.floats(case_name + ".w"), "w");
    check_close(b.values(), f.floats(case_name + ".b"), "b");
    for (const nn::NamedTensor& s : opt->state()) check_close(s.tensor.values(), f.floats(case_name + ".state." + s.name), s.name);
}

}  // namespace

TEST_CASE("optimizer: SGD matches torch.optim.SGD") {
    OptimizerConfig cfg;  // momentum 0.9, weight decay 5e-4: the fp32 recipe
    check_case("sgd_momentum", cfg);

    cfg.nesterov = true;
    cfg.weight_decay = 1e-2;
    cfg.decay_bn_and_bias = false;
    check_case("sgd_nesterov_no_bias_decay", cfg);

    OptimizerConfig plain;
    plain.momentum = 0;
    plain.weight_decay = 1e-3;
    check_case("sgd_plain", plain);
}

TEST_CASE("optimizer: AdamW matches torch.optim.AdamW") {
    OptimizerConfig cfg;
    cfg.name = OptimizerKind::AdamW;
    cfg.weight_decay = 1e-2;
    check_case("adamw", cfg);

    cfg.betas = {0.8, 0.99};
    cfg.eps = 1e-6;
    cfg.weight_decay = 0.1;
    cfg.decay_bn_and_bias = false;
    check_case("adamw_no_bias_decay", cfg);
}

TEST_CASE("optimizer: state is named per parameter; parameters without a gradient are skipped") {
    Tensor w = Tensor::full({2}, 1.0f), b = Tensor::full({3}, 2.0f);
    OptimizerConfig cfg;
    cfg.name = OptimizerKind::AdamW;
    auto opt = make_optimizer(cfg, {{"fc.weight", w, true}, {"fc.bias", b, false}});
    std::vector<std::string> names;
    for (const nn::NamedTensor& s : opt->state()) names.push_back(s.name);
    CHECK(names == std::vector<std::string>{"fc.weight.exp_avg", "fc.bias.exp_avg", "fc.weight.exp_avg_sq",
                                            "fc.bias.exp_avg_sq"});
    w.grad()[0] = 1.0f;
    opt->step(0.1);
    CHECK(w.values()[0] < 1.0f);
    CHECK(b.values() == std::vector<float>{2, 2, 2});  // no gradient: untouched, not even decayed
    opt->zero_grad();
    CHECK_FALSE(w.has_grad());

    OptimizerConfig plain;
    plain.momentum = 0;
    CHECK(make_optimizer(plain, {{"w", w, true}})->state().empty());
}

TEST_CASE("optimizer: large parameters take the parallel path with the same result") {
    // 20000 elements is above the one-thread limit; compare with the formula.
    const int n = 20000;
    Tensor w = Tensor::full({n}, 1.0f);
    std::fill(w.grad(), w.grad() + n, 0.5f);
    OptimizerConfig cfg;
    auto opt = make_optimizer(cfg, {{"w", w, true}});
    opt->step(0.1);
    const float d = 0.5f + 5e-4f * 1.0f;
    for (int k = 0; k < n; k += 997) CHECK(w.values()[k] == doctest::Approx(1.0f - 0.1f * d).epsilon(1e-7));
}

TEST_CASE("schedule: cosine matches torch's CosineAnnealingLR stepped per iteration") {
    safetensors::File f = safetensors::read(kFixture);
    std::vector<float> torch_lrs = f.floats("cosine.lrs");  // lr 0.05 to 0.001 over 12 steps
    ScheduleConfig cfg;
    cfg.final_lr = 0.001;
    LrSchedule schedule(cfg, 0.05, 3, 4);
    REQUIRE(torch_lrs.size() == 13);
    for (int s = 0; s <= 12; s++) CHECK(schedule.lr(s) == doctest::Approx(torch_lrs[s]).epsilon(1e-6));
    CHECK(schedule.lr(0) == 0.05);                                          // start
    CHECK(schedule.lr(6) == doctest::Approx((0.05 + 0.001) / 2));           // midpoint
    CHECK(schedule.lr(12) == doctest::Approx(0.001));                       // end
    CHECK(schedule.lr(100) == doctest::Approx(0.001));                      // past the end
}

TEST_CASE("schedule: linear warmup, then cosine over the remaining steps") {
    ScheduleConfig cfg;
    cfg.warmup_epochs = 0.4;
    LrSchedule schedule(cfg, 0.1, 2, 10);  // 20 steps, 4 of them warmup
    CHECK(schedule.warmup_steps() == 4);
    CHECK(schedule.lr(0) == doctest::Approx(0.025));
    CHECK(schedule.lr(3) == doctest::Approx(0.1));
    CHECK(schedule.lr(4) == doctest::Approx(0.1));
    CHECK(schedule.lr(12) == doctest::Approx(0.05));  // cosine midpoint of the 16 steps after warmup
    CHECK(schedule.lr(20) == doctest::Approx(0.0));
}

TEST_CASE("schedule: step multiplies by gamma at each milestone epoch; constant stays") {
    ScheduleConfig cfg;
    cfg.name = ScheduleKind::Step;
    cfg.milestones = {2, 4};
    cfg.gamma = 0.1;
    LrSchedule schedule(cfg, 1.0, 6, 10);
    CHECK(schedule.lr(0) == 1.0);
    CHECK(schedule.lr(19) == 1.0);
    CHECK(schedule.lr(20) == doctest::Approx(0.1));
    CHECK(schedule.lr(39) == doctest::Approx(0.1));
    CHECK(schedule.lr(40) == doctest::Approx(0.01));

    cfg.name = ScheduleKind::Constant;
    cfg.warmup_epochs = 1;
    LrSchedule constant(cfg, 0.005, 2, 4);
    CHECK(constant.lr(0) == doctest::Approx(0.005 / 4));
    CHECK(constant.lr(3) == doctest::Approx(0.005));
    CHECK(constant.lr(7) == doctest::Approx(0.005));
}

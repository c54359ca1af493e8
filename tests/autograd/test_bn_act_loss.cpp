// batch_norm, relu, relu6, add, concat_channels, reshape, flatten and
// cross_entropy: finite-difference gradient checks, PyTorch fixtures
// (tests/fixtures/gen_bn_act_loss.py), gradient accumulation rules, shape errors.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "format/safetensors.h"
#include "tests/autograd/gradcheck.h"

using namespace qf;
using qf::test::check_gradients;

namespace {

const char* kFixture = "tests/fixtures/bn_act_loss.safetensors";

const safetensors::File& fixture() {
    static const safetensors::File f = safetensors::read(kFixture);
    return f;
}

// The named F32 fixture tensor as a Tensor of its own shape.
Tensor load(const std::string& name) {
    const safetensors::File& f = fixture();
    const safetensors::TensorInfo& info = f.get(name, safetensors::DType::F32);
    return Tensor::from(info.shape, f.floats(name));
}

std::vector<int32_t> load_labels(const std::string& name) {
    const safetensors::File& f = fixture();
    const safetensors::TensorInfo& info = f.get(name, safetensors::DType::I32);
    const int32_t* p = f.ptr<int32_t>(info);
    return std::vector<int32_t>(p, p + info.nbytes / sizeof(int32_t));
}

// Every element of got within atol + rtol*|want| of want, shapes equal.
void check_close(const std::vector<float>& got, const Tensor& want, double atol, double rtol,
                 const std::string& what) {
    INFO(what);
    REQUIRE(got.size() == (size_t)want.numel());
    double worst = 0;
    int64_t worst_i = 0;
    for (int64_t i = 0; i < want.numel(); i++) {
        const double excess = std::fabs((double)got[i] - want.data()[i]) - (atol + rtol * std::fabs(want.data()[i]));
        if (i == 0 || excess > worst) worst = excess, worst_i = i;
    }
    INFO("worst element " << worst_i << ": got " << got[worst_i] << " want " << want.data()[worst_i]);
    CHECK(worst <= 0);
}

void check_close(const Tensor& got, const Tensor& want, double atol, double rtol, const std::string& what) {
    CHECK(shape_str(got.shape()) == shape_str(want.shape()));
    check_close(got.values(), want, atol, rtol, what);
}

Tensor random_tensor(const Shape& shape, uint32_t seed, float stddev = 1.0f, float mean = 0.0f) {
    std::mt19937 rng(seed);
    Tensor t = Tensor::randn(shape, rng, stddev);
    for (float& v : t.values()) v += mean;
    return t;
}

// Values of magnitude in [0.2, 1.2] with random signs: at least 0.2 from relu's kink.
Tensor away_from_zero(const Shape& shape, uint32_t seed) {
    std::mt19937 rng(seed);
    Tensor t = Tensor::uniform(shape, rng, 0.2f, 1.2f);
    std::bernoulli_distribution sign(0.5);
    for (float& v : t.values()) v = sign(rng) ? v : -v;
    return t;
}

}  // namespace

// ---- finite differences --------------------------------------------------------

TEST_CASE("batch_norm training gradients, 4-D and 2-D input") {
    for (Shape shape : {Shape{3, 2, 2, 3}, Shape{6, 3}}) {
        CAPTURE(shape_str(shape));
        const int64_t C = shape[1];
        Tensor running_mean = Tensor::zeros({C}), running_var = Tensor::full({C}, 1.0f);
        auto f = [&](std::vector<Tensor>& in) {
            return batch_norm(in[0], in[1], in[2], running_mean, running_var, true, 0.1f, 1e-5f);
        };
        check_gradients(f, {random_tensor(shape, 1, 1.5f, 0.5f), random_tensor({C}, 2, 0.3f, 1.0f),
                            random_tensor({C}, 3)},
                        1e-2f, 2e-3, 2e-2);
    }
}

TEST_CASE("batch_norm eval gradients use the running statistics") {
    Tensor running_mean = random_tensor({3}, 4), running_var = Tensor::from({3}, {0.5f, 1.0f, 2.0f});
    auto f = [&](std::vector<Tensor>& in) {
        return batch_norm(in[0], in[1], in[2], running_mean, running_var, false, 0.1f, 1e-5f);
    };
    check_gradients(f, {random_tensor({2, 3, 2, 2}, 5), random_tensor({3}, 6, 0.3f, 1.0f), random_tensor({3}, 7)});
    // eval leaves the statistics alone
    CHECK(running_var.values() == std::vector<float>{0.5f, 1.0f, 2.0f});
}

TEST_CASE("batch_norm without gamma and beta") {
    Tensor running_mean = Tensor::zeros({2}), running_var = Tensor::full({2}, 1.0f);
    auto f = [&](std::vector<Tensor>& in) {
        return batch_norm(in[0], Tensor(), Tensor(), running_mean, running_var, true, 0.1f, 1e-5f);
    };
    check_gradients(f, {random_tensor({4, 2, 1, 3}, 8)}, 1e-2f, 2e-3, 2e-2);
}

TEST_CASE("relu and relu6 gradients away from the kinks") {
    check_gradients([](std::vector<Tensor>& in) { return relu(in[0]); }, {away_from_zero({3, 4, 2}, 9)});
    // relu6: values in (-2, 8) but at least 0.2 from 0 and from 6.
    std::mt19937 rng(10);
    Tensor x = Tensor::uniform({5, 6}, rng, -2.0f, 8.0f);
    for (float& v : x.values()) {
        if (std::fabs(v) < 0.2f) v = v < 0 ? -0.3f : 0.3f;
        if (std::fabs(v - 6.0f) < 0.2f) v = v < 6.0f ? 5.7f : 6.3f;
    }
    check_gradients([](std::vector<Tensor>& in) { return relu6(in[0]); }, {x});
}

TEST_CASE("add, concat_channels, reshape and flatten gradients") {
    check_gradients([](std::vector<Tensor>& in) { return add(in[0], in[1]); },
                    {random_tensor({2, 3, 2}, 11), random_tensor({2, 3, 2}, 12)});
    check_gradients([](std::vector<Tensor>& in) { return add(in[0], in[0]); }, {random_tensor({5}, 13)});
    check_gradients([](std::vector<Tensor>& in) { return concat_channels({in[0], in[1]}); },
                    {random_tensor({2, 1, 2, 3}, 14), random_tensor({2, 3, 2, 3}, 15)});
    check_gradients([](std::vector<Tensor>& in) { return concat_channels({in[0], in[1], in[2]}); },
                    {random_tensor({2, 2, 2, 2}, 16), random_tensor({2, 1, 2, 2}, 17), random_tensor({2, 3, 2, 2}, 18)});
    check_gradients([](std::vector<Tensor>& in) { return reshape(in[0], {3, -1}); }, {random_tensor({2, 3, 2}, 19)});
    check_gradients([](std::vector<Tensor>& in) { return flatten(in[0]); }, {random_tensor({2, 3, 2, 2}, 20)});
}

TEST_CASE("cross_entropy gradients with and without label smoothing") {
    const std::vector<int32_t> labels = {2, 0, 4, 4};
    for (float smoothing : {0.0f, 0.1f}) {
        CAPTURE(smoothing);
        check_gradients([&](std::vector<Tensor>& in) { return cross_entropy(in[0], labels, smoothing); },
                        {random_tensor({4, 5}, 21, 2.0f)});
    }
}

// ---- against PyTorch -------------------------------------------------------------

TEST_CASE("batch_norm matches PyTorch: output, gradients, running statistics") {
    struct Case {
        const char* name;
        bool training;
        float momentum, eps;
    };
    for (Case c : {Case{"bn4d", true, 0.1f, 1e-5f}, Case{"bn2d", true, 0.3f, 1e-3f},
                   Case{"bn_eval", false, 0.1f, 1e-5f}}) {
        const std::string p = std::string(c.name) + ".";
        CAPTURE(c.name);
        Tensor x = load(p + "x"), gamma = load(p + "gamma"), beta = load(p + "beta");
        Tensor running_mean = load(p + "running_mean"), running_var = load(p + "running_var");
        for (Tensor* t : {&x, &gamma, &beta}) t->set_requires_grad(true);
        Tensor y = batch_norm(x, gamma, beta, running_mean, running_var, c.training, c.momentum, c.eps);
        backward(y, load(p + "dout").values());
        check_close(y, load(p + "out"), 1e-5, 1e-5, p + "out");
        check_close(x.grad_values(), load(p + "dx"), 1e-5, 1e-4, p + "dx");
        check_close(gamma.grad_values(), load(p + "dgamma"), 1e-5, 1e-4, p + "dgamma");
        check_close(beta.grad_values(), load(p + "dbeta"), 1e-5, 1e-4, p + "dbeta");
        check_close(running_mean, load(p + "running_mean_after"), 1e-6, 1e-6, p + "running_mean_after");
        check_close(running_var, load(p + "running_var_after"), 1e-6, 1e-5, p + "running_var_after");
    }
}

TEST_CASE("batch_norm with an input scale is batch_norm of scale_channels (QAT's BN folding)") {
    // Scales of both signs and far from 1, as 1 / (gamma / sqrt(var + eps)) can be.
    const Tensor scale = Tensor::from({3}, {2.5f, -0.125f, 40.0f});
    for (bool training : {true, false}) {
        CAPTURE(training);
        Tensor outs[2], dx[2], dgamma[2], dbeta[2], rm[2], rv[2];
        for (int fused = 0; fused < 2; fused++) {
            Tensor x = random_tensor({4, 3, 5, 5}, 31, 1.5f, 0.7f), gamma = random_tensor({3}, 32, 1.0f, 0.2f);
            Tensor beta = random_tensor({3}, 33);
            rm[fused] = random_tensor({3}, 34, 0.5f);
            rv[fused] = Tensor::from({3}, {0.5f, 2.0f, 1.25f});
            for (Tensor* t : {&x, &gamma, &beta}) t->set_requires_grad(true);
            outs[fused] = fused ? batch_norm(x, gamma, beta, rm[fused], rv[fused], training, 0.1f, 1e-3f, scale)
                                : batch_norm(scale_channels(x, scale, 1), gamma, beta, rm[fused], rv[fused], training,
                                             0.1f, 1e-3f);
            backward(outs[fused], random_tensor(x.shape(), 35).values());
            dx[fused] = Tensor::from(x.shape(), x.grad_values());
            dgamma[fused] = Tensor::from({3}, gamma.grad_values());
            dbeta[fused] = Tensor::from({3}, beta.grad_values());
        }
        check_close(outs[1], outs[0], 1e-5, 1e-4, "out");
        check_close(dx[1], dx[0], 1e-5, 1e-4, "dx");
        check_close(dgamma[1], dgamma[0], 1e-5, 1e-4, "dgamma");
        check_close(dbeta[1], dbeta[0], 1e-5, 1e-4, "dbeta");
        check_close(rm[1], rm[0], 1e-6, 1e-5, "running_mean");
        check_close(rv[1], rv[0], 1e-6, 1e-5, "running_var");
    }
    Tensor rm = Tensor::zeros({3}), rv = Tensor::full({3}, 1.0f);
    CHECK_THROWS_AS(batch_norm(Tensor::zeros({2, 3, 2, 2}), Tensor(), Tensor(), rm, rv, true, 0.1f, 1e-5f,
                               Tensor::full({2}, 1.0f)),
                    std::invalid_argument);
}

TEST_CASE("relu and relu6 measure their output's finite min/max as they write it") {
    for (int64_t n : {int64_t(7), int64_t(100000)}) {  // serial and parallel, blocks and a partial one
        CAPTURE(n);
        Tensor x = random_tensor({n}, 41, 4.0f, 1.0f);
        x.data()[3] = std::numeric_limits<float>::quiet_NaN();
        x.data()[5] = std::numeric_limits<float>::infinity();
        for (bool six : {false, true}) {
            FiniteMinMax range{0, 0};
            const Tensor y = six ? relu6(x, &range) : relu(x, &range);
            const Tensor plain = six ? relu6(x) : relu(x);
            float lo = INFINITY, hi = -INFINITY;
            for (float v : y.values())
                if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
            CHECK(range.min == lo);
            CHECK(range.max == hi);
            CHECK(std::memcmp(y.values().data(), plain.values().data(), size_t(n) * sizeof(float)) == 0);
        }
    }
    FiniteMinMax none{0, 0};
    relu(Tensor::full({3}, std::numeric_limits<float>::quiet_NaN()), &none);
    CHECK(none.min > none.max);
}

TEST_CASE("relu, relu6, add and concat_channels match PyTorch") {
    for (const char* name : {"relu", "relu6"}) {
        const std::string p = std::string(name) + ".";
        Tensor x = load(p + "x");
        x.set_requires_grad(true);
        Tensor y = std::string(name) == "relu" ? relu(x) : relu6(x);
        backward(y, load(p + "dout").values());
        check_close(y, load(p + "out"), 0, 0, p + "out");
        check_close(x.grad_values(), load(p + "dx"), 0, 0, p + "dx");
    }
    {
        Tensor a = load("add.a"), b = load("add.b");
        a.set_requires_grad(true);
        b.set_requires_grad(true);
        Tensor y = add(a, b);
        backward(y, load("add.dout").values());
        check_close(y, load("add.out"), 0, 0, "add.out");
        check_close(a.grad_values(), load("add.da"), 0, 0, "add.da");
        check_close(b.grad_values(), load("add.db"), 0, 0, "add.db");
    }
    {
        std::vector<Tensor> xs = {load("concat.x0"), load("concat.x1"), load("concat.x2")};
        for (Tensor& x : xs) x.set_requires_grad(true);
        Tensor y = concat_channels(xs);
        backward(y, load("concat.dout").values());
        check_close(y, load("concat.out"), 0, 0, "concat.out");
        for (int k = 0; k < 3; k++)
            check_close(xs[k].grad_values(), load("concat.dx" + std::to_string(k)), 0, 0, "concat.dx" + std::to_string(k));
    }
}

TEST_CASE("cross_entropy matches PyTorch, with and without label smoothing") {
    const std::vector<int32_t> labels = load_labels("ce.labels");
    for (auto [name, smoothing] : {std::pair{"ce", 0.0f}, std::pair{"ce_smooth", 0.1f}}) {
        const std::string p = std::string(name) + ".";
        Tensor logits = load(p + "logits");
        logits.set_requires_grad(true);
        Tensor loss = cross_entropy(logits, labels, smoothing);
        CHECK(loss.numel() == 1);
        backward(loss);
        CHECK(loss.item() == doctest::Approx(load(p + "loss").item()).epsilon(1e-6));
        check_close(logits.grad_values(), load(p + "dlogits"), 1e-7, 1e-5, p + "dlogits");
    }
}

// ---- accumulation rules ------------------------------------------------------------

TEST_CASE("an input that does not require grad gets no gradient") {
    Tensor a = random_tensor({2, 3}, 30), b = random_tensor({2, 3}, 31);
    a.set_requires_grad(true);
    backward(add(a, b), std::vector<float>(6, 1.0f));
    CHECK(a.has_grad());
    CHECK_FALSE(b.has_grad());

    Tensor x = random_tensor({4, 2}, 32), gamma = Tensor::full({2}, 1.0f), beta = Tensor::zeros({2});
    Tensor running_mean = Tensor::zeros({2}), running_var = Tensor::full({2}, 1.0f);
    gamma.set_requires_grad(true);
    backward(batch_norm(x, gamma, beta, running_mean, running_var, true, 0.1f, 1e-5f),
             random_tensor({4, 2}, 33).values());
    CHECK(gamma.has_grad());
    CHECK_FALSE(x.has_grad());
    CHECK_FALSE(beta.has_grad());

    Tensor c0 = random_tensor({1, 2, 2}, 34), c1 = random_tensor({1, 1, 2}, 35);
    c1.set_requires_grad(true);
    backward(concat_channels({c0, c1}), std::vector<float>(6, 1.0f));
    CHECK_FALSE(c0.has_grad());
    CHECK(c1.grad_values() == std::vector<float>{1.0f, 1.0f});

    // Nothing requires grad, or recording is off: nothing is recorded.
    relu(b);
    {
        NoGrad ng;
        relu(a);
        cross_entropy(reshape(a, {3, 2}), {0, 1, 1});
    }
    CHECK(tape_size() == 0);
}

TEST_CASE("a gradient reaching the same tensor twice accumulates") {
    Tensor x = Tensor::from({3}, {1, -2, 3});
    x.set_requires_grad(true);
    backward(add(x, x), {0.5f, 1.0f, -1.0f});
    CHECK(x.grad_values() == std::vector<float>{1.0f, 2.0f, -2.0f});
    // ... and on top of what an earlier backward left there
    backward(relu(x), {1.0f, 1.0f, 1.0f});
    CHECK(x.grad_values() == std::vector<float>{2.0f, 2.0f, -1.0f});

    Tensor y = Tensor::from({1, 1, 2}, {1, 2});
    y.set_requires_grad(true);
    backward(concat_channels({y, y, y}), {1, 2, 3, 4, 5, 6});
    CHECK(y.grad_values() == std::vector<float>{9.0f, 12.0f});
}

TEST_CASE("a small graph runs through backward(loss) and empties the tape") {
    // x (4, 2, 3) -> reshape (4, 6) -> relu -> + skip -> relu6 -> flatten -> cross_entropy
    Tensor x = away_from_zero({4, 2, 3}, 40), skip = random_tensor({4, 6}, 41);
    x.set_requires_grad(true);
    skip.set_requires_grad(true);
    const std::vector<int32_t> labels = {0, 5, 3, 3};
    Tensor h = relu6(add(relu(reshape(x, {4, 6})), skip));
    Tensor loss = cross_entropy(flatten(h), labels, 0.05f);
    CHECK(tape_size() == 6);
    backward(loss);
    CHECK(tape_size() == 0);
    CHECK(x.grad_values().size() == 24);
    CHECK(skip.grad_values().size() == 24);
    // The same gradients as the finite-difference check sees.
    check_gradients(
        [&](std::vector<Tensor>& in) {
            return cross_entropy(flatten(relu6(add(relu(reshape(in[0], {4, 6})), in[1]))), labels, 0.05f);
        },
        {x, skip});
}

// ---- the parallel paths ------------------------------------------------------------

TEST_CASE("batch_norm and relu give the same results on one thread and on all") {
    auto run = [](int threads) {
        const int saved = omp_get_max_threads();
        omp_set_num_threads(threads);
        Tensor x = random_tensor({8, 16, 12, 12}, 50, 2.0f, 1.0f);
        Tensor gamma = random_tensor({16}, 51, 0.2f, 1.0f), beta = random_tensor({16}, 52);
        Tensor running_mean = Tensor::zeros({16}), running_var = Tensor::full({16}, 1.0f);
        for (Tensor* t : {&x, &gamma, &beta}) t->set_requires_grad(true);
        Tensor y = relu(batch_norm(x, gamma, beta, running_mean, running_var, true, 0.1f, 1e-5f));
        backward(y, random_tensor(y.shape(), 53).values());
        omp_set_num_threads(saved);
        return std::vector<std::vector<float>>{y.values(), x.grad_values(), gamma.grad_values(),
                                               beta.grad_values(), running_var.values()};
    };
    const auto one = run(1), all = run(omp_get_max_threads());
    for (size_t i = 0; i < one.size(); i++) CHECK(one[i] == all[i]);

    // Training-mode output of each channel has mean beta and (biased) std gamma.
    Tensor x = random_tensor({8, 16, 12, 12}, 50, 2.0f, 1.0f);
    Tensor running_mean = Tensor::zeros({16}), running_var = Tensor::full({16}, 1.0f);
    Tensor y = batch_norm(x, Tensor(), Tensor(), running_mean, running_var, true, 0.1f, 0.0f);
    for (int c = 0; c < 16; c++) {
        double sum = 0, sumsq = 0;
        for (int n = 0; n < 8; n++)
            for (int s = 0; s < 144; s++) {
                const double v = y.data()[(n * 16 + c) * 144 + s];
                sum += v;
                sumsq += v * v;
            }
        CHECK(std::fabs(sum / 1152) < 1e-5);
        CHECK(sumsq / 1152 == doctest::Approx(1.0).epsilon(1e-4));
    }
}

// ---- bad input -----------------------------------------------------------------------

TEST_CASE("shape errors and bad labels name the op, the shapes and the label") {
    Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({3, 2});
    CHECK_THROWS_WITH_AS(add(a, b), doctest::Contains("add: shapes (2, 3) and (3, 2)"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(concat_channels({Tensor::zeros({2, 1, 3, 3}), Tensor::zeros({2, 1, 3, 4})}),
                         doctest::Contains("(2, 1, 3, 4)"), std::invalid_argument);
    CHECK_THROWS_AS(concat_channels({}), std::invalid_argument);
    CHECK_THROWS_WITH_AS(reshape(a, {4, 2}), doctest::Contains("reshape"), std::invalid_argument);
    CHECK_THROWS_AS(reshape(a, {-1, 4}), std::invalid_argument);
    CHECK_THROWS_AS(reshape(a, {-1, -1}), std::invalid_argument);
    CHECK(reshape(a, {-1}).shape() == Shape{6});

    Tensor rm = Tensor::zeros({3}), rv = Tensor::full({3}, 1.0f);
    CHECK_THROWS_WITH_AS(batch_norm(Tensor::zeros({2, 4, 2, 2}), Tensor::full({3}, 1.0f), Tensor::zeros({3}), rm, rv,
                                    true, 0.1f, 1e-5f),
                         doctest::Contains("batch_norm: gamma of shape (3)"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(batch_norm(Tensor::zeros({2, 3, 2}), Tensor(), Tensor(), rm, rv, true, 0.1f, 1e-5f),
                         doctest::Contains("(2, 3, 2)"), std::invalid_argument);
    CHECK_THROWS_AS(batch_norm(Tensor::zeros({1, 3}), Tensor(), Tensor(), rm, rv, true, 0.1f, 1e-5f),
                    std::invalid_argument);

    Tensor logits = Tensor::zeros({3, 10});
    CHECK_THROWS_WITH_AS(cross_entropy(logits, {1, 2, 10}), doctest::Contains("label 10 at index 2"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(cross_entropy(logits, {-1, 2, 3}), doctest::Contains("label -1 at index 0"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(cross_entropy(logits, {1, 2}), doctest::Contains("(3, 10)"), std::invalid_argument);
    CHECK_THROWS_AS(cross_entropy(Tensor::zeros({3}), {1, 2, 3}), std::invalid_argument);
}

TEST_CASE("cross_entropy is stable for huge logits") {
    Tensor logits = Tensor::from({2, 3}, {1000.0f, 0.0f, -1000.0f, 50.0f, 50.0f, 50.0f});
    Tensor loss = cross_entropy(logits, {0, 1});
    CHECK(std::isfinite(loss.item()));
    CHECK(loss.item() == doctest::Approx(std::log(3.0) / 2).epsilon(1e-6));
}

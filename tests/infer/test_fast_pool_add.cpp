// The fast add and pooling kernels (qs8_add.h, qs8_pooling.h) bit-exactly
// against the reference kernels on randomized shapes: channel counts around
// the vector widths (8, 16, 32), odd sizes, strides, padding, global pools,
// batch 1 and larger, sizes large enough to take the OpenMP paths. Both the
// AVX2 path (where built) and the portable one run.
#include <doctest/doctest.h>

#include <climits>
#include <random>
#include <vector>

#include "infer/kernels/qs8_add.h"
#include "infer/kernels/qs8_pooling.h"
#include "infer/kernels/reference/reference.h"
#include "infer/kernels/requantize_avx2.h"
#include "kernel_test_util.h"

using namespace qf::infer;
using namespace qf::infer::test;

namespace {

PoolParams random_pool_shape(std::mt19937_64& rng) {
    PoolParams p;
    p.channels = uniform_int(rng, 0, 3) == 0 ? uniform_int(rng, 1, 80) : 8 * uniform_int(rng, 1, 8);
    p.kernel_h = uniform_int(rng, 1, 4);
    p.kernel_w = uniform_int(rng, 0, 3) == 0 ? uniform_int(rng, 1, 4) : p.kernel_h;
    p.in_h = uniform_int(rng, p.kernel_h, 15);
    p.in_w = uniform_int(rng, p.kernel_w, 15);
    p.stride_h = uniform_int(rng, 1, 3);
    p.stride_w = uniform_int(rng, 1, 3);
    p.pad_top = uniform_int(rng, 0, p.kernel_h - 1);
    p.pad_bottom = uniform_int(rng, 0, p.kernel_h - 1);
    p.pad_left = uniform_int(rng, 0, p.kernel_w - 1);
    p.pad_right = uniform_int(rng, 0, p.kernel_w - 1);
    return p;
}

template <class Fast, class Reference>
void check_pool(const PoolParams& p, int batch, const std::vector<int8_t>& input, Fast fast, Reference reference) {
    INFO("batch " << batch << " in " << p.in_h << "x" << p.in_w << "x" << p.channels << " kernel " << p.kernel_h
                  << "x" << p.kernel_w << " stride " << p.stride_h << "," << p.stride_w << " pad " << p.pad_top
                  << "," << p.pad_left << "," << p.pad_bottom << "," << p.pad_right);
    const size_t out_size = size_t(batch) * p.out_h() * p.out_w() * p.channels;
    std::vector<int8_t> expected(out_size), simd(out_size, 0x55), portable(out_size, 0x55);
    reference(p, batch, input.data(), expected.data());
    fast(p, batch, input.data(), simd.data(), true);
    fast(p, batch, input.data(), portable.data(), false);
    REQUIRE(simd == expected);
    REQUIRE(portable == expected);
}

}  // namespace

TEST_CASE("max_pool (AVX2 over channels) matches the reference") {
    std::mt19937_64 rng(30);
    for (int iter = 0; iter < 300; ++iter) {
        PoolParams p = random_pool_shape(rng);
        p.input_zero_point = uniform_int(rng, -128, 127);
        p.output = {p.input_zero_point, -128, 127};
        if (uniform_int(rng, 0, 1)) p.output.min = p.input_zero_point;  // a fused ReLU
        if (uniform_int(rng, 0, 3) == 0) p.output.max = std::min(127, p.input_zero_point + uniform_int(rng, 0, 60));
        validate_max_pool(p);
        const int batch = uniform_int(rng, 1, iter % 10 == 0 ? 70 : 3);
        const auto input = random_int8(rng, size_t(batch) * p.in_h * p.in_w * p.channels);
        check_pool(p, batch, input, qs8_max_pool, reference::max_pool);
    }
}

TEST_CASE("average_pool and global average pool (AVX2 over channels) match the reference") {
    std::mt19937_64 rng(31);
    for (int iter = 0; iter < 300; ++iter) {
        PoolParams p = random_pool_shape(rng);
        p.input_zero_point = uniform_int(rng, -128, 127);
        p.multiplier = random_multiplier(rng, p.kernel_h * p.kernel_w);
        p.output = random_output_range(rng);
        if (iter % 3 == 0)  // global: the window is the whole image
            p = global_average_pool_params(p.in_h, p.in_w, p.channels, p.input_zero_point, p.multiplier, p.output);
        validate_average_pool(p);
        const int batch = uniform_int(rng, 1, iter % 10 == 0 ? 70 : 3);
        const auto input = random_int8(rng, size_t(batch) * p.in_h * p.in_w * p.channels);
        check_pool(p, batch, input, qs8_average_pool, reference::average_pool);
    }
}

TEST_CASE("add (AVX2, OpenMP over chunks) matches the reference") {
    std::mt19937_64 rng(32);
    for (int iter = 0; iter < 200; ++iter) {
        const double s1 = std::exp2(std::uniform_real_distribution<double>(-8, 0)(rng));
        const double s2 = std::exp2(std::uniform_real_distribution<double>(-8, 0)(rng));
        const double so = std::exp2(std::uniform_real_distribution<double>(-8, 1)(rng));
        const AddParams p = make_add_params(s1, uniform_int(rng, -128, 127), s2, uniform_int(rng, -128, 127), so,
                                            random_output_range(rng));
        validate(p);
        const int64_t size = iter % 10 == 0 ? uniform_int(rng, 60000, 200000) : uniform_int(rng, 1, 300);
        const auto a = random_int8(rng, size_t(size));
        const auto b = random_int8(rng, size_t(size));
        const size_t n = size_t(size);
        std::vector<int8_t> expected(n), simd(n, 0x55), portable(n, 0x55);
        reference::add(p, size, a.data(), b.data(), expected.data());
        qs8_add(p, size, a.data(), b.data(), simd.data());
        qs8_add(p, size, a.data(), b.data(), portable.data(), false);
        INFO("size " << size << " multipliers " << p.input1_multiplier.M0 << "/" << p.input1_multiplier.shift << " "
                     << p.input2_multiplier.M0 << "/" << p.input2_multiplier.shift << " "
                     << p.output_multiplier.M0 << "/" << p.output_multiplier.shift);
        REQUIRE(simd == expected);
        REQUIRE(portable == expected);
    }
}

#ifdef __AVX2__
TEST_CASE("the AVX2 output stage (make_requantize_lanes + requantize) equals requantize, any output range") {
    std::mt19937_64 rng(33);
    const int32_t edges[] = {INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX, 1 << 30, -(1 << 30)};
    for (int iter = 0; iter < 200000; ++iter) {
        int32_t acc[8], M0[8], shift[8];
        const bool left_shift = iter % 2;
        const OutputRange out = random_output_range(rng);
        for (int i = 0; i < 8; ++i) {
            acc[i] = uniform_int(rng, 0, 9) == 0 ? edges[uniform_int(rng, 0, 8)]
                                                 : int32_t(std::uniform_int_distribution<int64_t>(INT32_MIN, INT32_MAX)(rng) >> uniform_int(rng, 0, 31));
            const int s = left_shift ? uniform_int(rng, -31, 30) : uniform_int(rng, -31, 0);
            M0[i] = uniform_int(rng, 0, 20) == 0 ? (uniform_int(rng, 0, 1) ? (1 << 30) : INT32_MAX)
                                                  : uniform_int(rng, 1 << 30, INT32_MAX);
            if (uniform_int(rng, 0, 50) == 0) M0[i] = 0;
            shift[i] = M0[i] == 0 ? 0 : s;
        }
        auto load = [](const int32_t* v) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v)); };
        const avx2::RequantizeLanes q =
            avx2::make_requantize_lanes(load(M0), load(shift), out.zero_point, out.min, out.max);
        const __m256i got = avx2::requantize(load(acc), q);
        int32_t lanes[8];
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(lanes), got);
        for (int i = 0; i < 8; ++i) {
            const int32_t expected = requantize(acc[i], M0[i], shift[i], out.zero_point, out.min, out.max);
            if (lanes[i] != expected) {
                INFO("acc " << acc[i] << " M0 " << M0[i] << " shift " << shift[i]);
                REQUIRE(lanes[i] == expected);
            }
        }
    }
}
#endif

#include <doctest/doctest.h>

#include "autograd/ops.h"
#include "tests/autograd/gradcheck.h"

using namespace qf;

TEST_CASE("scale_channels: forward along axis 0 and 1, and gradients to x and s") {
    Tensor x = Tensor::from({2, 3}, {1, 2, 3, 4, 5, 6});
    Tensor s = Tensor::from({3}, {10, 20, 30});
    CHECK(scale_channels(x, s, 1).values() == std::vector<float>{10, 40, 90, 40, 100, 180});
    Tensor r = Tensor::from({2}, {-1, 2});
    CHECK(scale_channels(x, r, 0).values() == std::vector<float>{-1, -2, -3, 8, 10, 12});
    CHECK_THROWS_AS(scale_channels(x, r, 1), std::invalid_argument);

    std::mt19937 rng(3);
    for (int axis : {0, 1, 3}) {
        CAPTURE(axis);
        Tensor a = Tensor::randn({2, 3, 2, 4}, rng);
        Tensor c = Tensor::randn({a.dim(axis)}, rng);
        test::check_gradients([axis](std::vector<Tensor>& in) { return scale_channels(in[0], in[1], axis); },
                              {a, c});
    }
}

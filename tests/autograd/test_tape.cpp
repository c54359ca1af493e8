#include <doctest/doctest.h>

#include "autograd/tensor.h"

using namespace qf;

TEST_CASE("tensor basics and shape checks") {
    Tensor t = Tensor::from({2, 3}, {1, 2, 3, 4, 5, 6});
    CHECK(t.numel() == 6);
    CHECK(t.dim(-1) == 3);
    CHECK(shape_str(t.shape()) == "(2, 3)");
    CHECK_THROWS_AS(Tensor::from({2, 2}, {1, 2, 3}), std::invalid_argument);
    Tensor c = t.clone();
    c.data()[0] = 9;
    CHECK(t.data()[0] == 1);
}

TEST_CASE("backward refuses a loss that needs no gradient") {
    Tensor t = Tensor::from({1}, {1});
    CHECK_THROWS_AS(backward(t), std::logic_error);
    CHECK_THROWS_AS(backward(Tensor::zeros({2})), std::invalid_argument);
}

TEST_CASE("NoGrad scopes nest and restore") {
    CHECK(grad_enabled());
    {
        NoGrad a;
        CHECK_FALSE(grad_enabled());
        {
            NoGrad b;
            CHECK_FALSE(grad_enabled());
        }
        CHECK_FALSE(grad_enabled());
    }
    CHECK(grad_enabled());
}

TEST_CASE("empty() recycles the buffer of a tensor that died, and the pool can be emptied") {
    release_cached_buffers();
    const float* first;
    {
        Tensor a = Tensor::full({256, 256}, 3.0f);
        first = a.data();
    }
    CHECK(cached_buffer_bytes() == 256 * 256 * sizeof(float));
    Tensor b = Tensor::empty({256, 256});
    CHECK(b.data() == first);  // the same allocation, values unspecified
    CHECK(cached_buffer_bytes() == 0);
    // A fresh gradient is zero even when its buffer is recycled.
    { Tensor c = Tensor::full({256, 256}, 5.0f); }
    CHECK(b.grad()[0] == 0.0f);
    CHECK(b.grad()[256 * 256 - 1] == 0.0f);
    { Tensor d = Tensor::full({256, 256}, 1.0f); }
    release_cached_buffers();
    CHECK(cached_buffer_bytes() == 0);
}

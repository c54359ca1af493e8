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

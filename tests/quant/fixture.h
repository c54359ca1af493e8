// Reading tests/fixtures/fake_quant.safetensors (tests/fixtures/gen_fake_quant.py)
// and comparing float vectors with a tolerance.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "autograd/tensor.h"
#include "format/safetensors.h"
#include "quant/scheme.h"

namespace qf::test {

inline const safetensors::File& fake_quant_fixture() {
    static const safetensors::File f = safetensors::read("tests/fixtures/fake_quant.safetensors");
    return f;
}

// The named F32 tensor with its own shape.
inline Tensor fixture_tensor(const std::string& name) {
    const safetensors::File& f = fake_quant_fixture();
    const safetensors::TensorInfo& info = f.get(name, safetensors::DType::F32);
    return Tensor::from(info.shape, f.floats(name));
}

inline std::vector<int32_t> fixture_ints(const std::string& name) {
    const safetensors::File& f = fake_quant_fixture();
    const safetensors::TensorInfo& info = f.get(name, safetensors::DType::I32);
    const int32_t* p = f.ptr<int32_t>(info);
    return std::vector<int32_t>(p, p + info.nbytes / sizeof(int32_t));
}

inline double fixture_number(const std::string& key) { return std::stod(fake_quant_fixture().meta(key)); }
inline bool fixture_has_meta(const std::string& key) {
    return fake_quant_fixture().metadata.count(key) != 0;
}

// Every element within atol + rtol * |want|; reports the worst one.
inline void check_close(const std::vector<float>& got, const std::vector<float>& want, double atol,
                        double rtol, const std::string& what) {
    INFO(what);
    REQUIRE(got.size() == want.size());
    double worst = -1e300;
    size_t worst_i = 0;
    for (size_t i = 0; i < want.size(); i++) {
        const double excess = std::fabs(double(got[i]) - want[i]) - (atol + rtol * std::fabs(want[i]));
        if (excess > worst) worst = excess, worst_i = i;
    }
    INFO("worst element " << worst_i << ": got " << got[worst_i] << " want " << want[worst_i]);
    CHECK(worst <= 0);
}

// The message of the QuantError that f throws; empty if it throws none.
inline std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const quant::QuantError& e) {
        return e.what();
    }
    return "";
}

}  // namespace qf::test

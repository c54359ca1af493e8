// The dimensions of one conv2d call, shared by conv2d.cpp's paths and the
// implicit-GEMM kernel (conv2d_implicit.h). Letters as in conv2d.cpp.
#pragma once
#include <cstdint>

namespace qf::detail {

struct ConvDims {
    int64_t N, C, H, W, OC, KH, KW, OH, OW, G, stride, pad;
    int64_t Cg() const { return C / G; }
    int64_t OCg() const { return OC / G; }
    int64_t K() const { return Cg() * KH * KW; }
    int64_t P() const { return OH * OW; }
    bool pointwise() const { return KH == 1 && KW == 1 && stride == 1 && pad == 0; }
    bool depthwise() const { return G == C && OC == C; }
};

}  // namespace qf::detail

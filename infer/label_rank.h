// Where a label ranks among a row of logits, with argmax's tie rule: classes
// that score higher come first, and among equal scores the lower class index
// comes first (PyTorch's argmax/topk order). Int8 logits tie often (a few
// images in a thousand), so the rule matters; every accuracy qforge reports
// (train, quantize, infer) uses this one function.
#pragma once
#include <cstdint>

namespace qf::infer {

// 0 when `label` is the top-1 class; top-k correct when < k.
inline int label_rank(const float* logits, int classes, int32_t label) {
    const float s = logits[label];
    int rank = 0;
    for (int c = 0; c < classes; ++c) rank += logits[c] > s || (logits[c] == s && c < label);
    return rank;
}

}  // namespace qf::infer

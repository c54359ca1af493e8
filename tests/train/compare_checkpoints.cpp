// compare_checkpoints A.safetensors B.safetensors [TOLERANCE]
//
// Compares the model tensors ("model.*": weights, BN statistics, activation
// ranges, learned scales) of two checkpoints and prints the worst ones.
// A tensor agrees when max|a - b| <= TOLERANCE * max|b| (relative to the
// tensor's largest magnitude, so that elements near zero do not count as
// huge relative errors). Exit 0 when every tensor agrees, 1 when one does
// not, 2 on unreadable files or different tensor sets.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "format/safetensors.h"

using namespace qf::safetensors;

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: compare_checkpoints A.safetensors B.safetensors [TOLERANCE]\n");
        return 2;
    }
    const double tolerance = argc > 3 ? std::atof(argv[3]) : 1e-5;
    try {
        const File a = read(argv[1]), b = read(argv[2]);
        struct Row {
            std::string name;
            double relative;
        };
        std::vector<Row> rows;
        for (const auto& [name, info] : b.tensors) {
            if (name.rfind("model.", 0) != 0) continue;
            if (!a.has(name)) {
                std::fprintf(stderr, "%s lacks %s\n", argv[1], name.c_str());
                return 2;
            }
            const std::vector<float> x = a.floats(name), y = b.floats(name);
            if (x.size() != y.size()) {
                std::fprintf(stderr, "%s: %zu vs %zu values\n", name.c_str(), x.size(), y.size());
                return 2;
            }
            double diff = 0, scale = 0;
            for (size_t i = 0; i < y.size(); i++) {
                // NaN (an activation range never observed) equals NaN here.
                if (std::isnan(x[i]) && std::isnan(y[i])) continue;
                const double d = std::fabs((double)x[i] - y[i]);
                diff = std::max(diff, std::isnan(d) ? INFINITY : d);
                scale = std::max(scale, std::fabs((double)y[i]));
            }
            rows.push_back({name, scale > 0 ? diff / scale : diff});
        }
        std::sort(rows.begin(), rows.end(), [](const Row& p, const Row& q) { return p.relative > q.relative; });
        int bad = 0;
        for (const Row& r : rows) bad += r.relative > tolerance;
        std::printf("%zu model tensors, %d beyond %.1e relative; worst:\n", rows.size(), bad, tolerance);
        for (size_t i = 0; i < rows.size() && i < 5; i++)
            std::printf("  %-40s %.3e\n", rows[i].name.c_str(), rows[i].relative);
        return bad ? 1 : 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "compare_checkpoints: %s\n", e.what());
        return 2;
    }
}

// write_seed_models DIR: writes the models of tiny_models.h into DIR, the
// seed corpus of tests/fuzz/fuzz_model_loader.cpp (run.sh builds and runs it).
#include <cstdio>
#include <random>
#include <string>

#include "tiny_models.h"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: write_seed_models DIR\n");
        return 2;
    }
    try {
        using namespace qf::infer;
        const std::string dir = argv[1];
        std::mt19937_64 rng(10);
        write_model(test::residual_model(rng, 3, 5, 4), dir + "/residual.safetensors");
        write_model(test::lenet_like_model(rng, 8, 8), dir + "/lenet.safetensors");
        write_model(test::concat_model(rng), dir + "/concat.safetensors");
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "write_seed_models: %s\n", e.what());
        return 1;
    }
}

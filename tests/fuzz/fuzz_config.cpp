// libFuzzer target for the config parser (train/config.h). Any input must end
// in either a Config or a ConfigError: never a crash, a hang, another
// exception, or undefined behaviour (the build adds ASan and UBSan).
//
// The input is config text; after a first line "--" each further line is a
// command-line override (so both paths get fuzzed, seeds stay plain JSON).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace qf::train;
    std::string input(reinterpret_cast<const char*>(data), size);
    std::string text = input;
    std::vector<std::string> overrides;
    size_t marker = input.find("\n--\n");
    if (marker != std::string::npos) {
        text = input.substr(0, marker);
        size_t start = marker + 4;
        while (start <= input.size()) {
            size_t end = input.find('\n', start);
            if (end == std::string::npos) end = input.size();
            overrides.push_back(input.substr(start, end - start));
            start = end + 1;
        }
    }
    Config cfg;
    try {
        cfg = parse_config_text(text, "fuzz input", overrides);
    } catch (const ConfigError&) {
        return 0;
    }
    // A config that parsed must survive its own round trip unchanged.
    Config again = parse_config_text(config_to_json(cfg).dump(), "round trip");
    if (!(again == cfg)) __builtin_trap();
    return 0;
}

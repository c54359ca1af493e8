#include "infer/compare.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <stdexcept>
#include <vector>

#include "format/safetensors.h"

namespace qf::infer {

namespace {

namespace fs = std::filesystem;

// A word the shell passes through unchanged: single quotes, with any single
// quote inside closed, escaped and reopened.
std::string shell_quote(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

std::string find_train_binary() {
    if (const char* env = std::getenv("QF_TRAIN_BINARY"); env && *env) return env;
    std::error_code ec;
    const fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        const fs::path sibling = self.parent_path().parent_path() / "train" / "train";
        if (fs::exists(sibling)) return sibling.string();
    }
    return "train";  // from PATH
}

// The value of `pattern`'s groups in the last line of `text` that matches it.
std::vector<double> last_match(const std::string& text, const std::regex& pattern, const std::string& what,
                               const std::string& binary) {
    std::vector<double> values;
    for (std::sregex_iterator it(text.begin(), text.end(), pattern), end; it != end; ++it) {
        values.clear();
        for (size_t g = 1; g < it->size(); ++g) values.push_back(std::stod((*it)[g].str()));
    }
    if (values.empty())
        throw std::runtime_error(binary + " printed no " + what + " line; its output was:\n" + text);
    return values;
}

}  // namespace

Fp32Evaluation evaluate_fp32_checkpoint(const CompareRequest& r) {
    const safetensors::File checkpoint = safetensors::read(r.checkpoint);
    if (!checkpoint.metadata.count("config"))
        throw std::runtime_error(r.checkpoint + ": no 'config' in its metadata: not a checkpoint written by train");
    if (checkpoint.has("model.input_quant.range"))
        throw std::runtime_error(r.checkpoint + ": a QAT checkpoint; --compare takes the fp32 checkpoint the int8 "
                                 "model was quantized from");

    // The checkpoint's own config, in a file of our own that goes away with us.
    char dir_template[] = "/tmp/qforge-compare-XXXXXX";
    if (!mkdtemp(dir_template)) throw std::runtime_error("cannot create a temporary folder in /tmp");
    const fs::path dir = dir_template;
    struct RemoveDir {
        fs::path path;
        ~RemoveDir() {
            std::error_code ec;
            fs::remove_all(path, ec);
        }
    } remove_dir{dir};
    const fs::path config = dir / "config.json";
    std::ofstream(config) << checkpoint.meta("config");

    std::vector<std::string> args = {find_train_binary(), config.string(), "--eval-only", "--resume", r.checkpoint,
                                     "quant.enabled=false", "out_dir=" + (dir / "out").string(),
                                     "train.eval_batch_size=" + std::to_string(r.batch),
                                     "threads=" + std::to_string(r.threads), "data.limit_test=0"};
    if (fs::is_directory(r.data)) {
        args.push_back("data.format=folder");
        args.push_back("data.train_dir=" + r.data);
        args.push_back("data.val_dir=" + r.data);
    } else {
        args.push_back("data.format=idx");
        args.push_back("data.test_images=" + r.data);
        args.push_back("data.test_labels=" + r.labels);
    }
    std::string command;
    for (const std::string& a : args) command += shell_quote(a) + " ";
    command += "2>&1";

    FILE* pipe = popen(command.c_str(), "r");
    if (!pipe) throw std::runtime_error("cannot start " + args[0]);
    std::string output;
    char buffer[4096];
    for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) output.append(buffer, n);
    const int status = pclose(pipe);
    if (status != 0)
        throw std::runtime_error(args[0] + " failed to evaluate " + r.checkpoint + " (exit status " +
                                 std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + "):\n" + output);

    Fp32Evaluation e;
    e.train_binary = args[0];
    const std::vector<double> accuracy =
        last_match(output, std::regex(R"(test top-1 ([0-9.]+)%, top-5 ([0-9.]+)% on ([0-9]+) images)"), "'test top-1'", args[0]);
    e.top1 = accuracy[0], e.top5 = accuracy[1], e.images = int64_t(accuracy[2]);
    const std::vector<double> speed = last_match(
        output, std::regex(R"(eval speed: ([0-9.]+) images/s, batch [0-9]+ latency ([0-9.]+) ms)"), "'eval speed'",
        args[0]);
    e.images_per_s = speed[0], e.median_batch_ms = speed[1];
    return e;
}

}  // namespace qf::infer

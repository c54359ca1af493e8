#include "train/checkpoint.h"

#include <charconv>
#include <cstring>
#include <map>

#include "format/safetensors.h"

namespace qf::train {

namespace {

constexpr const char* kFormatName = "qforge-checkpoint";

// A tensor the checkpoint must hold, and the storage it is restored into.
struct Slot {
    std::string name;  // in the file: "model.<name>" or "optim.<name>"
    Tensor tensor;
};

std::vector<Slot> slots_of(const nn::Module& model, const Optimizer* optimizer) {
    std::vector<Slot> slots;
    for (const nn::NamedTensor& t : model.state()) slots.push_back({"model." + t.name, t.tensor});
    if (optimizer)
        for (const nn::NamedTensor& t : optimizer->state()) slots.push_back({"optim." + t.name, t.tensor});
    return slots;
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

const std::string& meta(const safetensors::File& file, const std::string& where, const std::string& key) {
    auto it = file.metadata.find(key);
    if (it == file.metadata.end())
        throw CheckpointError(where + ": metadata '" + key + "' is missing (not a qforge checkpoint?)");
    return it->second;
}

int64_t meta_integer(const safetensors::File& file, const std::string& where, const std::string& key) {
    const std::string& text = meta(file, where, key);
    int64_t value = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size() || value < 0)
        throw CheckpointError(where + ": metadata '" + key + "' is \"" + text + "\", expected a non-negative integer");
    return value;
}

// Checks the format metadata and reads where training stood.
CheckpointInfo info_of(const safetensors::File& file, const std::string& where) {
    const std::string& format = meta(file, where, "format");
    if (format != kFormatName)
        throw CheckpointError(where + ": metadata 'format' is \"" + format + "\", expected \"" + kFormatName + "\"");
    int64_t version = meta_integer(file, where, "format_version");
    if (version != kCheckpointFormatVersion)
        throw CheckpointError(where + ": format version " + std::to_string(version) + ", this build reads version " +
                              std::to_string(kCheckpointFormatVersion));
    CheckpointInfo info;
    info.arch = meta(file, where, "arch");
    info.epoch = meta_integer(file, where, "epoch");
    info.step_in_epoch = meta_integer(file, where, "step_in_epoch");
    info.global_step = meta_integer(file, where, "global_step");
    info.config_json = meta(file, where, "config");
    return info;
}

safetensors::File read_file(const std::string& path) {
    try {
        return safetensors::read(path);
    } catch (const safetensors::FormatError& e) {
        throw CheckpointError(std::string("checkpoint ") + e.what());
    }
}

}  // namespace

void save_checkpoint(const std::string& path, const nn::Module& model, const Optimizer* optimizer,
                     const CheckpointInfo& info) {
    safetensors::Writer writer;
    for (const Slot& s : slots_of(model, optimizer)) writer.add_f32(s.name, s.tensor.shape(), s.tensor.values());
    writer.set_metadata("format", kFormatName);
    writer.set_metadata("format_version", std::to_string(kCheckpointFormatVersion));
    writer.set_metadata("arch", info.arch);
    writer.set_metadata("epoch", std::to_string(info.epoch));
    writer.set_metadata("step_in_epoch", std::to_string(info.step_in_epoch));
    writer.set_metadata("global_step", std::to_string(info.global_step));
    writer.set_metadata("config", info.config_json);
    writer.set_metadata("optimizer", optimizer ? optimizer->name() : "none");
    writer.set_metadata("optimizer_steps", std::to_string(optimizer ? optimizer->step_count() : 0));
    try {
        writer.write(path);
    } catch (const safetensors::FormatError& e) {
        throw CheckpointError(std::string("checkpoint ") + e.what());
    }
}

CheckpointInfo read_checkpoint_info(const std::string& path) {
    return info_of(read_file(path), "checkpoint " + path);
}

CheckpointInfo load_checkpoint(const std::string& path, const std::string& arch, nn::Module& model,
                               Optimizer* optimizer) {
    const std::string where = "checkpoint " + path;
    safetensors::File file = read_file(path);
    CheckpointInfo info = info_of(file, where);
    // Most mismatches come from loading another architecture's checkpoint: say so.
    const std::string saved_from = info.arch != arch ? " (the checkpoint is of " + info.arch + ")" : "";
    const std::string model_is = "the model (" + arch + ")";

    // Check everything first, so that a bad file leaves model and optimizer untouched.
    const std::string& saved_optimizer = meta(file, where, "optimizer");
    const int64_t optimizer_steps = meta_integer(file, where, "optimizer_steps");
    if (optimizer && saved_optimizer != optimizer->name())
        throw CheckpointError(where + ": the optimizer state is of " + saved_optimizer + ", this run uses " +
                              optimizer->name());
    std::vector<Slot> slots = slots_of(model, optimizer);
    std::map<std::string, const Slot*> expected;
    for (const Slot& s : slots) {
        expected[s.name] = &s;
        auto it = file.tensors.find(s.name);
        if (it == file.tensors.end())
            throw CheckpointError(where + ": tensor '" + s.name + "' " + shape_str(s.tensor.shape()) + " of " +
                                  model_is + " is missing from the checkpoint" + saved_from);
        const safetensors::TensorInfo& t = it->second;
        if (t.dtype != safetensors::DType::F32)
            throw CheckpointError(where + ": tensor '" + s.name + "' has dtype " + dtype_name(t.dtype) +
                                  ", expected F32");
        if (t.shape != s.tensor.shape() || t.nbytes != (size_t)s.tensor.numel() * sizeof(float))
            throw CheckpointError(where + ": tensor '" + s.name + "' has shape " + shape_str(t.shape) + ", " +
                                  model_is + " expects " + shape_str(s.tensor.shape()) + saved_from);
    }
    for (const auto& [name, t] : file.tensors) {
        if (expected.count(name) || (!optimizer && starts_with(name, "optim."))) continue;
        throw CheckpointError(where + ": tensor '" + name + "' " + shape_str(t.shape) + " is not in " +
                              (starts_with(name, "optim.") ? std::string("the optimizer's state") : model_is) +
                              saved_from);
    }

    for (const Slot& s : slots) {
        const safetensors::TensorInfo& t = file.tensors.at(s.name);
        std::memcpy(s.tensor.storage()->value.data(), file.data.data() + t.offset, t.nbytes);
    }
    if (optimizer) optimizer->set_step_count(optimizer_steps);
    return info;
}

}  // namespace qf::train

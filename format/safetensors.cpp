#include "format/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

namespace qf::safetensors {

using json = nlohmann::json;

namespace {
// A header larger than this is refused before it is read (real headers are KBs).
constexpr uint64_t kMaxHeader = 64ull << 20;

struct DTypeName {
    DType d;
    const char* name;
    size_t size;
};
constexpr DTypeName kDTypes[] = {{DType::F32, "F32", 4}, {DType::I32, "I32", 4},
                                 {DType::I64, "I64", 8}, {DType::I8, "I8", 1},
                                 {DType::U8, "U8", 1}};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
    throw FormatError(path + ": " + what);
}
}  // namespace

const char* dtype_name(DType d) {
    for (auto& e : kDTypes)
        if (e.d == d) return e.name;
    return "?";
}
size_t dtype_size(DType d) {
    for (auto& e : kDTypes)
        if (e.d == d) return e.size;
    return 0;
}

const TensorInfo& File::get(const std::string& name, DType dtype) const {
    auto it = tensors.find(name);
    if (it == tensors.end()) fail(path, "missing tensor '" + name + "'");
    if (it->second.dtype != dtype)
        fail(path, "tensor '" + name + "' has dtype " + dtype_name(it->second.dtype) +
                       ", expected " + dtype_name(dtype));
    return it->second;
}

const TensorInfo& File::get(const std::string& name, DType dtype,
                            const std::vector<int64_t>& shape) const {
    const TensorInfo& t = get(name, dtype);
    if (t.shape != shape) {
        auto str = [](const std::vector<int64_t>& s) {
            std::string r = "(";
            for (size_t i = 0; i < s.size(); i++) r += (i ? ", " : "") + std::to_string(s[i]);
            return r + ")";
        };
        fail(path, "tensor '" + name + "' has shape " + str(t.shape) + ", expected " + str(shape));
    }
    return t;
}

const std::string& File::meta(const std::string& key) const {
    auto it = metadata.find(key);
    if (it == metadata.end()) fail(path, "missing metadata key '" + key + "'");
    return it->second;
}

std::vector<float> File::floats(const std::string& name) const {
    const TensorInfo& t = get(name, DType::F32);
    std::vector<float> v(t.nbytes / 4);
    std::memcpy(v.data(), data.data() + t.offset, t.nbytes);
    return v;
}

File read(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail(path, std::string("cannot open: ") + std::strerror(errno));
    f.seekg(0, std::ios::end);
    std::streamoff size = f.tellg();
    f.seekg(0);
    if (size < 0) fail(path, "cannot determine file size");
    std::vector<uint8_t> bytes((size_t)size);
    if (size > 0 && !f.read(reinterpret_cast<char*>(bytes.data()), size))
        fail(path, "read failed");
    return parse(std::move(bytes), path);
}

File parse(std::vector<uint8_t> bytes, const std::string& path) {
    File file;
    file.path = path;
    if (bytes.size() < 8) fail(path, "file of " + std::to_string(bytes.size()) +
                                         " bytes is too short for a safetensors header");
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = (header_len << 8) | bytes[i];
    if (header_len > kMaxHeader || header_len > bytes.size() - 8)
        fail(path, "header length " + std::to_string(header_len) + " runs past the end of the " +
                       std::to_string(bytes.size()) + "-byte file");
    json header;
    try {
        header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + header_len);
    } catch (const json::exception& e) {
        fail(path, std::string("header is not valid JSON: ") + e.what());
    }
    if (!header.is_object()) fail(path, "header is not a JSON object");
    const size_t data_size = bytes.size() - 8 - header_len;
    std::vector<std::pair<size_t, size_t>> ranges;
    for (auto& [name, entry] : header.items()) {
        if (name == "__metadata__") {
            if (!entry.is_object()) fail(path, "__metadata__ is not an object");
            for (auto& [k, v] : entry.items()) {
                if (!v.is_string()) fail(path, "metadata '" + k + "' is not a string");
                file.metadata[k] = v.get<std::string>();
            }
            continue;
        }
        const std::string where = "tensor '" + name + "'";
        if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
            !entry.contains("data_offsets"))
            fail(path, where + " needs dtype, shape and data_offsets");
        const json& jd = entry["dtype"];
        const json& js = entry["shape"];
        const json& jo = entry["data_offsets"];
        if (!jd.is_string()) fail(path, where + ": dtype is not a string");
        TensorInfo t;
        bool known = false;
        for (auto& e : kDTypes)
            if (jd.get<std::string>() == e.name) t.dtype = e.d, known = true;
        if (!known) fail(path, where + ": unsupported dtype " + jd.dump());
        if (!js.is_array() || js.size() > 8) fail(path, where + ": shape is not an array of at most 8 dims");
        uint64_t numel = 1;
        for (auto& d : js) {
            if (!d.is_number_unsigned() || d.get<uint64_t>() > (1ull << 40))
                fail(path, where + ": bad dimension " + d.dump());
            t.shape.push_back((int64_t)d.get<uint64_t>());
            numel *= d.get<uint64_t>();
            if (numel > (1ull << 40)) fail(path, where + ": too many elements");
        }
        if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() ||
            !jo[1].is_number_unsigned())
            fail(path, where + ": data_offsets is not [begin, end]");
        uint64_t begin = jo[0].get<uint64_t>(), end = jo[1].get<uint64_t>();
        if (begin > end || end > data_size)
            fail(path, where + ": byte range [" + std::to_string(begin) + ", " +
                           std::to_string(end) + ") is outside the " + std::to_string(data_size) +
                           "-byte data section");
        if (end - begin != numel * dtype_size(t.dtype))
            fail(path, where + ": " + std::to_string(end - begin) + " bytes for " +
                           std::to_string(numel) + " elements of " + dtype_name(t.dtype));
        t.offset = begin;
        t.nbytes = end - begin;
        if (t.nbytes) ranges.push_back({begin, end});
        file.tensors[name] = t;
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); i++)
        if (ranges[i].first < ranges[i - 1].second) fail(path, "tensor byte ranges overlap");
    bytes.erase(bytes.begin(), bytes.begin() + 8 + header_len);
    file.data = std::move(bytes);
    // Tensors are read through typed pointers: keep them aligned for their dtype.
    for (auto& [name, t] : file.tensors)
        if (t.offset % dtype_size(t.dtype) != 0)
            fail(path, "tensor '" + name + "' is not aligned to its element size");
    return file;
}

void Writer::add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                 const void* data, size_t nbytes) {
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    if (nbytes != (size_t)numel * dtype_size(dtype))
        throw std::invalid_argument("safetensors::Writer: '" + name + "' has " +
                                    std::to_string(nbytes) + " bytes for its shape");
    Entry e{dtype, shape, std::vector<uint8_t>((const uint8_t*)data, (const uint8_t*)data + nbytes)};
    entries_[name] = std::move(e);
}

void Writer::add_f32(const std::string& name, const std::vector<int64_t>& shape,
                     const std::vector<float>& values) {
    add(name, DType::F32, shape, values.data(), values.size() * sizeof(float));
}

std::vector<uint8_t> Writer::bytes() const {
    json header = json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    size_t offset = 0;
    for (auto& [name, e] : entries_) {
        // Align each tensor to 8 bytes so typed reads are aligned for every dtype.
        offset = (offset + 7) / 8 * 8;
        header[name] = {{"dtype", dtype_name(e.dtype)},
                        {"shape", e.shape},
                        {"data_offsets", {offset, offset + e.bytes.size()}}};
        offset += e.bytes.size();
    }
    std::string h = header.dump();
    while (h.size() % 8) h += ' ';
    std::vector<uint8_t> out(8 + h.size() + offset, 0);
    uint64_t n = h.size();
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(n >> (8 * i));
    std::memcpy(out.data() + 8, h.data(), h.size());
    for (auto& [name, e] : entries_) {
        size_t begin = header[name]["data_offsets"][0].get<size_t>();
        if (!e.bytes.empty()) std::memcpy(out.data() + 8 + h.size() + begin, e.bytes.data(), e.bytes.size());
    }
    return out;
}

void Writer::write(const std::string& path) const { write_file_atomic(path, bytes()); }

void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
    const std::string tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) fail(tmp, std::string("cannot create: ") + std::strerror(errno));
    size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            std::string err = std::strerror(errno);
            ::close(fd);
            ::unlink(tmp.c_str());
            fail(tmp, "write failed: " + err);
        }
        done += (size_t)n;
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        std::string err = std::strerror(errno);
        ::unlink(tmp.c_str());
        fail(tmp, "flush failed: " + err);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::string err = std::strerror(errno);
        ::unlink(tmp.c_str());
        fail(path, "rename from " + tmp + " failed: " + err);
    }
}

}  // namespace qf::safetensors

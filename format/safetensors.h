// Reading and writing safetensors files: an 8-byte little-endian header
// length, a JSON header naming each tensor's dtype, shape and byte range, then
// the raw bytes. Free-form string metadata lives under "__metadata__".
//
// Both fp32 checkpoints (train/) and int8 models (quant/ writes, infer/ reads)
// use it, so it sits below every other folder and depends on nothing of ours.
#pragma once
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace qf::safetensors {

enum class DType { F32, I32, I64, I8, U8 };
const char* dtype_name(DType d);
size_t dtype_size(DType d);

// Thrown for anything wrong with a file; the message names the file and what.
struct FormatError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct TensorInfo {
    DType dtype;
    std::vector<int64_t> shape;
    size_t offset = 0;  // into File::data
    size_t nbytes = 0;
};

struct File {
    std::string path;
    std::map<std::string, std::string> metadata;
    std::map<std::string, TensorInfo> tensors;
    std::vector<uint8_t> data;  // the byte buffer after the header

    bool has(const std::string& name) const { return tensors.count(name) != 0; }
    // The named tensor, checked to have this dtype (and shape, when given).
    const TensorInfo& get(const std::string& name, DType dtype) const;
    const TensorInfo& get(const std::string& name, DType dtype,
                          const std::vector<int64_t>& shape) const;
    const std::string& meta(const std::string& key) const;
    template <class T>
    const T* ptr(const TensorInfo& t) const { return reinterpret_cast<const T*>(data.data() + t.offset); }
    // Copies of tensor contents in their own dtype.
    std::vector<float> floats(const std::string& name) const;
};

// Reads and validates a whole file: the header length against the file size,
// the JSON, every dtype, shape, offset and size, and that no two tensors'
// byte ranges overlap. Throws FormatError.
File read(const std::string& path);
// The same checks on bytes already in memory (`path` only names them in errors).
File parse(std::vector<uint8_t> bytes, const std::string& path);

class Writer {
public:
    void add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
             const void* data, size_t nbytes);
    void add_f32(const std::string& name, const std::vector<int64_t>& shape,
                 const std::vector<float>& values);
    void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
    // Writes to PATH.tmp, flushes it to disk, then renames over PATH, so a
    // crash never leaves a half-written file under PATH. Throws FormatError.
    void write(const std::string& path) const;
    std::vector<uint8_t> bytes() const;

private:
    struct Entry {
        DType dtype;
        std::vector<int64_t> shape;
        std::vector<uint8_t> bytes;
    };
    std::map<std::string, Entry> entries_;
    std::map<std::string, std::string> metadata_;
};

// Writes `bytes` to `path` atomically (temp file, fsync, rename).
void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace qf::safetensors

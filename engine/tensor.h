// tensor: a typed, shaped view of bytes that some storage owns.
//
// Ownership: storage is reference-counted (std::shared_ptr with the aliasing constructor), so
// a view (reshape, arena slice) keeps the bytes it points into alive. Copying a tensor copies
// the view, never the bytes. Not thread-safe for concurrent mutation of the same bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/dtype.h"

namespace gpugrid {

using shape_t = std::vector<int64_t>;

// Product of dims (1 for a scalar). Callers validate dims first (see checked_num_elements).
int64_t num_elements(const shape_t& shape);
// False when a dim is negative or the product would exceed max_elements.
bool checked_num_elements(const shape_t& shape, int64_t max_elements, int64_t* out);
std::string shape_str(const shape_t& shape);  // "[1, 3, 224, 224]"

enum class device_kind : uint8_t { cpu = 0, cuda = 1 };

class tensor {
 public:
  tensor() = default;
  tensor(dtype type, shape_t shape, std::shared_ptr<std::byte> storage,
         device_kind device = device_kind::cpu)
      : type_(type), shape_(std::move(shape)), storage_(std::move(storage)), device_(device) {}

  // A zero-filled CPU tensor, 64-byte aligned. Aborts only on std::bad_alloc, which the
  // executor guards against by checking sizes before it allocates.
  static tensor zeros(dtype type, shape_t shape);
  template <typename T>
  static tensor from_vector(shape_t shape, const std::vector<T>& values) {
    tensor t = zeros(dtype_of<T>::value, std::move(shape));
    for (size_t i = 0; i < values.size() && i < static_cast<size_t>(t.numel()); ++i)
      t.data<T>()[i] = values[i];
    return t;
  }
  template <typename T>
  static tensor scalar(T value) { return from_vector<T>({}, {value}); }

  // A sequence (the ONNX sequence type): an immutable list of CPU tensors. type() is the
  // element type (dtype::undefined for an empty sequence of unknown type), the shape is empty
  // and there is no storage; only the sequence ops, control flow and Identity accept one.
  static tensor sequence(dtype elem, std::vector<tensor> items);
  bool is_sequence() const { return seq_ != nullptr; }
  const std::vector<tensor>& items() const { return *seq_; }

  // An empty optional (the ONNX optional type holding no value). type() is the element type
  // when known; no shape, no storage. An optional that holds a value is just that value (a
  // tensor or a sequence). Only Identity, the Optional ops and control flow accept one.
  static tensor none(dtype elem = dtype::undefined);
  bool is_none() const { return none_; }

  bool defined() const { return type_ != dtype::undefined || seq_ != nullptr || none_; }
  dtype type() const { return type_; }
  const shape_t& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_[i]; }
  size_t rank() const { return shape_.size(); }
  int64_t numel() const { return num_elements(shape_); }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(type_); }
  device_kind device() const { return device_; }

  void* raw() { return storage_.get(); }
  const void* raw() const { return storage_.get(); }
  template <typename T> T* data() { return reinterpret_cast<T*>(storage_.get()); }
  template <typename T> const T* data() const { return reinterpret_cast<const T*>(storage_.get()); }
  const std::shared_ptr<std::byte>& storage() const { return storage_; }

  // Same bytes, another shape with the same element count (caller checks the count).
  tensor reshaped(shape_t shape) const { return tensor(type_, std::move(shape), storage_, device_); }
  // A deep copy (CPU only).
  tensor clone() const;

  // Element i converted to double / int64 (CPU only; for shape arithmetic and tests).
  double as_double(int64_t i) const;
  int64_t as_int64(int64_t i) const;
  // All elements as int64 (shape inputs such as Reshape's shape, Slice's starts).
  std::vector<int64_t> to_int64_vector() const;

 private:
  dtype type_ = dtype::undefined;
  shape_t shape_;
  std::shared_ptr<std::byte> storage_;
  device_kind device_ = device_kind::cpu;
  std::shared_ptr<const std::vector<tensor>> seq_;
  bool none_ = false;
};

// Allocates size bytes aligned to 64 on the CPU, zero-filled unless `zero` is false (the
// caller then writes every byte); nullptr when bytes is too big.
std::shared_ptr<std::byte> allocate_cpu_bytes(size_t bytes, bool zero = true);

}  // namespace gpugrid

// Element types the engine stores, with their ONNX codes, sizes and names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace gpugrid {

// Values equal onnx::TensorProto_DataType so conversion is a cast.
enum class dtype : int32_t {
  undefined = 0,
  f32 = 1,
  u8 = 2,
  i8 = 3,
  u16 = 4,
  i16 = 5,
  i32 = 6,
  i64 = 7,
  string = 8,  // not supported by kernels; reported as unsupported
  boolean = 9,
  f16 = 10,
  f64 = 11,
  u32 = 12,
  u64 = 13,
  bf16 = 16,
};

size_t dtype_size(dtype t);             // 0 for undefined/string
std::string_view dtype_name(dtype t);   // "float32", "int64", ... (NumPy's names)
bool dtype_from_onnx(int32_t code, dtype* out);
bool is_float(dtype t);                 // f16, bf16, f32, f64
bool is_integer(dtype t);               // signed or unsigned integers (not bool)
bool is_signed_integer(dtype t);

// IEEE half and bfloat16 as storage types; arithmetic happens in float.
struct half {
  uint16_t bits = 0;
  half() = default;
  explicit half(float f);
  operator float() const;  // NOLINT: widening is always exact
};
struct bfloat16 {
  uint16_t bits = 0;
  bfloat16() = default;
  explicit bfloat16(float f);
  operator float() const;  // NOLINT: widening is always exact
};

template <typename T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr dtype value = dtype::f32; };
template <> struct dtype_of<double> { static constexpr dtype value = dtype::f64; };
template <> struct dtype_of<half> { static constexpr dtype value = dtype::f16; };
template <> struct dtype_of<bfloat16> { static constexpr dtype value = dtype::bf16; };
template <> struct dtype_of<int8_t> { static constexpr dtype value = dtype::i8; };
template <> struct dtype_of<uint8_t> { static constexpr dtype value = dtype::u8; };
template <> struct dtype_of<int16_t> { static constexpr dtype value = dtype::i16; };
template <> struct dtype_of<uint16_t> { static constexpr dtype value = dtype::u16; };
template <> struct dtype_of<int32_t> { static constexpr dtype value = dtype::i32; };
template <> struct dtype_of<uint32_t> { static constexpr dtype value = dtype::u32; };
template <> struct dtype_of<int64_t> { static constexpr dtype value = dtype::i64; };
template <> struct dtype_of<uint64_t> { static constexpr dtype value = dtype::u64; };
template <> struct dtype_of<bool> { static constexpr dtype value = dtype::boolean; };

// Calls f(T{}) with T the C++ type of t; returns false for types not in the list.
// Usage: dispatch_all(t, [&](auto tag) { using T = decltype(tag); ... });
template <typename F>
bool dispatch_all(dtype t, F&& f) {
  switch (t) {
    case dtype::f32: f(float{}); return true;
    case dtype::f64: f(double{}); return true;
    case dtype::f16: f(half{}); return true;
    case dtype::bf16: f(bfloat16{}); return true;
    case dtype::i8: f(int8_t{}); return true;
    case dtype::u8: f(uint8_t{}); return true;
    case dtype::i16: f(int16_t{}); return true;
    case dtype::u16: f(uint16_t{}); return true;
    case dtype::i32: f(int32_t{}); return true;
    case dtype::u32: f(uint32_t{}); return true;
    case dtype::i64: f(int64_t{}); return true;
    case dtype::u64: f(uint64_t{}); return true;
    case dtype::boolean: f(bool{}); return true;
    default: return false;
  }
}

// Numeric types where arithmetic makes sense (no bool, no half: compute halves as float).
template <typename F>
bool dispatch_numeric(dtype t, F&& f) {
  switch (t) {
    case dtype::f32: f(float{}); return true;
    case dtype::f64: f(double{}); return true;
    case dtype::i8: f(int8_t{}); return true;
    case dtype::u8: f(uint8_t{}); return true;
    case dtype::i16: f(int16_t{}); return true;
    case dtype::u16: f(uint16_t{}); return true;
    case dtype::i32: f(int32_t{}); return true;
    case dtype::u32: f(uint32_t{}); return true;
    case dtype::i64: f(int64_t{}); return true;
    case dtype::u64: f(uint64_t{}); return true;
    default: return false;
  }
}

template <typename F>
bool dispatch_float(dtype t, F&& f) {
  switch (t) {
    case dtype::f32: f(float{}); return true;
    case dtype::f64: f(double{}); return true;
    default: return false;
  }
}

}  // namespace gpugrid

// status and expected<T>: how expected failures travel in gpugrid.
//
// Every fallible call returns a status (or expected<T>) whose message names the input at
// fault; exceptions never cross a module boundary. The error kind maps onto the CLI's exit
// codes (see DESIGN.md): bad usage or bad input -> 2, no provider -> 3, verification -> 4.
#pragma once

#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace gpugrid {

enum class error_kind {
  ok = 0,
  invalid_input,   // malformed file, wrong shape, unsupported op, bad flag value: exit 2
  usage,           // bad command line: exit 2
  not_built,       // the part that would do this is not built in this binary: exit 2
  no_provider,     // nobody could run the job: exit 3
  verification,    // providers disagree beyond tolerance: exit 4
  io,              // the operating system refused (disk, socket): exit 1
  internal,        // a bug or an unexpected runtime failure (CUDA error, out of memory): exit 1
  unsupported_here,  // this backend cannot run this case (dtype, rank); another backend may: exit 2
};

int exit_code_for(error_kind kind);

class [[nodiscard]] status {
 public:
  status() = default;
  // Control characters in the message (a newline in a name taken from a hostile file) are
  // escaped, so that every error stays one line.
  status(error_kind kind, std::string message) : kind_(kind), message_(one_line(std::move(message))) {}

  static status ok() { return {}; }

  bool is_ok() const { return kind_ == error_kind::ok; }
  explicit operator bool() const { return is_ok(); }
  error_kind kind() const { return kind_; }
  const std::string& message() const { return message_; }

  // Returns a copy whose message is "prefix: message" (adds context on the way up).
  status with_context(const std::string& prefix) const {
    if (is_ok()) return *this;
    return {kind_, prefix + ": " + message_};
  }

 private:
  static std::string one_line(std::string m) {
    bool clean = true;
    for (unsigned char c : m) clean = clean && c >= 0x20 && c != 0x7f;
    if (clean) return m;
    std::string out;
    out.reserve(m.size() + 8);
    for (unsigned char c : m) {
      if (c == '\n') out += "\\n";
      else if (c == '\r') out += "\\r";
      else if (c == '\t') out += ' ';
      else if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
      else out += static_cast<char>(c);
    }
    return out;
  }

  error_kind kind_ = error_kind::ok;
  std::string message_;
};

template <typename... Args>
status invalid_input(fmt::format_string<Args...> f, Args&&... args) {
  return {error_kind::invalid_input, fmt::format(f, std::forward<Args>(args)...)};
}
template <typename... Args>
status internal_error(fmt::format_string<Args...> f, Args&&... args) {
  return {error_kind::internal, fmt::format(f, std::forward<Args>(args)...)};
}
template <typename... Args>
status io_error(fmt::format_string<Args...> f, Args&&... args) {
  return {error_kind::io, fmt::format(f, std::forward<Args>(args)...)};
}

// A value or the status saying why there is none.
template <typename T>
class [[nodiscard]] expected {
 public:
  expected(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  expected(status error) : v_(std::move(error)) {}  // NOLINT: implicit by design

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const status& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, status> v_;
};

#define GG_RETURN_IF_ERROR(expr)              \
  do {                                        \
    ::gpugrid::status gg_status_ = (expr);    \
    if (!gg_status_.is_ok()) return gg_status_; \
  } while (0)

#define GG_CONCAT_INNER(a, b) a##b
#define GG_CONCAT(a, b) GG_CONCAT_INNER(a, b)
#define GG_ASSIGN_OR_RETURN(lhs, expr) GG_ASSIGN_OR_RETURN_IMPL(GG_CONCAT(gg_expected_, __LINE__), lhs, expr)
#define GG_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.has_value()) return tmp.error();      \
  lhs = std::move(tmp).value()

}  // namespace gpugrid

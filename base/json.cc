#include "base/json.h"

#include <cmath>

#include <fmt/format.h>

namespace gpugrid {

std::string json_writer::escape(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) out += fmt::format("\\u{:04x}", c);
        else out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

void json_writer::separator() {
  if (after_key_) { after_key_ = false; return; }
  if (!first_.empty()) {
    if (!first_.back()) out_ += ',';
    first_.back() = false;
  }
}

json_writer& json_writer::begin_object() { separator(); out_ += '{'; first_.push_back(true); return *this; }
json_writer& json_writer::end_object() { out_ += '}'; first_.pop_back(); return *this; }
json_writer& json_writer::begin_array() { separator(); out_ += '['; first_.push_back(true); return *this; }
json_writer& json_writer::end_array() { out_ += ']'; first_.pop_back(); return *this; }
json_writer& json_writer::key(const std::string& k) {
  separator();
  out_ += escape(k);
  out_ += ':';
  after_key_ = true;
  return *this;
}
json_writer& json_writer::value(const std::string& s) { separator(); out_ += escape(s); return *this; }
json_writer& json_writer::value(double d) {
  separator();
  out_ += std::isfinite(d) ? fmt::format("{}", d) : "null";
  return *this;
}
json_writer& json_writer::value(int64_t i) { separator(); out_ += std::to_string(i); return *this; }
json_writer& json_writer::value(bool b) { separator(); out_ += b ? "true" : "false"; return *this; }
json_writer& json_writer::null() { separator(); out_ += "null"; return *this; }
json_writer& json_writer::raw(const std::string& json) { separator(); out_ += json; return *this; }

}  // namespace gpugrid

// A small streaming JSON writer for --json output (objects, arrays, strings, numbers).
// Not a parser. Strings are escaped per RFC 8259; non-finite numbers are written as null.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gpugrid {

class json_writer {
 public:
  json_writer& begin_object();
  json_writer& end_object();
  json_writer& begin_array();
  json_writer& end_array();
  json_writer& key(const std::string& k);
  json_writer& value(const std::string& s);
  json_writer& value(const char* s) { return value(std::string(s)); }
  json_writer& value(double d);
  json_writer& value(int64_t i);
  json_writer& value(int i) { return value(static_cast<int64_t>(i)); }
  json_writer& value(size_t i) { return value(static_cast<int64_t>(i)); }
  json_writer& value(bool b);
  json_writer& null();
  // Writes pre-serialized JSON as the next value.
  json_writer& raw(const std::string& json);
  const std::string& str() const { return out_; }

  static std::string escape(const std::string& s);

 private:
  void separator();
  std::string out_;
  std::vector<bool> first_;  // per open container: no element written yet
  bool after_key_ = false;
};

}  // namespace gpugrid

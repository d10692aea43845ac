#include "base/json.h"

namespace gpugrid {

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string dump_json_list(const json& array) {
  if (!array.is_array() || array.empty()) return dump_json(array);
  std::string out = "[\n";
  for (size_t i = 0; i < array.size(); ++i) out += dump_json(array[i]) + (i + 1 < array.size() ? ",\n" : "\n");
  return out + "]";
}

json parse_json(const std::string& text) { return json::parse(text, nullptr, false); }

std::string json_writer::escape(const std::string& s) { return dump_json(json(s)); }

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
json_writer& json_writer::value(double d) { separator(); out_ += dump_json(json(d)); return *this; }
json_writer& json_writer::value(int64_t i) { separator(); out_ += dump_json(json(i)); return *this; }
json_writer& json_writer::value(bool b) { separator(); out_ += b ? "true" : "false"; return *this; }
json_writer& json_writer::null() { separator(); out_ += "null"; return *this; }
json_writer& json_writer::raw(const std::string& json) { separator(); out_ += json; return *this; }

}  // namespace gpugrid

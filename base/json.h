// JSON for --json output and event lines: nlohmann::json (Debian's nlohmann-json3-dev), with
// keys kept in the order they are set so that documents read top-down as the help describes.
//
// The command line's convention (README, "JSON output"): with --json a command prints exactly
// one JSON document (an object) on stdout followed by a newline, and nothing else on stdout;
// a command that runs until stopped (offer) prints JSON Lines instead, one object per event,
// each with "event" and "time" keys.
//
// Pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace gpugrid {

using json = nlohmann::ordered_json;

// Compact JSON on one line (no newline). Non-finite numbers become null and bytes that are
// not UTF-8 become U+FFFD, so this never throws on the program's own values.
std::string dump_json(const json& j);

// A JSON array with one element per line: "[\n{...},\n{...}\n]" ("[]" when empty). One
// document for json.load, and still one line per item for grep.
std::string dump_json_list(const json& array);

// Parses one JSON document; nullopt-like: a discarded value (is_discarded()) when malformed.
json parse_json(const std::string& text);

// A streaming writer kept for the callers that build JSON text piecewise (bench and the node's
// event lines); strings and numbers are encoded by nlohmann::json. New code builds a `json`.
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

  // A JSON string literal (with the quotes) for s.
  static std::string escape(const std::string& s);

 private:
  void separator();
  std::string out_;
  std::vector<bool> first_;  // per open container: no element written yet
  bool after_key_ = false;
};

}  // namespace gpugrid

#include "serve/http_common.h"

namespace gpugrid::serve {

int json_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') {
      if (++depth > deepest) deepest = depth;
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

int http_status_for(error_kind k) {
  switch (k) {
    case error_kind::invalid_input:
    case error_kind::usage:
    case error_kind::unsupported_here: return 400;
    case error_kind::no_provider: return 503;
    case error_kind::verification: return 502;
    default: return 500;
  }
}

}  // namespace gpugrid::serve

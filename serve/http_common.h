// Small pieces both HTTP APIs of serve share (/v2 and /v1): a JSON nesting check made before a
// body is parsed, and the HTTP status an error kind maps to. Pure functions; any thread.
#pragma once

#include <string_view>

#include "base/status.h"

namespace gpugrid::serve {

// How deep [ and { nest in `text` (strings skipped), counted until `limit` is passed: a body
// deeper than the limit is refused before a parser recurses into it.
int json_depth(std::string_view text, int limit);

// 400 for bad input, 503 when no provider can run it, 502 when results fail verification,
// else 500.
int http_status_for(error_kind k);

}  // namespace gpugrid::serve

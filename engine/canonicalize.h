// Rewrites ops whose form changed across opsets into the newest form, so each kernel
// implements one form: attributes that later became inputs become constant inputs, Upsample
// becomes Resize, Constant nodes become initializers. Runs once at load, before validation.
#pragma once

#include <string>

#include "base/status.h"
#include "engine/graph.h"

namespace gpugrid {

status canonicalize(graph& g, const std::string& what);

}  // namespace gpugrid

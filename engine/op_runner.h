// Runs one op on given inputs, outside any model: used by constant folding and by op tests.
#pragma once

#include <string>
#include <vector>

#include "engine/kernel.h"

namespace gpugrid {

// Builds a one-node graph for `n` (its inputs/outputs are renumbered), creates the kernel from
// `registry` and runs it. An omitted optional input is a default-constructed tensor.
// The number of outputs is n.outputs.size() (or 1 when empty). With inputs_are_constant the
// kernel's prepare() sees the inputs (constant folding); otherwise it sees nullptrs.
expected<std::vector<tensor>> run_single_op(const op_registry& registry, node n,
                                            const std::vector<tensor>& inputs,
                                            thread_pool* pool = nullptr,
                                            bool inputs_are_constant = false);

// Convenience for tests: a node of the default domain at the given opset.
node make_node(const std::string& op_type, size_t num_outputs = 1, int opset = 17);

}  // namespace gpugrid

// Control flow (If, Loop, Scan) and the helpers the sequence ops share with it.
//
// A control-flow kernel owns one subgraph session per graph attribute (made when the kernel
// is created, so an unsupported op in a branch fails at load time) and runs it on the calling
// kernel's thread pool. Subgraph inputs are the formal inputs followed by the node's implicit
// inputs (values captured from enclosing graphs; see node::implicit_inputs).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/kernel.h"
#include "engine/session.h"

namespace gpugrid::cpu {

// The most iterations one Loop may run (a Loop without a trip count or with a huge one whose
// condition never turns false fails here instead of running forever).
constexpr int64_t max_loop_iterations = int64_t{1} << 24;

// Makes the session for graph attribute `key` of n, checking that the subgraph takes
// `formal_inputs` inputs before its captured ones. Errors name the path of nodes to the problem
// ("If 'a' then_branch: Loop 'b' body: unsupported op ...").
expected<std::unique_ptr<session>> make_subgraph_session(const node& n, const std::string& key,
                                                         size_t formal_inputs);
// The node's implicit inputs (captured values) as tensors, to append to a subgraph's inputs.
std::vector<tensor> captured_inputs(const kernel_context& ctx);
// Runs a subgraph session; errors are prefixed with the node and attribute.
expected<std::vector<tensor>> run_body(const kernel_context& ctx, session& body, const std::string& key,
                                       const std::vector<tensor>& inputs);

// Element i along `axis` of t (the axis removed): a view when axis is 0, else a copy.
tensor slice_along(const tensor& t, int64_t axis, int64_t i);
// Stacks equally shaped, same-typed CPU tensors along a new axis `axis` (0..rank), in reverse
// order when `reverse`. Fails (naming ctx's node) on a mismatch or a result over the size cap.
expected<tensor> stack_tensors(const kernel_context& ctx, const std::vector<tensor>& parts, int64_t axis,
                               bool reverse);
// Concatenates same-typed CPU tensors of equal rank along an existing axis.
expected<tensor> concat_tensors(const kernel_context& ctx, const std::vector<tensor>& parts, int64_t axis);

}  // namespace gpugrid::cpu

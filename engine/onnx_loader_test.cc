#include "engine/onnx_loader.h"

#include <catch2/catch.hpp>

#include <onnx/onnx_pb.h>

using namespace gpugrid;

namespace {

// A model with one node of `op_type` at `opset` that has no inputs and writes graph output y.
std::string model_without_inputs(const std::string& op_type, int opset) {
  onnx::ModelProto m;
  m.set_ir_version(7);
  auto* imp = m.add_opset_import();
  imp->set_domain("");
  imp->set_version(opset);
  auto* g = m.mutable_graph();
  g->set_name("g");
  auto* n = g->add_node();
  n->set_op_type(op_type);
  n->add_output("y");
  auto* out = g->add_output();
  out->set_name("y");
  out->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  return m.SerializeAsString();
}

}  // namespace

TEST_CASE("loader: an op whose attributes became inputs, with no inputs at all, reads no value", "[loader]") {
  // Found by fuzz_model_loader: canonicalisation used to give such a node input 0, a value
  // that does not exist (or an unrelated one).
  for (const char* op : {"ReduceL1", "ReduceSum", "Clip", "Pad", "Split", "Slice", "TopK"}) {
    const int opset = std::string(op) == "Slice" || std::string(op) == "TopK" ? 9 : 10;
    INFO(op);
    // It loads (the missing input is the kernel's to report when the model runs).
    auto g = load_model_from_bytes(model_without_inputs(op, opset));
    INFO((g ? std::string() : g.error().message()));
    REQUIRE(g);
    REQUIRE((*g)->nodes.size() == 1);
    const node& n = (*g)->nodes[0];
    REQUIRE(!n.inputs.empty());
    CHECK(n.inputs[0] == -1);
    for (int id : n.inputs) CHECK(id < static_cast<int>((*g)->values.size()));
  }
}

namespace {

onnx::ValueInfoProto float_value(const std::string& name) {
  onnx::ValueInfoProto v;
  v.set_name(name);
  v.mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  return v;
}

// y = If(b) { x + w } else { Neg(x) }, the branches reading x and w from the main graph;
// `then_reads` replaces w in the then branch (to refer to a name nothing defines).
std::string if_model(const std::string& then_reads = "w") {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  auto* w = g->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(1);
  w->add_float_data(2.f);
  auto* in = g->add_input();
  in->set_name("b");
  in->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::BOOL);
  *g->add_input() = float_value("x");
  *g->add_output() = float_value("y");
  auto* n = g->add_node();
  n->set_op_type("If");
  n->set_name("cond");
  n->add_input("b");
  n->add_output("y");
  auto* then_attr = n->add_attribute();
  then_attr->set_name("then_branch");
  then_attr->set_type(onnx::AttributeProto::GRAPH);
  auto* tg = then_attr->mutable_g();
  auto* add = tg->add_node();
  add->set_op_type("Add");
  add->add_input("x");
  add->add_input(then_reads);
  add->add_output("t");
  *tg->add_output() = float_value("t");
  auto* else_attr = n->add_attribute();
  else_attr->set_name("else_branch");
  else_attr->set_type(onnx::AttributeProto::GRAPH);
  auto* eg = else_attr->mutable_g();
  auto* neg = eg->add_node();
  neg->set_op_type("Neg");
  neg->add_input("x");
  neg->add_output("e");
  *eg->add_output() = float_value("e");
  return m.SerializeAsString();
}

}  // namespace

TEST_CASE("loader: subgraphs capture outer-scope values as implicit inputs", "[loader]") {
  auto g = load_model_from_bytes(if_model());
  INFO((g ? std::string() : g.error().message()));
  REQUIRE(g);
  const node& n = (*g)->nodes.at(0);
  REQUIRE(n.op_type == "If");
  REQUIRE(n.implicit_inputs == 2);  // x, w (the union of both branches' reads)
  REQUIRE(n.inputs.size() == 3);
  CHECK((*g)->values[n.inputs[1]].name == "x");
  CHECK((*g)->values[n.inputs[2]].name == "w");
  for (const char* key : {"then_branch", "else_branch"}) {
    auto sub = n.attr_graph(key);
    REQUIRE(sub);
    CHECK(sub->captured_inputs == 2);
    REQUIRE(sub->inputs.size() == 2);
    CHECK(sub->values[sub->inputs[0]].name == "x");
    CHECK(sub->values[sub->inputs[1]].name == "w");
  }
}

TEST_CASE("loader: a subgraph reading a name no graph defines is a one-line error", "[loader]") {
  auto g = load_model_from_bytes(if_model("nowhere"), "m.onnx");
  REQUIRE(!g);
  CHECK_THAT(g.error().message(), Catch::Contains("'nowhere'") && Catch::Contains("If 'cond' then_branch"));
  CHECK(g.error().message().find('\n') == std::string::npos);
  CHECK(g.error().kind() == error_kind::invalid_input);
}
